"""The bot's Discord request budget: what a bot with many workers may ask of Discord per second.

Discord allows a bot token about 50 requests a second across all its servers (its "global"
limit; a bot over it gets 429s, and one that keeps going is banned from the API for an hour).
Requests through an interaction's token (the answer to a command and the edits of that answer,
for 15 minutes) are outside it. Two buckets keep the bot under it however many jobs run:

- ``bot_token``: every request the delivery makes with the bot's own token (status edits after
  the interaction token expired, results posted as new messages, DMs, audit lines mirrored to a
  log channel). A request that must go out (a result, a failure) waits for its token, in turn,
  ahead of any progress edit; it is never dropped.
- ``progress``: progress, model-loading and queue-position edits, through either token. They
  are the first thing to drop: one that finds no token now is skipped (a newer frame, or the
  result, follows). With its rate below ``bot_token``'s, progress can never take more than its
  share of the bot token's budget, so results keep the rest. So that every job gets its turn,
  a job's own edits also space out with the jobs running at once (``progress_interval``):
  N jobs at R edits a second edit each about every N/R seconds.

Each bucket holds a quarter of a second's requests, so no second ever sees more than 1.25 times
its rate (50 at the default 40 a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import DiscordSettings

# A bucket's burst, in seconds of its rate.
BURST_S = 0.25


class TokenBucket:
    """Requests at ``per_second`` on average, at most ``burst`` at once."""

    def __init__(self, per_second: float, burst: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()
        # Requests that must go out queue here first come, first served (asyncio.Lock is FIFO).
        self._turn = asyncio.Lock()
        self._waiting = 0

    @classmethod
    def for_rate(cls, per_second: float) -> TokenBucket:
        return cls(per_second, burst=max(1.0, per_second * BURST_S))

    def has_token(self) -> bool:
        """Whether a droppable request could go now: a token is there and nothing must go first."""
        self._refill()
        return self._waiting == 0 and self._tokens >= 1

    def try_take(self) -> bool:
        """A droppable request's token, now or never (False: skip the request)."""
        if not self.has_token():
            return False
        self._tokens -= 1
        return True

    async def take(self) -> None:
        """A request that must go out: waits for its token, ahead of droppable ones."""
        self._waiting += 1
        try:
            async with self._turn:
                self._refill()
                while self._tokens < 1:
                    await asyncio.sleep((1 - self._tokens) / self.per_second)
                    self._refill()
                self._tokens -= 1
        finally:
            self._waiting -= 1

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now


@dataclass
class RequestBudget:
    bot_token: TokenBucket
    progress: TokenBucket

    @classmethod
    def from_settings(cls, settings: DiscordSettings) -> RequestBudget:
        return cls(
            bot_token=TokenBucket.for_rate(settings.bot_token_requests_per_s),
            progress=TokenBucket.for_rate(settings.progress_edits_per_s),
        )

    def progress_interval(self, configured_s: float, *, running: int) -> float:
        """Seconds between two progress edits of one job with ``running`` jobs at once: the
        configured interval, or longer, so that all of them together keep to the progress rate
        and every job gets its turn (a shared bucket alone would serve whichever asks first)."""
        return max(configured_s, running / self.progress.per_second)

    def progress_edit(self, *, through_bot_token: bool) -> bool:
        """Whether a progress edit may go now; it has taken its tokens when True."""
        if through_bot_token and not self.bot_token.has_token():
            return False
        if not self.progress.try_take():
            return False
        if through_bot_token:
            self.bot_token.try_take()  # there is one: checked above, and nothing awaited since
        return True

    async def bot_token_request(self) -> None:
        """Before a request with the bot's token that must go out (a result, a failure, a DM)."""
        await self.bot_token.take()
