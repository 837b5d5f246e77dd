"""Every bad input gets a clear private answer and changes nothing."""

from __future__ import annotations

from pathlib import Path

import discord
from simcord.actors import _dispatch_actor_interaction
from simcord.enums import InteractionType
from sqlalchemy import delete

from bot.ui.buttons import UpscaleButton
from db.models import Job, JobStatus
from bot.interactions import OUTDATED_COMMAND, STALE_COMPONENT
from tests.harness import private_answer
from tests.test_bot_queue import SLOW, wait_running


async def refused(harness, actor_result, expected: str) -> None:
    assert expected in (text := private_answer(actor_result)), text


async def test_bad_options_are_answered_privately_and_queue_nothing(harness):
    alice = harness.member("alice")
    cases = [
        ({"width": 100}, "width must be a multiple of 8, got 100."),
        ({"height": 256}, "height must be between 64 and 128, got 256."),
        ({"steps": 61}, "steps must be between 1 and 60, got 61."),
        ({"cfg": 50.0}, "cfg must be between 1 and 30, got 50."),
        ({"count": 5}, "count must be between 1 and 4, got 5."),
        ({"sampler": "Euler z"}, "Unknown sampler `Euler z`."),
        ({"model": "sdxl-turbo"}, "Unknown model `sdxl-turbo`. Available models: tiny."),
        ({"aspect": "16:9", "width": 64}, "Give either an aspect ratio or a width/height, not both."),
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "\u200b\u2060 \u200b"}, "The prompt is empty"),  # zero-width: str.split() keeps them
        # Past what the Earley parse reads in bounded time: 130 took 12.7 s on the event loop.
        ({"prompt": "[" + "(word:1.2) " * 20 + ":b:0.5]"}, "Prompt editing and alternation can't be read"),
    ]
    for options, expected in cases:
        options = {"prompt": "a cat", **options}
        result = await alice.slash(harness.channel, "imagine", **options)
        await refused(harness, result, expected)
        [error] = harness.expect_user_errors()
        assert expected in error.message
    assert await harness.job_count() == 0


async def test_queue_cap_per_user(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="running", **SLOW)
    await wait_running(harness, (await harness.latest_job()).id)
    for i in range(5):
        await alice.slash(harness.channel, "imagine", prompt=f"waiting {i}", count=1)
    result = await alice.slash(harness.channel, "imagine", prompt="one too many", count=1)
    await refused(harness, result, "You already have 5 jobs waiting (the limit is 5).")
    harness.expect_user_errors()
    assert await harness.job_count() == 6
    other = await bob.slash(harness.channel, "imagine", prompt="bob is fine", count=1)
    assert not other.ephemeral and await harness.job_count() == 7


async def test_buttons_on_jobs_and_images_that_are_gone(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    result = await alice.slash(harness.channel, "imagine", prompt="fleeting", count=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    message = harness.message(result.response.id)

    await refused(harness, await alice.slash(harness.channel, "cancel"), "You have no job waiting or running.")
    harness.expect_user_errors()
    # Cancel under a finished job: nothing to stop. (The button is gone from the message, so
    # press it through /cancel, as the number is what a late click would carry.)
    await refused(harness, await alice.slash(harness.channel, "cancel", job=job.id), "has already completed")
    await refused(harness, await bob.slash(harness.channel, "cancel", job=job.id), "Only the person who started")
    harness.expect_user_errors()

    Path(job.images[1].path).unlink()
    await refused(harness, await alice.click(message, label="U2"), f"Image 2 of job #{job.id} is no longer on disk.")

    async with harness.db.session() as session, session.begin():
        await session.execute(delete(Job).where(Job.id == job.id))
    before = await harness.job_count()
    for label in ("U1", "V1", "Reroll"):
        await refused(harness, await alice.click(message, label=label), f"Job #{job.id} does not exist, or you cannot see it here.")
    assert await harness.job_count() == before
    await refused(
        harness, await alice.slash(harness.channel, "cancel", job=job.id), f"Job #{job.id} does not exist, or you cannot see it here."
    )
    harness.expect_user_errors()


async def test_buttons_of_a_job_that_has_not_finished(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="running", **SLOW)
    job = await wait_running(harness, (await harness.latest_job()).id)
    assert job.status == JobStatus.RUNNING
    # A U button cannot exist yet on screen, but a crafted or stale click must still be safe:
    # a message the bot posts with the button stands in for it.
    view = discord.ui.View(timeout=None)
    view.add_item(UpscaleButton(job.id, 0))
    crafted = await harness.bot.get_channel(harness.channel.id).send("a stale U1", view=view)
    await harness.settle()
    await refused(harness, await alice.click(crafted, label="U1"), f"Job #{job.id} has not finished")
    harness.expect_user_errors()
    # Ended without images: said as it is, not "not finished".
    await alice.slash(harness.channel, "cancel", job=job.id)
    assert (await harness.wait_for_job(job.id)).status == JobStatus.CANCELED
    await refused(harness, await alice.click(crafted, label="U1"), f"Job #{job.id} was canceled, so it has no images.")
    await refused(harness, await alice.slash(harness.channel, "cancel", job=job.id), "was already canceled; nothing to cancel")
    harness.expect_user_errors()


async def test_outdated_and_forged_buttons_are_answered_and_hold_nothing_up(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="stale", count=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    # A message of an older version (a template since changed) or a forged one; its view is
    # stopped, as no view of a bot restarted since would hold its buttons.
    view = discord.ui.View(timeout=None)
    forged = (f"sd:desc:{job.id}:all", "sd:u:9223372036854775808:0")
    for custom_id in (f"sd:u:{job.id}:-1", f"sd:u:{job.id}:0:extra", f"sd:zoom:{job.id}", *forged):
        view.add_item(discord.ui.Button(label=custom_id, custom_id=custom_id))
    stale = await harness.bot.get_channel(harness.channel.id).send("an old post", view=view)
    view.stop()
    await harness.settle()
    for custom_id in (f"sd:u:{job.id}:-1", f"sd:u:{job.id}:0:extra", f"sd:zoom:{job.id}"):
        # Unanswered, it also held every interaction of the next 3 s (bot.answers_first).
        assert private_answer(await alice.click(stale, custom_id=custom_id)) == STALE_COMPONENT, custom_id
    # A job number past any id the database has (SQLite raised OverflowError at 2**63); "Imagine
    # all" of a job that is no /describe (it left a public "thinking…" with nothing after it).
    await refused(harness, await alice.click(stale, custom_id="sd:u:9223372036854775808:0"), "does not exist")
    await refused(harness, await alice.click(stale, custom_id=f"sd:desc:{job.id}:all"), "has no prompt suggestions")
    assert await harness.job_count() == 1
    harness.expect_user_errors()
    posted = await alice.click(harness.message(result.response.id), label="U1")
    assert not posted.ephemeral and posted.response.attachments

    # What a member's Discord sends until it loads the synced commands (up to an hour for a
    # global sync): a command removed since, or one whose options changed (it was logged as a
    # failure and answered "Something went wrong on our side").
    # Or one whose option changed type (steps as text: it reached the checks as a string, a
    # TypeError answered with an apology).
    outdated_steps = [{"name": "prompt", "type": 3, "value": "a cat"}, {"name": "steps", "type": 3, "value": "lots"}]
    for name, options in (("retired", []), ("imagine", []), ("imagine", outdated_steps)):
        data = {"id": "1", "name": name, "type": 1, "options": options}
        answer = await _dispatch_actor_interaction(alice, InteractionType.APPLICATION_COMMAND, harness.channel, data)
        assert private_answer(answer) == OUTDATED_COMMAND
    assert await harness.job_count() == 1
    harness._errors_seen = harness.env.error_cursor  # discord.py's own errors, answered: no user errors
