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
from db.models import JobStatus
from db.session import Database
from tests.test_workers_cli import migrate_to, sqlite_url
from tests.worker_processes import START_TIMEOUT_S, queue_jobs, start_worker, stop_worker, worker_config, worker_log


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


async def test_a_separate_workers_jobs_reach_the_bots_sink(tmp_path, tiny_model_dir):
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(migrate_to, url, "head")
    config = worker_config(tmp_path, url, tiny_model_dir, max_batch_images=2)
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
        assert await stop_worker(worker) == 0, worker_log(config, "gpu0")
    finally:
        if worker.poll() is None:
            worker.kill()
        await relay.stop()
        await db.close()
    for job_id in job_ids:
        job = events.finished[job_id]
        assert job.status == JobStatus.COMPLETED and len(job.images) == 1 and job.worker_name == "gpu0"
        assert job.images[0].path.startswith(str(tmp_path / "outputs" / "gpu0"))
    assert set(events.started) <= set(job_ids)


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
