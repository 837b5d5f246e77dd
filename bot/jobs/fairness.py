"""Whose turn it is: the queue's fair order, as one SQL statement for the claim and in Python
for the places in line it shows (bot.jobs.queue).

A waiting job's "start tag" is its member's recent use (the cost of their jobs started in the
usage window, the running ones included) plus the cost of their jobs waiting before it. The
next job is the one with the lowest tag, ties to the oldest: the oldest job of the member who
used the least (start-time fair queuing).

The claim orders by the tag itself, not by the member's use alone: two workers claiming at the
same moment on PostgreSQL each skip the row the other has locked (FOR UPDATE SKIP LOCKED), and
the row after a member's job by use alone is that member's next job, a second turn in a row;
by tag it is the next member's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, literal_column, select, union_all
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter

from db.models import Job, JobStatus

# Aliases, so that no part of the pick is taken for the row the claim's UPDATE changes (an
# UPDATE correlates a subquery on its own table with the row it updates).
_Waiting = aliased(Job, name="waiting")
_Pending = aliased(Job, name="pending")
_Used = aliased(Job, name="used_jobs")
_Member = aliased(Job, name="member_jobs")

# The claim locks the first of this many best-placed jobs that no other claim holds: more than
# claimers mid-claim at once can hold (each holds its batch, a few jobs, for milliseconds).
CANDIDATES = 128


def usage_since(now: datetime, window_hours: float) -> datetime:
    """The start of the usage window: jobs started since then count as their member's use."""
    return now - timedelta(hours=window_hours)


def _waiting_members() -> Any:
    return select(_Member.user_id).where(_Member.status == JobStatus.PENDING)


def recent_use(since: datetime) -> Any:
    """(user_id, used) of each member with a waiting job: the cost of their jobs started since
    ``since``. Only waiting members are read (each through the index on (user_id, started_at,
    cost)): the turns never need anyone else's history. A member absent used none."""
    return (
        select(_Used.user_id, func.sum(_Used.cost).label("used"))
        .where(_Used.user_id.in_(_waiting_members()), _Used.started_at >= since)
        .group_by(_Used.user_id)
    )


def _tags(since: datetime | BindParameter[datetime], pending_conditions: Sequence[Any]) -> Any:
    """Each waiting job (narrowed by ``pending_conditions`` on pending_alias()) with its start
    tag, from one sort without a join: each member's recent jobs and waiting jobs in one list,
    summed in order (a window), so that a waiting job's running sum is its member's use plus
    what they wait with before it. (A join of the waiting jobs to each member's use was
    planned, on the statistics a burst of jobs leaves (a few waiting, they say), to recompute
    every tag once per waiting job: minutes with 10,000 waiting.)"""
    recent = select(
        literal_column("NULL").label("id"), _Used.user_id, _Used.cost, literal_column("NULL").label("model"),
        literal(0).label("waiting"),
    ).where(_Used.user_id.in_(_waiting_members()), _Used.started_at >= since)
    pending = select(
        _Pending.id, _Pending.user_id, _Pending.cost, _Pending.model, literal(1).label("waiting"),
    ).where(_Pending.status == JobStatus.PENDING, *pending_conditions)
    rows = union_all(pending, recent).subquery("member_rows")
    running_sum = func.sum(rows.c.cost).over(
        partition_by=rows.c.user_id, order_by=(rows.c.waiting, rows.c.id), rows=(None, 0)
    )
    return select(rows.c.id, rows.c.model, rows.c.waiting, (running_sum - rows.c.cost).label("tag")).subquery("tags")


def in_fair_order(
    since: datetime | BindParameter[datetime], limit: int, pending_conditions: Sequence[Any] = (),
    route: Callable[[Any], Sequence[Any]] = lambda model: (),
) -> Any:
    """The first ``limit`` waiting jobs by start tag (id, tag), not locked. ``pending_conditions``
    (on pending_alias()) choose the waiting jobs that are counted and returned (a batch's
    riders: those that may share its pass); ``route(model)`` only which are returned."""
    tags = _tags(since, pending_conditions)
    return (
        select(tags.c.id, tags.c.tag)
        .where(tags.c.waiting == 1, *route(tags.c.model))
        .order_by(tags.c.tag, tags.c.id)
        .limit(limit)
    )


def fairest_pending(
    since: datetime | BindParameter[datetime], route: Callable[[Any], Sequence[Any]] = lambda model: ()
) -> Any:
    """A subquery naming the waiting job with the lowest start tag, locked (PostgreSQL: FOR
    UPDATE SKIP LOCKED, so claimers at once each take a different job and none waits on
    another). ``since``: the usage window's start, or a bind parameter that will hold it (the
    claim's statement is built once, bot.jobs.queue). ``route(model)``: conditions on a
    waiting job's model that narrow whom it is for (a worker's routing); the tags count every
    waiting job all the same.

    The best CANDIDATES are computed once (a materialized CTE, whatever the planner believes
    of the table) and only those are locked, in order."""
    candidates = (
        in_fair_order(since, CANDIDATES, route=route)
        .cte("candidates")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        select(_Waiting.id)
        .join(candidates, candidates.c.id == _Waiting.id)
        .where(_Waiting.status == JobStatus.PENDING)
        .order_by(candidates.c.tag, candidates.c.id)
        .limit(1)
        .with_for_update(of=_Waiting, skip_locked=True)
        .scalar_subquery()
    )


def pending_alias() -> Any:
    """The waiting job as in_fair_order's ``pending_conditions`` name it."""
    return _Pending


def fair_order(pending: Sequence[Any], usage: dict[int, float]) -> list[Any]:
    """The order the claims will take these jobs in, if nothing else arrives: by start tag,
    its member's use (from ``usage``, the window's) plus the cost of their jobs waiting before
    it, ties to the oldest. The same order as fairest_pending's."""
    used = dict(usage)
    tagged = []
    for job in sorted(pending, key=lambda j: j.id):
        start = used.get(job.user_id, 0.0)
        tagged.append((start, job.id, job))
        used[job.user_id] = start + job.cost
    return [job for _, _, job in sorted(tagged, key=lambda tag: tag[:2])]
