"""Each rule of a server's policy, through the bot: it blocks what it should, lets the rest
through, and writes an audit entry for each refusal (bot.policy.gate)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import update

from bot.policy.audit import Action
from db.base import utcnow
from db.models import Job, JobStatus, User
from tests.harness import private_answer
from tests.test_bot_admin import admin_member, audit_entries
from tests.test_bot_queue import SLOW, wait_running


def refused(result, *expected: str) -> str:
    text = private_answer(result)
    for part in expected:
        assert part in text, text
    return text


async def queued(harness, result) -> None:
    """The command answered publicly with the status message of a new job."""
    assert result.acknowledged and not result.ephemeral, result.response.content if result.response else result
    assert (await harness.latest_job()).message_id == result.response.id


async def refusal_rules(harness) -> list[str]:
    return [entry.details.split(":")[0] for entry in await audit_entries(harness, Action.REFUSED)]


def with_policy(harness, **changes) -> None:
    """Change the bot's [policy] settings in place (as a restart with a new config.toml would)."""
    settings = harness.bot.settings
    harness.bot.settings = replace(settings, policy=replace(settings.policy, **changes))


async def add_rows(harness, user_id: int, *, images: int, ago: timedelta, status=JobStatus.COMPLETED, started=True) -> Job:
    """A job row of this server, written directly with the time it was asked for."""
    created = utcnow() - ago
    async with harness.db.session() as session, session.begin():
        if await session.get(User, user_id) is None:
            session.add(User(id=user_id, name=f"user {user_id}"))
        job = Job(
            user_id=user_id, kind="txt2img", status=status, prompt="earlier", model="tiny", width=64, height=64,
            steps=3, cfg_scale=7.0, sampler="Euler a", count=images, seed=1, guild_id=harness.guild.id,
            channel_id=harness.channel.id, created_at=created, started_at=created if started else None,
        )
        session.add(job)
    return job


async def test_channels_roles_bans_buttons_and_direct_messages(harness):
    mod = admin_member(harness, "mod")
    artists = harness.guild.create_role("Artists")
    alice_user, carol_user = harness.env.create_user("alice"), harness.env.create_user("carol")
    alice = harness.guild.add_member(alice_user, roles=[artists])
    bob = harness.member("bob")
    lounge = harness.guild.create_text_channel("lounge")

    # Channels: only the listed ones (moderators anywhere, so they can fix a bad list).
    await mod.slash(harness.channel, "admin channels add", channel=harness.channel)
    refused(await alice.slash(lounge, "imagine", prompt="a red kite", count=1),
            f"does not work in this channel. Use it in <#{harness.channel.id}>.")
    assert len(harness.expect_user_errors()) == 1
    await mod.slash(lounge, "queue")
    await bob.slash(harness.channel, "queue")
    assert harness.expect_user_errors() == []
    await queued(harness, await alice.slash(harness.channel, "imagine", prompt="a red kite", count=1))

    # Roles: only members with one of the listed roles, for commands and buttons alike.
    await mod.slash(harness.channel, "admin roles add", list="use", role=artists)
    refused(await bob.slash(harness.channel, "imagine", prompt="a red kite", count=1),
            f"for members with one of these roles: <@&{artists.id}>")
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    result_message = harness.message(job.message_id)
    refused(await bob.click(result_message, label="Reroll"), "for members with one of these roles")
    queued_count = await harness.job_count()
    rerolled = await alice.click(result_message, label="Reroll")
    assert not rerolled.ephemeral and await harness.job_count() == queued_count + 1

    # Bans: here, on buttons, and in direct messages (banned in any server). A ban also stops
    # the member's jobs here, running or waiting.
    await harness.wait_for_job((await harness.latest_job(alice.id)).id)  # the reroll
    await alice.slash(harness.channel, "imagine", prompt="a long kite", **SLOW)
    running = await wait_running(harness, (await harness.latest_job(alice.id)).id)
    waiting = await alice.slash(harness.channel, "imagine", prompt="one more kite", **SLOW)
    waiting_job = await harness.latest_job(alice.id)
    banned = await mod.slash(harness.channel, "admin ban", user=alice, reason="spamming the queue")
    assert "2 of their jobs waiting or running here were canceled" in banned.response.content
    for job_id in (running.id, waiting_job.id):
        assert (await harness.wait_for_job(job_id)).status == JobStatus.CANCELED
    assert waiting.response.id == waiting_job.message_id
    refused(await alice.slash(harness.channel, "imagine", prompt="a red kite", count=1),
            "banned from using this bot on this server. Reason: spamming the queue")
    refused(await alice.click(result_message, label="Reroll"), "banned")
    refused(await alice_user.slash("queue"), "banned from using this bot in a server")
    assert len(harness.expect_user_errors()) == 3  # the buttons' refusals are answered, not raised
    await carol_user.slash("queue")
    assert harness.expect_user_errors() == []
    await queued(harness, await carol_user.slash("imagine", prompt="a quiet pond", count=1))
    await mod.slash(harness.channel, "admin unban", user=alice)
    await queued(harness, await alice.slash(harness.channel, "imagine", prompt="a red kite", count=1))

    # Direct messages turned off in the bot's settings.
    with_policy(harness, allow_dms=False)
    refused(await carol_user.slash("queue"), "does not work in direct messages")

    assert await refusal_rules(harness) == ["channel", "role", "role", "ban", "ban", "ban", "dm"]
    entries = await audit_entries(harness, Action.REFUSED)
    assert entries[0].channel_id == lounge.id and entries[0].actor_id == alice.id
    assert entries[-1].guild_id is None and entries[-1].actor_id == carol_user.id
    assert len(harness.expect_user_errors()) == 1


async def test_costly_roles_nsfw_channels_and_blocked_terms(harness):
    mod = admin_member(harness, "mod")
    patrons = harness.guild.create_role("Patrons")
    patron = harness.guild.add_member(harness.env.create_user("pat"), roles=[patrons])
    alice = harness.member("alice")
    channel = harness.channel
    after_dark = await harness.age_restricted_channel("after-dark")

    # Costly features need a costly role once the server lists some.
    await mod.slash(channel, "admin roles add", list="costly", role=patrons)
    with_policy(harness, large_pixels=64 * 64)
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse"),  # the default count is 4
            f"Making 4 images at once is reserved to members with one of these roles here: <@&{patrons.id}>")
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", count=1, hires_scale=2.0), "The hires fix is reserved")
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", count=1, width=128), "A 128x64 image is reserved")
    refused(await alice.slash(channel, "xyplot", prompt="a lighthouse", x_type="Steps", x_values="2, 3, 4, 5"),
            "A plot of 4 cells is reserved")
    await queued(harness, await alice.slash(channel, "imagine", prompt="a lighthouse", count=1))
    await queued(harness, await patron.slash(channel, "imagine", prompt="a lighthouse", count=4, width=128))

    # Blocked terms: banned everywhere, NSFW outside age-restricted channels, in every prompt.
    await mod.slash(channel, "admin terms add", scope="banned", kind="word", pattern="cat")
    await mod.slash(channel, "admin terms add", scope="nsfw", kind="word", pattern="nude")
    await mod.slash(channel, "admin terms add", scope="banned", kind="regex", pattern=r"d[o0]g+")
    await queued(harness, await alice.slash(channel, "imagine", prompt="a category of concatenated things", count=1))
    refused(await alice.slash(channel, "imagine", prompt="a (cat:1.3) asleep", count=1),
            "the prompt contains the word `cat`, which this server allows at all")
    refused(await alice.slash(channel, "imagine", prompt="a portrait", negative_prompt="nude_art", count=1),
            "the word `nude`", "allows only in age-restricted channels")
    refused(await alice.slash(channel, "imagine", prompt="a D0GGG running", count=1), "the pattern `d[o0]g+` (matched `D0GGG`)")
    refused(await alice.slash(channel, "imagine", prompt="a bird --no cat", count=1), "the word `cat`")  # inline --no
    refused(await alice.slash(channel, "xyplot", prompt="a red fox", x_type="Prompt S/R", x_values="red, cat"),
            "the word `cat`")
    await queued(harness, await alice.slash(after_dark, "imagine", prompt="nude_art study", count=1))
    refused(await alice.slash(after_dark, "imagine", prompt="nude cat", count=1), "the word `cat`")

    # Styles: saving one with a banned term is refused; an NSFW one is checked where it is used.
    refused(await alice.slash(channel, "style add", name="kitty", prompt="cat ears"), "Not saved: the style contains the word `cat`")
    saved = await alice.slash(channel, "style add", name="figure", prompt="{prompt}, nude")
    assert "Saved" in saved.response.content
    refused(await alice.slash(channel, "imagine", prompt="a statue", style="figure", count=1), "the word `nude`")
    csv_file = ("styles.csv", b"name,prompt,negative_prompt\nTabby,a tabby cat,\nFig,{prompt} nude,\n")
    imported = await mod.slash(channel, "style import", file=csv_file)
    assert "Imported 1 server styles" in imported.response.content, imported
    assert "Skipped: Tabby: contains the word `cat`" in imported.response.content
    await queued(harness, await alice.slash(after_dark, "imagine", prompt="a statue", style="figure", count=1))

    # The test command shows both sides without queuing anything.
    jobs = await harness.job_count()
    tested = await mod.slash(after_dark, "admin terms test", prompt="nude cat")
    assert tested.response.content == (
        "**Here (age-restricted)**: the word `cat`\n**In other channels**: the word `cat`; the word `nude`"
    )
    assert await harness.job_count() == jobs

    assert await refusal_rules(harness) == ["costly role"] * 4 + ["blocked term"] * 8
    details = [entry.details for entry in await audit_entries(harness, Action.REFUSED)]
    assert details[4].startswith("blocked term: the word `cat`; prompt: a (cat:1.3) asleep")
    assert "(matched `D0GGG`)" in details[6]
    assert len(harness.expect_user_errors()) == 12


async def test_quota_cooldown_waiting_jobs_and_role_overrides(harness):
    mod = admin_member(harness, "mod")
    regulars = harness.guild.create_role("Regulars")
    alice, carol, dave, erin = (harness.member(name) for name in ("alice", "carol", "dave", "erin"))
    bob = harness.guild.add_member(harness.env.create_user("bob"), roles=[regulars])
    channel = harness.channel

    # Quota: 5 images per rolling 24 h. Failed jobs and jobs canceled before they started do
    # not count; the oldest counted job ages out first.
    await mod.slash(channel, "admin limits set", images_per_day=5)
    await mod.slash(channel, "admin limits set", images_per_day=0, role=regulars)
    oldest = await add_rows(harness, alice.id, images=3, ago=timedelta(hours=23))
    await add_rows(harness, alice.id, images=1, ago=timedelta(hours=2))
    await add_rows(harness, alice.id, images=4, ago=timedelta(hours=25))  # out of the window
    await add_rows(harness, alice.id, images=4, ago=timedelta(hours=1), status=JobStatus.FAILED)
    await add_rows(harness, alice.id, images=4, ago=timedelta(hours=1), status=JobStatus.CANCELED, started=False)
    text = refused(await alice.slash(channel, "imagine", prompt="a kite", count=2),
                   "You have used your 5 images for the last 24 hours (1 left, this asks for 2). Try again <t:")
    again = int(re.search(r"<t:(\d+):R>", text)[1])
    assert again == int((oldest.created_at + timedelta(hours=24)).timestamp()) + 1
    await queued(harness, await alice.slash(channel, "imagine", prompt="a kite", count=1))
    refused(await alice.slash(channel, "imagine", prompt="a kite", count=1), "You have used your 5 images")
    for ago in (23, 2):
        await add_rows(harness, bob.id, images=4, ago=timedelta(hours=ago))
    await queued(harness, await bob.slash(channel, "imagine", prompt="a kite", count=2))  # his role: no limit

    # Cooldown: seconds since the member's latest job, whatever became of it.
    await mod.slash(channel, "admin limits reset")
    await mod.slash(channel, "admin limits set", cooldown_s=60)
    recent = await add_rows(harness, carol.id, images=1, ago=timedelta(seconds=10), status=JobStatus.FAILED)
    text = refused(await carol.slash(channel, "imagine", prompt="a kite", count=1), "asks for 60 s between jobs: try again <t:")
    assert int(re.search(r"<t:(\d+):R>", text)[1]) == int((recent.created_at + timedelta(seconds=60)).timestamp()) + 1
    async with harness.db.session() as session, session.begin():
        await session.execute(update(Job).where(Job.id == recent.id).values(created_at=utcnow() - timedelta(seconds=61)))
    await queued(harness, await carol.slash(channel, "imagine", prompt="a kite", count=1))

    # Waiting jobs: while Erin's long job runs, Dave may have 2 waiting here.
    await mod.slash(channel, "admin limits reset")
    await mod.slash(channel, "admin limits set", max_pending=2)
    for job_id in [job.id for job in await _active(harness)]:
        await harness.wait_for_job(job_id)
    await erin.slash(channel, "imagine", prompt="a long night", **SLOW)
    long_job = await wait_running(harness, (await harness.latest_job(erin.id)).id)
    await queued(harness, await dave.slash(channel, "imagine", prompt="one", count=1))
    await queued(harness, await dave.slash(channel, "imagine", prompt="two", count=1))
    refused(await dave.slash(channel, "imagine", prompt="three", count=1),
            "You have 2 jobs waiting; this server allows 2 at once.")
    refused(await dave.slash(channel, "imagine", prompt="{a, b} three", count=1), "You have 2 jobs waiting and this asks for 2 more")
    await erin.slash(channel, "cancel", job=long_job.id)

    assert await refusal_rules(harness) == ["quota", "quota", "cooldown", "max pending", "max pending"]
    assert len(harness.expect_user_errors()) == 5


async def _active(harness) -> list[Job]:
    return [entry.job for entry in await harness.queue.active_entries()]


async def test_commands_sent_at_once_are_counted_one_after_the_other(harness):
    """A double click, or two commands sent together, must not both pass a limit before
    either is queued (gate.member_turn): with a 60 s cooldown, one of two is queued."""
    mod, alice = admin_member(harness, "mod"), harness.member("alice")
    await mod.slash(harness.channel, "admin limits set", cooldown_s=60)
    with harness.arriving_together():
        results = [await alice.slash(harness.channel, "imagine", prompt=f"kite {n}", count=1) for n in range(2)]
    await harness.settle()
    assert await harness.job_count() == 1
    refusals = [r for r in results if r.response is None or r.response.ephemeral]
    assert len(refusals) == 1 and "asks for 60 s between jobs" in private_answer(refusals[0])
    assert len(harness.expect_user_errors()) == 1
