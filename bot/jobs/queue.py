"""The job queue, kept in the database: fair across users, durable across restarts.

Every operation is one short transaction and returns a typed result. The row is the truth:
a job is written here before its user is told it is queued, a worker gets a job only by
claiming its row (an UPDATE that succeeds for one claimant only), and a cancel that lands
between a claim and the run wins because the claim re-checks the status.

Fairness is by GPU time (each job's cost, bot.jobs.cost): the next job belongs to the member
who used the least of it recently (the cost of their jobs started in the last [queue]
usage_window_hours, the running ones included), and is that member's oldest pending job; ties
go to the oldest job. One member's twenty jobs therefore interleave with everyone else's, and
a member with huge jobs gets their share of the GPU rather than a turn as long as anyone's.
Seen ahead, a waiting job runs in the order of its "start tag": its member's recent use plus
the cost of their jobs waiting before it (bot.jobs.fairness; start-time fair queuing), kept in
its row and written anew where something other than a claim changes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from bot.config import QueueSettings
from bot.errors import JobNotFound, QueueFull, TooCostly
from bot.jobs.cost import cost_refusal, job_cost
from bot.jobs.params import JobParameters
from bot.jobs.claims import Claims
from bot.jobs.fairness import ahead_of, fair_order, member_use, retag, usage_since
from bot.jobs.job_rows import job_columns
from bot.jobs.members import MemberRows
from bot.jobs.pace import Pace
from bot.jobs.privacy import PrivacyIndex
from db.base import Base, utcnow
from db.models import ACTIVE_STATUSES, ERROR_DETAIL_MARK, Image, Job, JobStatus, User, is_row_id
from db.session import Database
from inference.common.protocol import JobCompleted

_CLAIMED_MEANWHILE = object()  # entry(): the job left the waiting list between two reads


# INSERT ... ON CONFLICT, the same on both backends (db.session.Database.dialect).
_UPSERTS = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


def _member_row(dialect: str, user_id: int, name: str, **columns: Any):  # type: ignore[no-untyped-def]
    """Write a member's row, created or updated, in one statement: two of their commands at
    once (a new member's double click) must not both find no row and both insert one."""
    values = {"name": name, **columns}
    insert = _UPSERTS[dialect]
    return insert(User).values(id=user_id, **values).on_conflict_do_update(index_elements=[User.id], set_=values)


@dataclass(frozen=True)
class Requester:
    """Who asked, and where the answer goes."""

    user_id: int
    user_name: str
    guild_id: int | None = None
    channel_id: int | None = None
    upload_limit_bytes: int | None = None
    # The images go through the safety classifier (asked outside an age-restricted channel).
    safety_check: bool = False
    # Shown to the member alone (Job.private).
    private: bool = False

    def job_columns(self) -> dict[str, Any]:
        """The jobs-table columns it fills: all but the name, which the users table keeps."""
        columns = asdict(self)
        del columns["user_name"]
        return columns


class CancelOutcome(StrEnum):
    CANCELED = "canceled"  # it was waiting; it will never run
    STOPPING = "stopping"  # it was running; the worker stops it at the next step
    ALREADY_FINISHED = "already_finished"


class Recovery(StrEnum):
    REQUEUED = "requeued"
    FAILED = "failed"
    UNCHANGED = "unchanged"  # it had already reached a final state


@dataclass(frozen=True)
class QueueEntry:
    job: Job
    position: int  # 0: running now; 1: next to run
    eta_seconds: float  # until it finishes


class JobQueue(Claims):
    def __init__(self, db: Database, settings: QueueSettings) -> None:
        self.db = db
        self.settings = settings
        self.privacy = PrivacyIndex(db)
        self.members = MemberRows(db)
        self._pace = Pace()
        # When this queue last wrote anew every waiting job's start tag (time.monotonic()).
        self._retagged_at: float | None = None

    # --- creating and reading jobs ---------------------------------------------------------

    async def enqueue(
        self, params: JobParameters, requester: Requester, *, with_row: Callable[[Job], Base] | None = None
    ) -> Job:
        """Write a new pending job, refusing it when the user has too many waiting, or when it
        costs too much alone or with their waiting jobs ([queue] max_job_cost...).

        with_row: a row made from the job once it has its id (its "job queued" audit entry),
        written in the job's own transaction."""
        cost = job_cost(params)
        member_written = False  # the member's row, new or renamed: its kept copy goes after
        try:
            async with self.db.session() as session, session.begin():
                pending, waiting_cost, used, name = await _member_queue(session, requester.user_id, self._usage_since(utcnow()))
                cap = self.settings.max_pending_per_user
                if pending >= cap:
                    raise QueueFull(
                        f"You already have {pending} jobs waiting (the limit is {cap}). "
                        "Wait for one to start, or cancel one with /cancel."
                    )
                caps = self.settings.max_job_cost, self.settings.max_waiting_cost_per_member
                refusal = cost_refusal([cost], waiting_cost, *caps)
                if refusal is not None:
                    raise TooCostly(refusal)
                if name != requester.user_name:  # a new member, or a new name
                    member_written = True
                    await session.execute(_member_row(self.db.dialect, requester.user_id, requester.user_name))
                job = Job(
                    status=JobStatus.PENDING, cost=cost, start_tag=used + waiting_cost,
                    **requester.job_columns(), **job_columns(params),
                )
                session.add(job)
                if with_row is not None:
                    await session.flush()  # the job's id and defaults, for the row
                    session.add(with_row(job))
        finally:
            if member_written:  # committed, or perhaps committed
                self.members.written(requester.user_id)
        self.privacy.job_queued(job)
        return job

    async def get(self, job_id: int) -> Job | None:
        if not is_row_id(job_id):  # a typed or forged number no row can have: no query
            return None
        async with self.db.session() as session:
            return await session.scalar(
                select(Job).where(Job.id == job_id).options(selectinload(Job.images))
            )

    async def require(self, job_id: int) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(f"Job #{job_id} no longer exists.")
        return job

    async def user(self, user_id: int) -> User | None:
        """The member's row, or None before their first job or setting (bot.jobs.members)."""
        return await self.members.get(user_id)

    async def update_user(self, user_id: int, name: str, **columns: Any) -> None:
        """Set some of a member's columns; a member without a row (no job yet) gets one."""
        try:
            async with self.db.session() as session, session.begin():
                await session.execute(_member_row(self.db.dialect, user_id, name, **columns))
        finally:  # committed, or perhaps committed: the kept copy goes either way
            self.members.written(user_id)
        if "private_results" in columns:
            self.privacy.member_set(user_id, bool(columns["private_results"]))

    async def set_message(self, job_id: int, channel_id: int, message_id: int) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(Job).where(Job.id == job_id).values(channel_id=channel_id, message_id=message_id)
            )

    async def image_post(self, job_id: int, index: int) -> tuple[int, int] | None:
        """Where a U button posted this image alone (channel id, message id), if it did."""
        async with self.db.session() as session:
            row = (await session.execute(
                select(Image.posted_channel_id, Image.posted_message_id).where(Image.job_id == job_id, Image.index == index)
            )).one_or_none()
        return (row[0], row[1]) if row is not None and row[1] is not None else None

    async def set_image_post(self, job_id: int, index: int, channel_id: int, message_id: int) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(Image).where(Image.job_id == job_id, Image.index == index)
                .values(posted_channel_id=channel_id, posted_message_id=message_id)
            )

    # --- the scheduler ---------------------------------------------------------------------

    def _usage_since(self, now: datetime) -> datetime:
        return usage_since(now, self.settings.usage_window_hours)

    async def _retag(self, session, user_ids: Collection[int]) -> None:  # type: ignore[no-untyped-def]
        """Write anew the start tags of these members' waiting jobs, in the transaction that
        changed what they wait with or used (its changes flushed first)."""
        await session.flush()
        await session.execute(retag(self._usage_since(utcnow()), set(user_ids)))

    async def active_entries(
        self,
        user_id: int | None = None,
        *,
        waiting_only: bool = False,
        first: int | None = None,
    ) -> list[QueueEntry]:
        """Running and pending jobs in the order they will run, with positions and ETAs:
        all of them, or one user's, only the waiting ones, the first few.

        The order is worked out on a few columns per job and only the entries returned are
        loaded whole: every command waits on this before it is acknowledged, and building a
        thousand ORM objects on the event loop stalled it for most of a second (bench/load.py).
        """
        async with self.db.session() as session:
            # Sorted here: ORDER BY id made SQLite walk the whole table in id order rather than
            # sort the few active rows it finds by status (slow at a million jobs: bench/big_database.py).
            rows = sorted(
                (await session.execute(select(*_SCHEDULE_COLUMNS).where(Job.status.in_(ACTIVE_STATUSES)))).all(),
                key=lambda row: row.id,
            )
            if waiting_only and not any(row.status == JobStatus.PENDING for row in rows):
                return []  # the dispatcher's question after each claim, when nothing else waits
            seconds_per_unit = await self._seconds_per_unit(session)
            chosen = [
                (row, position, eta)
                for row, position, eta in _schedule(rows, seconds_per_unit)
                if (user_id is None or row.user_id == user_id) and (not waiting_only or position > 0)
            ][:first]
            ids = [row.id for row, _, _ in chosen]
            jobs = {job.id: job for job in await session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}
        # A job that finished between the two reads is left out.
        return [QueueEntry(jobs[row.id], position, eta) for row, position, eta in chosen if row.id in jobs]

    async def entry(self, job_id: int, claimed: Job | None = None) -> QueueEntry | None:
        """One job's place in line and its ETA, the same as active_entries gives (fair_order),
        counted along the claim's index: every new job's answer waits on this, so it loads no
        job but this one. ``claimed``: the job as the claim returned it, when the caller holds
        it (a new job on an idle bot): running, so nothing needs reading but the pace."""
        if claimed is not None:
            async with self.db.session() as session:  # opens no connection while the pace is known
                seconds_per_unit = await self._seconds_per_unit(session)
            return QueueEntry(claimed, 0, _remaining_seconds(claimed, seconds_per_unit))
        # The worker may claim the job between this method's reads (each SELECT sees the
        # latest commit); reading again then finds it running or finished.
        for _ in range(3):
            found = await self._entry_once(job_id)
            if found is not _CLAIMED_MEANWHILE:
                return found
        return None

    async def _entry_once(self, job_id: int):  # type: ignore[no-untyped-def]
        async with self.db.session() as session:
            job = await session.get(Job, job_id)
            if job is None or not job.is_active:
                return None
            seconds_per_unit = await self._seconds_per_unit(session)
            if job.status == JobStatus.RUNNING:  # a new job on an idle bot: claimed already
                return QueueEntry(job, 0, _remaining_seconds(job, seconds_per_unit))
            running = (await session.execute(select(*_SCHEDULE_COLUMNS).where(Job.status == JobStatus.RUNNING))).all()
            remaining = [_remaining_seconds(row, seconds_per_unit) for row in running]
            position, ahead_units, still_waiting = (await session.execute(ahead_of(job))).one()
        if not still_waiting:
            return _CLAIMED_MEANWHILE
        eta = max(remaining, default=0.0) + ahead_units * seconds_per_unit
        return QueueEntry(job, position, eta)

    async def pending_count(self, user_id: int) -> int:
        """The user's jobs waiting to run, in every server: what [queue] max_pending_per_user caps."""
        async with self.db.session() as session:
            return (await _waiting(session, user_id))[0]

    async def pending_cost(self, user_id: int) -> float:
        """What the user's waiting jobs cost, in every server: what [queue] max_waiting_cost_per_member caps."""
        async with self.db.session() as session:
            return (await _waiting(session, user_id))[1]

    async def waiting_count(self) -> int:
        async with self.db.session() as session:
            return await session.scalar(select(func.count(Job.id)).where(Job.status == JobStatus.PENDING)) or 0

    async def _seconds_per_unit(self, session) -> float:  # type: ignore[no-untyped-def]
        return await self._pace.seconds_per_unit(session, self.settings.initial_seconds_per_unit)

    # --- outcomes --------------------------------------------------------------------------

    async def complete(
        self, result: JobCompleted, lease_token: str | None = None, *, with_row: Callable[[Job], Base | None] | None = None
    ) -> Job | None:
        """Record a finished job and its images; None when the job was canceled meanwhile, or
        (``lease_token``: a separate worker's claim) is no longer held under that token.

        with_row: a row made from the completed job (its outcome's audit entry), written in
        the same transaction."""
        async with self.db.session() as session, session.begin():
            # One guarded UPDATE: a cancel that committed first wins, and nothing is read first.
            job = await session.scalar(
                update(Job)
                .where(Job.id == result.job_id, Job.status == JobStatus.RUNNING, *_held(lease_token))
                .values(
                    status=JobStatus.COMPLETED, finished_at=utcnow(), seconds=result.seconds, grid_path=result.grid_path,
                    # A describe job's answer (it makes no images).
                    suggestions=json.dumps(result.suggestions) if result.suggestions else None,
                )
                .returning(Job)
            )
            if job is None:
                return None
            images = [
                Image(
                    job_id=job.id,
                    index=image.index,
                    seed=image.seed,
                    subseed=image.subseed,
                    width=image.width,
                    height=image.height,
                    path=image.path,
                    infotext=image.infotext,
                    flagged=image.flagged,
                    note=image.note or None,
                )
                for image in result.images
            ]
            session.add_all(images)
            # A running job has no images yet: the list is complete without reading it.
            set_committed_value(job, "images", images)
            if with_row is not None and (row := with_row(job)) is not None:
                session.add(row)
        self._pace.completed(job.seconds, job.cost)  # this job's seconds count in the next ETAs
        return job

    async def fail(self, job_id: int, message: str, detail: str = "", lease_token: str | None = None) -> Job | None:
        """Record the worker's failure; None when the job was canceled meanwhile (or its lease
        lost, as complete()). ``detail`` (what broke, for moderators) is kept after the
        member's message: Job.member_error."""
        async with self.db.session() as session, session.begin():
            job = await session.get(Job, job_id)
            if job is None or job.status != JobStatus.RUNNING or not _holds(job, lease_token):
                return None
            job.status = JobStatus.FAILED
            job.error = f"{message}{ERROR_DETAIL_MARK}{detail}" if detail else message
            job.finished_at = utcnow()
        return job

    async def fail_waiting(self, model: str, message: str) -> list[Job]:
        """Fail every waiting job of ``model`` with ``message`` (no worker can load it)."""
        async with self.db.session() as session, session.begin():
            failed = list(await session.scalars(
                update(Job).where(Job.status == JobStatus.PENDING, Job.model == model)
                .values(status=JobStatus.FAILED, error=message, finished_at=utcnow())
                .returning(Job)
            ))
            if failed:  # their members wait with less
                await self._retag(session, {job.user_id for job in failed})
        return failed

    async def request_cancel(self, job_id: int) -> tuple[Job, CancelOutcome]:
        async with self.db.session() as session, session.begin():
            job = await session.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"Job #{job_id} no longer exists.")
            if not job.is_active:
                return job, CancelOutcome.ALREADY_FINISHED
            outcome = CancelOutcome.STOPPING if job.status == JobStatus.RUNNING else CancelOutcome.CANCELED
            job.status = JobStatus.CANCELED
            job.finished_at = utcnow()
            if outcome == CancelOutcome.CANCELED:  # the member waits with less
                await self._retag(session, [job.user_id])
        return job, outcome

    async def cancel_claimed(self, job_id: int) -> Job | None:
        """A job just claimed that will not run after all (its server, channel or owner is gone):
        canceled as if before it started, so it costs its owner no turn and no quota. None when
        a cancel won already."""
        async with self.db.session() as session, session.begin():
            job = await session.scalar(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.CANCELED, finished_at=utcnow(), started_at=None, attempts=Job.attempts - 1)
                .returning(Job)
            )
            if job is not None:  # its cost no longer counts as its member's use
                await self._retag(session, [job.user_id])
            return job

    async def active_job_ids(self, guild_id: int, channel_ids: Collection[int] | None = None) -> list[int]:
        """The waiting and running jobs asked for in a server, or in some of its channels."""
        query = select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), Job.guild_id == guild_id)
        if channel_ids is not None:
            query = query.where(Job.channel_id.in_(list(channel_ids)))
        async with self.db.session() as session:
            return list(await session.scalars(query.order_by(Job.id)))

    async def release_interrupted(
        self, job_id: int, reason: str, lease_token: str | None = None
    ) -> tuple[Job | None, Recovery]:
        """A job was running when its worker (or the bot) died: run it again once, then fail it.
        ``lease_token``: only while that claim still holds it (a lease that expired)."""
        async with self.db.session() as session, session.begin():
            job = await session.get(Job, job_id)
            if job is None or job.status != JobStatus.RUNNING or not _holds(job, lease_token):
                return job, Recovery.UNCHANGED
            if job.attempts < self.settings.max_attempts:
                # Waiting again, not started: a started_at kept would count its cost against
                # its member's recent use (the turns) while it waits.
                job.status, job.started_at = JobStatus.PENDING, None
                if job.worker_name is not None:
                    job.worker_name = job.lease_token = None
                await self._retag(session, [job.user_id])  # itself among them
                return job, Recovery.REQUEUED
            job.status = JobStatus.FAILED
            job.finished_at = utcnow()
            job.error = f"{reason} It was tried {job.attempts} times and will not be tried again."
            return job, Recovery.FAILED

    async def return_to_queue(self, job_id: int, lease_token: str | None = None) -> None:
        """The bot (or a separate worker, under ``lease_token``) is shutting down mid-job: the
        job runs again later, and this try is not counted."""
        owner = {} if lease_token is None else {"worker_name": None, "lease_token": None}
        async with self.db.session() as session, session.begin():
            user_id = await session.scalar(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING, *_held(lease_token))
                .values(status=JobStatus.PENDING, started_at=None, attempts=Job.attempts - 1, **owner)
                .returning(Job.user_id)
            )
            if user_id is not None:
                await self._retag(session, [user_id])  # itself among them

    async def running_job_ids(self, worker_name: str | None = None) -> list[int]:
        """The running jobs: all of them, or those a separate worker of this name holds."""
        query = select(Job.id).where(Job.status == JobStatus.RUNNING)
        if worker_name is not None:
            query = query.where(Job.worker_name == worker_name)
        async with self.db.session() as session:
            return list(await session.scalars(query))


def _held(lease_token: str | None) -> tuple[Any, ...]:
    """The WHERE clause of a write fenced by a lease token (none without one)."""
    return () if lease_token is None else (Job.lease_token == lease_token,)


def _holds(job: Job, lease_token: str | None) -> bool:
    return lease_token is None or job.lease_token == lease_token


async def _waiting(session, user_id: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """How many jobs the user has waiting, and what they cost, in one read."""
    count, cost = (await session.execute(
        select(func.count(Job.id), func.sum(Job.cost)).where(Job.user_id == user_id, Job.status == JobStatus.PENDING)
    )).one()
    return count or 0, cost or 0.0


def _member_queue_statement() -> Any:
    """What enqueue reads of a member, in one statement: how many jobs they have waiting, what
    those cost, their use since ``use_since`` (fairness.member_use) and the name their row
    holds (None: no row yet), so that the row is written only when it is new or renamed.
    Built once, with parameters: every job runs it."""
    user_id, use_since = bindparam("user_id"), bindparam("use_since")
    name = select(User.name).where(User.id == user_id).scalar_subquery()
    return select(func.count(Job.id), func.sum(Job.cost), member_use(user_id, use_since), name).where(
        Job.user_id == user_id, Job.status == JobStatus.PENDING
    )


_MEMBER_QUEUE = _member_queue_statement()


async def _member_queue(session, user_id: int, use_since: datetime) -> tuple[int, float, float, str | None]:  # type: ignore[no-untyped-def]
    count, cost, used, known_name = (
        await session.execute(_MEMBER_QUEUE, {"user_id": user_id, "use_since": use_since})
    ).one()
    return count or 0, cost or 0.0, used, known_name


# What the schedule needs of each active job (see active_entries).
_SCHEDULE_COLUMNS = (Job.id, Job.user_id, Job.status, Job.cost, Job.started_at, Job.start_tag)


def _schedule(rows, seconds_per_unit: float):  # type: ignore[no-untyped-def]
    """(row, position, eta) for the active jobs: running ones first (position 0), then the
    waiting ones in fair order, each ETA the time until it finishes."""
    running = [row for row in rows if row.status == JobStatus.RUNNING]
    pending = fair_order([row for row in rows if row.status == JobStatus.PENDING])
    elapsed_ahead = 0.0
    for row in running:
        remaining = _remaining_seconds(row, seconds_per_unit)
        elapsed_ahead = max(elapsed_ahead, remaining)
        yield row, 0, remaining
    for position, row in enumerate(pending, start=1):
        elapsed_ahead += row.cost * seconds_per_unit
        yield row, position, elapsed_ahead


def _remaining_seconds(row, seconds_per_unit: float) -> float:  # type: ignore[no-untyped-def]
    started = row.started_at or utcnow()
    return max(0.0, row.cost * seconds_per_unit - (utcnow() - started).total_seconds())
