"""Group commit: rows that only need inserting share one transaction when they come at once.

SQLite writes one transaction at a time, and each costs a turn (db/sqlite_driver.py's
WriterTurns), the INSERT and the COMMIT, each a trip to a connection's thread. Under a burst
of commands every job's audit entries (queued, then completed) were one such transaction
each, competing with the jobs' own writes for the turn. Here a row added while a write is in
flight waits for it, then goes with every other row that came meanwhile, in one
transaction: one transaction in flight and one gathering, however many rows arrive.

``add`` returns once its row is committed, exactly as a transaction of its own would: the
caller still knows the row is in the database, and a row never waits on a timer. If a
group's transaction fails, its rows are written one by one, so only a faulty row fails,
and only for its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from db.base import Base

log = logging.getLogger(__name__)


class GroupedInserts:
    def __init__(self, session: Callable[[], AsyncSession]) -> None:
        self._session = session
        self._waiting: list[tuple[Base, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, row: Base) -> None:
        """Insert ``row``; back once it is committed (its id and defaults are then set)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((row, done))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all(), name="grouped-inserts")
        # Shielded: a caller that gives up (its command canceled) does not unwrite its row.
        await asyncio.shield(done)

    async def drain(self) -> None:
        """Wait for every row added so far to be written (shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        group: list[tuple[Base, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    await self._insert([row for row, _ in group])
                except Exception:
                    log.debug("a group of %d rows failed; writing them one by one", len(group), exc_info=True)
                    for row, done in group:
                        await self._insert_alone(row, done)
                else:
                    for _, done in group:
                        if not done.done():
                            done.set_result(None)
        except BaseException:
            # Canceled (the loop is closing): no caller is left waiting for ever.
            for _, done in group + self._waiting:
                done.cancel()
            self._waiting = []
            raise
        finally:
            self._writer = None

    async def _insert(self, rows: list[Base]) -> None:
        async with self._session() as session, session.begin():
            session.add_all(rows)

    async def _insert_alone(self, row: Base, done: asyncio.Future[None]) -> None:
        try:
            await self._insert([row])
        except Exception as error:
            if not done.done():
                done.set_exception(error)
        else:
            if not done.done():
                done.set_result(None)
