"""The worker as the bot runs it: a spawned process, typed messages over two one-way pipes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from inference.images import read_infotext
from inference.common.infotext import parse_infotext
from inference.common.protocol import (
    CancelJob, JobCanceled, JobCompleted, JobFailed, JobProgress, JobSaving, JobStarted, ModelSpec, RunJob, Shutdown,
    WorkerConfig, WorkerReady, WorkerStartupFailed,
)
from inference.worker import WORKER_NICENESS, run_worker
from tests.inference_fixtures import tiny_request, tiny_worker_config

# Generous limits that only stop a broken test from hanging; nothing here measures time.
STARTUP_LIMIT_S = 240
EVENT_LIMIT_S = 120

TERMINAL = (JobCompleted, JobFailed, JobCanceled)


class WorkerHandle:
    def __init__(self, config: WorkerConfig):
        context = multiprocessing.get_context("spawn")
        commands_recv, self.commands = context.Pipe(duplex=False)
        self.events, events_send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=run_worker, args=(config, commands_recv, events_send), daemon=True
        )
        self.process.start()
        # The child holds its own ends now; closing ours lets EOF propagate both ways.
        commands_recv.close()
        events_send.close()

    def next_event(self, limit_s: float = EVENT_LIMIT_S):
        assert self.events.poll(limit_s), "the worker sent nothing"
        return self.events.recv()

    def run_until_done(self, job_id: int) -> list:
        """Every event of one job, up to and including its terminal event."""
        received = []
        while True:
            event = self.next_event()
            assert getattr(event, "job_id", job_id) == job_id, event
            received.append(event)
            if isinstance(event, TERMINAL):
                return received

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


@pytest.fixture
def worker_config(tiny_model_spec, tmp_path) -> WorkerConfig:
    # A preview with every step, so the test sees them all.
    return tiny_worker_config(tiny_model_spec, tmp_path / "outputs", preview_interval_s=0, preview_max_side=64)


def test_worker_serves_jobs_cancels_and_failures(worker_config):
    worker = WorkerHandle(worker_config)
    try:
        ready = worker.next_event(STARTUP_LIMIT_S)
        assert isinstance(ready, WorkerReady), ready
        assert ready.device == "cpu" and ready.dtype == "float32"
        assert ready.models == ("tiny",)
        assert {"torch", "diffusers"} <= set(ready.versions)
        # It runs below the bot's priority, so the bot's loop gets a core first.
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == min(19, ours + WORKER_NICENESS)

        # A two-image job: started, a progress event per step with a preview, then the files.
        worker.commands.send(RunJob(tiny_request(job_id=1, seeds=(11, 12), steps=3)))
        events = worker.run_until_done(1)
        assert events[0] == JobStarted(1)
        progress = [event for event in events if isinstance(event, JobProgress)]
        assert [(event.step, event.total_steps) for event in progress] == [(1, 3), (2, 3), (3, 3)]
        assert all(event.preview_jpeg[:2] == b"\xff\xd8" for event in progress)
        completed = events[-1]
        assert isinstance(completed, JobCompleted), completed
        assert [image.seed for image in completed.images] == [11, 12]
        for image in completed.images:
            path = Path(image.path)
            assert path.is_file() and path.name == f"000001-{image.index}-{image.seed}.png"
            assert path.parent.parent == Path(worker_config.outputs_dir)
            assert read_infotext(path) == image.infotext
            assert parse_infotext(image.infotext)["Seed"] == str(image.seed)
            assert "Model hash" not in image.infotext  # a folder model has no A1111 hash
        assert completed.grid_path and Path(completed.grid_path).name == "000001-grid.png"
        assert Path(completed.grid_path).is_file()
        assert completed.seconds > 0

        # An unknown model fails the job, naming the model, and the worker keeps serving.
        worker.commands.send(RunJob(tiny_request(job_id=2, model="nope")))
        failed = worker.run_until_done(2)[-1]
        assert isinstance(failed, JobFailed) and "'nope'" in failed.message

        # A cancel while the job runs stops it between steps.
        worker.commands.send(RunJob(tiny_request(job_id=3, steps=400, sampler="Euler")))
        assert worker.next_event() == JobStarted(3)
        first_progress = worker.next_event()
        assert isinstance(first_progress, JobProgress)
        worker.commands.send(CancelJob(3))
        rest = worker.run_until_done(3)
        assert rest[-1] == JobCanceled(3)
        assert all(event.step < 400 for event in rest[:-1])

        # A cancel that arrives before its job: the job never starts.
        worker.commands.send(CancelJob(4))
        worker.commands.send(RunJob(tiny_request(job_id=4)))
        assert worker.run_until_done(4) == [JobCanceled(4)]

        # And the next job still completes.
        worker.commands.send(RunJob(tiny_request(job_id=5, steps=2)))
        done = worker.run_until_done(5)[-1]
        assert isinstance(done, JobCompleted) and done.grid_path is None

        worker.commands.send(Shutdown())
        worker.process.join(EVENT_LIMIT_S)
        assert worker.process.exitcode == 0
    finally:
        worker.stop()


def test_startup_fails_naming_the_missing_models(tmp_path, monkeypatch, tiny_model_spec):
    # The worker process reads these when it starts: offline, with an empty hub cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    config = WorkerConfig(
        models=(
            tiny_model_spec,
            ModelSpec("gone", str(tmp_path / "no-such-folder")),
            ModelSpec("uncached", "someone/some-model"),
        ),
        default_model="tiny",
        outputs_dir=str(tmp_path / "outputs"),
    )
    worker = WorkerHandle(config)
    try:
        event = worker.next_event(STARTUP_LIMIT_S)
        assert isinstance(event, WorkerStartupFailed), event
        assert "'gone'" in event.message and "does not exist" in event.message
        assert "'uncached'" in event.message and "HF_HUB_OFFLINE" in event.message
        worker.process.join(EVENT_LIMIT_S)
        assert worker.process.exitcode == 0
    finally:
        worker.stop()


class GatedWrites:
    """inference.images.save_pngs that holds each job's writes until the test lets them go,
    so the test knows, not guesses, what the worker did meanwhile. The writes themselves are
    the real ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_job: int | None = None):
        from inference import images

        self.write = images.save_pngs
        self.gates: dict[int, threading.Event] = {}
        self.fail_job = fail_job
        monkeypatch.setattr(images, "save_pngs", self)

    def release(self, job_id: int) -> None:
        self.gates.setdefault(job_id, threading.Event()).set()

    def __call__(self, files, compress_level: int = 1) -> None:  # type: ignore[no-untyped-def]
        job_id = int(Path(files[0][1]).name.split("-")[0])
        assert self.gates.setdefault(job_id, threading.Event()).wait(EVENT_LIMIT_S), "never released"
        if job_id == self.fail_job:
            raise OSError(28, "No space left on device")
        self.write(files, compress_level)


class InProcessWorker:
    """inference.worker's _serve on a thread of this process (run_worker's body without the
    logging set-up and the lower priority, which would reach the test process)."""

    def __init__(self, config: WorkerConfig):
        from inference.worker import _serve

        commands_recv, self.commands = multiprocessing.Pipe(duplex=False)
        self.events, events_send = multiprocessing.Pipe(duplex=False)
        self.thread = threading.Thread(target=_serve, args=(config, commands_recv, events_send), daemon=True)
        self.thread.start()
        assert isinstance(self.next_event(STARTUP_LIMIT_S), WorkerReady)

    def next_event(self, limit_s: float = EVENT_LIMIT_S):  # type: ignore[no-untyped-def]
        assert self.events.poll(limit_s), "the worker sent nothing"
        return self.events.recv()

    def events_until(self, wanted) -> list:  # type: ignore[no-untyped-def]
        received = [self.next_event()]
        while received[-1] != wanted and not (isinstance(wanted, type) and isinstance(received[-1], wanted)):
            received.append(self.next_event())
        return received

    def stop(self) -> None:
        self.commands.send(Shutdown())
        self.thread.join(EVENT_LIMIT_S)
        assert not self.thread.is_alive()


def test_a_jobs_pngs_are_written_while_the_next_job_generates(worker_config, monkeypatch):
    writes = GatedWrites(monkeypatch)
    worker = InProcessWorker(worker_config)
    try:
        worker.commands.send(RunJob(tiny_request(job_id=1, seeds=(1, 2), steps=2)))
        assert worker.events_until(JobSaving(1))[0] == JobStarted(1)
        # The GPU is free: the bot sends the next job, which runs to its last step while
        # job 1's PNGs are still held; it is not handed to the saver before they are done.
        worker.commands.send(RunJob(tiny_request(job_id=2, seeds=(3, 4), steps=2)))
        events = worker.events_until(JobStarted(2))
        while not (isinstance(events[-1], JobProgress) and events[-1].job_id == 2 and events[-1].step == 2):
            events.append(worker.next_event())
        assert not any(isinstance(event, JobCompleted) for event in events)
        assert not worker.events.poll(0.5), "nothing more comes while job 1 saves"
        writes.release(1)
        completed = worker.next_event()
        assert isinstance(completed, JobCompleted) and completed.job_id == 1
        assert all(Path(image.path).is_file() for image in completed.images)
        assert worker.next_event() == JobSaving(2)
        writes.release(2)
        completed = worker.next_event()
        assert isinstance(completed, JobCompleted) and completed.job_id == 2
    finally:
        for job_id in (1, 2):
            writes.release(job_id)
        worker.stop()


def test_a_write_that_fails_fails_its_job_and_the_worker_goes_on(worker_config, monkeypatch):
    writes = GatedWrites(monkeypatch, fail_job=1)
    worker = InProcessWorker(worker_config)
    try:
        worker.commands.send(RunJob(tiny_request(job_id=1, seeds=(1, 2), steps=1)))
        worker.events_until(JobSaving(1))
        writes.release(1)
        failed = worker.next_event()
        assert isinstance(failed, JobFailed) and failed.job_id == 1
        assert failed.message.startswith("Saving the images failed") and "No space left" in failed.detail
        writes.release(2)
        worker.commands.send(RunJob(tiny_request(job_id=2, steps=1)))
        assert isinstance(worker.events_until(JobCompleted)[-1], JobCompleted)
    finally:
        worker.stop()


def test_on_shutdown_the_job_being_saved_still_completes(worker_config, monkeypatch):
    """The worker exits with its files whole, never a PNG half-written."""
    writes = GatedWrites(monkeypatch)
    worker = InProcessWorker(worker_config)
    worker.commands.send(RunJob(tiny_request(job_id=1, seeds=(1, 2), steps=1)))
    worker.events_until(JobSaving(1))
    worker.commands.send(Shutdown())
    writes.release(1)
    completed = worker.next_event()
    assert isinstance(completed, JobCompleted) and completed.job_id == 1
    assert all(Path(image.path).is_file() for image in completed.images)
    assert not list(Path(worker_config.outputs_dir).rglob("*.partial"))
    worker.thread.join(EVENT_LIMIT_S)
    assert not worker.thread.is_alive()
