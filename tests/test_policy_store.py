"""bot/policy/store.py's copy of each server's policy rows: read once, dropped by every write,
never kept when a write committed during its read, and read again after CACHED_SECONDS."""

from __future__ import annotations

import pytest
from sqlalchemy import event, update

from bot.config import Settings
from bot.policy import store
from bot.policy.rules import Term, TermKind, TermScope
from db.models import GuildPolicy

pytestmark = pytest.mark.both_backends  # the policy rows on both databases (tests/conftest.py)

GUILD = 77


@pytest.fixture
def statements(database):
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    yield seen
    event.remove(database.engine.sync_engine, "before_cursor_execute", count)


async def read_everything(db, settings: Settings):  # type: ignore[no-untyped-def]
    return (
        await store.policy_of(db, settings, GUILD),
        await store.role_limits(db, GUILD),
        await store.terms(db, GUILD),
        await store.ban_of(db, GUILD, 5),
        await store.bans(db, GUILD),
    )


async def test_a_servers_rows_are_read_once(database, statements):
    settings = Settings()
    first = await read_everything(database, settings)
    assert statements, "the first read goes to the database"
    statements.clear()
    assert await read_everything(database, settings) == first
    assert statements == []


async def test_every_write_shows_in_the_next_read(database):
    settings, db = Settings(), database
    await read_everything(db, settings)
    await store.update_policy(db, GUILD, cooldown_s=30, flagged_action="spoiler", log_channel_id=9)
    policy = await store.policy_of(db, settings, GUILD)
    assert (policy.limits.cooldown_s, policy.flagged_action, policy.log_channel_id) == (30, "spoiler", 9)
    assert await store.change_id_list(db, GUILD, "channel_ids", 123, add=True)
    assert (await store.policy_of(db, settings, GUILD)).channel_ids == (123,)
    await store.set_role_limits(db, GUILD, 400, images_per_day=3)
    assert [limit.role_id for limit in await store.role_limits(db, GUILD)] == [400]
    assert await store.clear_role_limits(db, GUILD, 400)
    assert await store.role_limits(db, GUILD) == []
    term = Term(TermScope.BANNED, TermKind.WORD, "gore")
    assert await store.add_term(db, GUILD, term, created_by=1)
    [stored] = await store.terms(db, GUILD)
    assert stored.term == term
    assert await store.remove_term(db, GUILD, 2**53) is None  # /admin terms remove takes 53 bits
    assert await store.remove_term(db, GUILD, stored.id) == term
    assert await store.terms(db, GUILD) == []
    assert await store.ban(db, GUILD, 5, "spam", banned_by=1)
    assert (await store.ban_of(db, GUILD, 5)).reason == "spam"
    assert not await store.ban(db, GUILD, 5, "more spam", banned_by=1)
    assert [ban.reason for ban in await store.bans(db, GUILD)] == ["more spam"]
    assert await store.unban(db, GUILD, 5)
    assert await store.ban_of(db, GUILD, 5) is None
    # Another server's copy is its own.
    assert (await store.policy_of(db, settings, GUILD + 1)).channel_ids == ()


async def test_a_read_overtaken_by_a_write_is_not_kept(database, statements, monkeypatch):
    settings = Settings()
    await store.ban(database, GUILD, 5, "spam", banned_by=1)
    real_ban_info = store._ban_info

    def ban_info_during_a_write(row):  # type: ignore[no-untyped-def]
        # A write commits while the read is between its statements.
        store._copies[database].writes[GUILD] += 1
        return real_ban_info(row)

    monkeypatch.setattr(store, "_ban_info", ban_info_during_a_write)
    await store.policy_of(database, settings, GUILD)
    monkeypatch.setattr(store, "_ban_info", real_ban_info)
    statements.clear()
    await store.policy_of(database, settings, GUILD)
    assert statements, "the overtaken read was not kept, so this one went to the database"


async def test_a_change_made_by_hand_applies_after_the_copy_ages(database, monkeypatch):
    settings, now = Settings(), [1000.0]
    monkeypatch.setattr(store.time, "monotonic", lambda: now[0])
    await store.update_policy(database, GUILD, cooldown_s=30)
    assert (await store.policy_of(database, settings, GUILD)).limits.cooldown_s == 30
    async with database.session() as session, session.begin():
        await session.execute(update(GuildPolicy).where(GuildPolicy.guild_id == GUILD).values(cooldown_s=90))
    now[0] += store.CACHED_SECONDS - 1
    assert (await store.policy_of(database, settings, GUILD)).limits.cooldown_s == 30
    now[0] += 1
    assert (await store.policy_of(database, settings, GUILD)).limits.cooldown_s == 90
