"""Separate workers' rows (the workers table) and their leases.

A worker started on its own (`sdbot worker`, bot/jobs/worker_agent.py) keeps a row: its host,
device, the models it has loaded and can load, its current job and its heartbeat. The jobs it
claims carry its name and a lease token (JobQueue.claim_batch with a ClaimingWorker). A worker
whose heartbeat is older than the lease timeout is gone (killed, frozen, its machine or network
lost): any live worker, or the bot, hands its running jobs back to the queue, counted as an
attempt (JobQueue.release_interrupted, as a crash of the built-in worker is), and a worker
that comes back late finds its token no longer on the job, so it cannot complete it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from bot.config import WorkerSettings
from bot.jobs.queue import JobQueue, Recovery
from bot.jobs.routing import model_list
from db.base import utcnow
from db.models import Job, JobStatus, Worker

LEASE_LOST_REASON = "The image worker running your job stopped answering."


class WorkerNameInUse(Exception):
    """A live worker of this name already heartbeats: two would take each other's jobs."""


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as /admin workers and /queue show it."""

    name: str
    host: str
    device: str
    loaded: tuple[str, ...]
    loadable: tuple[str, ...]
    current_job_id: int | None
    jobs_done: int
    started_at: datetime
    live: bool

    @property
    def jobs_per_minute(self) -> float:
        minutes = max((utcnow() - self.started_at).total_seconds() / 60, 1 / 60)
        return self.jobs_done / minutes


def model_names(stored: str) -> tuple[str, ...]:
    return tuple(name for name in stored.split("|") if name)


class WorkerRegistry:
    def __init__(self, queue: JobQueue, lease_timeout_s: float) -> None:
        self.queue = queue
        self.db = queue.db
        self.lease_timeout_s = lease_timeout_s

    def _live_since(self) -> datetime:
        return utcnow() - timedelta(seconds=self.lease_timeout_s)

    async def register(
        self, name: str, host: str, device: str, loaded: Collection[str], loadable: Collection[str]
    ) -> None:
        """This worker's row, created or taken over from a stopped or dead worker of its name;
        WorkerNameInUse when a live one has it."""
        now = utcnow()
        async with self.db.session() as session, session.begin():
            row = await session.scalar(select(Worker).where(Worker.name == name).with_for_update())
            if row is not None and row.stopped_at is None and row.heartbeat_at and row.heartbeat_at >= self._live_since():
                raise WorkerNameInUse(
                    f"A worker named {name!r} is running already (on {row.host}, heartbeat "
                    f"{(now - row.heartbeat_at).total_seconds():.0f} s ago): give this one another --name."
                )
            if row is None:
                row = Worker(name=name)
                session.add(row)
            row.host, row.device = host, device
            row.models_loaded, row.models_loadable = model_list(loaded), model_list(loadable)
            row.heartbeat_at, row.started_at, row.stopped_at = now, now, None
            row.current_job_id, row.jobs_done = None, 0

    async def heartbeat(self, name: str, current_job_id: int | None, loaded: Collection[str], jobs_done: int) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(Worker).where(Worker.name == name).values(
                    heartbeat_at=utcnow(), current_job_id=current_job_id,
                    models_loaded=model_list(loaded), jobs_done=jobs_done,
                )
            )

    async def stopped(self, name: str) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(Worker).where(Worker.name == name).values(stopped_at=utcnow(), current_job_id=None)
            )

    async def expire_leases(self) -> list[tuple[Job, Recovery]]:
        """Hand back the running jobs of workers whose heartbeat is older than the lease
        timeout (or that stopped, or whose row is gone): each runs again (the attempt counted)
        or, past [queue] max_attempts, fails. Safe to run from every worker at once: each
        release is fenced by the job's lease token."""
        live = select(Worker.name).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= self._live_since())
        async with self.db.session() as session:
            orphans = (await session.execute(
                select(Job.id, Job.lease_token).where(
                    Job.status == JobStatus.RUNNING, Job.worker_name.is_not(None), Job.worker_name.not_in(live)
                )
            )).all()
        released = []
        for job_id, token in orphans:
            job, recovery = await self.queue.release_interrupted(job_id, LEASE_LOST_REASON, lease_token=token)
            if job is not None and recovery is not Recovery.UNCHANGED:
                released.append((job, recovery))
        return released

    async def lease_tokens(self, job_ids: Collection[int]) -> dict[int, str | None]:
        """The token each of these jobs is held under while running (None: not running any more)."""
        async with self.db.session() as session:
            rows = (await session.execute(
                select(Job.id, Job.status, Job.lease_token).where(Job.id.in_(list(job_ids)))
            )).all()
        return {row.id: row.lease_token if row.status == JobStatus.RUNNING else None for row in rows}

    async def workers(self) -> list[WorkerStatus]:
        """Every worker that has not stopped, live or not, by name."""
        since = self._live_since()
        async with self.db.session() as session:
            rows = list(await session.scalars(select(Worker).where(Worker.stopped_at.is_(None)).order_by(Worker.name)))
        return [
            WorkerStatus(
                row.name, row.host, row.device, model_names(row.models_loaded), model_names(row.models_loadable),
                row.current_job_id, row.jobs_done, row.started_at, bool(row.heartbeat_at and row.heartbeat_at >= since),
            )
            for row in rows
        ]

    async def unroutable_models(self, models: Collection[str]) -> set[str]:
        """Those of these models that no live worker can load."""
        since = self._live_since()
        async with self.db.session() as session:
            stored = await session.scalars(
                select(Worker.models_loadable).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= since)
            )
            loadable = {name for text in stored for name in model_names(text)}
        return set(models) - loadable




def describe_workers(statuses: list[WorkerStatus]) -> list[str]:
    """/admin workers: one line per worker, for Discord (markdown)."""
    lines = []
    for worker in statuses:
        state = "silent (its jobs go back to the queue)" if not worker.live else (
            f"running #{worker.current_job_id}" if worker.current_job_id is not None else "idle"
        )
        lines.append(
            f"**{worker.name}** on {worker.host} ({worker.device}) · {state} · "
            f"loaded: {', '.join(worker.loaded) or 'nothing yet'} · can load: {', '.join(worker.loadable)} · "
            f"{worker.jobs_done} jobs, {worker.jobs_per_minute:.1f}/min"
        )
    return lines


async def worker_lines(queue: JobQueue, settings: WorkerSettings, builtin_job_id: int | None) -> list[str]:
    """/admin workers: the bot's own worker (``builtin_job_id``: the job it runs), or the
    separate workers' rows."""
    if settings.builtin:
        state = f"running #{builtin_job_id}" if builtin_job_id is not None else "idle"
        return [f"The bot's own worker on {settings.device} · {state}. Several GPUs: docs/scaling.md."]
    statuses = await WorkerRegistry(queue, settings.lease_timeout_s).workers()
    return describe_workers(statuses) or ["No worker is running: start one with `sdbot worker`."]


def workers_summary(statuses: list[WorkerStatus]) -> str:
    """/queue's line about the workers: how many live, how many busy."""
    live = [worker for worker in statuses if worker.live]
    busy = sum(worker.current_job_id is not None for worker in live)
    return f"{len(live)} worker{'' if len(live) == 1 else 's'} ({busy} busy)"
