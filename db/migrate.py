"""Run Alembic migrations from code: the application never calls create_all."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import ensure_reachable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Percent signs in a URL (an encoded password) would be read as interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` over the application's own engine; a database that
    cannot be reached raises db.session.DatabaseUnavailable (one line, for the admin)."""
    await ensure_reachable(engine)

    def run(connection: Connection) -> None:
        config = alembic_config(str(engine.url))
        # env.py uses this connection instead of opening its own event loop and engine.
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)
    await refresh_statistics(engine)


async def refresh_statistics(engine: AsyncEngine) -> None:
    """Have the database sample the jobs table for its query planner. Without statistics,
    SQLite takes an equality on the status for a few rows and sorts every waiting job at each
    claim (77 ms with 10,000 waiting) instead of reading the first of the waiting jobs' index
    (4 ms); PostgreSQL's autovacuum keeps them fresh after this (migration 0020). SQLite
    samples (analysis_limit): quick on a million jobs."""
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            await connection.exec_driver_sql("PRAGMA analysis_limit = 1000")
        await connection.exec_driver_sql("ANALYZE jobs")


async def schema_revisions(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """The database's revision (None: never migrated) and the newest one the code has; reads
    only, for `sdbot check`, which must not change the database it inspects."""

    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        revision = await connection.run_sync(current)
    return revision, ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
