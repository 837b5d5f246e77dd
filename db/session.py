"""One engine and one session factory per process, on SQLite (the default) or PostgreSQL.

SQLite is tuned for one writer and many readers: the write-ahead log, and the process's write
transactions taking turns on an asyncio lock (WriteTurnSession) rather than meeting in
SQLite's busy handler, which sleeps 1, 2, 5 ... 100 ms a time however soon the lock is free.
PostgreSQL needs neither: its rows lock one by one, and the claim skips the locked ones
(bot/jobs/queue.py).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

POOL_SIZE = 64  # SQLite connections kept open: more than a burst of 50 commands used at once
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another writer before "database is locked"
POSTGRES_POOL_SIZE = 10  # each is a server process; PostgreSQL serves 100 in all by default
CONNECT_TIMEOUT_S = 10.0  # a server that does not answer: asyncpg would wait 60 s
# A PostgreSQL session that leaves a transaction open this long is a client that froze (a
# worker stopped or swapped out mid-transaction): the server ends it, so that the job rows it
# had locked go back to the others (a lease that expires must be released; it waited forever
# on the frozen worker's lock). Our transactions last milliseconds.
IDLE_IN_TRANSACTION_TIMEOUT_S = 15
SUPPORTED_URLS = "sqlite+aiosqlite:///path/to/file.sqlite3 or postgresql+asyncpg://user:password@host:5432/name"


# pg_advisory_lock's key for "a bot uses this database" (any fixed number: "sdbot" in ASCII).
INSTANCE_LOCK_KEY = 0x7364626F74


class DatabaseInUse(Exception):
    """Another bot holds this PostgreSQL database (SQLite's is bot.service.InstanceLock)."""


class DatabaseUnavailable(Exception):
    """The database URL names no database the bot can use; the message is one line, for the
    admin, and never shows the password."""


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgresql(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def create_engine(url: str) -> AsyncEngine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(f"database_url is not a database URL; use {SUPPORTED_URLS}") from None
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise DatabaseUnavailable(
            f"database_url {parsed.render_as_string()}: the bot supports {SUPPORTED_URLS}"
        )
    if not is_sqlite(parsed):
        # pool_pre_ping: a server restarted since the connection was opened costs a reconnect,
        # not a failed command.
        try:
            return create_async_engine(
                url, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_POOL_SIZE, pool_pre_ping=True,
                connect_args={
                    "timeout": CONNECT_TIMEOUT_S,
                    "server_settings": {"idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_TIMEOUT_S}s"},
                },
            )
        except (NoSuchModuleError, ImportError):
            raise DatabaseUnavailable(
                "database_url names PostgreSQL, whose driver is not installed: pip install asyncpg"
            ) from None
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every aiosqlite connection runs on a thread of its own, started on the event loop when
    # the pool opens it (which under load takes long). The default pool (5 kept, 10 more
    # opened and closed per burst) started threads for every burst of commands and stalled
    # the loop (bench/load.py). So a pool big enough for a burst, opened at start-up
    # (open_pool); the overflow is for rarer peaks, and keeps a session opened inside another
    # from waiting on a full pool.
    pooled = parsed.database not in (None, "", ":memory:")
    options: dict = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE} if pooled else {}
    engine = create_async_engine(url, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # WAL lets /queue and /history read while the dispatcher writes; foreign keys are
        # off by default in SQLite; busy_timeout rides out a writer in another process.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs the log at checkpoints, not at every commit: the bot
        # commits five or six times a job, and every sync waits on the disk. It cannot corrupt
        # the database; a power cut (not a crash of the bot, whose commits are already with
        # the OS) may lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    return engine


class WriteTurn:
    """The process's write transactions, one at a time: an asyncio lock that the task holding
    it may take again (a write session opened inside another, in the same task, goes on)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task | None = None
        self._depth = 0

    async def take(self) -> None:
        task = asyncio.current_task()
        if self._holder is not task or task is None:
            await self._lock.acquire()
            self._holder = task
        self._depth += 1

    def give_back(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._holder = None
            self._lock.release()


class _TurnThenTransaction:
    """``async with session.begin():`` that first waits for the write turn."""

    def __init__(self, turn: WriteTurn, transaction: Any) -> None:
        self._turn = turn
        self._transaction = transaction

    async def __aenter__(self) -> Any:
        await self._turn.take()
        try:
            return await self._transaction.__aenter__()
        except BaseException:
            self._turn.give_back()
            raise

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._transaction.__aexit__(*exc_info)
        finally:
            self._turn.give_back()


class WriteTurnSession(AsyncSession):
    """An AsyncSession whose ``begin()`` (every write in the bot is inside one) waits for the
    process's write turn when it has one (SQLite); reads never wait."""

    def __init__(self, *args: Any, write_turn: WriteTurn | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_turn = write_turn

    def begin(self) -> Any:  # type: ignore[override]
        transaction = super().begin()
        return transaction if self.write_turn is None else _TurnThenTransaction(self.write_turn, transaction)


class Database:
    """The engine and its session factory; `async with db.session() as s:` per unit of work,
    `async with db.session() as s, s.begin():` for one that writes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name  # "sqlite" or "postgresql"
        self.session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine,
            class_=WriteTurnSession,
            expire_on_commit=False,
            write_turn=WriteTurn() if self.dialect == "sqlite" else None,
        )
        self._instance_lock: AsyncConnection | None = None

    async def take_instance_lock(self) -> None:
        """On PostgreSQL, hold a session advisory lock for as long as this Database is open,
        or raise DatabaseInUse: two bots on one database would each take the other's running
        jobs for ones left by a crash. The lock lives on a connection of its own, and the
        server drops it when that connection ends, however the bot ends. (SQLite: the lock
        file beside the database, bot.service.InstanceLock.)"""
        if self.dialect != "postgresql" or self._instance_lock is not None:
            return
        await ensure_reachable(self.engine)
        connection = await self.engine.connect()
        taken = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": INSTANCE_LOCK_KEY})
        await connection.commit()  # the lock is the session's, not the transaction's
        if not taken:
            await connection.close()
            raise DatabaseInUse(
                f"Another sdbot process is using the database at {self.engine.url.render_as_string()}. "
                "Stop it first: two bots on one database would run each other's jobs."
            )
        self._instance_lock = connection

    async def open_pool(self) -> None:
        """Open the pool's connections now, at start-up, rather than in the first bursts."""
        size = self.engine.pool.size() if hasattr(self.engine.pool, "size") else 1
        connections = [await self.engine.connect() for _ in range(size)]
        for connection in connections:
            await connection.close()  # back to the pool, which keeps it open

    async def close(self) -> None:
        if self._instance_lock is not None:
            # Closed rather than returned to the pool, which would keep the lock with it.
            await self._instance_lock.invalidate()
            await self._instance_lock.close()
            self._instance_lock = None
        await self.engine.dispose()


async def ensure_reachable(engine: AsyncEngine) -> None:
    """Connect once, or raise DatabaseUnavailable saying why in one line (wrong host, refused,
    password, no such database), before anything else uses the database."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, asyncio.TimeoutError) as error:
        raise DatabaseUnavailable(f"Cannot connect to the database at {engine.url.render_as_string()}: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    """The driver's own words, on one line: "database "sdbot" does not exist", "Connect call
    failed ('127.0.0.1', 5432)" rather than SQLAlchemy's wrapping and links."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    if isinstance(cause, asyncio.TimeoutError) or (not str(cause) and isinstance(cause, TimeoutError)):
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    words = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return re.sub(r"^<class '[\w.]+'>: ", "", words)
