"""Interactions waiting for their first answer go before the work that follows answers
(bot/answers_first.py): alone, then through the bot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from bot import answers_first
from bot.answers_first import AnswersFirst


def assert_returns_without_waiting(coroutine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StopIteration):
        coroutine.send(None)


@dataclass
class Response:
    done: bool = False

    def is_done(self) -> bool:
        return self.done


@dataclass
class Interaction:
    """What AnswersFirst reads of a discord.Interaction: whether its first answer went out."""

    response: Response = field(default_factory=Response)


async def test_a_waiter_goes_on_once_every_earlier_interaction_is_answered():
    first = AnswersFirst()
    a, b = Interaction(), Interaction()
    first.arrived(a)
    first.arrived(b)
    waiting = asyncio.ensure_future(first.wait_for_earlier())
    a.response.done = True
    first.answered()
    await asyncio.sleep(0.01)
    assert not waiting.done() and first.unanswered == 1
    b.response.done = True
    first.answered()
    await asyncio.wait_for(waiting, 1)
    assert first.unanswered == 0


async def test_an_answer_given_elsewhere_is_noticed_without_being_told():
    """A command that answers by itself (not through acknowledge) releases the waiters too:
    the flag is read every few milliseconds while anyone waits."""
    first = AnswersFirst()
    other = Interaction()
    first.arrived(other)
    waiting = asyncio.ensure_future(first.wait_for_earlier())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    other.response.done = True
    await asyncio.wait_for(waiting, 1)


async def test_later_arrivals_do_not_hold_an_earlier_waiter_back():
    first = AnswersFirst()
    early = Interaction()
    first.arrived(early)
    waiting = asyncio.ensure_future(first.wait_for_earlier())
    await asyncio.sleep(0)
    for _ in range(5):
        first.arrived(Interaction())  # a stream of new commands, none answered yet
    early.response.done = True
    first.answered()
    await asyncio.wait_for(waiting, 1)
    assert first.unanswered == 5


async def test_nothing_to_wait_for_returns_at_once():
    first = AnswersFirst()
    answered = Interaction(Response(done=True))
    first.arrived(answered)
    assert_returns_without_waiting(first.wait_for_earlier())
    assert first.unanswered == 0 and first._check_handle is None


async def test_an_interaction_never_answered_delays_the_others_only_for_a_while(monkeypatch):
    monkeypatch.setattr(answers_first, "MOST_WAIT_S", 0.05)
    first = AnswersFirst()
    first.arrived(Interaction())  # a lost request, a handler that crashed
    await asyncio.wait_for(first.wait_for_earlier(), 1)
    assert first._waiters == []  # the timed-out waiter leaves nothing behind


async def test_an_interaction_past_discords_deadline_is_not_waited_for():
    now = [0.0]
    first = AnswersFirst(clock=lambda: now[0])
    first.arrived(Interaction())
    now[0] = answers_first.ANSWER_DEADLINE_S + 0.1  # Discord no longer takes its answer
    assert_returns_without_waiting(first.wait_for_earlier())
    assert first.unanswered == 0


async def test_work_started_later_never_overtakes_work_still_waiting():
    """A job's "Generating" waits behind a burst; its result, started after the burst was
    answered, must still come after it (both take the job message's lock in turn)."""
    first = AnswersFirst()
    earlier = Interaction()
    first.arrived(earlier)
    order: list[str] = []

    async def show(name: str) -> None:
        await first.wait_for_earlier()
        order.append(name)

    started = asyncio.ensure_future(show("started"))
    await asyncio.sleep(0)
    earlier.response.done = True  # answered, not yet noticed: nothing is left unanswered
    result = asyncio.ensure_future(show("result"))
    await asyncio.wait_for(asyncio.gather(started, result), 1)
    assert order == ["started", "result"]


async def test_the_bot_counts_every_interaction_and_queues_after_the_earlier_ones_are_answered(harness, monkeypatch):
    """Through the bot: a command that comes while an earlier interaction is still unanswered
    gets its "thinking…" at once, and its job row only after that earlier one is answered."""
    monkeypatch.setattr(answers_first, "MOST_WAIT_S", 30.0)
    waits = harness.bot.answers_first
    alice = harness.member("alice")
    before = waits._arrivals
    await alice.slash(harness.channel, "settings")
    assert waits._arrivals == before + 1 and waits.unanswered == 0

    held = Interaction()  # still being handled, as a slow command would be
    waits.arrived(held)
    with harness.arriving_together():
        result = await alice.slash(harness.channel, "imagine", prompt="a patient heron", count=1)
    await asyncio.sleep(0.2)
    assert result.acknowledged
    assert await harness.job_count() == 0  # the checks and the row wait

    held.response.done = True
    waits.answered()  # as the next acknowledgement does (the bot's timers are simcord's to run)
    await harness.wait_for(lambda: _has_jobs(harness), "the job row")
    job = await harness.latest_job(alice.id)
    await harness.wait_for_job(job.id)
    assert harness.expect_user_errors() == []


async def _has_jobs(harness) -> bool:
    return await harness.job_count() == 1
