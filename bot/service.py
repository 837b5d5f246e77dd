"""Running as a service: one bot per database, and an orderly stop on SIGTERM and SIGINT.

`docker stop`, `systemctl stop` and Ctrl-C all end in a signal. Python's default would kill
the bot where it stands (exit -15, the running job counted as a failed attempt); here a signal
only sets an event, and each phase of `sdbot run` watches it: a migration is let finish (it is
one transaction), the worker's start-up is abandoned, a running bot shuts down in order
(SDBot.shut_down) and the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from db.backup import sqlite_path


log = logging.getLogger(__name__)
T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered, SIGTERM and SIGINT set `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            self._loop.add_signal_handler(signum, self._received, signum)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        for signum in STOP_SIGNALS:
            self._loop.remove_signal_handler(signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.info("%s received: already stopping", name)
            return
        log.info("%s received: stopping", name)
        self.requested.set()

    async def unless_stopped(self, work: Awaitable[T]) -> T | None:
        """The result of `work`, or None when a stop is requested first (`work` is then
        cancelled, and has cleaned up after itself by the time this returns)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.requested.wait())
        try:
            await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None


class AlreadyRunning(Exception):
    """Another sdbot process holds this database."""


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database; None for other databases (and an in-memory one, and a
    URL that is none, which db.session names at start-up)."""
    return sqlite_path(database_url)


def lock_path(database_url: str) -> Path | None:
    """The lock file beside a SQLite database file; None for other databases."""
    database = sqlite_file(database_url)
    return None if database is None else database.with_name(database.name + ".lock")


class InstanceLock:
    """An exclusive lock (flock) on a file beside the SQLite database, held while a bot,
    `generate` or `migrate` uses it. Two bots on one database would both claim jobs, and each
    would take the other's running jobs for ones left by a crash. The kernel releases the lock
    when the process ends however it ends, so a killed bot leaves no stale lock behind."""

    def __init__(self, database_url: str) -> None:
        self.path = lock_path(database_url)
        self._file: int | None = None

    def __enter__(self) -> InstanceLock:
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise AlreadyRunning(
                f"Another sdbot process (pid {holder}) is using the database beside {self.path}. "
                "Stop it first: two bots on one database would run each other's jobs."
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._file = descriptor
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            os.close(self._file)  # closing the file releases the lock
            self._file = None
