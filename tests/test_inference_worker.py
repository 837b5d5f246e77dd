"""The worker as the bot runs it: a spawned process, typed messages over two one-way pipes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from inference.images import read_infotext
from inference.infotext import parse_infotext
from inference.protocol import (
    CancelJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobStarted,
    ModelSpec,
    RunJob,
    Shutdown,
    WorkerConfig,
    WorkerReady,
    WorkerStartupFailed,
)
from inference.worker import WORKER_NICENESS, run_worker
from tests.inference_fixtures import tiny_request

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
    return WorkerConfig(
        models=(tiny_model_spec,),
        default_model=tiny_model_spec.name,
        outputs_dir=str(tmp_path / "outputs"),
        preview_interval_s=0,  # a preview with every step, so the test sees them all
        preview_max_side=64,
    )


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
