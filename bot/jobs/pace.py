"""The queue's pace: seconds per unit of work (bot.jobs.cost), from the last completed jobs,
which every ETA multiplies.

Every new job's answer and every /queue needs it, so it is kept in memory: read once, then
each job this process completes is added to it as it is recorded, without a read. The
figure is read again after a minute, which takes in what this process did not write itself
(a separate worker's completions, rows written by hand).
"""

from __future__ import annotations

import time
from collections import deque

from sqlalchemy import select

from db.models import Job, JobStatus

RECENT_JOBS = 20
EXPIRY_S = 60.0


class Pace:
    def __init__(self) -> None:
        self._recent: deque[tuple[float, float]] | None = None  # (seconds, cost), newest last
        self._read_at = 0.0  # time.monotonic()
        self._completions = 0  # counted, to tell a read that a completion raced it

    async def seconds_per_unit(self, session, initial: float) -> float:  # type: ignore[no-untyped-def]
        """The pace; ``initial`` ([queue] initial_seconds_per_unit) until a job has completed."""
        if self._recent is None or time.monotonic() - self._read_at >= EXPIRY_S:
            completions, read_at = self._completions, time.monotonic()
            recent = await _recent_jobs(session)
            # A job completed during the read may be missing from it, or in it and added
            # again by completed(): the figure is used, not kept.
            if self._completions != completions:
                return _per_unit(recent, initial)
            self._recent, self._read_at = recent, read_at
        return _per_unit(self._recent, initial)

    def completed(self, seconds: float | None, cost: float) -> None:
        """A job this process recorded completed (after its transaction committed)."""
        self._completions += 1
        if self._recent is not None and seconds is not None and cost > 0:
            self._recent.append((seconds, cost))


async def _recent_jobs(session) -> deque[tuple[float, float]]:  # type: ignore[no-untyped-def]
    rows = (
        await session.execute(
            select(Job.seconds, Job.cost)
            .where(Job.status == JobStatus.COMPLETED, Job.seconds.is_not(None), Job.cost > 0)
            .order_by(Job.id.desc())
            .limit(RECENT_JOBS)
        )
    ).all()
    return deque(((row.seconds, row.cost) for row in reversed(rows)), maxlen=RECENT_JOBS)


def _per_unit(recent: deque[tuple[float, float]], initial: float) -> float:
    units = sum(cost for _, cost in recent)
    if not recent or units <= 0:
        return initial
    return sum(seconds for seconds, _ in recent) / units
