"""One engine and one session factory per process; SQLite tuned for one writer, many readers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every aiosqlite connection is a thread, started on the event loop when the pool opens it.
    # The default pool (5 kept, 10 more opened and closed per burst) started threads for every
    # burst of commands and stalled the loop (bench/load.py); keep enough for a burst instead.
    pooled = is_sqlite and parsed.database not in (None, "", ":memory:")
    engine = create_async_engine(url, **({"pool_size": 32, "max_overflow": 32} if pooled else {}))
    if is_sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets /queue and /history read while the dispatcher writes; foreign keys are
            # off by default in SQLite; busy_timeout rides out a concurrent writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
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

    async def close(self) -> None:
        await self.engine.dispose()
