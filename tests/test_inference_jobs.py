"""JobRunner in-process: progress throttling and failures turned into events."""

from __future__ import annotations

import pytest
import torch

from inference import jobs
from inference.jobs import JobRunner, ProgressReporter
from inference.protocol import JobCompleted, JobFailed, JobProgress, JobStarted, WorkerConfig
from inference.worker import CancelBook
from tests.inference_fixtures import runner_for, tiny_request


@pytest.fixture
def runner(tiny_model_spec, tiny_pipe, tmp_path) -> JobRunner:
    config = WorkerConfig(
        models=(tiny_model_spec,),
        default_model=tiny_model_spec.name,
        outputs_dir=str(tmp_path),
        preview_interval_s=3600,  # so only the final step is reported
    )
    return runner_for(tiny_pipe, config)


def test_progress_is_throttled_but_the_final_step_always_sent(runner):
    sent = []
    runner.run(tiny_request(job_id=7, steps=4), is_cancelled=lambda: False, send=sent.append)
    assert sent[0] == JobStarted(7)
    progress = [event for event in sent if isinstance(event, JobProgress)]
    # The first preview would come an hour into the pass: a short job sends only its end.
    assert [(event.step, event.preview_jpeg is not None) for event in progress] == [(4, False)]
    assert isinstance(sent[-1], JobCompleted)


def test_out_of_memory_tells_the_user_what_to_reduce(runner, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(jobs, "generate", out_of_memory)
    sent = []
    runner.run(tiny_request(job_id=8, seeds=(1, 2, 3, 4)), lambda: False, sent.append)
    failed = sent[-1]
    assert isinstance(failed, JobFailed)
    assert "4 image(s) at 64x64" in failed.message
    assert "smaller size or fewer images" in failed.message


def test_unexpected_errors_fail_the_job_with_a_short_message(runner, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom " * 200)

    monkeypatch.setattr(jobs, "generate", broken)
    sent = []
    runner.run(tiny_request(job_id=9), lambda: False, sent.append)
    failed = sent[-1]
    assert isinstance(failed, JobFailed)
    assert failed.message.startswith("Generation failed (RuntimeError: boom")
    assert len(failed.message) <= jobs.MAX_FAILURE_MESSAGE


def test_invalid_request_fails_naming_the_value(runner):
    sent = []
    runner.run(tiny_request(job_id=10, width=65), lambda: False, sent.append)
    assert isinstance(sent[-1], JobFailed) and "65" in sent[-1].message


def test_progress_reporter_sends_every_step_with_zero_interval():
    sent = []
    reporter = ProgressReporter(1, sent.append, interval_s=0, preview_max_side=64)
    for step in (1, 2, 3):
        reporter(step, 3, torch.zeros(1, 4, 8, 8))
    assert [(event.step, event.preview_jpeg is not None) for event in sent] == [
        (1, True),
        (2, True),
        (3, True),
    ]


def test_the_first_preview_comes_an_interval_into_each_pass(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    sent = []
    reporter = ProgressReporter(1, sent.append, interval_s=1.5, preview_max_side=64)
    latents = torch.zeros(1, 4, 8, 8)
    for second, step in ((0.0, 1), (0.5, 2), (1.4, 3), (1.6, 4), (2.0, 5), (3.2, 6), (3.3, 7)):
        clock[0] = 100.0 + second
        reporter(step, 7, latents)
    assert [(event.step, event.preview_jpeg is not None) for event in sent] == [(4, True), (6, True), (7, False)]
    # A second pass (a hires fix, a loopback) starts its own wait.
    sent.clear()
    for second, step in ((3.4, 1), (4.0, 2), (5.0, 3)):
        clock[0] = 100.0 + second
        reporter(step, 3, latents)
    assert [(event.step, event.preview_jpeg is not None) for event in sent] == [(3, True)]


def test_cancel_book_remembers_early_cancels_within_capacity():
    book = CancelBook(capacity=2)
    book.cancel(1)
    assert book.is_cancelled(1)
    book.forget(1)
    assert not book.is_cancelled(1)
    for job_id in (2, 3, 4):
        book.cancel(job_id)
    assert not book.is_cancelled(2) and book.is_cancelled(3) and book.is_cancelled(4)
