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
the cost of their jobs waiting before it (bot.jobs.fairness; start-time fair queuing).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import String, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from bot.config import QueueSettings
from bot.errors import JobNotFound, QueueFull, TooCostly
from bot.jobs.cost import cost_refusal, job_cost
from bot.jobs.params import JobParameters
from bot.jobs.fairness import fair_order, fairest_pending, in_fair_order, pending_alias, recent_use, usage_since
from bot.jobs.job_rows import generate_request, job_columns
from bot.jobs.privacy import PrivacyIndex
from db.base import Base, UTCDateTime, utcnow
from bot.jobs.riders import rider_conditions
from bot.jobs.routing import ClaimingWorker, live_since, routable
from db.models import ACTIVE_STATUSES, ERROR_DETAIL_MARK, Image, Job, JobStatus, User, Worker
from db.session import Database
from inference.common.batch_keys import batch_key
from inference.common.protocol import JobCompleted

# A batch claim reads this many riders more than it has room for: those other claimers hold
# (mid-claim, a batch each) are passed over.
RIDERS_PASSED_OVER = 32
_CLAIMED_MEANWHILE = object()  # entry(): the job left the waiting list between two reads
_PACE_EXPIRY_S = 60.0


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


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim took, and whether another job was waiting as it took them (perhaps taken
    since by a rider of this batch or another claimer): when none was, a claim made before
    anything new is queued would come back empty (Dispatcher skips it)."""

    jobs: list[Job]
    more_waiting: bool


class Recovery(StrEnum):
    REQUEUED = "requeued"
    FAILED = "failed"
    UNCHANGED = "unchanged"  # it had already reached a final state


@dataclass(frozen=True)
class QueueEntry:
    job: Job
    position: int  # 0: running now; 1: next to run
    eta_seconds: float  # until it finishes


class JobQueue:
    def __init__(self, db: Database, settings: QueueSettings) -> None:
        self.db = db
        self.settings = settings
        self.privacy = PrivacyIndex(db)
        # Seconds per unit, the completions counted when it was measured, and when.
        self._pace: tuple[float, int, float] | None = None
        self._completions = 0

    # --- creating and reading jobs ---------------------------------------------------------

    async def enqueue(
        self, params: JobParameters, requester: Requester, *, with_row: Callable[[Job], Base] | None = None
    ) -> Job:
        """Write a new pending job, refusing it when the user has too many waiting, or when it
        costs too much alone or with their waiting jobs ([queue] max_job_cost...).

        with_row: a row made from the job once it has its id (its "job queued" audit entry),
        written in the job's own transaction."""
        cost = job_cost(params)
        async with self.db.session() as session, session.begin():
            pending, waiting_cost = await _waiting(session, requester.user_id)
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
            await session.execute(_member_row(self.db.dialect, requester.user_id, requester.user_name))
            job = Job(status=JobStatus.PENDING, cost=cost, **requester.job_columns(), **job_columns(params))
            session.add(job)
            if with_row is not None:
                await session.flush()  # the job's id and defaults, for the row
                session.add(with_row(job))
        self.privacy.job_queued(job)
        return job

    async def get(self, job_id: int) -> Job | None:
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
        async with self.db.session() as session:
            return await session.get(User, user_id)

    async def update_user(self, user_id: int, name: str, **columns: Any) -> None:
        """Set some of a member's columns; a member without a row (no job yet) gets one."""
        async with self.db.session() as session, session.begin():
            await session.execute(_member_row(self.db.dialect, user_id, name, **columns))
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

    async def claim_next(self, worker: ClaimingWorker | None = None) -> Job | None:
        """Mark the fairest pending job running and return it; None when nothing waits."""
        batch = await self.claim_batch(max_images=1, worker=worker)
        return batch[0] if batch else None

    async def claim_batch(self, max_images: int, worker: ClaimingWorker | None = None) -> list[Job]:
        """claim(), its jobs alone."""
        return (await self.claim(max_images, worker)).jobs

    async def claim(self, max_images: int, worker: ClaimingWorker | None = None) -> Claim:
        """Mark running, and return, the fairest pending job and the waiting jobs that may
        share its pass (inference.common.batch_keys.batch_key), up to ``max_images`` images in all
        (none when nothing waits), and whether another job waited.

        The riders are taken in fair order too, as if each were claimed next: the first job's
        user has just had a turn, so the other users' compatible jobs come before that user's
        others. A job too big for the room left is passed over (it keeps its place for the
        next claim). Each row is claimed by its own guarded UPDATE, so a cancel still wins.

        ``worker``: a separate worker's claim (ClaimingWorker), stamped with its name and one
        lease token for the batch; its row's current job is set in the same transaction.
        """
        now = utcnow()
        owner = {} if worker is None else {
            "worker_name": worker.name, "lease_token": uuid.uuid4().hex,
            "progress_step": None, "progress_total": None, "progress_preview": None,
        }
        async with self.db.session() as session, session.begin():
            first, others_wait = await self._claim_fairest(session, now, worker, owner)
            if first is None:
                return Claim([], more_waiting=False)
            if worker is not None:
                await session.execute(
                    update(Worker).where(Worker.name == worker.name).values(current_job_id=first.id, heartbeat_at=now)
                )
            batch = [first]
            key = batch_key(generate_request(first))
            room = max_images - first.count
            if key is None or room <= 0 or not others_wait:
                return Claim(batch, others_wait)
            rider_ids = await self._riders_in_fair_order(session, now, first, room)
            # One read for them all; those other claimers took meanwhile are no longer waiting.
            waiting = {job.id: job for job in await session.scalars(
                select(Job).where(Job.id.in_(rider_ids), Job.status == JobStatus.PENDING)
            )}
            for job in (waiting[rider_id] for rider_id in rider_ids if rider_id in waiting):
                if job.count > room or batch_key(generate_request(job)) != key:
                    continue
                # A microsecond apart, in claim order: "started first" stays the fair order.
                started = now + timedelta(microseconds=len(batch))
                # PostgreSQL: a rider another claimer holds is passed over, not waited for
                # (two claimers waiting on each other's riders would deadlock).
                rider = select(Job.id).where(Job.id == job.id).with_for_update(skip_locked=True).scalar_subquery()
                if (claimed := await self._claim(session, rider, started, owner)) is not None:
                    batch.append(claimed)
                    room -= claimed.count
                    if room <= 0:
                        break
        return Claim(batch, others_wait)

    async def _riders_in_fair_order(self, session, now: datetime, first: Job, room: int) -> list[int]:  # type: ignore[no-untyped-def]
        """The waiting jobs that may share ``first``'s pass, in fair order as if each were
        claimed next; more than ``room`` can take, for those passed over (too big for the room
        left, or held by another claimer). Read after the first claim, so that its
        cost counts: its member has just had a turn. Not locked here: locking every compatible
        job would hide them all from the other claimers until this one commits; each rider is
        locked as it is claimed."""
        query = in_fair_order(self._usage_since(now), room + RIDERS_PASSED_OVER, rider_conditions(pending_alias(), first, room))
        return list(await session.scalars(query))

    async def _claim_fairest(  # type: ignore[no-untyped-def]
        self, session, now: datetime, worker: ClaimingWorker | None, owner: dict[str, Any]
    ) -> tuple[Job | None, bool]:
        """The fairest pending job, claimed, and whether another one waits: when none does,
        the search for jobs to share its pass is skipped (the common case of an idle bot).

        One statement: an UPDATE of the job its subquery picks. On PostgreSQL the subquery
        locks the row it picks and skips rows other claimers have locked (FOR UPDATE SKIP
        LOCKED), so any number of claimers at once each take a different job, none waits on
        another and none comes back empty while a job waits. SQLite renders no FOR UPDATE and
        needs none: it has one writer at a time (db.session.WriteTurn).

        A separate worker (``worker``) takes only what it can load (bot.jobs.routing)."""
        times = {"usage_since": self._usage_since(now), "claim_started": now}
        if worker is not None:
            times.update(alive_since=live_since(worker, now), claim_lease_token=owner["lease_token"])
        job = await session.scalar(_fairest_claim(worker), times, execution_options={"populate_existing": True})
        if job is None:
            return None, False
        another = await session.scalar(select(Job.id).where(Job.status == JobStatus.PENDING).limit(1))
        return job, another is not None

    def _usage_since(self, now: datetime) -> datetime:
        return usage_since(now, self.settings.usage_window_hours)

    @staticmethod
    async def _claim(session, job_id: Any, now: datetime, owner: dict[str, Any]) -> Job | None:  # type: ignore[no-untyped-def]
        """The job (an id, or a subquery that picks one), running from now (for ``owner``: a
        separate worker's name and lease token), or None when it was no longer pending (a
        cancel won)."""
        return await session.scalar(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.PENDING)
            .values(status=JobStatus.RUNNING, started_at=now, attempts=Job.attempts + 1, **owner)
            .returning(Job),
            execution_options={"populate_existing": True},
        )

    async def _recent_usage(self, session, now: datetime) -> dict[int, float]:  # type: ignore[no-untyped-def]
        """Each waiting member's GPU time (cost) of the usage window; a member absent used none."""
        return dict((await session.execute(recent_use(self._usage_since(now)))).all())

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
            usage = await self._recent_usage(session, utcnow())
            seconds_per_unit = await self._seconds_per_unit(session)
            chosen = [
                (row, position, eta)
                for row, position, eta in _schedule(rows, usage, seconds_per_unit)
                if (user_id is None or row.user_id == user_id) and (not waiting_only or position > 0)
            ][:first]
            ids = [row.id for row, _, _ in chosen]
            jobs = {job.id: job for job in await session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}
        # A job that finished between the two reads is left out.
        return [QueueEntry(jobs[row.id], position, eta) for row, position, eta in chosen if row.id in jobs]

    async def entry(self, job_id: int) -> QueueEntry | None:
        """One job's place in line and its ETA, the same as active_entries gives (fair_order),
        from three columns of the waiting jobs: every new job's answer waits on this, so it
        loads no job but this one."""
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
            waiting = (
                await session.execute(select(Job.id, Job.user_id, Job.cost).where(Job.status == JobStatus.PENDING))
            ).all()
            usage = await self._recent_usage(session, utcnow())
        order = fair_order(waiting, usage)
        position = next((number for number, row in enumerate(order, start=1) if row.id == job.id), None)
        if position is None:
            return _CLAIMED_MEANWHILE
        ahead_units = sum(row.cost for row in order[:position])
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
        """Seconds per unit of work, from the last 20 completed jobs. Kept between calls:
        every new job's answer and every /queue ask for it, and only complete() changes it
        (the minute's expiry covers rows written by hand)."""
        completions, now = self._completions, time.monotonic()
        if self._pace is not None:
            pace, measured_after, measured_at = self._pace
            if measured_after == completions and now - measured_at < _PACE_EXPIRY_S:
                return pace
        pace = await self._measured_seconds_per_unit(session)
        # A job completed during the read: the figure may predate it, so it is not kept.
        if self._completions == completions:
            self._pace = (pace, completions, now)
        return pace

    async def _measured_seconds_per_unit(self, session) -> float:  # type: ignore[no-untyped-def]
        recent = (
            await session.execute(
                select(Job.seconds, Job.cost)
                .where(Job.status == JobStatus.COMPLETED, Job.seconds.is_not(None), Job.cost > 0)
                .order_by(Job.id.desc())
                .limit(20)
            )
        ).all()
        units = sum(r.cost for r in recent)
        if not recent or units <= 0:
            return self.settings.initial_seconds_per_unit
        return sum(r.seconds for r in recent) / units

    # --- outcomes --------------------------------------------------------------------------

    async def complete(self, result: JobCompleted, lease_token: str | None = None) -> Job | None:
        """Record a finished job and its images; None when the job was canceled meanwhile, or
        (``lease_token``: a separate worker's claim) is no longer held under that token."""
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
        self._completions += 1  # this job's seconds count in the next ETAs
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
        return job, outcome

    async def cancel_claimed(self, job_id: int) -> Job | None:
        """A job just claimed that will not run after all (its server, channel or owner is gone):
        canceled as if before it started, so it costs its owner no turn and no quota. None when
        a cancel won already."""
        async with self.db.session() as session, session.begin():
            return await session.scalar(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.CANCELED, finished_at=utcnow(), started_at=None, attempts=Job.attempts - 1)
                .returning(Job)
            )

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
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING, *_held(lease_token))
                .values(status=JobStatus.PENDING, started_at=None, attempts=Job.attempts - 1, **owner)
            )

    async def running_job_ids(self, worker_name: str | None = None) -> list[int]:
        """The running jobs: all of them, or those a separate worker of this name holds."""
        query = select(Job.id).where(Job.status == JobStatus.RUNNING)
        if worker_name is not None:
            query = query.where(Job.worker_name == worker_name)
        async with self.db.session() as session:
            return list(await session.scalars(query))


@functools.lru_cache(maxsize=32)
def _fairest_claim(worker: ClaimingWorker | None) -> Any:
    """The claim of the fairest job (JobQueue._claim_fairest), built once per claimer: the
    built-in worker (None), or a separate worker as it is now (frozen: its name and models are
    part of the SQL). Its times and lease token are bind parameters. Building the fair pick's
    expression anew cost more than running it on SQLite: about 10 ms of Python a claim."""
    fairest = fairest_pending(
        bindparam("usage_since", type_=UTCDateTime),
        lambda model: routable(model, worker, bindparam("alive_since", type_=UTCDateTime)),
    )
    owner = {} if worker is None else {
        "worker_name": worker.name, "lease_token": bindparam("claim_lease_token", type_=String),
        "progress_step": None, "progress_total": None, "progress_preview": None,
    }
    return (
        update(Job)
        .where(Job.id == fairest, Job.status == JobStatus.PENDING)
        .values(
            status=JobStatus.RUNNING, started_at=bindparam("claim_started", type_=UTCDateTime),
            attempts=Job.attempts + 1, **owner,
        )
        .returning(Job)
    )


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


# What the schedule needs of each active job (see active_entries).
_SCHEDULE_COLUMNS = (Job.id, Job.user_id, Job.status, Job.cost, Job.started_at)


def _schedule(rows, usage: dict[int, float], seconds_per_unit: float):  # type: ignore[no-untyped-def]
    """(row, position, eta) for the active jobs: running ones first (position 0), then the
    waiting ones in fair order, each ETA the time until it finishes."""
    running = [row for row in rows if row.status == JobStatus.RUNNING]
    pending = fair_order([row for row in rows if row.status == JobStatus.PENDING], usage)
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
