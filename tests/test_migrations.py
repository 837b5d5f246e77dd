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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_the_start_tags_migration_tags_the_jobs_already_waiting(empty_database):
    """0020 adds the start tag: the jobs waiting at the upgrade get the cost their member
    waits with before each (their use is added by the first claim's retag, tests/test_fair_tags.py)."""
    db = empty_database
    await upgrade_database(db.engine, "0019_face_restoration")
    columns = (
        "kind, status, prompt, negative_prompt, model, width, height, steps, cfg_scale, sampler, count, seed,"
        " subseed_strength, attempts, created_at, cost"
    )
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO users (id, name, created_at) VALUES (1, 'alice', CURRENT_TIMESTAMP), (2, 'bob', CURRENT_TIMESTAMP)"
        )
        for user_id, status, cost in [(1, "completed", 5.0), (1, "pending", 1.0), (2, "pending", 2.0), (1, "pending", 0.5), (1, "pending", 1.0)]:
            await connection.exec_driver_sql(
                f"INSERT INTO jobs (user_id, {columns}) VALUES "
                f"({user_id}, 'txt2img', '{status}', 'p', '', 'tiny', 64, 64, 4, 7.0, 'Euler a', 1, 1, 0, 0, CURRENT_TIMESTAMP, {cost})"
            )
    await upgrade_database(db.engine)
    async with db.engine.connect() as connection:
        rows = (await connection.exec_driver_sql("SELECT user_id, status, start_tag FROM jobs ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [
        (1, "completed", 0.0), (1, "pending", 0.0), (2, "pending", 0.0), (1, "pending", 1.0), (1, "pending", 1.5),
    ]
