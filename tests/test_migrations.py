"""The schema comes from Alembic alone, and the migrations produce exactly the models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.base import Base
from db.migrate import alembic_config, upgrade_database
from db.session import Database


pytestmark = pytest.mark.both_backends  # the migrations run on SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
async def empty_database(backend, tmp_path, request) -> AsyncIterator[Database]:
    if backend == "postgresql":
        from tests.postgres_fixtures import create_postgres_database

        db = Database(await create_postgres_database(request.getfixturevalue("postgres_server")))
    else:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}")
    yield db
    await db.close()


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))


async def _assert_schema_matches_the_models(db: Database) -> None:
    assert {"users", "jobs", "images", "alembic_version"} <= await _tables(db)
    async with db.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == [], f"migrations and models differ: {diff}"


async def _downgrade_to_base(db: Database) -> None:
    def run(connection) -> None:  # type: ignore[no-untyped-def]
        config = alembic_config(str(db.engine.url))
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with db.engine.begin() as connection:
        await connection.run_sync(run)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_on_empty_database_matches_the_models(empty_database):
    await upgrade_database(empty_database.engine)
    await _assert_schema_matches_the_models(empty_database)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_downgrade_to_base_and_upgrade_again_matches_the_models(empty_database):
    # Every downgrade runs here: they are written by hand and nothing else exercises them.
    db = empty_database
    await upgrade_database(db.engine)
    await _downgrade_to_base(db)
    assert await _tables(db) <= {"alembic_version"}, "a downgrade left a table behind"
    await upgrade_database(db.engine)
    await _assert_schema_matches_the_models(db)


async def test_upgrade_twice_is_a_no_op(database):
    await upgrade_database(database.engine)  # the fixture already migrated once
    async with database.engine.connect() as connection:
        version = (await connection.exec_driver_sql("select version_num from alembic_version")).scalar_one()
    assert version == "0020_start_tags"
