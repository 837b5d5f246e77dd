"""The durable fair queue, on the real database: fairness, claims, caps, cancel, recovery."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from bot.config import QueueSettings
from bot.errors import JobNotFound, QueueFull
from bot.jobs.params import JobParameters
from bot.jobs.queue import CancelOutcome, JobQueue, Recovery, Requester
from db.models import AuditEntry, JobStatus
from inference.common.protocol import ImageResult, JobCompleted, JobKind

# The queue runs on both databases (tests/conftest.py).
pytestmark = pytest.mark.both_backends

ALICE = Requester(user_id=1, user_name="alice", channel_id=10)
BOB = Requester(user_id=2, user_name="bob", channel_id=10)
CAROL = Requester(user_id=3, user_name="carol", channel_id=10)


def params(prompt: str = "a lighthouse at dusk", **changes) -> JobParameters:
    values = dict(
        kind=JobKind.TXT2IMG, prompt=prompt, negative_prompt="", model="tiny", width=64, height=64,
        steps=4, cfg_scale=7.0, sampler="Euler a", count=1, seed=1,
    )
    values.update(changes)
    return JobParameters(**values)


@contextmanager
def statements_starting(database, prefix: str) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """The statements run while in the block whose text starts with ``prefix`` (any case)."""
    seen: list[str] = []

    def look(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(prefix.upper()):
            seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", look)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", look)


@pytest.fixture
def queue(database) -> JobQueue:
    return JobQueue(database, QueueSettings(max_pending_per_user=20, max_attempts=2))


async def run_order(queue: JobQueue) -> list[str]:
    order = []
    while (job := await queue.claim_next()) is not None:
        order.append(job.prompt)
        await queue.complete(JobCompleted(job.id, (), None, 1.0))
    return order


async def test_one_users_burst_does_not_starve_another(queue):
    first = await queue.enqueue(params("a0"), ALICE)
    started = await queue.claim_next()
    assert started.id == first.id
    for i in range(1, 10):
        await queue.enqueue(params(f"a{i}"), ALICE)
    await queue.enqueue(params("b0"), BOB)
    await queue.complete(JobCompleted(started.id, (), None, 1.0))
    # Bob's single job runs within the next two, although Alice queued nine before it.
    assert (await run_order(queue))[:2] in (["b0", "a1"], ["a1", "b0"])


async def test_users_take_turns(queue):
    for i in range(3):
        await queue.enqueue(params(f"a{i}"), ALICE)
    for i in range(2):
        await queue.enqueue(params(f"b{i}"), BOB)
    await queue.enqueue(params("c0"), CAROL)
    assert await run_order(queue) == ["a0", "b0", "c0", "a1", "b1", "a2"]


async def test_positions_follow_the_order_jobs_will_run_in(queue):
    for i in range(3):
        await queue.enqueue(params(f"a{i}"), ALICE)
    await queue.enqueue(params("b0"), BOB)
    running = await queue.claim_next()
    entries = await queue.active_entries()
    assert [(e.job.prompt, e.position) for e in entries] == [("a0", 0), ("b0", 1), ("a1", 2), ("a2", 3)]
    assert running.prompt == "a0"
    etas = [e.eta_seconds for e in entries[1:]]
    assert etas == sorted(etas) and etas[0] > 0
    assert [e.job.prompt for e in await queue.active_entries(user_id=BOB.user_id)] == ["b0"]


async def test_etas_follow_each_completed_job(database, queue):
    """The pace ETAs use is kept between asks, and every completion renews it: a waiting job
    of the usual size, with nothing ahead, is due in the average seconds of the jobs so far.
    Only the first ask reads the pace: each completion adds to it as it is recorded."""
    async def eta_of_a_waiting_job() -> float:
        waiting = await queue.enqueue(params("waiting"), BOB)
        entry = await queue.entry(waiting.id)
        await queue.request_cancel(waiting.id)
        return entry.eta_seconds

    units = 64 * 64 / 512**2 * 4 / 20  # of a params() job
    with statements_starting(database, "SELECT jobs.seconds") as pace_reads:
        assert await eta_of_a_waiting_job() == pytest.approx(units * queue.settings.initial_seconds_per_unit)
        for seconds, average in ((1.0, 1.0), (100.0, 50.5)):
            await queue.enqueue(params(), ALICE)
            await queue.complete(JobCompleted((await queue.claim_next()).id, (), None, seconds))
            assert await eta_of_a_waiting_job() == pytest.approx(average)
            assert await eta_of_a_waiting_job() == pytest.approx(average)  # asked again: the same
    assert len(pace_reads) == 1


async def test_pending_cap_per_user(database):
    queue = JobQueue(database, QueueSettings(max_pending_per_user=2))
    await queue.enqueue(params(), ALICE)
    await queue.enqueue(params(), ALICE)
    with pytest.raises(QueueFull, match="2 jobs waiting"):
        await queue.enqueue(params(), ALICE)
    await queue.enqueue(params(), BOB)  # the cap is per user
    await queue.claim_next()  # one of Alice's starts: she may queue again
    await queue.enqueue(params(), ALICE)


async def test_a_claimed_row_is_not_claimed_twice(queue):
    await queue.enqueue(params(), ALICE)
    assert await queue.claim_next() is not None
    assert await queue.claim_next() is None


async def test_cancel_pending_wins_over_a_later_claim(queue):
    job = await queue.enqueue(params(), ALICE)
    _, outcome = await queue.request_cancel(job.id)
    assert outcome is CancelOutcome.CANCELED
    assert await queue.claim_next() is None
    _, again = await queue.request_cancel(job.id)
    assert again is CancelOutcome.ALREADY_FINISHED


async def test_cancel_running_then_completion_is_dropped(queue):
    job = await queue.enqueue(params(), ALICE)
    await queue.claim_next()
    _, outcome = await queue.request_cancel(job.id)
    assert outcome is CancelOutcome.STOPPING
    image = ImageResult(0, 1, None, "/nowhere.png", "x", 64, 64)
    assert await queue.complete(JobCompleted(job.id, (image,), None, 1.0)) is None
    assert (await queue.get(job.id)).status == JobStatus.CANCELED


async def test_cancel_unknown_job(queue):
    with pytest.raises(JobNotFound):
        await queue.request_cancel(999)


async def test_a_number_beyond_the_id_column_names_no_job(queue):
    # Typed (/show and /cancel take Discord's 53-bit integers) or forged into a button: past
    # PostgreSQL's 32-bit INTEGER, or SQLite's 64 bits, the database refused the query itself.
    await queue.enqueue(params(), ALICE)
    for number in (0, -1, 2**31, 2**53, 2**63, 2**70):
        assert await queue.get(number) is None, number
    with pytest.raises(JobNotFound):
        await queue.require(2**63)


async def test_interrupted_job_is_requeued_once_then_failed(queue):
    job = await queue.enqueue(params(), ALICE)
    await queue.claim_next()
    _, recovery = await queue.release_interrupted(job.id, "The worker died.")
    assert recovery is Recovery.REQUEUED
    assert (await queue.get(job.id)).status == JobStatus.PENDING
    again = await queue.claim_next()
    assert again.id == job.id and again.attempts == 2
    failed, recovery = await queue.release_interrupted(job.id, "The worker died.")
    assert recovery is Recovery.FAILED
    assert failed.status == JobStatus.FAILED and "will not be tried again" in failed.error


async def test_a_graceful_stop_does_not_use_up_an_attempt(queue):
    job = await queue.enqueue(params(), ALICE)
    await queue.claim_next()
    await queue.return_to_queue(job.id)
    returned = await queue.get(job.id)
    assert returned.status == JobStatus.PENDING and returned.attempts == 0


@pytest.mark.parametrize("put_back", ["graceful stop", "crash"])
async def test_a_job_put_back_keeps_its_place_and_its_try_is_not_counted_as_use(queue, put_back):
    job = await queue.enqueue(params("a0"), ALICE)
    await queue.claim_next()
    if put_back == "crash":
        await queue.release_interrupted(job.id, "The worker died.")
    else:
        await queue.return_to_queue(job.id)
    assert (await queue.get(job.id)).started_at is None
    await queue.enqueue(params("b0"), BOB)
    # Neither member has started anything now: the job that waited longest goes first.
    assert await run_order(queue) == ["a0", "b0"]


async def test_completion_records_images(queue):
    job = await queue.enqueue(params(count=2, seed=5), ALICE)
    await queue.claim_next()
    images = tuple(ImageResult(i, 5 + i, None, f"/tmp/{i}.png", f"info {i}", 64, 64) for i in range(2))
    done = await queue.complete(JobCompleted(job.id, images, "/tmp/grid.png", 2.5))
    assert done.status == JobStatus.COMPLETED
    stored = await queue.get(job.id)
    assert [(i.index, i.seed, i.infotext) for i in stored.images] == [(0, 5, "info 0"), (1, 6, "info 1")]
    assert stored.grid_path == "/tmp/grid.png" and stored.seconds == 2.5 and stored.finished_at is not None


async def finish(queue: JobQueue, jobs) -> None:  # type: ignore[no-untyped-def]
    for job in jobs:
        await queue.complete(JobCompleted(job.id, (), None, 1.0))


async def test_one_jobs_place_matches_the_whole_queues_order(queue):
    """entry() works out a place from three columns of the waiting jobs (cheap with thousands
    waiting); it must agree with active_entries, which loads the whole queue, in every position."""
    for i in range(4):
        await queue.enqueue(params(f"a{i}"), ALICE)
    await queue.enqueue(params("b0"), BOB)
    await finish(queue, [await queue.claim_next(), await queue.claim_next()])  # a0, then b0 ran
    for i in range(2):
        await queue.enqueue(params(f"c{i}", count=2), CAROL)
        await queue.enqueue(params(f"b{i + 1}"), BOB)
    await queue.enqueue(params("a4"), ALICE)
    await queue.claim_next()  # c0 runs now (Carol never ran)
    entries = await queue.active_entries()
    assert [e.position for e in entries] == list(range(len(entries)))
    for whole in entries:
        alone = await queue.entry(whole.job.id)
        assert alone is not None and (alone.job.id, alone.position) == (whole.job.id, whole.position)
        assert alone.eta_seconds == pytest.approx(whole.eta_seconds, rel=0.35)  # the running job ages between reads
    # By GPU time: Carol's jobs of two images count twice, so c1 waits for a2's turn.
    assert [e.job.prompt for e in entries] == ["c0", "a1", "b1", "a2", "c1", "b2", "a3", "a4"]
    assert await queue.entry(entries[0].job.id + 1000) is None


async def test_a_job_claimed_while_its_place_is_read_is_reported_running(queue, monkeypatch):
    """The worker can claim a job between entry()'s reads: the answer is its running entry,
    not an error (CI caught a new job's answer failing on exactly this)."""
    job = await queue.enqueue(params("a0"), ALICE)
    real_seconds_per_unit = queue._seconds_per_unit
    claimed = []

    async def claim_in_between(session):  # type: ignore[no-untyped-def]
        if not claimed:
            claimed.append(await queue.claim_next())
        return await real_seconds_per_unit(session)

    monkeypatch.setattr(queue, "_seconds_per_unit", claim_in_between)
    entry = await queue.entry(job.id)
    assert claimed[0].id == job.id
    assert entry is not None and entry.job.id == job.id and entry.position == 0
    assert entry.job.status == JobStatus.RUNNING


async def test_privacy_is_read_from_the_rows_once_and_kept_with_them(database, queue):
    """The privacy index (read before every acknowledgement) agrees with the rows: what a
    queue writes shows at once, and a new queue (a restart) reads the same from the database."""
    assert not await queue.privacy.answers_privately(ALICE.user_id, None)
    await queue.update_user(ALICE.user_id, "alice", private_results=True)
    public = await queue.enqueue(params("seen"), BOB)
    private = await queue.enqueue(params("hidden"), Requester(user_id=2, user_name="bob", channel_id=10, private=True))
    for fresh in (queue, JobQueue(database, QueueSettings())):
        assert await fresh.privacy.answers_privately(ALICE.user_id, None)
        assert not await fresh.privacy.answers_privately(BOB.user_id, public.id)
        assert await fresh.privacy.answers_privately(BOB.user_id, private.id)
    await queue.update_user(ALICE.user_id, "alice", private_results=False)
    assert not await queue.privacy.answers_privately(ALICE.user_id, None)
    assert not await JobQueue(database, QueueSettings()).privacy.answers_privately(ALICE.user_id, None)


async def test_privacy_once_loaded_needs_no_database(database, queue, monkeypatch):
    """The bot loads the index at start-up (setup_hook); after that an acknowledgement asks
    the database nothing, however many commands come at once."""
    await queue.update_user(ALICE.user_id, "alice", private_results=True)
    fresh = JobQueue(database, QueueSettings())
    assert not fresh.privacy.loaded
    await fresh.privacy.load()
    assert fresh.privacy.loaded

    def no_database():  # type: ignore[no-untyped-def]
        raise AssertionError("the database was read")

    monkeypatch.setattr(database, "session", no_database)
    assert await fresh.privacy.answers_privately(ALICE.user_id, None)
    assert not await fresh.privacy.answers_privately(BOB.user_id, None)


async def test_a_new_members_first_jobs_at_once_both_queue(queue):
    """Both find no users row; one statement writes it (an upsert), so neither fails on
    the row the other just inserted."""
    import asyncio

    jobs = await asyncio.gather(*(queue.enqueue(params(f"kite {n}"), ALICE) for n in range(3)))
    assert len({job.id for job in jobs}) == 3
    await queue.update_user(ALICE.user_id, "alice2", private_results=True)
    user = await queue.user(ALICE.user_id)
    assert user is not None and user.name == "alice2" and user.private_results


async def test_a_row_made_from_the_job_is_written_in_the_jobs_own_transaction(database):
    """enqueue's with_row (the "job queued" audit entry): made once the job has its id, and
    committed with it, so a burst's jobs add no transactions for their entries."""
    commits: list[int] = []
    event.listen(database.engine.sync_engine, "commit", lambda connection: commits.append(1))
    queue = JobQueue(database, QueueSettings(max_pending_per_user=20, max_attempts=2))
    job = await queue.enqueue(
        params(), ALICE, with_row=lambda job: AuditEntry(actor_id=job.user_id, action="job.queued", job_id=job.id)
    )
    assert len(commits) == 1
    async with database.session() as session:
        entry = await session.scalar(select(AuditEntry))
    assert (entry.job_id, entry.actor_id, entry.action) == (job.id, ALICE.user_id, "job.queued")


async def test_a_row_made_from_the_completed_job_is_written_in_the_completions_transaction(database, queue):
    """complete's with_row (the outcome's audit entry): one transaction for the completion,
    its images and the entry; and none when the job was canceled meanwhile."""
    done, canceled = await queue.enqueue(params("done"), ALICE), await queue.enqueue(params("canceled"), ALICE)
    commits: list[int] = []
    event.listen(database.engine.sync_engine, "commit", lambda connection: commits.append(1))

    def outcome(job):  # type: ignore[no-untyped-def]
        return AuditEntry(actor_id=0, action="job.completed", job_id=job.id, details=f"{job.status} in {job.seconds} s")

    assert (await queue.claim_next()).id == done.id
    completed = await queue.complete(JobCompleted(done.id, (), None, 1.5), with_row=outcome)
    assert completed is not None and completed.status == JobStatus.COMPLETED
    assert len(commits) == 2  # the claim, then the completion with its entry
    assert (await queue.claim_next()).id == canceled.id
    await queue.request_cancel(canceled.id)
    assert await queue.complete(JobCompleted(canceled.id, (), None, 1.0), with_row=outcome) is None
    async with database.session() as session:
        entries = list(await session.scalars(select(AuditEntry)))
    assert [(e.job_id, e.details) for e in entries] == [(done.id, "completed in 1.5 s")]


async def test_a_members_row_is_read_once_and_again_after_each_write(database, queue):
    """JobQueue.user keeps the row it read (every generating command reads it first); a write
    through the queue (a setting, a first job, a new name) is seen at the next read."""
    with statements_starting(database, "SELECT users.") as reads:
        assert await queue.user(ALICE.user_id) is None and await queue.user(ALICE.user_id) is None
        assert len(reads) == 1  # no row yet: that too is kept
        await queue.enqueue(params(), ALICE)  # the first job makes the row
        assert (await queue.user(ALICE.user_id)).name == "alice"
        await queue.update_user(ALICE.user_id, "alice", default_steps=33)
        assert (await queue.user(ALICE.user_id)).default_steps == 33
        await queue.enqueue(params(), Requester(user_id=ALICE.user_id, user_name="alice_renamed"))
        assert (await queue.user(ALICE.user_id)).name == "alice_renamed"
        assert (await queue.user(ALICE.user_id)).name == "alice_renamed"
        assert len(reads) == 4  # once at first, then once after each of the three writes


async def test_the_members_row_is_written_when_new_or_renamed_not_at_every_job(database, queue):
    with statements_starting(database, "INSERT INTO users") as writes:
        await queue.enqueue(params("a0"), ALICE)
        await queue.enqueue(params("a1"), ALICE)
        assert len(writes) == 1  # the first job made the row; the second found it as it was
        await queue.enqueue(params("a2"), Requester(user_id=ALICE.user_id, user_name="alice_renamed"))
        assert len(writes) == 2
    assert (await queue.user(ALICE.user_id)).name == "alice_renamed"
