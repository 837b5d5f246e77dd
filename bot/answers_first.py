"""Interactions still waiting for their first answer go before the work that follows answers.

A burst of commands reaches the bot at once: fifty interactions, each a task. Each acknowledges
("thinking…", bot.interactions.acknowledge) and then goes on to its checks, its queue row and its
status message, and the event loop runs those continuations in turn with the acknowledgements
still to come, so the last command of a burst waited on the work of the forty-nine before it
(bench/load.py: over a millisecond per place in the burst). Discord gives a bot
three seconds to answer and the member is watching; the queue row can wait a few milliseconds.

So an acknowledged interaction first waits here, before its checks and its queue row, until every
interaction that reached the bot before that moment has had its first answer. Those that come
later do not hold it back, so a steady stream of commands cannot starve anyone, and the wait
never passes MOST_WAIT_S: an interaction that is never answered (a bug, a lost request) delays
nothing for long. Whether an interaction was answered is discord.py's own flag
(InteractionResponse.is_done), read when an acknowledgement ends and every few milliseconds while
something waits: any command or button counts, whichever way it answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import discord

CHECK_EVERY_S = 0.002
MOST_WAIT_S = 0.25
# Discord takes no first answer after three seconds: such an interaction has nothing to wait for.
ANSWER_DEADLINE_S = 3.0


class AnswersFirst:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._arrivals = 0
        # arrival number -> (interaction, when it arrived), oldest first
        self._unanswered: dict[int, tuple[discord.Interaction, float]] = {}
        # (the last arrival the waiter waits for, its future)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._check_handle: asyncio.TimerHandle | None = None

    @property
    def unanswered(self) -> int:
        self._forget_answered()
        return len(self._unanswered)

    def arrived(self, interaction: discord.Interaction) -> None:
        """Called as discord.py dispatches the interaction, before any of its handlers runs."""
        self._arrivals += 1
        self._unanswered[self._arrivals] = (interaction, self._clock())

    def answered(self) -> None:
        """An answer went out: release those who waited only on answers now all given."""
        self._check()

    async def wait_for_earlier(self) -> None:
        """Return once every interaction that arrived before now has been answered (at most
        MOST_WAIT_S), and after those who called before: work keeps the order it was started in
        (commands reach the queue in the order they came)."""
        self._forget_answered()
        if not self._unanswered and not self._waiters:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self._arrivals, waiter))
        self._schedule_check()
        try:
            async with asyncio.timeout(MOST_WAIT_S):
                await waiter
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()
            self._waiters = [(last, future) for last, future in self._waiters if future is not waiter]

    def _forget_answered(self) -> None:
        now = self._clock()
        for number in [
            number for number, (interaction, since) in self._unanswered.items()
            if interaction.response.is_done() or now - since > ANSWER_DEADLINE_S
        ]:
            del self._unanswered[number]

    def _check(self) -> None:
        if self._check_handle is not None:
            self._check_handle.cancel()
            self._check_handle = None
        if not self._waiters:
            return
        self._forget_answered()
        oldest = next(iter(self._unanswered), self._arrivals + 1)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for last, waiter in self._waiters:
            if last < oldest:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((last, waiter))
        self._waiters = still
        if still:
            self._schedule_check()

    def _schedule_check(self) -> None:
        if self._check_handle is None:
            self._check_handle = asyncio.get_running_loop().call_later(CHECK_EVERY_S, self._check)
