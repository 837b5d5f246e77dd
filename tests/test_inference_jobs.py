"""JobRunner in-process: progress throttling and failures turned into events."""

from __future__ import annotations

import pytest
import torch

from inference import jobs, previews, progress
from inference.jobs import JobRunner
from inference.progress import ProgressReporter
from inference.common.protocol import JobCompleted, JobFailed, JobProgress, JobStarted
from inference.worker import CancelBook
from tests.inference_fixtures import runner_for, tiny_request, tiny_worker_config


@pytest.fixture
def runner(tiny_model_spec, tiny_pipe, tmp_path) -> JobRunner:
    # Previews an hour apart, so only the final step is reported.
    config = tiny_worker_config(tiny_model_spec, tmp_path, preview_interval_s=3600)
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
    assert failed.message == "Generation failed. The error was logged for the server's moderators."
    assert failed.detail.startswith("RuntimeError: boom") and len(failed.detail) <= jobs.MAX_FAILURE_MESSAGE


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
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])  # previews cost nothing here
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


class SlowPreviewer(previews.Previewer):
    """Real approx previews that each take ``cost`` seconds of the test's clock (or, given
    several, the next of ``costs`` each time, the last one ever after)."""

    def __init__(self, clock: list[float], cost: float = 0.0, costs: tuple[float, ...] = ()):
        super().__init__(max_side=64)
        self.clock, self.costs = clock, list(costs or (cost,))

    def make(self, latents):
        self.clock[0] += self.costs.pop(0) if len(self.costs) > 1 else self.costs[0]
        return super().make(latents)


def previews_sent(reporter: ProgressReporter, clock: list[float], seconds_per_step: float, steps: int) -> list:
    """Run one pass of ``steps`` steps through the reporter; (step, with a preview) for each event."""
    sent: list = []
    reporter.send = sent.append
    start = clock[0]
    for step in range(1, steps + 1):
        clock[0] = start + step * seconds_per_step
        reporter(step, steps, torch.zeros(1, 4, 8, 8))
    return [(event.step, event.preview_jpeg is not None) for event in sent]


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    return clock


def test_previews_that_cost_more_than_their_budget_are_spaced_out(clock):
    """A preview of 95 ms (TAESD on a CPU, say) at one per 1.5 s would be 6.3% of sampling:
    once its cost is known, the next comes 0.095 / 2% = 4.75 s later, and so does the next
    job's first, since the worker's previewer remembers what a preview costs."""
    slow = SlowPreviewer(clock, cost=0.095)

    first_job = ProgressReporter(1, None, interval_s=1.5, preview_max_side=64, previewer=slow)
    # Steps of 0.5 s: the first preview 1.5 s into the pass, and the second 1.5 s later, since
    # the first at a shape pays one-time costs and is not taken as the cost; then 4.75 s apart.
    assert previews_sent(first_job, clock, 0.5, 40) == [
        (4, True), (7, True), (17, True), (27, True), (37, True), (40, False)
    ]
    assert first_job.interval(torch.zeros(1, 4, 8, 8)) == pytest.approx(4.75)

    next_job = ProgressReporter(2, None, interval_s=1.5, preview_max_side=64, previewer=slow)
    assert previews_sent(next_job, clock, 0.5, 12) == [(11, True), (12, False)]
    # Four images' latents cost four times one image's: their previews come 19 s apart.
    assert next_job.interval(torch.zeros(4, 4, 8, 8)) == pytest.approx(19.0)
    # A job of a cross-user batch keeps its share of the pass's budget: half, twice the wait.
    half = ProgressReporter(3, None, interval_s=1.5, preview_max_side=64, previewer=slow, budget=progress.PREVIEW_BUDGET / 2)
    assert half.interval(torch.zeros(1, 4, 8, 8)) == pytest.approx(9.5)
    # A cheap preview (1 ms) leaves the configured interval alone.
    cheap = SlowPreviewer(clock, cost=0.001)
    assert previews_sent(ProgressReporter(4, None, 1.5, 64, cheap), clock, 0.5, 8) == [(4, True), (7, True), (8, False)]
    assert cheap.seconds_per_value > 0
    # Every step asked for (interval 0) is every step, whatever a preview costs.
    every = ProgressReporter(5, None, interval_s=0, preview_max_side=64, previewer=slow)
    assert previews_sent(every, clock, 0.5, 3) == [(1, True), (2, True), (3, True)]


def test_a_preview_slowed_once_does_not_keep_previews_away(clock):
    """One preview of 0.4 s among 1 ms ones (it met a garbage collection) spaces previews 20 s
    apart, longer than the 4 s jobs that could measure them again: each job the budget kept
    from previewing halves the cost kept, until one previews, and the interval is 1.5 s again."""
    previewer = SlowPreviewer(clock, costs=(0.001, 0.4, 0.001))

    def job() -> list:
        return previews_sent(ProgressReporter(1, None, 1.5, 64, previewer), clock, 0.5, 8)

    assert job() == [(4, True), (7, True), (8, False)]  # the second preview took 0.4 s
    assert ProgressReporter(2, None, 1.5, 64, previewer).interval(torch.zeros(1, 4, 8, 8)) == pytest.approx(20.0)
    held_back = 0
    while job() == [(8, False)]:
        held_back += 1
        assert held_back < 5, "previews never came back"
    assert held_back == 3  # 20 s, 10 s and 5 s were each longer than a job's 3.5 s of sampling
    assert ProgressReporter(3, None, 1.5, 64, previewer).interval(torch.zeros(1, 4, 8, 8)) == 1.5


def test_cancel_book_remembers_early_cancels_within_capacity():
    book = CancelBook(capacity=2)
    book.cancel(1)
    assert book.is_cancelled(1)
    book.forget(1)
    assert not book.is_cancelled(1)
    for job_id in (2, 3, 4):
        book.cancel(job_id)
    assert not book.is_cancelled(2) and book.is_cancelled(3) and book.is_cancelled(4)
