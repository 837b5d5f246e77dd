"""A bot with separate workers ([worker] builtin = false) relays what a real `sdbot worker`
writes to the job rows to the same JobEvents sink as its own worker's events (the console's
here; Discord's is the same interface), and tells a member whose model no live worker can
load instead of leaving them waiting."""

from __future__ import annotations

import asyncio

from bot.cli import ConsoleEvents
from bot.config import load_settings
from bot.jobs.leases import WorkerRegistry
from bot.jobs.queue import JobQueue
from bot.jobs.worker_relay import WorkerRelay
from db.models import Job, JobStatus
from db.session import Database
from tests.test_workers_cli import migrate_to, sqlite_url
from tests.worker_processes import (
    START_TIMEOUT_S, jobs_where, queue_jobs, start_worker, stop_worker, wait_for, worker_config, worker_log,
)


class RecordingEvents(ConsoleEvents):
    """The console's sink, keeping every finished job and the starts and progress seen."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: dict[int, object] = {}
        self.started: list[int] = []
        self.steps: list[tuple[int, int]] = []

    def job_started(self, job) -> None:  # type: ignore[no-untyped-def]
        self.started.append(job.id)

    def job_progress(self, job, progress) -> None:  # type: ignore[no-untyped-def]
        self.steps.append((job.id, progress.step))

    def job_finished(self, job) -> None:  # type: ignore[no-untyped-def]
        self.finished[job.id] = job
        super().job_finished(job)


async def test_a_separate_workers_jobs_reach_the_bots_sink_and_sigterm_hands_its_job_back(tmp_path, tiny_model_dir):
    """Then (one worker start serves both, a start is the slow part) SIGTERM mid-job, with no
    grace: the job goes back to the queue without an attempt counted, the worker's row says it
    stopped, and the exit status is 0."""
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(migrate_to, url, "head")
    config = worker_config(tmp_path, url, tiny_model_dir, max_batch_images=2, shutdown_grace_s=0.0)
    settings = load_settings(config)
    db = Database(url)
    queue = JobQueue(db, settings.queue)
    relay = WorkerRelay(queue, settings.worker.lease_timeout_s, settings.worker.heartbeat_s)
    events = RecordingEvents()
    worker = start_worker(config, "gpu0")
    try:
        job_ids = await queue_jobs(db, settings, 2, 2)
        relay.run(events)
        relay.wake()
        async with asyncio.timeout(START_TIMEOUT_S):
            while set(events.finished) != set(job_ids):
                await asyncio.sleep(0.1)
        # Long enough (60 steps of four 128 px images) to be stopped in the middle.
        [long_job] = await queue_jobs(db, settings, 1, 1, steps=60, count=4, width=128, height=128)
        await wait_for(lambda: jobs_where(db, Job.id == long_job, Job.progress_step.is_not(None)), "the job's first steps",
                       logs=lambda: worker_log(config, "gpu0"))
        assert await stop_worker(worker) == 0, worker_log(config, "gpu0")
        [stopped] = await jobs_where(db, Job.id == long_job)
        listed = await WorkerRegistry(queue, settings.worker.lease_timeout_s).workers()
    finally:
        if worker.poll() is None:
            worker.kill()
        await relay.stop()
        await db.close()
    for job_id in job_ids:
        job = events.finished[job_id]
        assert job.status == JobStatus.COMPLETED and len(job.images) == 1 and job.worker_name == "gpu0"
        assert job.images[0].path.startswith(str(tmp_path / "outputs" / "gpu0"))
    assert set(events.started) <= set(job_ids) | {long_job}
    assert (stopped.status, stopped.attempts, stopped.worker_name, stopped.lease_token) == (JobStatus.PENDING, 0, None, None)
    assert listed == []  # stopped: no longer listed


async def test_a_job_no_live_worker_can_load_is_refused_with_a_message(tmp_path, tiny_model_dir):
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(migrate_to, url, "head")
    settings = load_settings(worker_config(tmp_path, url, tiny_model_dir))
    db = Database(url)
    queue = JobQueue(db, settings.queue)
    registry = WorkerRegistry(queue, settings.worker.lease_timeout_s)
    relay = WorkerRelay(queue, settings.worker.lease_timeout_s, settings.worker.heartbeat_s)
    events = RecordingEvents()
    try:
        [waiting] = await queue_jobs(db, settings, 1, 1)
        relay.run(events)
        await asyncio.sleep(1.0)
        assert events.finished == {}  # no worker at all yet: the job waits for one
        await registry.register("sdxl-only", "host", "cuda:0", (), ("sdxl",))
        async with asyncio.timeout(30):
            while waiting not in events.finished:
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await db.close()
    job = events.finished[waiting]
    assert job.status == JobStatus.FAILED
    assert job.member_error.startswith("No image worker can run the model tiny now")
