"""The schema comes from Alembic alone, and the migrations produce exactly the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.base import Base
from db.migrate import upgrade_database
from db.session import Database


pytestmark = pytest.mark.both_backends  # the migrations run on SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
async def empty_database(backend, tmp_path, request) -> Database:
    if backend == "postgresql":
        from tests.postgres_fixtures import create_postgres_database

        return Database(await create_postgres_database(request.getfixturevalue("postgres_server")))
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_on_empty_database_matches_the_models(empty_database):
    db = empty_database
    try:
        await upgrade_database(db.engine)
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert {"users", "jobs", "images", "alembic_version"} <= tables
        assert diff == [], f"migrations and models differ: {diff}"
    finally:
        await db.close()


async def test_upgrade_twice_is_a_no_op(database):
    await upgrade_database(database.engine)  # the fixture already migrated once
    async with database.engine.connect() as connection:
        version = (await connection.exec_driver_sql("select version_num from alembic_version")).scalar_one()
    assert version == "0019_face_restoration"
