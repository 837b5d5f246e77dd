"""db/sqlite_driver.py: the engine's SQLite connections run each statement in one trip to
their thread, and every query still behaves as it does on aiosqlite's own connections."""

from __future__ import annotations

import asyncio
import sqlite3

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


async def test_connections_use_the_write_ahead_log_synced_at_checkpoints(database):
    """WAL, so reads go on beside a writer, and synchronous NORMAL (1), which in WAL mode syncs
    at checkpoints rather than at each commit; foreign keys on."""
    async with database.session() as session:
        assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await session.execute(text("PRAGMA synchronous"))).scalar() == 1
        assert (await session.execute(text("PRAGMA foreign_keys"))).scalar() == 1


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


async def test_a_read_session_ends_without_a_trip_and_a_write_with_one(database, trips):
    async with database.session() as session:
        await session.execute(text("SELECT 1"))  # the pool's own ping and setup, once
    trips.clear()
    async with database.session() as session:
        assert (await session.execute(select(func.count(User.id)))).scalar() == 0
    assert len(trips) == 1  # the SELECT; its session's rollback had nothing to end
    trips.clear()
    async with database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
    assert len(trips) == 2  # the INSERT and its COMMIT
    async with database.session() as session:
        assert (await session.execute(select(User.name))).scalars().all() == ["alice"]


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


# --- writers take turns -----------------------------------------------------------------------


@pytest.fixture
async def quick_database(tmp_path, monkeypatch):
    """A migrated database whose writers give up after 0.3 s (instead of 5), and whose
    connections SQLite itself never lets wait: a second writer gets "database is locked" at
    once from SQLite, so only the driver's turns can make it wait."""
    from db import session as db_session
    from db.migrate import upgrade_database

    monkeypatch.setattr(db_session, "BUSY_TIMEOUT_S", 0.3)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'turns.sqlite3'}")
    await upgrade_database(db.engine)
    yield db
    await db.close()


async def no_busy_wait(session) -> None:  # type: ignore[no-untyped-def]
    await session.execute(text("PRAGMA busy_timeout=0"))


async def test_a_second_writer_waits_for_its_turn_instead_of_finding_the_database_locked(quick_database):
    first = quick_database.session()
    async with first, first.begin():
        await no_busy_wait(first)
        first.add(User(id=1, name="alice"))
        await first.flush()  # the INSERT ran: this transaction holds SQLite's write lock

        async def second_writer() -> None:
            async with quick_database.session() as session, session.begin():
                await no_busy_wait(session)
                session.add(User(id=2, name="bob"))

        waiting = asyncio.create_task(second_writer())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # neither written nor failed: waiting for the turn
    await waiting  # the first committed, and handed the turn over
    async with quick_database.session() as session:
        assert (await session.execute(select(User.name).order_by(User.id))).scalars().all() == ["alice", "bob"]


async def test_reads_do_not_wait_for_a_writer(quick_database):
    async with quick_database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
    writer = quick_database.session()
    async with writer, writer.begin():
        writer.add(User(id=2, name="bob"))
        await writer.flush()
        async with quick_database.session() as reader:  # WAL: the last commit, at once
            assert (await reader.execute(select(User.name))).scalars().all() == ["alice"]


async def test_a_rolled_back_failed_or_closed_write_gives_its_turn_back(tmp_path):
    """On the driver's own connections, which share one set of turns: each way a write
    transaction ends hands the turn on, so the next writer (on another connection, which
    SQLite does not let wait) writes at once."""
    connect = sqlite_driver.connector(str(tmp_path / "ends.sqlite3"), write_timeout_s=0.3)
    first, second = await connect(), await connect()
    try:
        async def write(connection, sql: str) -> None:  # type: ignore[no-untyped-def]
            async with connection.cursor() as cursor:
                await cursor.execute(sql)

        await write(first, "PRAGMA journal_mode=WAL")
        await write(first, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        for connection in (first, second):
            await write(connection, "PRAGMA busy_timeout=0")

        await write(first, "INSERT INTO t VALUES (1)")
        await first.rollback()  # ended by a rollback
        await write(second, "INSERT INTO t VALUES (2)")
        await second.commit()

        await write(first, "INSERT INTO t VALUES (3)")
        with pytest.raises(sqlite3.IntegrityError):  # fails inside its transaction...
            await write(first, "INSERT INTO t VALUES (2)")
        await first.rollback()  # ...which the caller rolls back
        await write(second, "INSERT INTO t VALUES (4)")
        await second.commit()

        await write(first, "INSERT INTO t VALUES (5)")
        await first.close()  # closed with its transaction open
        await write(second, "INSERT INTO t VALUES (6)")
        await second.commit()
        async with second.cursor() as cursor:
            await cursor.execute("SELECT id FROM t ORDER BY id")
            assert await cursor.fetchall() == [(2,), (4,), (6,)]
    finally:
        await first.close()
        await second.close()


async def test_a_writer_kept_waiting_too_long_is_told_the_database_is_locked(quick_database):
    holder = quick_database.session()
    async with holder, holder.begin():
        holder.add(User(id=1, name="alice"))
        await holder.flush()
        with pytest.raises(OperationalError, match="database is locked"):
            async with quick_database.session() as session, session.begin():
                session.add(User(id=2, name="bob"))
    async with quick_database.session() as session, session.begin():  # the turn came back
        session.add(User(id=3, name="carol"))
    async with quick_database.session() as session:
        assert (await session.execute(select(User.id).order_by(User.id))).scalars().all() == [1, 3]


async def test_a_line_of_quick_writers_longer_than_the_timeout_all_write(quick_database):
    """The timeout is for one writer keeping the turn (see the previous test), not for the
    wait in line: eight writers each holding the turn a third of the timeout, all asking at
    once, leave the last one waiting over twice the timeout, and every one of them writes."""
    hold_s = 0.1  # quick_database's writers give up after 0.3 s

    async def writer(user_id: int) -> None:
        async with quick_database.session() as session, session.begin():
            await no_busy_wait(session)
            session.add(User(id=user_id, name=f"member{user_id}"))
            await session.flush()  # the turn is taken here...
            await asyncio.sleep(hold_s)  # ...and held until the commit

    await asyncio.gather(*(writer(user_id) for user_id in range(1, 9)))
    async with quick_database.session() as session:
        assert (await session.execute(select(func.count(User.id)))).scalar() == 8

