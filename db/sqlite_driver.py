"""aiosqlite connections that run each SQL statement in one trip to their thread.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's aiosqlite dialect
makes four such calls per statement: open a cursor, execute, fetch the rows, close the cursor.
Each trip is a queue hand-off to the thread and a wake-up of the event loop back, and under
load each one waits for the GIL besides: a read of one row cost six trips with the session's
rollback, and a job passes some twenty statements before it reaches the worker
(bench/bot_overhead.py measures that path). Here the cursor is opened, executed, read and
closed in one trip, and the rows wait in memory for SQLAlchemy's fetch, which then needs no
trip at all.

The engine takes these connections through SQLAlchemy's public ``async_creator`` hook, so the
dialect, the pool and every query are unchanged; only what crosses to the thread is batched.
Rows are always read whole, which is what the dialect did anyway (it fetches everything right
after executing, even for server-side cursors).

The pool's connections also take turns to write (``WriterTurns``): SQLite lets one connection
write at a time, and one that finds the database locked sleeps in its busy handler (1, 2, 5,
10 ... up to 100 ms a time) however soon the lock is free again. Under a burst of commands,
each writing a few transactions, those sleeps, not the writes, set how long the writes took.
Here a write first waits on a lock the pool's connections share, which the writer before it
hands over the moment its transaction ends; SQLite's busy handler is left for writers in
other processes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite


class PrefetchedCursor:
    """The cursor surface SQLAlchemy's adapter calls (``__aenter__``, ``execute``,
    ``executemany``, ``description``, ``rowcount``, ``lastrowid``, the fetches, ``close``),
    with the statement's rows read on the connection's thread by ``execute``."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: tuple | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque[Any] = deque()  # taken from the front, one or a few at a time

    async def __aenter__(self) -> PrefetchedCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._rows.clear()

    def __await__(self):  # type: ignore[no-untyped-def]
        # aiosqlite's cursor() is awaitable as well as an async context manager.
        yield from ()
        return self

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> PrefetchedCursor:
        parameters = () if parameters is None else parameters
        run = partial(_run_statement, sql, parameters, many=False, turn=self._connection.turn)
        self._take(await self._connection.on_thread(run))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> PrefetchedCursor:
        run = partial(_run_statement, sql, list(parameters), many=True, turn=self._connection.turn)
        self._take(await self._connection.on_thread(run))
        return self

    def _take(self, outcome: tuple[tuple | None, int, int | None, list[Any]]) -> None:
        self.description, self.rowcount, self.lastrowid, rows = outcome
        self._rows = deque(rows)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        taken = list(self._rows)
        self._rows.clear()
        return taken

    async def close(self) -> None:
        self._rows.clear()  # the sqlite3 cursor was closed on the thread


def _run_statement(
    sql: str, parameters: Any, connection: sqlite3.Connection, *, many: bool, turn: WriterTurn | None = None
) -> tuple[tuple | None, int, int | None, list[Any]]:
    """On the connection's thread: the whole life of one cursor."""
    if turn is not None:
        turn.before(sql)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        # rowcount is final once the rows are read (an UPDATE ... RETURNING counts as it goes).
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()
        if turn is not None:
            turn.after(connection)


# Statements that never begin a transaction in Python's sqlite3 (it opens one before INSERT,
# UPDATE, DELETE and REPLACE only). Anything else takes the writer's turn: a SAVEPOINT, a
# BEGIN, DDL, or a WITH that may end in a write. Taking it for a read only costs a wait.
_READS = ("SELECT", "PRAGMA", "EXPLAIN")


class WriterTurns:
    """The lock a pool's connections share to write one at a time (see the module's doc).

    A writer gives up ("database is locked") only when the turn has stayed with one writer
    for ``timeout_s``, as SQLite's busy_timeout waits for one writer: not when it has waited
    that long in a line of writers who each finished. Under a burst on a slow machine, many
    connections' writes could queue behind each other past the timeout while every one of them
    was quick, and commands would fail for it (bench/load.py drives such bursts).
    """

    def __init__(self, timeout_s: float) -> None:
        self._lock = threading.Lock()
        self.timeout_s = timeout_s
        self._changed_hands_at = time.monotonic()

    def take(self) -> bool:
        """Wait for the turn; False when its holder kept it ``timeout_s`` without a handover."""
        while True:
            since = self._changed_hands_at
            if self._lock.acquire(timeout=max(0.0, since + self.timeout_s - time.monotonic())):
                self._changed_hands_at = time.monotonic()
                return True
            if self._changed_hands_at == since:  # the same holder all along
                return False

    def give_back(self) -> None:
        self._changed_hands_at = time.monotonic()
        self._lock.release()


class WriterTurn:
    """One connection's side of WriterTurns, used on that connection's thread: the turn is
    taken before the statement that opens a transaction and given back once none is open."""

    def __init__(self, turns: WriterTurns) -> None:
        self.turns = turns
        self.held = False

    def before(self, sql: str) -> None:
        if self.held or sql.lstrip()[:7].upper().startswith(_READS):
            return
        if not self.turns.take():
            # What SQLite says when its busy_timeout runs out, so callers see the same error.
            raise sqlite3.OperationalError("database is locked")
        self.held = True

    def after(self, connection: sqlite3.Connection | None) -> None:
        if self.held and (connection is None or not connection.in_transaction):
            self.held = False
            self.turns.give_back()


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors are PrefetchedCursors, and whose writes wait
    for their turn (``turn``, None: SQLite's busy handler alone)."""

    turn: WriterTurn | None = None

    def cursor(self) -> PrefetchedCursor:  # type: ignore[override]
        return PrefetchedCursor(self)

    async def commit(self) -> None:
        if self._nothing_to_end():
            return
        await self.on_thread(partial(_end_transaction, "commit", turn=self.turn))

    async def rollback(self) -> None:
        if self._nothing_to_end():
            return
        await self.on_thread(partial(_end_transaction, "rollback", turn=self.turn))

    def _nothing_to_end(self) -> bool:
        """No transaction is open, so sqlite3's commit or rollback would do nothing: no trip.
        Python's sqlite3 opens one only before a write, so every read-only session, which
        SQLAlchemy ends with a rollback, ends here (three trips a job). No statement is on
        the thread meanwhile: SQLAlchemy awaits each one before it ends the transaction.
        The turn is never held without a transaction (WriterTurn.after)."""
        return not self._conn.in_transaction

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.turn is not None:
                self.turn.after(None)  # closed: whatever was open is rolled back

    async def on_thread(self, function: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``function(sqlite3_connection)`` on the connection's thread."""
        # _execute is aiosqlite's own way onto the thread (its Cursor uses it); _conn raises
        # "no active connection" once closed, as aiosqlite's own calls do.
        return await self._execute(lambda: function(self._conn))


def supported() -> bool:
    """Whether this aiosqlite still has the two internals OneTripConnection builds on (its
    own way onto the thread, and the sqlite3 connection); without them the engine keeps
    aiosqlite's stock connections, which are slower but the same to every query."""
    return callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
        getattr(aiosqlite.Connection, "_conn", None), property
    )


def _end_transaction(method: str, connection: sqlite3.Connection, *, turn: WriterTurn | None) -> None:
    try:
        getattr(connection, method)()
    finally:
        if turn is not None:
            turn.after(connection)


def connector(
    path: str, *, write_timeout_s: float = 5.0, **kwargs: Any
) -> Callable[[], Awaitable[OneTripConnection]]:
    """SQLAlchemy's ``async_creator`` for a SQLite file, with the dialect's connect arguments.
    The connections it makes take turns to write (WriterTurns), waiting at most
    ``write_timeout_s`` for one, as long as the engine's busy_timeout (db/session.py)."""
    turns = WriterTurns(write_timeout_s)

    async def connect() -> OneTripConnection:
        connection = await OneTripConnection(partial(sqlite3.connect, path, **kwargs), iter_chunk_size=64)
        connection.turn = WriterTurn(turns)
        return connection

    return connect
