"""db/session.py on SQLite: the process's write transactions take turns on one lock instead of
meeting in SQLite's busy handler; reads never wait; every way a write ends hands the turn on."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from db.models import User


async def test_connections_use_the_write_ahead_log_synced_at_checkpoints(database):
    """WAL, so reads go on beside a writer, and synchronous NORMAL (1), which in WAL mode syncs
    at checkpoints rather than at each commit; foreign keys on."""
    async with database.session() as session:
        assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await session.execute(text("PRAGMA synchronous"))).scalar() == 1
        assert (await session.execute(text("PRAGMA foreign_keys"))).scalar() == 1


async def no_busy_wait(session) -> None:  # type: ignore[no-untyped-def]
    """SQLite itself would answer "database is locked" at once: only the turn can make a writer wait."""
    await session.execute(text("PRAGMA busy_timeout=0"))


async def names(database) -> list[str]:  # type: ignore[no-untyped-def]
    async with database.session() as session:
        return list((await session.execute(select(User.name).order_by(User.id))).scalars())


async def test_a_second_writer_waits_for_its_turn_instead_of_finding_the_database_locked(database):
    first = database.session()
    async with first, first.begin():
        await no_busy_wait(first)
        first.add(User(id=1, name="alice"))
        await first.flush()  # the INSERT ran: this transaction holds SQLite's write lock

        async def second_writer() -> None:
            async with database.session() as session, session.begin():
                await no_busy_wait(session)
                session.add(User(id=2, name="bob"))

        waiting = asyncio.create_task(second_writer())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # neither written nor failed: waiting for the turn
    await waiting  # the first committed, and handed the turn over
    assert await names(database) == ["alice", "bob"]


async def test_reads_do_not_wait_for_a_writer(database):
    async with database.session() as session, session.begin():
        session.add(User(id=1, name="alice"))
    writer = database.session()
    async with writer, writer.begin():
        writer.add(User(id=2, name="bob"))
        await writer.flush()
        async with database.session() as reader:  # WAL: the last commit, at once
            assert (await reader.execute(select(User.name))).scalars().all() == ["alice"]


async def test_a_failed_write_gives_its_turn_back(database):
    with pytest.raises(RuntimeError):
        async with database.session() as session, session.begin():
            session.add(User(id=1, name="alice"))
            await session.flush()
            raise RuntimeError("the unit of work failed half way")
    async with asyncio.timeout(2):  # the turn came back: no wait
        async with database.session() as session, session.begin():
            session.add(User(id=2, name="bob"))
    assert await names(database) == ["bob"]  # the failed one was rolled back


async def test_a_write_session_opened_inside_another_in_the_same_task_goes_on(database):
    """The turn is the task's: a nested write does not wait for itself (it would forever)."""
    async with asyncio.timeout(2):
        async with database.session() as outer, outer.begin():
            async with database.session() as inner, inner.begin():
                inner.add(User(id=1, name="alice"))
            outer.add(User(id=2, name="bob"))
    assert await names(database) == ["alice", "bob"]
    async with asyncio.timeout(2):  # and the turn was given back whole
        async with database.session() as session, session.begin():
            session.add(User(id=3, name="carol"))
