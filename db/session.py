"""One engine and one session factory per process; SQLite tuned for one writer, many readers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db import sqlite_driver

POOL_SIZE = 64  # SQLite connections kept open: more than a burst of 50 commands used at once
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another writer before "database is locked"


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every aiosqlite connection is a thread, started on the event loop when the pool opens it
    # (Thread.start waits for the thread, which under load takes long). The default pool (5
    # kept, 10 more opened and closed per burst) started threads for every burst of commands
    # and stalled the loop (bench/load.py). So a pool big enough for a burst, opened at
    # start-up (open_pool); the overflow is for rarer peaks, and keeps a session opened inside
    # another from waiting on a full pool.
    pooled = is_sqlite and parsed.database not in (None, "", ":memory:")
    options: dict = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE} if pooled else {}
    if pooled and parsed.get_driver_name() == "aiosqlite" and sqlite_driver.supported():
        # One trip to the connection's thread per statement instead of four, and writers that
        # take turns rather than sleep in SQLite's busy handler (db/sqlite_driver.py).
        args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
        options["async_creator"] = sqlite_driver.connector(*args, write_timeout_s=BUSY_TIMEOUT_S, **kwargs)
    engine = create_async_engine(url, **options)
    if is_sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets /queue and /history read while the dispatcher writes; foreign keys are
            # off by default in SQLite; busy_timeout rides out a concurrent writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs the log at checkpoints, not at every commit: the bot
            # commits five or six times a job, and every sync waits on the disk. It cannot corrupt the database; a power cut (not a crash
            # of the bot, whose commits are already with the OS) may lose the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cursor.close()

    return engine


class Database:
    """The engine and its session factory; `async with db.session() as s:` per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def open_pool(self) -> None:
        """Open the pool's connections now, at start-up, rather than in the first bursts."""
        size = self.engine.pool.size() if hasattr(self.engine.pool, "size") else 1
        connections = [await self.engine.connect() for _ in range(size)]
        for connection in connections:
            await connection.close()  # back to the pool, which keeps it open

    async def close(self) -> None:
        await self.engine.dispose()
