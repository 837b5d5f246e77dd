"""Separate workers' claims on the real database (both backends): leases that expire hand a
job back (counted), a late worker's writes are fenced off, a graceful stop hands it back
uncounted, and the claim routes each job to a worker that can load its model."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.config import QueueSettings
from bot.jobs.leases import WorkerNameInUse, WorkerRegistry
from bot.jobs.queue import JobQueue, Recovery
from bot.jobs.routing import ClaimingWorker
from db.base import utcnow
from db.models import JobStatus, Worker
from inference.common.protocol import ImageResult, JobCompleted
from tests.test_queue import ALICE, BOB, params

pytestmark = pytest.mark.both_backends

LEASE_S = 30.0


@pytest.fixture
def queue(database) -> JobQueue:
    return JobQueue(database, QueueSettings(max_pending_per_user=20, max_attempts=2))


@pytest.fixture
def registry(queue) -> WorkerRegistry:
    return WorkerRegistry(queue, LEASE_S)


def worker(name: str, loaded=("tiny",), loadable=("tiny",)) -> ClaimingWorker:  # type: ignore[no-untyped-def]
    return ClaimingWorker(name, tuple(loadable), tuple(loaded), LEASE_S)


async def register(registry: WorkerRegistry, claiming: ClaimingWorker) -> None:
    await registry.register(claiming.name, "host", "cpu", claiming.loaded, claiming.loadable)


async def silence(database, name: str) -> None:
    """The worker's last heartbeat is older than the lease: killed, frozen or cut off."""
    async with database.session() as session, session.begin():
        await session.execute(
            update(Worker).where(Worker.name == name).values(heartbeat_at=utcnow() - timedelta(seconds=LEASE_S + 1))
        )


def completion(job_id: int, path: str) -> JobCompleted:
    return JobCompleted(job_id, (ImageResult(0, 1, None, path, "", 64, 64),), None, 1.0)


async def test_a_silent_workers_job_runs_elsewhere_and_the_late_worker_cannot_complete_it(queue, registry, database):
    late, other = worker("late"), worker("other")
    await register(registry, late)
    await register(registry, other)
    job = await queue.enqueue(params(), ALICE)
    [held] = await queue.claim_batch(1, late)
    assert (held.worker_name, held.attempts) == ("late", 1) and held.lease_token

    assert await registry.expire_leases() == []  # its heartbeat is fresh: nothing expires
    await silence(database, "late")
    [(released, recovery)] = await registry.expire_leases()
    assert (released.id, recovery, released.status, released.worker_name) == (job.id, Recovery.REQUEUED, JobStatus.PENDING, None)

    [again] = await queue.claim_batch(1, other)
    assert (again.id, again.attempts, again.worker_name) == (job.id, 2, "other")  # the lost try counted
    # The late worker wakes up: none of its writes about the job land.
    assert await queue.complete(completion(job.id, "late.png"), held.lease_token) is None
    assert await queue.fail(job.id, "broke", lease_token=held.lease_token) is None
    await queue.return_to_queue(job.id, held.lease_token)
    assert (await queue.release_interrupted(job.id, "gone", held.lease_token))[1] is Recovery.UNCHANGED
    assert (await registry.lease_tokens([job.id])) == {job.id: again.lease_token}
    done = await queue.complete(completion(job.id, "other.png"), again.lease_token)
    assert done is not None and [image.path for image in done.images] == ["other.png"]


async def test_a_job_lost_past_max_attempts_fails_with_the_reason(queue, registry, database):
    gone = worker("gone")
    await register(registry, gone)
    job = await queue.enqueue(params(), ALICE)
    for _ in range(2):
        await queue.claim_batch(1, gone)
        await silence(database, "gone")
        [(released, recovery)] = await registry.expire_leases()
        await register(registry, gone)  # it comes back, and loses the job again
    assert (released.id, recovery, released.status) == (job.id, Recovery.FAILED, JobStatus.FAILED)
    assert "stopped answering" in released.error and "tried 2 times" in released.error


async def test_a_graceful_stop_hands_the_job_back_uncounted(queue, registry):
    stopping = worker("stopping")
    await register(registry, stopping)
    job = await queue.enqueue(params(), ALICE)
    [held] = await queue.claim_batch(1, stopping)
    await queue.return_to_queue(job.id, held.lease_token)
    await registry.stopped("stopping")
    back = await queue.get(job.id)
    assert (back.status, back.attempts, back.worker_name, back.lease_token) == (JobStatus.PENDING, 0, None, None)
    assert [status.name for status in await registry.workers()] == []  # a stopped worker is not listed


async def test_a_live_worker_name_is_not_taken_twice_but_a_silent_ones_is(registry, database):
    await register(registry, worker("gpu0"))
    with pytest.raises(WorkerNameInUse, match="gpu0.*another --name"):
        await register(registry, worker("gpu0"))
    await silence(database, "gpu0")
    await register(registry, worker("gpu0"))  # a restart after a crash takes its row back


async def test_a_worker_never_claims_a_model_it_cannot_load(queue, registry):
    only_tiny = worker("only-tiny")
    await register(registry, only_tiny)
    other = await queue.enqueue(params(model="other"), ALICE)
    assert await queue.claim_batch(4, only_tiny) == []
    tiny = await queue.enqueue(params(), BOB)
    assert [job.id for job in await queue.claim_batch(4, only_tiny)] == [tiny.id]
    assert await registry.unroutable_models({"other", "tiny"}) == {"other"}
    assert (await queue.get(other.id)).status == JobStatus.PENDING  # left for a worker that can


async def test_a_job_goes_to_the_free_worker_that_has_its_model_loaded(queue, registry, database):
    cold = worker("cold", loaded=("tiny",), loadable=("tiny", "other"))
    warm = worker("warm", loaded=("other",), loadable=("tiny", "other"))
    await register(registry, cold)
    await register(registry, warm)
    job = await queue.enqueue(params(model="other"), ALICE)
    assert await queue.claim_batch(1, cold) == []  # warm is free and has it loaded
    [taken] = await queue.claim_batch(1, warm)
    assert taken.id == job.id
    # warm is busy now: cold loads the model rather than let the job wait.
    second = await queue.enqueue(params(model="other"), BOB)
    assert [job.id for job in await queue.claim_batch(1, cold)] == [second.id]
    # And once warm is gone, its model counts for nothing.
    third = await queue.enqueue(params(model="other"), ALICE)
    await registry.heartbeat("warm", None, ("other",), 1)
    await silence(database, "warm")
    await registry.heartbeat("cold", None, ("tiny",), 1)
    assert [job.id for job in await queue.claim_batch(1, cold)] == [third.id]


async def test_a_workers_batch_shares_one_lease(queue, registry):
    batcher = worker("batcher")
    await register(registry, batcher)
    first = await queue.enqueue(params("a"), ALICE)
    second = await queue.enqueue(params("b"), BOB)
    batch = await queue.claim_batch(4, batcher)
    assert {job.id for job in batch} == {first.id, second.id}
    assert len({job.lease_token for job in batch}) == 1 and {job.worker_name for job in batch} == {"batcher"}
    [row] = [status for status in await registry.workers() if status.name == "batcher"]
    assert row.current_job_id == batch[0].id and row.live
    assert await registry.lease_tokens([job.id for job in batch]) == {job.id: job.lease_token for job in batch}
