"""The whole bot against simcord, instrumented for the bot benchmarks (overhead and load).

It reuses the tests' BotHarness (tests/harness.py: real cogs, queue, database, migrations and
worker process; only Discord is simulated) and adds what a benchmark needs:

- ``RequestClock``: the real time (perf_counter) at which each HTTP request the bot made
  reached the simulated Discord, so an interaction's acknowledgement time is measured where
  Discord would measure it: when its callback arrives.
- ``LoopMonitor``: the event loop's lateness, as that of a short sleep, sampled all along.
- ``CallbackTimer``: the event loop's stalls proper, each callback's own run time, also less
  the garbage collections inside it.
- ``SimulationTime``: how much of the loop's time the simulated Discord took, to tell the
  bot's own latency from the harness's.

simcord keeps a virtual clock for the bot's own timers; everything here reads perf_counter.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from bench.models import cached_model

T = TypeVar("T")

_CALLBACK = re.compile(r"/interactions/(\d+)/([^/]+)/callback$")
_FOLLOWUP = re.compile(r"^/webhooks/\d+/([^/]+)$")


def tiny_settings(
    workdir: Path,
    *,
    model_cache: Path | None = None,
    max_pending_per_user: int = 5,
    preview_interval_s: float = 1.5,
    worker_start: str = "spawn",
):
    """The tests' settings for the tiny model (tests/tiny_settings.py), with the worker's production
    defaults for previews and PNG compression, and the queue limit the benchmark needs."""
    from bot.config import WorkerSettings
    from tests.tiny_settings import tiny_settings as test_settings

    return test_settings(
        workdir,
        cached_model("tiny", model_cache),
        description="tiny benchmark model",
        max_size=512,
        max_pending_per_user=max_pending_per_user,
        worker=WorkerSettings(
            device="cpu", preview_interval_s=preview_interval_s, startup_timeout_s=300.0, start_method=worker_start,
        ),
    )


class SimulationTime:
    """The seconds the simulated Discord has run on the bot's event loop: its handling of the
    bot's requests (simcord's router, called inside the bot's HTTP calls where real Discord
    would be a network away) and the simulated members' sending (``members_side``), less
    discord.py's parsing of the events it delivers, which is the bot's own work with a real
    Discord too. ``bot_clock()`` is perf_counter less those seconds: the clock of a bot whose
    Discord took none of its loop's time. simcord's settling and its wrappers around the
    bot's callbacks are not counted, so the bot's figures stay on the high side.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._depth = 0
        self._since = 0.0
        self._undo: list[Callable[[], None]] = []

    def begin(self) -> None:
        if self._depth == 0:
            self._since = time.perf_counter()
        self._depth += 1

    def end(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.total += time.perf_counter() - self._since

    async def members_side(self, sending: Awaitable[T]) -> T:
        """Await a simulated member's sending (a slash command, a click), counted as the
        simulation's time."""
        self.begin()
        try:
            return await sending
        finally:
            self.end()

    def bot_clock(self) -> float:
        now = time.perf_counter()
        return now - self.total - (now - self._since if self._depth else 0.0)

    def install(self, harness) -> None:  # type: ignore[no-untyped-def]
        from simcord.http import router

        dispatch = router.dispatch

        def timed_dispatch(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.begin()
            try:
                return dispatch(*args, **kwargs)
            finally:
                self.end()

        router.dispatch = timed_dispatch  # simcord's HTTP client calls router.dispatch(...)
        self._undo.append(lambda: setattr(router, "dispatch", dispatch))
        parsers = harness.bot._connection.parsers
        originals = dict(parsers)
        parsers.update({event: self._bots_own(parse) for event, parse in originals.items()})
        self._undo.append(lambda: parsers.update(originals))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _bots_own(self, parse: Callable[[dict], None]) -> Callable[[dict], None]:
        def timed_parse(data: dict) -> None:
            depth = self._depth
            if depth:  # inside the simulation: this part is the bot's
                self.total += time.perf_counter() - self._since
                self._depth = 0
            try:
                parse(data)
            finally:
                if depth:
                    self._since = time.perf_counter()
                    self._depth = depth

        return timed_parse


class _Request(NamedTuple):
    method: str
    path: str


class _TimedLog(list):
    """simcord's request log, with the real arrival time of each entry (and on the bot's
    clock, when a SimulationTime is given)."""

    def __init__(self, entries, times: list[float], bot_times: list[float], simulation: SimulationTime | None):
        super().__init__(entries)
        self.times = times
        self.bot_times = bot_times
        self.simulation = simulation

    def append(self, entry) -> None:  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter())
        self.bot_times.append(self.simulation.bot_clock() if self.simulation else float("nan"))
        # The method and path only: simcord's entry keeps a deep copy of every payload, which
        # over a long benchmark is a heap that each full garbage collection of the bot's
        # process would scan, and no benchmark reads.
        super().append(_Request(entry.method, entry.path))


class RequestClock:
    """Real arrival times of the bot's HTTP requests at the simulated Discord."""

    def __init__(self, env, simulation: SimulationTime | None = None) -> None:  # type: ignore[no-untyped-def]
        self.times: list[float] = [float("nan")] * len(env.backend.http_requests)
        self.bot_times: list[float] = list(self.times)
        self.log = _TimedLog(env.backend.http_requests, self.times, self.bot_times, simulation)
        # The router appends every request to backend.http_requests; env.http_requests reads it.
        env.backend.http_requests = self.log
        self._acked: dict[int, int] = {}  # interaction id -> index in the log
        self._answered: dict[int, int] = {}
        self._tokens: dict[str, int] = {}  # interaction token -> id
        self._scanned = 0

    def acknowledgements(self, *, bot_clock: bool = False) -> dict[int, float]:
        """Interaction id -> when its first callback (the acknowledgement) arrived."""
        self._scan()
        return self._at(self._acked, bot_clock)

    def answers(self, *, bot_clock: bool = False) -> dict[int, float]:
        """Interaction id -> when its first followup arrived: for a command acknowledged with
        "thinking…", its real answer (a job's status message, or a refusal)."""
        self._scan()
        return self._at(self._answered, bot_clock)

    def _at(self, indexes: dict[int, int], bot_clock: bool) -> dict[int, float]:
        times = self.bot_times if bot_clock else self.times
        return {interaction: times[index] for interaction, index in indexes.items()}

    def _scan(self) -> None:
        for index in range(self._scanned, len(self.log)):
            entry = self.log[index]
            if entry.method != "POST":
                continue
            if found := _CALLBACK.search(entry.path):
                self._acked.setdefault(int(found.group(1)), index)
                self._tokens.setdefault(found.group(2), int(found.group(1)))
            elif (found := _FOLLOWUP.match(entry.path)) and found.group(1) in self._tokens:
                self._answered.setdefault(self._tokens[found.group(1)], index)
        self._scanned = len(self.log)

    def last_since(self, since: float, method: str, path_part: str, *, bot_clock: bool = False) -> float | None:
        """The arrival time of the last request of this kind after ``since`` (perf_counter)."""
        for index in range(len(self.log) - 1, -1, -1):
            if self.times[index] < since:
                return None
            entry = self.log[index]
            if entry.method == method and path_part in entry.path:
                return (self.bot_times if bot_clock else self.times)[index]
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


class CallbackTimer:
    """Times every callback the event loop runs (a task's step from one await to the next, a
    timer, a reader): the longest is the longest the loop was blocked, which is what asyncio's
    debug mode calls a slow callback. The LoopMonitor's lateness adds to that the time waiting
    behind the other callbacks ready at once (a burst of interactions): the same loop seen as
    a queue. Debug mode itself is not used: it takes a stack at every call_soon.

    Wraps asyncio.Handle._run while installed (Python-level Handle: every task step goes
    through one); the cost is two clock reads per callback.

    A garbage collection runs inside whichever callback allocated when a threshold was passed,
    so a slow callback may be mostly the collector's. Given ``collector`` (anything whose
    ``seconds`` attribute sums the collector's pauses so far: bench.load.CollectorPauses), each
    callback's time is also counted less the collections inside it: the longest of those is the
    longest the bot's own code held the loop."""

    def __init__(self, slow_s: float = 0.05, collector: object | None = None) -> None:
        self.slow_s = slow_s
        self.collector = collector
        self.callbacks = 0
        self.longest_s = 0.0
        self.longest_less_collections_s = 0.0
        # (seconds, seconds of it in collections, what) of each callback past slow_s
        self.slow: list[tuple[float, float, str]] = []
        self.over_100ms = 0
        self._original: Callable | None = None

    def install(self) -> None:
        original = self._original = asyncio.events.Handle._run
        clock, timer = time.perf_counter, self
        collector = self.collector if self.collector is not None else _NoCollector()

        def timed_run(handle: asyncio.Handle) -> None:
            collected_before = collector.seconds
            started = clock()
            try:
                original(handle)
            finally:
                took = clock() - started
                timer.callbacks += 1
                if took > timer.longest_s:
                    timer.longest_s = took
                # Only a callback longer than the longest so far can set a new longest less
                # its collections; reading the collector for the others would be wasted.
                if took > timer.slow_s or took > timer.longest_less_collections_s:
                    in_collections = collector.seconds - collected_before
                    timer.longest_less_collections_s = max(timer.longest_less_collections_s, took - in_collections)
                    if took > timer.slow_s:
                        timer._record(handle, took, in_collections)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
            self._original = None

    def _record(self, handle: asyncio.Handle, took: float, in_collections: float) -> None:
        if took > 0.1:
            self.over_100ms += 1
        self.slow.append((took, in_collections, _callback_name(handle)))

    def report(self, top: int = 8) -> dict[str, object]:
        by_name: dict[str, list[tuple[float, float]]] = {}
        for took, in_collections, name in self.slow:
            by_name.setdefault(name, []).append((took, in_collections))
        worst = sorted(by_name.items(), key=lambda item: -max(item[1])[0])[:top]
        slow_ms = round(self.slow_s * 1000)
        return {
            "callbacks": self.callbacks,
            "longest_ms": round(self.longest_s * 1000, 1),
            f"over_{slow_ms}ms": len(self.slow),
            "over_100ms": self.over_100ms,
            # The same less the garbage collections that ran inside each callback.
            "longest_less_collections_ms": round(self.longest_less_collections_s * 1000, 1),
            f"over_{slow_ms}ms_less_collections": sum(1 for took, gc_s, _ in self.slow if took - gc_s > self.slow_s),
            "slowest": [
                {
                    "callback": name, "count": len(runs), "longest_ms": round(max(runs)[0] * 1000, 1),
                    "of_it_in_collections_ms": round(max(runs)[1] * 1000, 1),
                }
                for name, runs in worst
            ],
        }


class _NoCollector:
    seconds = 0.0


def _callback_name(handle: asyncio.Handle) -> str:
    """A task step by its task's coroutine and where the step ended (the innermost await of the
    project's own code), anything else by its function."""
    callback = handle._callback  # type: ignore[attr-defined]
    # simcord wraps the bot's callbacks to know when it has settled.
    callback = getattr(callback, "__simcord_original_callback__", callback)
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return getattr(callback, "__qualname__", repr(callback))
    coro = task.get_coro()
    name = getattr(getattr(coro, "cr_code", None), "co_qualname", repr(coro))
    where, awaited = None, coro
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        frame = awaited.cr_frame
        if where is None or any(part in frame.f_code.co_filename for part in OWN_CODE):
            where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
        awaited = getattr(awaited, "cr_await", None)
    return f"task {name}" + (f", paused at {where}" if where else ", done")


OWN_CODE = ("/bot/", "/db/", "/inference/")


async def started_harness(settings):  # type: ignore[no-untyped-def]
    """tests/harness.py's BotHarness, started (the worker process loads the model)."""
    from tests.harness import BotHarness

    harness = BotHarness(settings)
    await harness.start()
    return harness


QUIETED_LOGGERS = ("bot", "discord", "inference", "alembic", "sqlalchemy")


def quiet_logs() -> None:
    """The bot logs each job at INFO; at benchmark rates that is noise (warnings still show).

    Called from a benchmark's ``run`` coroutine, the loggers get their levels back when the
    task running it ends: a benchmark run inside another program (the smoke tests) leaves
    that program's logging as it found it."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: quiet for the rest of the process
        task = None
    if task is not None:
        def restore_levels(_task: asyncio.Task) -> None:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)

        task.add_done_callback(restore_levels)


def workdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)

