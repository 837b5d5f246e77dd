"""Live progress of a running job: generate()'s step callbacks, throttled into JobProgress
events with previews that stay within a budget of sampling time. Apart from inference.jobs,
which runs the job, because batching and the benchmarks report progress the same way."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from inference import previews
from inference.common.protocol import Event, JobProgress

log = logging.getLogger(__name__)

Send = Callable[[Event], None]

# Live previews may take at most this share of sampling time (ProgressReporter).
PREVIEW_BUDGET = 0.02


class ProgressReporter:
    """Turns generate()'s on_step calls into JobProgress events, throttled.

    At most one event per interval (each with a preview), the first one an interval into
    each pass, so previews cost little and the bot never has more to show than Discord's edit
    rate allows; the final step is always sent. The interval is ``interval_s``, or longer
    where a preview costs more than PREVIEW_BUDGET of it (TAESD on a CPU, say): previews stay
    under that share of sampling, and the message still moves with each one. ``interval_s``
    0 asks for every step, whatever it costs (tests, benchmarks). In a cross-user batch each
    job's reporter previews its own images during one pass: ``budget`` is then its share.
    Previews are made by ``previewer`` (the worker's preview_method; "approx" without one),
    and what they cost is measured: ``preview_seconds``, logged per pass when over budget.
    """

    def __init__(
        self,
        job_id: int,
        send: Send,
        interval_s: float,
        preview_max_side: int,
        previewer: previews.Previewer | None = None,
        budget: float = PREVIEW_BUDGET,
    ):
        self.job_id = job_id
        self.send = send
        self.interval_s = interval_s
        self.budget = budget
        self.preview_max_side = preview_max_side
        self.previewer = previewer or previews.Previewer(max_side=preview_max_side)
        self._last_sent = float("-inf")
        self.preview_seconds = 0.0
        self.previews_made = 0
        self._pass_started: float | None = None
        self._pass_preview_seconds = 0.0
        self._pass_previews = 0
        self._pass_held_back = False  # an event was due by interval_s but the budget held it

    def __call__(self, step: int, total_steps: int, latents: torch.Tensor | None) -> None:
        now = time.monotonic()
        if self._pass_started is None:
            self._pass_started = now
            # The first steps' latents are noise: the first preview comes an interval into the
            # pass, so a job shorter than that sends none (only its final step), and the bot
            # uploads nothing while it runs.
            self._last_sent = now
        waited = now - self._last_sent
        due = self.interval_s <= 0 or waited >= self.interval(latents)
        if not due and waited >= self.interval_s:
            self._pass_held_back = True
        if step >= total_steps:
            self._end_pass(now, latents)
        if not due and step < total_steps:
            return
        preview = self._preview(latents) if due and latents is not None else None
        self._last_sent = now
        self.send(JobProgress(self.job_id, step, total_steps, preview))

    def interval(self, latents: torch.Tensor | None) -> float:
        """Seconds between two events: ``interval_s``, or what keeps a preview of these
        latents, at what the last one cost, within ``budget`` of sampling time."""
        expected = 0.0 if latents is None else self.previewer.seconds_per_value * latents.numel()
        return max(self.interval_s, expected / self.budget)

    def _preview(self, latents: torch.Tensor) -> bytes | None:
        started = time.perf_counter()
        try:
            return self.previewer.make(latents)
        except Exception:  # a preview is a nicety: never fail a job over one
            log.exception("job %s: preview failed", self.job_id)
            return None
        finally:
            spent = time.perf_counter() - started
            self.preview_seconds += spent
            self._pass_preview_seconds += spent
            self._pass_previews += 1
            self.previews_made += 1
            # Kept by the worker's previewer, so the next job's first preview is spaced too.
            self.previewer.record_cost(spent, latents)

    def _end_pass(self, now: float, latents: torch.Tensor | None) -> None:
        """Log what previews cost; tell the previewer when its cost kept a pass from any."""
        if self._pass_held_back and not self._pass_previews:
            self.previewer.held_back()
        self._log_preview_cost(now, latents)
        self._pass_previews, self._pass_held_back = 0, False

    def _log_preview_cost(self, now: float, latents: torch.Tensor | None) -> None:
        """Say when previews took more than their budget, and when they were spaced out."""
        elapsed = now - (self._pass_started or now)
        share = self._pass_preview_seconds / elapsed if elapsed > 0 else 0.0
        interval = self.interval(latents)
        level = logging.WARNING if share > self.budget and elapsed > 1.0 else logging.DEBUG
        if self.interval_s > 0 and interval > self.interval_s:
            level = max(level, logging.INFO)
        log.log(level, "job %s: previews took %.1f ms, %.2f%% of %.2f s of sampling (one every %.1f s)",
                self.job_id, self._pass_preview_seconds * 1000, share * 100, elapsed,
                interval if self.interval_s > 0 else 0.0)
        self._pass_started, self._pass_preview_seconds = None, 0.0
