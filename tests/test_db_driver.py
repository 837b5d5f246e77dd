"""db/sqlite_driver.py: the engine's SQLite connections run each statement in one trip to
their thread, and every query still behaves as it does on aiosqlite's own connections."""

from __future__ import annotations

import aiosqlite
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from db import sqlite_driver
from db.models import Image, Job, JobStatus, User
from db.session import Database


@pytest.fixture
def trips(monkeypatch):
    """Counts the calls that cross to a connection's thread."""
    counted: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        counted.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


def new_job(user_id: int, prompt: str) -> Job:
    return Job(
        user_id=user_id, kind="txt2img", status=JobStatus.PENDING, prompt=prompt, negative_prompt="", model="tiny",
        width=64, height=64, steps=4, cfg_scale=7.0, sampler="Euler a", seed=1, count=1,
    )


async def test_the_engine_uses_one_trip_connections(database):
    assert sqlite_driver.supported()
    async with database.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.OneTripConnection)


async def test_a_statement_is_one_trip(database, trips):
    async with database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the pool's own ping and setup, once
        trips.clear()
        rows = (await connection.execute(select(User.id, User.name))).all()
        assert rows == [(1, "alice")]
        assert len(trips) == 1
        await connection.execute(select(func.count(User.id)))
        assert len(trips) == 2


async def test_rows_counts_ids_and_returning_are_those_of_sqlite(database):
    async with database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
        jobs = [new_job(1, f"prompt {n}") for n in range(3)]
        session.add_all(jobs)  # one INSERT for several rows (executemany or insertmanyvalues)
    assert [job.id for job in jobs] == [1, 2, 3]
    async with database.session() as session, session.begin():
        result = await session.execute(insert(User).values(id=7, name="bob"))
        assert result.inserted_primary_key == (7,)
        changed = await session.execute(update(Job).where(Job.id >= 2).values(status=JobStatus.RUNNING))
        assert changed.rowcount == 2
        returned = await session.execute(
            update(Job).where(Job.id == 1).values(status=JobStatus.CANCELED).returning(Job.id, Job.status)
        )
        assert returned.all() == [(1, JobStatus.CANCELED)]
        session.add_all(
            Image(job_id=2, index=i, seed=i, width=64, height=64, path=f"/tmp/{i}.png", infotext="") for i in range(4)
        )
    async with database.session() as session:
        # Read in pieces, as a streamed result or a partition does.
        result = await session.stream(select(Image.index).order_by(Image.index))
        assert [row.index async for row in result] == [0, 1, 2, 3]
        names = await session.execute(select(User.name).order_by(User.id))
        assert names.fetchmany(1) == [("alice",)] and names.fetchone() == ("bob",) and names.fetchone() is None
        assert await session.scalar(select(func.count(Job.id)).where(Job.status == JobStatus.RUNNING)) == 2


async def test_errors_reach_the_caller_and_the_connection_stays_usable(database):
    async with database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
    with pytest.raises(IntegrityError):
        async with database.session() as session, session.begin():
            session.add(User(id=1, name="alice again"))
    with pytest.raises(OperationalError):
        async with database.session() as session:
            await session.execute(text("SELECT no_such_column FROM users"))
    async with database.session() as session:
        assert (await session.execute(select(User.name))).scalars().all() == ["alice"]


async def test_without_the_internals_the_engine_keeps_aiosqlite_connections(tmp_path, monkeypatch):
    monkeypatch.delattr(aiosqlite.Connection, "_execute")
    assert not sqlite_driver.supported()
    monkeypatch.undo()
    monkeypatch.setattr(sqlite_driver, "supported", lambda: False)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plain.sqlite3'}")
    try:
        async with db.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert type(raw.driver_connection) is aiosqlite.Connection
            assert (await connection.execute(text("SELECT 41 + 1"))).scalar() == 42
    finally:
        await db.close()
