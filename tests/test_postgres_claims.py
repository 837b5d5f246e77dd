"""On PostgreSQL any number of claimers (workers, each with its own engine) claim at once from
one queue: every job is taken exactly once, and none of them stops while a job still waits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select

from bot.config import QueueSettings
from bot.jobs.queue import JobQueue, Requester
from db.models import Job, JobStatus
from db.session import Database
from tests.test_queue import params

CLAIMERS = 8
MEMBERS = 10
JOBS_PER_MEMBER = 8


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("max_images", [1, 4], ids=["one_by_one", "batches"])
async def test_concurrent_claimers_never_take_the_same_job(database, max_images):
    settings = QueueSettings(max_pending_per_user=JOBS_PER_MEMBER)
    queue = JobQueue(database, settings)
    for number in range(JOBS_PER_MEMBER):
        for member in range(1, MEMBERS + 1):
            await queue.enqueue(params(f"m{member}-{number}"), Requester(user_id=member, user_name=f"member{member}"))

    claimers = [Database(database.url) for _ in range(CLAIMERS)]
    claimed: list[list[int]] = [[] for _ in claimers]

    async def claim_until_empty(index: int) -> None:
        claimer = JobQueue(claimers[index], settings)
        while batch := await claimer.claim_batch(max_images):
            claimed[index].extend(job.id for job in batch)
            await asyncio.sleep(0)  # let the others in between claims

    try:
        await asyncio.gather(*(claim_until_empty(index) for index in range(CLAIMERS)))
    finally:
        for claimer in claimers:
            await claimer.close()

    taken = Counter(job_id for ids in claimed for job_id in ids)
    assert [job_id for job_id, times in taken.items() if times > 1] == []
    assert len(taken) == MEMBERS * JOBS_PER_MEMBER  # no claimer stopped while a job waited
    assert sum(1 for ids in claimed if ids) > 1  # they did claim side by side
    async with database.session() as session:
        rows = (await session.execute(select(Job.status, Job.attempts))).all()
    assert {(status, attempts) for status, attempts in rows} == {(JobStatus.RUNNING, 1)}


@asynccontextmanager
async def claimer_paused_mid_batch(
    database: Database, settings: QueueSettings
) -> AsyncIterator[tuple[JobQueue, Callable[[], Awaitable[list[Job]]]]]:
    """Claimer A starts claiming a batch of 4 and stops once it holds its first job locked
    (its riders read, not yet taken: after _riders_in_fair_order); yields claimer B, beside it with an
    engine of its own, and ``finish_a``, which lets A go on and returns A's batch."""
    first, second = Database(database.url), Database(database.url)
    claimer_a, claimer_b = JobQueue(first, settings), JobQueue(second, settings)
    holding, go_on = asyncio.Event(), asyncio.Event()
    riders = claimer_a._riders_in_fair_order

    async def paused(session, first, room):  # type: ignore[no-untyped-def]
        read = await riders(session, first, room)
        holding.set()
        await go_on.wait()
        return read

    async def finish_a() -> list[Job]:
        go_on.set()
        return await batch_a

    claimer_a._riders_in_fair_order = paused  # type: ignore[method-assign]
    try:
        batch_a = asyncio.create_task(claimer_a.claim_batch(4))
        await asyncio.wait_for(holding.wait(), 30)
        yield claimer_b, finish_a
    finally:
        go_on.set()
        await first.close()
        await second.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_batch_being_claimed_hides_only_its_own_jobs_from_other_claimers(database):
    """Claimer A, mid-batch (its first job claimed, the riders read, not yet taken), must not
    hide the other waiting jobs from claimer B: B takes a batch at once, and A's riders skip
    what B took."""
    settings = QueueSettings(max_pending_per_user=JOBS_PER_MEMBER)
    queue = JobQueue(database, settings)
    for member in range(1, 9):
        await queue.enqueue(params(f"m{member}"), Requester(user_id=member, user_name=f"member{member}"))
    async with claimer_paused_mid_batch(database, settings) as (claimer_b, finish_a):
        batch_b = await asyncio.wait_for(claimer_b.claim_batch(4), 30)  # never waits on A
        batch_a_jobs = await finish_a()
    ids_a, ids_b = [job.id for job in batch_a_jobs], [job.id for job in batch_b]
    assert len(ids_b) == 4 and len(ids_a) == 4, (ids_a, ids_b)
    assert not set(ids_a) & set(ids_b)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_claim_beside_another_takes_the_next_members_job_not_a_second_turn(database):
    """Member 1 waits with two jobs, member 2 with one, none has used the GPU. Claimer A takes
    member 1's first job and holds it locked (mid-batch); claimer B, claiming meanwhile, skips
    the locked row: the next turn is member 2's, not member 1's second job (by start tag, not by
    member's use alone)."""
    settings = QueueSettings(max_pending_per_user=JOBS_PER_MEMBER)
    queue = JobQueue(database, settings)
    first_of_1 = await queue.enqueue(params("m1-0"), Requester(user_id=1, user_name="member1"))
    second_of_1 = await queue.enqueue(params("m1-1"), Requester(user_id=1, user_name="member1"))
    only_of_2 = await queue.enqueue(params("m2-0"), Requester(user_id=2, user_name="member2"))
    async with claimer_paused_mid_batch(database, settings) as (claimer_b, finish_a):
        taken_by_b = await asyncio.wait_for(claimer_b.claim_next(), 30)
        taken_by_a = await finish_a()
    assert taken_by_b is not None and taken_by_b.id == only_of_2.id, taken_by_b
    assert [job.id for job in taken_by_a] == [first_of_1.id, second_of_1.id]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_session_frozen_mid_transaction_is_ended_by_the_server(database):
    """A worker frozen (SIGSTOP, swapped out) inside a transaction would hold its job rows
    locked, and the lease expiry that hands them to another worker would wait on it forever:
    the server ends such a session (db.session.IDLE_IN_TRANSACTION_TIMEOUT_S)."""
    from sqlalchemy import text

    from db.session import IDLE_IN_TRANSACTION_TIMEOUT_S

    async with database.session() as session:
        setting = await session.scalar(text("SHOW idle_in_transaction_session_timeout"))
    assert setting == f"{IDLE_IN_TRANSACTION_TIMEOUT_S}s"
