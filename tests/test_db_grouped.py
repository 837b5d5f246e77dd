"""db/grouped.py: rows added at once share a transaction, each caller back once its row is in."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from db.models import AuditEntry


def entry(number: int, action: str | None = "job.queued") -> AuditEntry:
    return AuditEntry(guild_id=1, actor_id=number, action=action, details=f"entry {number}")


@pytest.fixture
def commits(database):
    counted: list[int] = []
    event.listen(database.engine.sync_engine, "commit", lambda connection: counted.append(1))
    return counted


async def stored(database) -> list[int]:
    async with database.session() as session:
        return list(await session.scalars(select(AuditEntry.actor_id).order_by(AuditEntry.id)))


async def test_one_row_is_committed_when_add_returns(database, commits):
    row = entry(1)
    await database.inserts.add(row)
    assert row.id is not None and len(commits) == 1
    assert await stored(database) == [1]


async def test_rows_added_at_once_share_one_transaction(database, commits):
    await asyncio.gather(*(database.inserts.add(entry(number)) for number in range(50)))
    assert await stored(database) == list(range(50))
    assert len(commits) == 1


async def test_rows_added_while_a_write_is_in_flight_go_together_next(database, commits):
    first = asyncio.create_task(database.inserts.add(entry(0)))
    await asyncio.sleep(0)  # first's row is waiting...
    await asyncio.sleep(0)  # ...and now being written
    await asyncio.gather(first, *(database.inserts.add(entry(number)) for number in range(1, 50)))
    assert await stored(database) == list(range(50))
    assert len(commits) == 2


async def test_a_faulty_row_fails_for_its_caller_alone(database):
    outcomes = await asyncio.gather(
        *(database.inserts.add(entry(number, None if number == 3 else "job.queued")) for number in range(6)),
        return_exceptions=True,
    )
    assert [type(outcome) for outcome in outcomes] == [type(None)] * 3 + [IntegrityError] + [type(None)] * 2
    assert await stored(database) == [0, 1, 2, 4, 5]


async def test_a_caller_that_gives_up_still_has_its_row_written(database):
    first = asyncio.create_task(database.inserts.add(entry(1)))
    second = asyncio.create_task(database.inserts.add(entry(2)))
    await asyncio.sleep(0)
    second.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    await database.inserts.drain()
    assert await stored(database) == [1, 2]
