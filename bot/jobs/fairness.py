"""Whose turn it is: the queue's fair order (start-time fair queuing), kept in each waiting
job's row.

A waiting job's start tag (Job.start_tag) is its member's recent use (the cost of their jobs
started in the usage window, the running ones included) plus the cost of their jobs waiting
before it. The next job is the one with the lowest tag, ties to the oldest: the oldest job of
the member who used the least.

The tag is written when the job is queued (one read of its member's use and waiting cost, in
the enqueue's transaction) and stays right as jobs start: a claim moves a job's cost from its
member's waiting jobs to their use, which leaves their other tags as they were. It changes only
when a member's waiting or used cost changes otherwise, and is then worked out again (retag):
- for the members concerned, in the transaction that changes it: a waiting job canceled or
  failed, a running job handed back or queued again, a claim undone (JobQueue), a job started
  before its member's older waiting ones (bot.jobs.claims: routing or a batch's riders);
- for everyone, as the window moves on and old use leaves it: at most once a minute a claimer
  (bot.jobs.claims). Until then a member whose use just left the window waits as if it had not.

So a claim reads the first entry of an index of the waiting jobs alone (start_tag, id) that no
other claimer holds, and a job's place in line is a count along the same index. Working the tags out at
every claim (a window over every waiting job and each member's recent jobs) took 77 ms a claim
on SQLite with 10,000 waiting, and was the most of a 205 ms claim on PostgreSQL with 8
claimers (bench.claims, before this).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, literal_column, or_, select, union_all, update
from sqlalchemy.orm import aliased

from db.models import Job, JobStatus

# Aliases, so that no part of a statement is taken for the row its UPDATE changes (an UPDATE
# correlates a subquery on its own table with the row it updates).
_Waiting = aliased(Job, name="waiting")
_Pending = aliased(Job, name="pending")
_Used = aliased(Job, name="used_jobs")
_Member = aliased(Job, name="member_jobs")
_Retagged = aliased(Job, name="retagged")

# Seconds between two retags of every waiting job by one claimer (old use leaving the window).
RETAG_EVERY_S = 60.0

# The waiting jobs' status as a literal in the SQL: the claim's index holds the waiting jobs
# alone (db.models.Job), and a query whose status is a bind parameter cannot use it.
WAITING = literal_column(f"'{JobStatus.PENDING}'")

# Tags this close are the same: a sum in another order may differ in its last bits.
_SAME_TAG = 1e-6


def usage_since(now: datetime, window_hours: float) -> datetime:
    """The start of the usage window: jobs started since then count as their member's use."""
    return now - timedelta(hours=window_hours)


def member_use(user_id: Any, since: Any) -> Any:
    """A scalar subquery: the cost of the member's jobs started since ``since`` (their use);
    either may be a bound parameter."""
    return (
        select(func.coalesce(func.sum(_Used.cost), 0.0))
        .where(_Used.user_id == user_id, _Used.started_at >= since)
        .scalar_subquery()
    )


def worked_out_tags(since: datetime, members: Collection[int] | None = None) -> Any:
    """Each waiting job of ``members`` (None: of every member waiting) with its start tag, from
    one sort without a join: each member's recent jobs and waiting jobs in one list, summed in
    order (a window), so that a waiting job's running sum is its member's use plus what they
    wait with before it. (A join of the waiting jobs to each member's use was planned, on the
    statistics a burst of jobs leaves, to recompute every tag once per waiting job: minutes
    with 10,000 waiting.)"""
    whose = (
        _Used.user_id.in_(select(_Member.user_id).where(_Member.status == WAITING))
        if members is None else _Used.user_id.in_(list(members))
    )
    recent = select(
        literal_column("NULL").label("id"), _Used.user_id, _Used.cost, literal(0).label("waiting"),
    ).where(whose, _Used.started_at >= since)
    pending = select(_Pending.id, _Pending.user_id, _Pending.cost, literal(1).label("waiting")).where(
        _Pending.status == WAITING, *(() if members is None else (_Pending.user_id.in_(list(members)),))
    )
    rows = union_all(pending, recent).subquery("member_rows")
    running_sum = func.sum(rows.c.cost).over(
        partition_by=rows.c.user_id, order_by=(rows.c.waiting, rows.c.id), rows=(None, 0)
    )
    return select(rows.c.id, rows.c.waiting, (running_sum - rows.c.cost).label("tag")).subquery("tags")


def retag(since: datetime, members: Collection[int] | None = None) -> Any:
    """An UPDATE that writes anew the start tag of each waiting job of ``members`` (None:
    everyone's) whose tag is no longer right. On PostgreSQL it skips rows another transaction
    holds (FOR UPDATE SKIP LOCKED): a claimer taking one, or another retag writing the same
    tags. It never waits, so it deadlocks with no one, and it locks only the rows it changes."""
    tags = worked_out_tags(since, members)
    changed = (
        select(_Retagged.id, tags.c.tag)
        .join(tags, tags.c.id == _Retagged.id)
        .where(tags.c.waiting == 1, _Retagged.status == JobStatus.PENDING, func.abs(_Retagged.start_tag - tags.c.tag) > _SAME_TAG)
        .with_for_update(of=_Retagged, skip_locked=True)
        .cte("changed")
    )
    return update(Job).where(Job.id == changed.c.id).values(start_tag=changed.c.tag)


def in_fair_order(limit: int, conditions: Sequence[Any] = ()) -> Any:
    """The first ``limit`` waiting jobs (narrowed by ``conditions`` on pending_alias()) in fair
    order, not locked."""
    return (
        select(_Pending)
        .where(_Pending.status == WAITING, *conditions)
        .order_by(_Pending.start_tag, _Pending.id)
        .limit(limit)
    )


def fairest_pending(route: Callable[[Any], Sequence[Any]] = lambda model: ()) -> Any:
    """A scalar subquery naming the waiting job with the lowest start tag, locked (PostgreSQL:
    FOR UPDATE SKIP LOCKED, so claimers at once each take a different job and none waits on
    another). ``route(model)``: conditions on a waiting job's model that narrow whom it is for
    (a worker's routing)."""
    return (
        select(_Waiting.id)
        .where(_Waiting.status == WAITING, *route(_Waiting.model))
        .order_by(_Waiting.start_tag, _Waiting.id)
        .limit(1)
        .with_for_update(of=_Waiting, skip_locked=True)
        .scalar_subquery()
    )


def ahead_of(job: Job) -> Any:
    """The waiting jobs up to ``job`` in fair order, itself included: (how many, what they
    cost, whether ``job`` is among them: it may have been claimed since it was read)."""
    return select(
        func.count(_Pending.id), func.coalesce(func.sum(_Pending.cost), 0.0), func.max(case((_Pending.id == job.id, 1), else_=0)),
    ).where(
        _Pending.status == WAITING,
        or_(_Pending.start_tag < job.start_tag, and_(_Pending.start_tag == job.start_tag, _Pending.id <= job.id)),
    )


def pending_alias() -> Any:
    """The waiting job as in_fair_order's ``conditions`` name it."""
    return _Pending


def fair_order(pending: Sequence[Any]) -> list[Any]:
    """Waiting jobs (rows with id and start_tag) in the order the claims will take them, if
    nothing else arrives: by start tag, ties to the oldest."""
    return sorted(pending, key=lambda job: (job.start_tag, job.id))
