"""The start tags kept in the waiting jobs' rows (bot.jobs.fairness): whatever happens to the
queue, each stays what its member's history makes it, so the claims' order is the fair one."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.config import QueueSettings
from bot.jobs import claims as claims_module
from bot.jobs.fairness import usage_since, worked_out_tags
from bot.jobs.queue import JobQueue, Requester
from bot.jobs.routing import ClaimingWorker
from db.base import utcnow
from db.models import Job, JobStatus
from inference.common.protocol import JobCompleted
from tests.test_queue import params

pytestmark = pytest.mark.both_backends

TINY_ONLY = ClaimingWorker("tiny-only", loadable=("tiny",), loaded=("tiny",))
MEMBERS = [Requester(user_id=number, user_name=f"member{number}") for number in range(1, 5)]


async def stored_and_worked_out(queue: JobQueue) -> tuple[dict[int, float], dict[int, float]]:
    """Each waiting job's stored tag, and the tag worked out from scratch."""
    since = usage_since(utcnow(), queue.settings.usage_window_hours)
    tags = worked_out_tags(since)
    async with queue.db.session() as session:
        stored = dict((await session.execute(select(Job.id, Job.start_tag).where(Job.status == JobStatus.PENDING))).all())
        fresh = dict((await session.execute(select(tags.c.id, tags.c.tag).where(tags.c.waiting == 1))).all())
    return stored, fresh


async def test_tags_stay_right_through_claims_cancels_failures_and_jobs_put_back(database):
    queue = JobQueue(database, QueueSettings(max_pending_per_user=50, max_attempts=3))
    rng = random.Random(7)
    running: list[Job] = []
    taken: Counter[str] = Counter()
    for step in range(120):
        waiting = list((await stored_and_worked_out(queue))[0])
        action = rng.choice(["enqueue", "enqueue", "claim", "claim", "finish", "cancel", "put back", "undo claim"])
        if action == "enqueue" or not (waiting or running):
            action = "enqueue"
            model = "tiny" if rng.random() < 0.9 else "other"
            job = await queue.enqueue(params(f"p{step}", count=rng.choice([1, 2, 4]), model=model), rng.choice(MEMBERS))
        elif action == "claim" and waiting:
            # A separate worker without the other model passes its jobs over: jobs start out of turn.
            running += await queue.claim_batch(rng.choice([1, 4]), rng.choice([None, TINY_ONLY]))
        elif action == "finish" and running:
            job = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.7:
                await queue.complete(JobCompleted(job.id, (), None, 1.0))
            else:
                await queue.fail(job.id, "broke")
        elif action == "cancel":
            job_id = rng.choice(waiting + [job.id for job in running])
            await queue.request_cancel(job_id)
            running = [job for job in running if job.id != job_id]
        elif action == "put back" and running:
            job = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.5:
                await queue.return_to_queue(job.id)
            else:
                await queue.release_interrupted(job.id, "The worker died.")
        elif action == "undo claim" and running:
            await queue.cancel_claimed(running.pop().id)
        else:
            continue  # nothing to do it to
        taken[action] += 1
        if step == 90:
            await queue.fail_waiting("other", "No worker can load other.")
        stored, fresh = await stored_and_worked_out(queue)
        assert stored == pytest.approx(fresh), f"after {action} at step {step}"
    # The walk went through every kind of step, several times.
    assert min(taken.values()) >= 5 and len(taken) == 6, taken


async def test_use_that_leaves_the_window_stops_counting_at_the_next_retag(database, monkeypatch):
    queue = JobQueue(database, QueueSettings(usage_window_hours=1.0))
    alice, bob = MEMBERS[:2]
    first = await queue.enqueue(params("a0"), alice)
    await queue.claim_next()
    await queue.complete(JobCompleted(first.id, (), None, 1.0))
    b0 = await queue.enqueue(params("b0"), bob)
    await queue.enqueue(params("b1"), bob)
    a1 = await queue.enqueue(params("a1"), alice)
    assert a1.start_tag == b0.cost  # a0 counts: a1 comes after b0 and b1 (the older)
    # Two hours on: a0 started before the window.
    async with database.session() as session, session.begin():
        await session.execute(update(Job).where(Job.id == first.id).values(started_at=utcnow() - timedelta(hours=2)))
    monkeypatch.setattr(claims_module, "RETAG_EVERY_S", 0.0)  # the minute between retags has passed
    order = [(await queue.claim_next()).prompt for _ in range(3)]
    assert order == ["b0", "a1", "b1"]
