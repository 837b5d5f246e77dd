"""/admin through the bot: who may use it, what it changes, the audit log and its mirror."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import discord
from discord import app_commands
from sqlalchemy import func, select

from bot.policy.audit import Action, drain_mirrors
from db.base import utcnow
from db.models import AuditEntry, Ban, BlockedTerm, GuildPolicy, JobStatus, RoleLimit
from tests.harness import private_answer
from tests.test_bot_queue import SLOW, wait_running


def admin_member(harness, name: str):
    role = harness.guild.create_role(f"{name} admins", permissions=discord.Permissions(manage_guild=True))
    return harness.guild.add_member(harness.env.create_user(name), roles=[role])


async def audit_entries(harness, action: Action | None = None) -> list[AuditEntry]:
    async with harness.db.session() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action is not None:
            query = query.where(AuditEntry.action == str(action))
        return list(await session.scalars(query))


async def rows(harness, model) -> int:
    async with harness.db.session() as session:
        return await session.scalar(select(func.count()).select_from(model))


def private_text(result) -> str:
    assert result.ephemeral, "moderation answers are private"
    message = result.followups[-1] if result.followups and not result.response else result.response
    return message.content or (message.embeds[0].description if message.embeds else "")


def admin_leaves(harness) -> list[str]:
    group = harness.bot.tree.get_command("admin")
    return [c.qualified_name for c in group.walk_commands() if isinstance(c, app_commands.Command)]


async def test_every_admin_subcommand_is_checked_server_side(harness):
    mod = admin_member(harness, "mod")
    target = harness.member("target")
    role = harness.guild.create_role("Artists")
    sample = {
        "admin channels add": {"channel": harness.channel}, "admin channels remove": {"channel": harness.channel},
        "admin roles add": {"list": "use", "role": role}, "admin roles remove": {"list": "use", "role": role},
        "admin terms add": {"scope": "banned", "kind": "word", "pattern": "cat"}, "admin terms remove": {"number": 1},
        "admin terms test": {"prompt": "a cat"}, "admin limits set": {"images_per_day": 1},
        "admin flagged": {"action": "withhold"}, "admin log set": {"channel": harness.channel},
        "admin describe": {"interrogator": "clip"},
        "admin ban": {"user": target, "reason": "spam"}, "admin unban": {"user": target},
        "admin cancel": {"job": 1}, "admin remove": {"job": 1}, "admin models rule": {"model": "tiny", "hidden": True},
        "admin merge": {"model_a": "tiny"},
    }
    leaves = admin_leaves(harness)
    assert len(leaves) >= 20 and set(sample) <= set(leaves)

    # Discord hides /admin from members without Manage Server...
    member = harness.member("eve")
    assert not any(name.startswith("admin") for name in member.available_commands(harness.channel))
    assert any(name.startswith("admin") for name in mod.available_commands(harness.channel))
    # ...but a server may enable it for anyone: the bot refuses them itself, every subcommand.
    command = harness.env.backend.find_command("admin", None)
    harness.guild.set_command_permissions(int(command["id"]), {member: True})
    for name in leaves:
        result = await member.slash(harness.channel, name, **sample.get(name, {}))
        assert "Only members with the Manage Server permission" in private_text(result), name
    errors = harness.expect_user_errors()
    assert len(errors) == len(leaves)
    refusals = await audit_entries(harness, Action.REFUSED)
    assert [entry.details for entry in refusals] == [f"moderator: tried /{name}" for name in leaves]
    assert all(entry.actor_id == member.id and entry.guild_id == harness.guild.id for entry in refusals)
    for model in (GuildPolicy, BlockedTerm, Ban, RoleLimit):
        assert await rows(harness, model) == 0, model

    # A moderator's same commands work (the ones that change something are audited).
    changed = await mod.slash(harness.channel, "admin terms add", scope="banned", kind="word", pattern="cat")
    assert "Added the banned word `cat`" in private_text(changed)
    tested = await mod.slash(harness.channel, "admin terms test", prompt="a (cat:1.2)")
    assert "**Here**: the word `cat`" in private_text(tested)
    await mod.slash(harness.channel, "admin ban", user=target, reason="spam " * 100)
    assert await rows(harness, Ban) == 1
    [policy_change] = await audit_entries(harness, Action.POLICY_CHANGED)
    assert policy_change.details == "terms: added banned word `cat`" and policy_change.actor_id == mod.id
    [banned] = await audit_entries(harness, Action.BANNED)
    assert banned.target_user_id == target.id and len(banned.details) <= 300
    assert harness.expect_user_errors() == []


async def test_bad_input_to_admin_is_refused_before_anything_is_stored(harness):
    mod = admin_member(harness, "mod")
    bad = await mod.slash(harness.channel, "admin terms add", scope="banned", kind="regex", pattern="(unclosed")
    assert "does not compile: missing )" in private_text(bad)
    long = await mod.slash(harness.channel, "admin terms add", scope="nsfw", kind="word", pattern="x" * 201)
    assert "the limit is 200" in private_text(long)
    too_many = await mod.slash(harness.channel, "admin limits set", max_pending=99)
    assert "at most 5" in private_text(too_many)
    negative = await mod.slash(harness.channel, "admin limits set", cooldown_s=-1)
    assert "must be 0 (no limit) or more" in private_text(negative)
    # Discord allows 53 bits: a cooldown past timedelta's range failed every later command here.
    huge = await mod.slash(harness.channel, "admin limits set", cooldown_s=2**53 - 1)
    assert "`cooldown_s` can be at most 2,147,483,647" in private_text(huge)
    assert len(harness.expect_user_errors()) == 5
    assert await rows(harness, BlockedTerm) == 0 and await rows(harness, GuildPolicy) == 0
    assert await audit_entries(harness, Action.POLICY_CHANGED) == []

    ok = await mod.slash(harness.channel, "admin terms add", scope="banned", kind="regex", pattern=r"d[o0]g+")
    assert "Added" in private_text(ok)
    listed = await mod.slash(harness.channel, "admin terms list")
    assert r"banned regex: `d[o0]g+`" in private_text(listed)
    shown = await mod.slash(harness.channel, "admin policy show")
    assert "1 banned, 0 NSFW-only" in private_text(shown)


async def test_moderator_cancel_remove_audit_filters_and_log_channel(harness):
    mod = admin_member(harness, "mod")
    alice, bob = harness.member("alice"), harness.member("bob")
    log_channel = harness.guild.create_text_channel("mod-log")
    await mod.slash(harness.channel, "admin log set", channel=log_channel)

    # A moderator cancels Alice's running job; Bob (no rights) may not.
    await alice.slash(harness.channel, "imagine", prompt="a long night", **SLOW)
    running = await wait_running(harness, (await harness.latest_job(alice.id)).id)
    refused = await bob.slash(harness.channel, "cancel", job=running.id)
    assert "Only the person who started" in private_answer(refused)
    harness.expect_user_errors()
    canceled = await mod.slash(harness.channel, "admin cancel", job=running.id)
    assert f"Stopping job #{running.id}" in private_text(canceled)
    assert (await harness.wait_for_job(running.id)).status == JobStatus.CANCELED
    [cancel] = await audit_entries(harness, Action.CANCELED_BY_MODERATOR)
    assert (cancel.actor_id, cancel.target_user_id, cancel.job_id) == (mod.id, alice.id, running.id)
    missing = await mod.slash(harness.channel, "admin cancel", job=999)
    assert "There is no job #999 on this server" in private_text(missing)
    harness.expect_user_errors()

    # Removing any result: the message and, on request, the files.
    await alice.slash(harness.channel, "imagine", prompt="a small boat", count=1)
    done = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert done.status == JobStatus.COMPLETED and Path(done.images[0].path).is_file()
    removed = await mod.slash(harness.channel, "admin remove", job=done.id, files=True)
    assert f"Removed the message and image files of job #{done.id}" in private_text(removed)
    assert not Path(done.images[0].path).exists()
    assert all(m.id != done.message_id for m in harness.channel.history())
    [removal] = await audit_entries(harness, Action.RESULT_REMOVED)
    assert removal.actor_id == mod.id and removal.target_user_id == alice.id

    # Every job is in the log: queued (with its prompt) and its outcome.
    queued = await audit_entries(harness, Action.JOB_QUEUED)
    assert [e.job_id for e in queued] == [running.id, done.id] and "prompt: a small boat" in queued[1].details
    assert [e.job_id for e in await audit_entries(harness, Action.JOB_CANCELED)] == [running.id]
    [completed] = await audit_entries(harness, Action.JOB_COMPLETED)
    assert completed.job_id == done.id and completed.actor_id == harness.bot.user.id

    # The log channel got each entry, "log set" included (the channel was set before it was written).
    await drain_mirrors()
    await harness.settle()
    mirrored = [m.content for m in log_channel.history()]
    entries = await audit_entries(harness)
    assert sorted(re.search(r"`([a-z.]+)`", text)[1] for text in mirrored) == sorted(e.action for e in entries)
    assert any(f"`mod.cancel` → <@{alice.id}> job #{running.id}" in text for text in mirrored)

    # /admin audit: newest first, 10 a page, by user and by time. Old entries are written
    # directly, a day back.
    async with harness.db.session() as session, session.begin():
        session.add_all(
            AuditEntry(guild_id=harness.guild.id, actor_id=bob.id, action="mod.policy", details=f"old {i}",
                       created_at=utcnow() - timedelta(hours=30))
            for i in range(12)
        )
    everything = await mod.slash(harness.channel, "admin audit")
    total = len(entries) + 12
    assert f"Page 1 of {-(-total // 10)} · {total} entries" == everything.response.embeds[0].footer.text
    recent = await mod.slash(harness.channel, "admin audit", hours=2)
    assert "old " not in private_text(recent) and f"{len(entries)} entries" in recent.response.embeds[0].footer.text
    first_line = private_text(recent).split("\n")[0]
    assert "`result.removed`" in first_line  # the newest
    bobs = await mod.slash(harness.channel, "admin audit", user=bob, page=2)
    bob_lines = private_text(bobs).split("\n")
    assert bobs.response.embeds[0].footer.text == "Page 2 of 2 · 12 entries · by or about bob"
    assert len(bob_lines) == 2 and all("old " in line and f"<@{bob.id}>" in line for line in bob_lines)
    alices = await mod.slash(harness.channel, "admin audit", user=alice)
    assert all(f"<@{alice.id}>" in line for line in private_text(alices).split("\n"))

    # Unban and log clear are audited; after the clear nothing more is mirrored.
    await mod.slash(harness.channel, "admin ban", user=bob)
    await mod.slash(harness.channel, "admin unban", user=bob)
    assert [e.target_user_id for e in await audit_entries(harness, Action.UNBANNED)] == [bob.id]
    await mod.slash(harness.channel, "admin log clear")
    await drain_mirrors()
    await harness.settle()
    count = len(log_channel.history())
    await mod.slash(harness.channel, "admin flagged", action="spoiler")
    await drain_mirrors()
    await harness.settle()
    assert len(log_channel.history()) == count
    assert harness.expect_user_errors() == []
