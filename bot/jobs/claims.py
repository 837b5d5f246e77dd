"""The queue's claims (JobQueue inherits them): taking the fairest waiting job, and the waiting
jobs that may share its pass, for the built-in worker or a separate one.

A claim is one transaction. Its first statement is an UPDATE of the job the fair order puts
first (bot.jobs.fairness: the first entry of an index that no other claimer holds), which
returns the job and, read in the same statement, whether another job waits (none: the search
for riders is skipped, and the dispatcher skips its next claim) and whether the member has an
older job waiting (a separate worker's routing can pass one over: that member's tags grow).
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, bindparam, case, literal, literal_column, or_, select, update

from bot.jobs.fairness import RETAG_EVERY_S, fairest_pending, in_fair_order, pending_alias, retag
from bot.jobs.job_rows import generate_request
from bot.jobs.riders import rider_conditions
from bot.jobs.routing import ClaimingWorker, live_since, routable
from db.base import UTCDateTime, utcnow
from db.models import Job, JobStatus, Worker
from inference.common.batch_keys import batch_key

if TYPE_CHECKING:
    from collections.abc import Collection

    from bot.config import QueueSettings
    from db.session import Database

# A batch claim reads this many riders more than it has room for: those other claimers hold
# (mid-claim, a batch each) are passed over.
RIDERS_PASSED_OVER = 32

# What the claim's UPDATE returns beside the job, written out: on SQLite, SQLAlchemy renders
# RETURNING's columns without their table, inside a subquery too, where "id != id" would
# compare a row with itself.
# "Another waits" asks the first two waiting jobs in fair order whether one is not the claimed
# one: along the waiting jobs' index, whatever share of the table the planner believes waits.
_ANOTHER_WAITS = literal_column(
    f"EXISTS (SELECT 1 FROM (SELECT another.id FROM jobs AS another WHERE another.status = '{JobStatus.PENDING}'"
    " ORDER BY another.start_tag, another.id LIMIT 2) AS firsts WHERE firsts.id <> jobs.id)"
).label("another_waits")
_OLDER_WAITING = literal_column(
    f"EXISTS (SELECT 1 FROM jobs AS older WHERE older.status = '{JobStatus.PENDING}'"
    " AND older.user_id = jobs.user_id AND older.id < jobs.id)"
).label("older_waiting")


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim took, and whether another job was waiting as it took them (perhaps taken
    since by a rider of this batch or another claimer): when none was, a claim made before
    anything new is queued would come back empty (Dispatcher skips it)."""

    jobs: list[Job]
    more_waiting: bool


class Claims:
    """JobQueue's claims; the queue provides the database, its settings and the retags."""

    db: Database
    settings: QueueSettings
    _retagged_at: float | None

    def _usage_since(self, now: datetime) -> datetime:
        raise NotImplementedError

    async def _retag(self, session, user_ids: Collection[int]) -> None:  # type: ignore[no-untyped-def]
        raise NotImplementedError

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
        next claim). Every UPDATE of a claim takes only rows still waiting, so a cancel still wins.

        ``worker``: a separate worker's claim (ClaimingWorker), stamped with its name and one
        lease token for the batch; its row's current job is set in the same transaction.
        """
        now = utcnow()
        owner = {} if worker is None else {
            "worker_name": worker.name, "lease_token": uuid.uuid4().hex,
            "progress_step": None, "progress_total": None, "progress_preview": None,
        }
        async with self.db.session() as session, session.begin():
            if self._retagged_at is None or time.monotonic() - self._retagged_at >= RETAG_EVERY_S:
                # Old use has left the window since: its members' tags are too high.
                await session.execute(retag(self._usage_since(now)))
                self._retagged_at = time.monotonic()
            first, others_wait, out_of_turn = await self._claim_fairest(session, now, worker, owner)
            if first is None:
                return Claim([], more_waiting=False)
            if worker is not None:
                await session.execute(
                    update(Worker).where(Worker.name == worker.name).values(current_job_id=first.id, heartbeat_at=now)
                )
            riders = await self._take_riders(session, now, first, max_images, owner) if others_wait else []
            # A job started before its member's older waiting ones moves its cost to their use
            # ahead of them: their tags grow.
            members = {first.user_id} if out_of_turn else set()
            if riders:
                older_waiting = or_(*(and_(Job.user_id == job.user_id, Job.id < job.id) for job in riders))
                members |= set(await session.scalars(select(Job.user_id).where(Job.status == JobStatus.PENDING, older_waiting)))
            if members:
                await self._retag(session, members)
        return Claim([first, *riders], others_wait)

    async def _take_riders(  # type: ignore[no-untyped-def]
        self, session, now: datetime, first: Job, max_images: int, owner: dict[str, Any]
    ) -> list[Job]:
        """The waiting jobs that share ``first``'s pass, claimed, up to ``max_images`` images
        with it."""
        key = batch_key(generate_request(first))
        room = max_images - first.count
        if key is None or room <= 0:
            return []
        candidates = await self._riders_in_fair_order(session, first, room)
        riders: list[Job] = []
        while candidates and room > 0:
            # Those that fit, in fair order, until the room is full (one too big for the room
            # left keeps its place); a batch key is worked out only for a job that would fit.
            chosen, examined, fits = [], set(), room
            for job in candidates:
                if fits <= 0:
                    break
                if job.count > fits:
                    continue
                examined.add(job.id)
                if batch_key(generate_request(job)) == key:
                    chosen.append(job)
                    fits -= job.count
            if not chosen:
                break
            claimed = await self._claim_riders(session, chosen, now, len(riders), owner)
            riders += claimed
            room -= sum(job.count for job in claimed)
            # Those another claimer held are passed over; the rest may fill what they left.
            candidates = [job for job in candidates if job.id not in examined]
        return riders

    @staticmethod
    async def _claim_riders(  # type: ignore[no-untyped-def]
        session, jobs: list[Job], now: datetime, taken: int, owner: dict[str, Any]
    ) -> list[Job]:
        """These waiting jobs, running, in one UPDATE; those no longer waiting (a cancel won)
        or, on PostgreSQL, held by another claimer are passed over, not waited for (two
        claimers waiting on each other's riders would deadlock). ``taken``: riders already
        claimed. Each starts a microsecond after the one before it, in claim order: "started
        first" stays the fair order."""
        started = case(
            {job.id: literal(now + timedelta(microseconds=1 + taken + number), UTCDateTime) for number, job in enumerate(jobs)},
            value=Job.id,
        )
        lockable = select(Job.id).where(Job.id.in_([job.id for job in jobs])).with_for_update(skip_locked=True)
        claimed = await session.scalars(
            update(Job)
            .where(Job.id.in_(lockable), Job.status == JobStatus.PENDING)
            .values(status=JobStatus.RUNNING, started_at=started, attempts=Job.attempts + 1, **owner)
            .returning(Job),
            execution_options={"populate_existing": True},
        )
        return sorted(claimed, key=lambda job: job.started_at)

    async def _riders_in_fair_order(self, session, first: Job, room: int) -> list[Job]:  # type: ignore[no-untyped-def]
        """The waiting jobs that may share ``first``'s pass, in fair order as if each were
        claimed next; more than ``room`` can take, for those passed over (too big for the room
        left, or held by another claimer). The first job's member has just had a turn: their
        other jobs' tags count its cost already. Not locked here: locking every compatible
        job would hide them all from the other claimers until this one commits; each rider is
        locked as it is claimed."""
        query = in_fair_order(room + RIDERS_PASSED_OVER, rider_conditions(pending_alias(), first, room))
        return list(await session.scalars(query, execution_options={"populate_existing": True}))

    async def _claim_fairest(  # type: ignore[no-untyped-def]
        self, session, now: datetime, worker: ClaimingWorker | None, owner: dict[str, Any]
    ) -> tuple[Job | None, bool, bool]:
        """The fairest pending job, claimed; whether another one waits; whether its member has
        an older one waiting.

        One statement: an UPDATE of the job its subquery picks. On PostgreSQL the subquery
        locks the row it picks and skips rows other claimers have locked (FOR UPDATE SKIP
        LOCKED), so any number of claimers at once each take a different job, none waits on
        another and none comes back empty while a job waits. SQLite renders no FOR UPDATE and
        needs none: it has one writer at a time (db.session.WriteTurn).

        A separate worker (``worker``) takes only what it can load (bot.jobs.routing)."""
        times: dict[str, Any] = {"claim_started": now}
        if worker is not None:
            times.update(alive_since=live_since(worker, now), claim_lease_token=owner["lease_token"])
        row = (await session.execute(
            _fairest_claim(worker), times, execution_options={"populate_existing": True}
        )).one_or_none()
        if row is None:
            return None, False, False
        job, another, out_of_turn = row
        return job, bool(another), bool(out_of_turn)


@functools.lru_cache(maxsize=32)
def _fairest_claim(worker: ClaimingWorker | None) -> Any:
    """The claim of the fairest job (Claims._claim_fairest), built once per claimer: the
    built-in worker (None), or a separate worker as it is now (frozen: its name and models are
    part of the SQL). Its time and lease token are bind parameters: building the statement
    anew cost more than running it on SQLite.

    It returns the job, whether another job waits and whether the member has an older job
    waiting. Both are read in the statement's own snapshot, where the claimed job still waits
    (PostgreSQL) or not (SQLite): it is left out of both."""
    fairest = fairest_pending(lambda model: routable(model, worker, bindparam("alive_since", type_=UTCDateTime)))
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
        .returning(Job, _ANOTHER_WAITS, _OLDER_WAITING)
    )
