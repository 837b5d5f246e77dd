"""Jobs whose result has nowhere to go are canceled, not run (bot.cogs.lifecycle): when Discord
says their channel, thread or server is gone, and, for what the bot is not told without the
members intent (an owner who left, or lost the role the server requires), when they are claimed."""

from __future__ import annotations

from datetime import timedelta

import discord
from sqlalchemy import update

from bot.cogs import lifecycle
from bot.policy.audit import Action
from db.base import utcnow
from db.models import Job, JobStatus
from tests.test_bot_admin import admin_member, audit_entries
from tests.test_bot_dms import late_harness  # noqa: F401 (a fixture)
from tests.test_bot_queue import SLOW, wait_running


async def test_jobs_in_a_deleted_channel_or_thread_or_a_server_left_are_canceled_and_audited(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    doomed = harness.guild.create_text_channel("doomed")
    await harness.bot.get_channel(harness.channel.id).create_thread(name="side", type=discord.ChannelType.public_thread)
    await harness.settle()
    [thread] = harness.channel.threads
    await alice.slash(harness.channel, "imagine", prompt="blocking", **SLOW)
    running = await wait_running(harness, (await harness.latest_job(alice.id)).id)
    await bob.slash(doomed, "imagine", prompt="a sandcastle", count=1)
    in_channel = await harness.latest_job(bob.id)
    await bob.slash(thread, "imagine", prompt="a sandcastle", count=1)
    in_thread = await harness.latest_job(bob.id)
    assert in_channel.status == in_thread.status == JobStatus.PENDING

    harness.env.backend.delete_channel(doomed.id)
    harness.env.backend.delete_channel(thread.id)
    await harness.settle()
    for job in (in_channel, in_thread):
        assert (await harness.queue.get(job.id)).status == JobStatus.CANCELED
    assert (await harness.queue.get(running.id)).status == JobStatus.RUNNING

    # Removed from the server: its running job stops too.
    await harness.bot.get_guild(harness.guild.id).leave()
    await harness.settle()
    assert (await harness.wait_for_job(running.id)).status == JobStatus.CANCELED
    entries = await audit_entries(harness, Action.TARGET_GONE)
    # The two deletions are handled concurrently: their entries may come in either order.
    assert {(entry.job_id, entry.details) for entry in entries} == {
        (in_channel.id, f"canceled: {lifecycle.CHANNEL_DELETED}"),
        (in_thread.id, f"canceled: {lifecycle.THREAD_DELETED}"),
        (running.id, f"canceled: {lifecycle.SERVER_LEFT}"),
    }
    assert len(entries) == 3
    assert harness.expect_user_errors() == []


async def test_jobs_of_an_owner_who_left_or_lost_the_required_role_are_canceled_when_claimed(harness):
    mod = admin_member(harness, "mod")
    artists = harness.guild.create_role("Artists")
    bob = harness.guild.add_member(harness.env.create_user("bob"), roles=[artists])
    carol = harness.guild.add_member(harness.env.create_user("carol"), roles=[artists])
    await mod.slash(harness.channel, "admin roles add", list="use", role=artists)
    await mod.slash(harness.channel, "imagine", prompt="blocking", **SLOW)
    blocking = await wait_running(harness, (await harness.latest_job(mod.id)).id)
    await bob.slash(harness.channel, "imagine", prompt="a kite", count=1)
    left = await harness.latest_job(bob.id)
    await carol.slash(harness.channel, "imagine", prompt="a kite", count=1)
    demoted = await harness.latest_job(carol.id)

    harness.guild.remove_member(bob)
    harness.env.backend.remove_member_role(harness.guild.id, carol.id, artists.id)
    await harness.settle()
    # Queued a while ago: a job claimed within lifecycle.MEMBER_SEEN_RECENTLY is not looked up.
    async with harness.db.session() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id.in_([left.id, demoted.id])).values(created_at=utcnow() - timedelta(minutes=5))
        )
    await mod.slash(harness.channel, "cancel", job=blocking.id)

    for job in (left, demoted):
        job = await harness.wait_for_job(job.id)
        # Canceled as it was claimed, before it started: no turn, no quota spent.
        assert job.status == JobStatus.CANCELED and job.started_at is None and job.attempts == 0
    entries = await audit_entries(harness, Action.TARGET_GONE)
    assert [(entry.job_id, entry.details) for entry in entries] == [
        (left.id, f"canceled: {lifecycle.OWNER_LEFT}"),
        (demoted.id, f"canceled: {lifecycle.ROLE_LOST}"),
    ]
    assert harness.expect_user_errors() == []


async def test_a_late_result_whose_channel_is_gone_is_dropped_without_an_error(late_harness):
    """Discord's 404 (10003 Unknown Channel) is expected when a channel goes between the check
    and the result: a warning, not an ERROR (which the test run fails on)."""
    harness = late_harness
    alice = harness.member("alice")
    harness.env.inject_error(
        "POST", f"/channels/{harness.channel.id}/messages", status=404, code=10003, message="Unknown Channel", times=None
    )
    await alice.slash(harness.channel, "imagine", prompt="a message in a bottle", count=1)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert job.status == JobStatus.COMPLETED
    assert harness.expect_user_errors() == []
