"""The dispatcher's half of background saving: a job whose images are being written
(JobSaving) no longer holds the worker, so the next job goes out, and the saving job stays
the dispatcher's until its final event, crash included.

The worker's half, that the next job really runs while the PNGs are written, is tested on the
real worker in test_inference_worker.py; bot tests run both halves together. Here the worker
process is replaced by its transport alone (what the dispatcher sent, and events delivered
when the test says), so the test decides exactly when each event arrives.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.config import QueueSettings
from bot.jobs import dispatcher as dispatcher_module
from bot.jobs.dispatcher import Dispatcher
from bot.jobs.queue import JobQueue
from bot.jobs.worker_process import WorkerExited
from db.models import Job, JobStatus
from inference.common.protocol import (
    ImageResult,
    JobCompleted,
    JobSaving,
    JobStarted,
    ModelSpec,
    RunJob,
    WorkerConfig,
    WorkerReady,
)
from tests.test_queue import ALICE, BOB, params

LIMIT_S = 10  # only stops a broken test from hanging


class WorkerTransport:
    """Stands in for bot.jobs.worker_process.WorkerProcess: records commands, delivers events."""

    started: list[WorkerTransport] = []

    def __init__(self, config, on_event, generation=0, start_method="spawn"):  # type: ignore[no-untyped-def]
        self.deliver = on_event
        self.generation = generation
        self.sent: list = []

    def start(self) -> None:
        WorkerTransport.started.append(self)
        self.deliver(WorkerReady(device="cpu", dtype="float32", models=("tiny",)))

    def send(self, command) -> bool:  # type: ignore[no-untyped-def]
        self.sent.append(command)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        pass


class Recorded:
    """The dispatcher's JobEvents, kept."""

    def __init__(self) -> None:
        self.finished: list[int] = []
        self.requeued: list[int] = []

    def job_started(self, job) -> None:  # type: ignore[no-untyped-def]
        pass

    def job_progress(self, job, progress) -> None:  # type: ignore[no-untyped-def]
        pass

    def model_loading(self, job, loading) -> None:  # type: ignore[no-untyped-def]
        pass

    def job_finished(self, job) -> None:  # type: ignore[no-untyped-def]
        self.finished.append(job.id)

    def job_requeued(self, job, reason: str) -> None:  # type: ignore[no-untyped-def]
        self.requeued.append(job.id)

    def queue_moved(self, waiting) -> None:  # type: ignore[no-untyped-def]
        pass


async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(LIMIT_S):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def running(database, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(dispatcher_module, "WorkerProcess", WorkerTransport)
    WorkerTransport.started.clear()
    queue = JobQueue(database, QueueSettings(max_pending_per_user=5, max_attempts=2))
    config = WorkerConfig(
        models=(ModelSpec("tiny", "unused"),), default_model="tiny", outputs_dir=str(tmp_path), max_batch_images=1
    )
    dispatcher = Dispatcher(queue, config)
    await dispatcher.start_worker()
    recorded = Recorded()
    dispatcher.run(recorded)
    yield queue, dispatcher, recorded
    await dispatcher.stop()


def run_jobs(transport: WorkerTransport) -> list[int]:
    return [command.request.job_id for command in transport.sent if isinstance(command, RunJob)]


async def first_saving_and_second_sent(
    queue: JobQueue, dispatcher: Dispatcher, transport: WorkerTransport
) -> tuple[Job, Job]:
    """Two members' jobs queued; the first runs, then saves: the second goes out."""
    first = await queue.enqueue(params("a lighthouse"), ALICE)
    second = await queue.enqueue(params("a harbour"), BOB)
    dispatcher.wake()
    await until(lambda: run_jobs(transport) == [first.id], "the first job sent")
    transport.deliver(JobStarted(first.id))
    await asyncio.sleep(0.1)
    assert run_jobs(transport) == [first.id], "the worker is busy with the first job"
    transport.deliver(JobSaving(first.id))
    await until(lambda: run_jobs(transport) == [first.id, second.id], "the second job sent")
    return first, second


async def test_the_next_job_goes_out_once_the_last_one_is_saving(running):
    queue, dispatcher, recorded = running
    transport = WorkerTransport.started[-1]
    first, second = await first_saving_and_second_sent(queue, dispatcher, transport)
    assert (await queue.get(first.id)).status == JobStatus.RUNNING  # until its final event
    assert dispatcher.current.id == second.id and set(dispatcher.running) == {first.id, second.id}

    image = ImageResult(0, 1, None, "/nowhere.png", "a lighthouse", 64, 64)
    transport.deliver(JobCompleted(first.id, (image,), None, 1.0))
    await until(lambda: recorded.finished == [first.id], "the first job finished")
    assert (await queue.get(first.id)).status == JobStatus.COMPLETED
    assert set(dispatcher.running) == {second.id} and not dispatcher.saving


@pytest.mark.allow_error_logs  # the crash is logged as the error it is
async def test_a_crash_while_a_job_saves_requeues_it_with_the_job_after_it(running):
    queue, dispatcher, recorded = running
    transport = WorkerTransport.started[-1]
    first, second = await first_saving_and_second_sent(queue, dispatcher, transport)
    transport.deliver(WorkerExited(exitcode=-9, generation=transport.generation))
    await until(lambda: sorted(recorded.requeued) == sorted([first.id, second.id]), "both re-queued")
    # The new worker gets them again; nothing was lost.
    await until(lambda: len(WorkerTransport.started) == 2 and run_jobs(WorkerTransport.started[-1]), "resent")
    assert not dispatcher.saving
    assert {(await queue.get(job.id)).status for job in (first, second)} <= {JobStatus.PENDING, JobStatus.RUNNING}


async def test_a_stop_puts_the_job_being_saved_back_in_the_queue(running):
    """Its final event would come after the dispatcher stopped listening, and a row marked
    done while the bot closes would never be delivered: it runs again after the restart."""
    queue, dispatcher, recorded = running
    first, second = await first_saving_and_second_sent(queue, dispatcher, WorkerTransport.started[-1])
    await dispatcher.stop()
    assert [(await queue.get(job.id)).status for job in (first, second)] == [JobStatus.PENDING] * 2
    assert not dispatcher.running and not dispatcher.saving


async def test_a_lone_job_costs_one_claim_and_a_job_queued_after_it_still_goes_out(running, monkeypatch):
    """The claim that took a lone job saw nothing else waiting: the claims its saving and its
    end would make come back empty, and are skipped. A job queued meanwhile wakes the
    dispatcher, and is claimed as soon as the worker is free."""
    queue, dispatcher, recorded = running
    transport = WorkerTransport.started[-1]
    await dispatcher.wake_and_wait()  # its first look at the queue is done, as in a running bot
    claims: list[list[int]] = []
    claim = queue.claim

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        made = await claim(*args, **kwargs)
        claims.append([job.id for job in made.jobs])
        return made

    monkeypatch.setattr(queue, "claim", counted)
    image = ImageResult(0, 1, None, "/nowhere.png", "a lighthouse", 64, 64)
    lone = await queue.enqueue(params("a lighthouse"), ALICE)
    await dispatcher.wake_and_wait()  # as a command does
    await until(lambda: run_jobs(transport) == [lone.id], "the lone job sent")
    transport.deliver(JobStarted(lone.id))
    transport.deliver(JobSaving(lone.id))
    transport.deliver(JobCompleted(lone.id, (image,), None, 1.0))
    await until(lambda: recorded.finished == [lone.id], "the lone job finished")
    assert claims == [[lone.id]]

    # Queued while a job runs: claimed when that job saves, not before.
    busy = await queue.enqueue(params("a harbour"), ALICE)
    await dispatcher.wake_and_wait()  # as a command does
    await until(lambda: run_jobs(transport) == [lone.id, busy.id], "the next job sent")
    later = await queue.enqueue(params("a mill"), BOB)
    await dispatcher.wake_and_wait()  # as a command does
    await asyncio.sleep(0.1)
    assert run_jobs(transport) == [lone.id, busy.id]
    transport.deliver(JobSaving(busy.id))
    await until(lambda: run_jobs(transport) == [lone.id, busy.id, later.id], "the job queued meanwhile sent")
    assert claims == [[lone.id], [busy.id], [later.id]]
