"""The whole bot against simcord, instrumented for the bot benchmarks (overhead and load).

It reuses the tests' BotHarness (tests/harness.py: real cogs, queue, database, migrations and
worker process; only Discord is simulated) and adds what a benchmark needs:

- ``RequestClock``: the real time (perf_counter) at which each HTTP request the bot made
  reached the simulated Discord, so an interaction's acknowledgement time is measured where
  Discord would measure it: when its callback arrives.
- ``LoopMonitor``: the event loop's stalls, as the lateness of a short sleep, sampled all along.

simcord keeps a virtual clock for the bot's own timers; everything here reads perf_counter.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.models import cached_model

_CALLBACK = re.compile(r"/interactions/(\d+)/([^/]+)/callback$")
_FOLLOWUP = re.compile(r"^/webhooks/\d+/([^/]+)$")


def tiny_settings(
    workdir: Path,
    *,
    model_cache: Path | None = None,
    max_pending_per_user: int = 5,
    preview_interval_s: float = 1.5,
):
    """The tests' settings for the tiny model (tests/conftest.py), with the worker's production
    defaults for previews and PNG compression, and the queue limit the benchmark needs."""
    from bot.config import (
        ImageSettings,
        LimitSettings,
        ModelSettings,
        PromptSettings,
        QueueSettings,
        Settings,
        WorkerSettings,
    )

    folder = cached_model("tiny", model_cache)
    return Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'sdbot.sqlite3'}",
        outputs_dir=str(workdir / "outputs"),
        default_model="tiny",
        models=(ModelSettings(name="tiny", source=str(folder), description="tiny benchmark model", base_size=64),),
        limits=LimitSettings(min_size=64, max_size=512, max_pixels=512 * 512, default_steps=3, max_steps=60),
        queue=QueueSettings(max_pending_per_user=max_pending_per_user),
        worker=WorkerSettings(device="cpu", preview_interval_s=preview_interval_s, startup_timeout_s=300.0),
        images=ImageSettings(upscaler_dirs=(str(workdir / "upscalers"),)),
        prompts=PromptSettings(embedding_dirs=(str(workdir / "embeddings"),), lora_dirs=(str(workdir / "loras"),)),
    )


class _TimedLog(list):
    """simcord's request log, with the real arrival time of each entry."""

    def __init__(self, entries, times: list[float]):
        super().__init__(entries)
        self.times = times

    def append(self, entry) -> None:  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter())
        super().append(entry)


class RequestClock:
    """Real arrival times of the bot's HTTP requests at the simulated Discord."""

    def __init__(self, env) -> None:  # type: ignore[no-untyped-def]
        self.times: list[float] = [float("nan")] * len(env.backend.http_requests)
        self.log = _TimedLog(env.backend.http_requests, self.times)
        # The router appends every request to backend.http_requests; env.http_requests reads it.
        env.backend.http_requests = self.log
        self._acked: dict[int, float] = {}
        self._answered: dict[int, float] = {}
        self._tokens: dict[str, int] = {}  # interaction token -> id
        self._scanned = 0

    def acknowledgements(self) -> dict[int, float]:
        """Interaction id -> when its first callback (the acknowledgement) arrived."""
        self._scan()
        return self._acked

    def answers(self) -> dict[int, float]:
        """Interaction id -> when its first followup arrived: for a command acknowledged with
        "thinking…", its real answer (a job's status message, or a refusal)."""
        self._scan()
        return self._answered

    def _scan(self) -> None:
        for index in range(self._scanned, len(self.log)):
            entry = self.log[index]
            if entry.method != "POST":
                continue
            if found := _CALLBACK.search(entry.path):
                self._acked.setdefault(int(found.group(1)), self.times[index])
                self._tokens.setdefault(found.group(2), int(found.group(1)))
            elif (found := _FOLLOWUP.match(entry.path)) and found.group(1) in self._tokens:
                self._answered.setdefault(self._tokens[found.group(1)], self.times[index])
        self._scanned = len(self.log)

    def last_since(self, since: float, method: str, path_part: str) -> float | None:
        """The arrival time of the last request of this kind after ``since``."""
        for index in range(len(self.log) - 1, -1, -1):
            if self.times[index] < since:
                return None
            entry = self.log[index]
            if entry.method == method and path_part in entry.path:
                return self.times[index]
        return None


def interaction_id(result) -> int:  # type: ignore[no-untyped-def]
    # simcord 3.2's InteractionResult keeps its interaction record private; its id is the one
    # the bot's callback URL carries.
    return int(result._interaction.id)


@dataclass
class LoopMonitor:
    """Samples the event loop's responsiveness: sleeps ``interval_s`` and records how late it
    woke. The longest lateness is the longest time the loop ran something without yielding."""

    interval_s: float = 0.005
    samples: list[float] = field(default_factory=list)
    on_tick: Callable[[], None] | None = None  # called at each wake (bench.load's watchdog)
    _task: asyncio.Task | None = None
    _stop: bool = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bench-loop-monitor")

    async def _run(self) -> None:
        while not self._stop:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.samples.append(time.perf_counter() - before - self.interval_s)
            if self.on_tick is not None:
                self.on_tick()

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task

    def stalls_over(self, seconds: float) -> int:
        return sum(1 for late in self.samples if late > seconds)


async def started_harness(settings):  # type: ignore[no-untyped-def]
    """tests/harness.py's BotHarness, started (the worker process loads the model)."""
    from tests.harness import BotHarness

    harness = BotHarness(settings)
    await harness.start()
    return harness


def quiet_logs() -> None:
    """The bot logs each job at INFO; at benchmark rates that is noise (warnings still show)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("bot", "discord", "inference", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def workdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)

