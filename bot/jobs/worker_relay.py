"""The bot's side of separate workers ([worker] builtin = false): no worker of its own, only
the job rows, relayed to the same JobEvents sink (Discord's, bot/delivery.py) as the built-in
Dispatcher's events.

WorkerRelay stands where the Dispatcher stands (SDBot.dispatcher): it wakes the workers when a
job is queued (NOTIFY on PostgreSQL; SQLite's workers poll), cancels, and watches the active
jobs' rows: a job claimed is "started", a new progress step (with its preview) is "progress",
a job back to pending is "requeued", a final status is "finished". On PostgreSQL a
notification from a worker wakes it at once; a poll catches anything a lost notification hid.
It also hands back the jobs of workers that stopped heartbeating (as every worker does), and
fails, with a message to its member, a job whose model no live worker can load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import undefer

from bot.jobs.db_events import JOBS_CHANNEL, WAKE_CHANNEL, Listener, notify
from bot.jobs.dispatcher import REFRESHED_POSITIONS, CompletionRow, JobEvents, TargetCheck, plain_wait
from bot.jobs.leases import LEASE_LOST_REASON, WorkerRegistry
from bot.jobs.queue import CancelOutcome, JobQueue
from db.models import ACTIVE_STATUSES, Job, JobStatus
from inference.common.protocol import JobProgress, ModelSpec

log = logging.getLogger(__name__)

POSTGRES_POLL_S = 1.0  # behind the notifications: a lost one costs this much
SQLITE_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class _Seen:
    status: str
    attempts: int
    step: int | None


def no_worker_message(model: str) -> str:
    return (
        f"No image worker can run the model {model} now: the workers running serve other models. "
        "Pick another model, or ask an admin to start a worker for this one."
    )


class WorkerRelay:
    """Dispatcher's place in a bot whose workers run apart (the methods SDBot uses)."""

    def __init__(self, queue: JobQueue, lease_timeout_s: float, heartbeat_s: float) -> None:
        self.queue = queue
        self.db = queue.db
        self.registry = WorkerRegistry(queue, lease_timeout_s)
        self.heartbeat_s = heartbeat_s
        self.events: JobEvents | None = None
        self.target_check: TargetCheck | None = None
        # The workers write their completions: the outcome's entry comes after (bot.delivery).
        self.completion_row: CompletionRow | None = None
        # As Dispatcher.external_wait: how the relay waits on the workers (a test harness's).
        self.external_wait: Callable[..., Awaitable[Any]] = plain_wait
        self.ready = None
        self.running: dict[int, Job] = {}  # the jobs the workers hold, as last seen
        self._seen: dict[int, _Seen] = {}
        self._listener = Listener(self.db, JOBS_CHANNEL)
        self._task: asyncio.Task[None] | None = None
        self._wakes: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Job | None:
        return next(iter(self.running.values()), None)

    def run(self, events: JobEvents) -> asyncio.Task[None]:
        self.events = events
        self._task = asyncio.create_task(self._run(), name="sdbot-worker-relay")
        return self._task

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop relaying; the workers go on (their jobs are theirs, and delivered at the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._listener.close()

    def wake(self) -> None:
        task = asyncio.create_task(notify(self.db, WAKE_CHANNEL))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def wake_and_wait(self, limit_s: float = 0.0) -> None:
        await notify(self.db, WAKE_CHANNEL)

    async def cancel(self, job_id: int) -> tuple[Job, CancelOutcome]:
        """Cancel a job; a worker running it sees its row canceled at its next heartbeat and stops."""
        job, outcome = await self.queue.request_cancel(job_id)
        if outcome is CancelOutcome.CANCELED:
            self._finished(job)
        return job, outcome

    def update_models(self, models: tuple[ModelSpec, ...]) -> None:
        log.info("the model list changed; separate workers read theirs from their own config")

    def kill_worker(self) -> None:
        log.warning("no worker of its own to kill: the workers run apart")

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._listener.open()
        poll_s = POSTGRES_POLL_S if self.db.dialect == "postgresql" else SQLITE_POLL_S
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while True:
            try:
                if loop.time() >= next_beat:
                    await self._expire_leases()
                    await self._refuse_unroutable()
                    next_beat = loop.time() + self.heartbeat_s
                await self.scan()
            except Exception:  # a database hiccup must not stop the deliveries for good
                log.exception("reading the workers' job rows failed; trying again")
            await self.external_wait(self._listener.wait(poll_s), reason="waiting for the workers' job rows")

    async def _expire_leases(self) -> None:
        for job, _recovery in await self.registry.expire_leases():
            log.warning("job %s: its worker stopped heartbeating; back to the queue", job.id)

    async def _refuse_unroutable(self) -> None:
        """Fail the waiting jobs whose model no live worker can load, saying so (while at least
        one worker lives: with none, jobs wait for the workers to come back)."""
        if not any(worker.live for worker in await self.registry.workers()):
            return
        async with self.db.session() as session:
            models = set(await session.scalars(select(Job.model).where(Job.status == JobStatus.PENDING).distinct()))
        for model in await self.registry.unroutable_models(models):
            for job in await self.queue.fail_waiting(model, no_worker_message(model)):
                log.info("job %s failed: no live worker can load %s", job.id, model)
                self._seen.pop(job.id, None)
                if self.events is not None:
                    self.events.job_finished(await self.queue.require(job.id))

    async def scan(self) -> None:
        """Compare the active jobs' rows (and those active when last seen) with what was seen."""
        async with self.db.session() as session:
            rows = (await session.execute(
                select(Job.id, Job.status, Job.attempts, Job.progress_step).where(
                    or_(Job.status.in_(ACTIVE_STATUSES), Job.id.in_(list(self._seen)))
                )
            )).all()
        moved = False
        for row in sorted(rows, key=lambda row: row.id):
            seen, now = self._seen.get(row.id), _Seen(row.status, row.attempts, row.progress_step)
            if seen == now:
                continue
            self._seen[row.id] = now
            if row.status == JobStatus.RUNNING:
                if seen is None or seen.status != JobStatus.RUNNING or seen.attempts != row.attempts:
                    moved = True
                    await self._started(row.id)
                elif row.progress_step is not None and row.progress_step != seen.step:
                    await self._progress(row.id)
            elif row.status == JobStatus.PENDING:
                if seen is not None and seen.status == JobStatus.RUNNING:
                    self.running.pop(row.id, None)
                    if self.events is not None:
                        self.events.job_requeued(await self.queue.require(row.id), LEASE_LOST_REASON)
            else:
                self._seen.pop(row.id)
                if seen is not None:  # a job seen active: its member waits for the outcome
                    self._finished(await self.queue.require(row.id))
        if moved and self.events is not None:
            self.events.queue_moved(await self.queue.active_entries(waiting_only=True, first=REFRESHED_POSITIONS))

    async def _started(self, job_id: int) -> None:
        job = await self.queue.require(job_id)
        reason = await self.target_check(job) if self.target_check is not None else None
        if reason is not None:  # its server, channel or member is gone: stop it (the worker sees)
            log.info("job %s canceled as it started: %s", job_id, reason)
            await self.cancel(job_id)
            return
        self.running[job_id] = job
        if self.events is not None:
            self.events.job_started(job)

    async def _progress(self, job_id: int) -> None:
        async with self.db.session() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id).options(undefer(Job.progress_preview)))
        if job is None or self.events is None or job.progress_step is None:
            return
        progress = JobProgress(job.id, job.progress_step, job.progress_total or job.steps, job.progress_preview)
        self.events.job_progress(self.running.get(job_id, job), progress)

    def _finished(self, job: Job) -> None:
        self.running.pop(job.id, None)
        self._seen.pop(job.id, None)
        if self.events is not None:
            self.events.job_finished(job)


