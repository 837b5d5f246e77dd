"""Who may see and use a job, and where: /show, the buttons and the forms all go through
bot.actions.job_for_interaction. A private job is its owner's (and its server's moderators');
a job is used only in its own server (or by its owner); a refusal never confirms a job exists.

A message the bot posts carrying a job's custom ids stands in for a forged or copied press:
discord.py runs a DynamicItem for any custom_id that matches its template."""

from __future__ import annotations

import discord

from bot.ui import buttons
from bot.ui.remove_button import RemoveChoiceButton
from db.models import JobStatus
from tests.harness import private_answer
from tests.test_bot_settings import line


def bot_messages(channel) -> list:
    return [message for message in channel.history() if message.author.bot]


def refusal(result, job_id: int) -> str:
    """The private answer with the job's number taken out, to compare refusals word for word."""
    return private_answer(result).replace(f"#{job_id}", "#N")


async def private_job(harness, member, prompt: str, **options):
    shown = await member.slash(harness.channel, "settings")
    await member.click(shown.response, label="Private results: off")
    assert line(shown.response, "Private results").startswith("**Private results**: **on**")
    await member.slash(harness.channel, "imagine", prompt=prompt, **options)
    job = await harness.wait_for_job((await harness.latest_job(member.id)).id)
    assert job.status == JobStatus.COMPLETED and job.private
    return job


def form_defaults(shown) -> dict:
    assert shown.modal is not None
    return {c["custom_id"]: c.get("value") for row in shown.modal["components"] for c in row.get("components", [])}


async def forged_post(harness, channel_id: int, view: discord.ui.View) -> discord.Message:
    posted = await harness.bot.get_channel(channel_id).send("copied buttons", view=view)
    await harness.settle()
    return posted


async def test_show_of_a_private_job_reaches_only_its_owner_and_moderators(harness):
    alice, bob, mod = harness.member("alice"), harness.member("bob"), harness.member("mod", moderator=True)
    job = await private_job(harness, alice, "a secret garden", negative_prompt="a hidden wish", count=2)
    public_before = len(bot_messages(harness.channel))

    # Bob cannot tell the job from one that never existed; nothing is posted.
    hidden = await bob.slash(harness.channel, "show", job=job.id)
    missing = await bob.slash(harness.channel, "show", job=999)
    assert refusal(hidden, job.id) == refusal(missing, 999) == "Job #N does not exist, or you cannot see it here."
    assert len(bot_messages(harness.channel)) == public_before

    # Its owner gets it privately, with its image and buttons; so does a moderator.
    for member in (alice, mod):
        shown = await member.slash(harness.channel, "show", job=job.id)
        post = (shown.followups or [shown.response])[-1]
        assert shown.ephemeral and post.ephemeral and post.attachments
        assert post.embeds[0].title == "a secret garden"
    assert len(bot_messages(harness.channel)) == public_before
    harness.expect_user_errors()


async def test_show_keeps_to_the_server_or_dm_a_job_was_made_in(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="a public harbour", count=1)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    await alice.user.slash("imagine", prompt="a letter home", count=1)
    in_dm = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    other = harness.env.create_guild(name="other club")
    other_channel = other.create_text_channel("imagine")
    bob_there, alice_there = other.add_member(bob.user), other.add_member(alice.user)
    await harness.settle()

    expected = "Job #N does not exist, or you cannot see it here."
    assert refusal(await bob_there.slash(other_channel, "show", job=job.id), job.id) == expected
    assert refusal(await bob.slash(harness.channel, "show", job=in_dm.id), in_dm.id) == expected
    assert refusal(await bob.user.slash("show", job=job.id), job.id) == expected
    assert not bot_messages(other_channel)
    # Its owner may show her own job anywhere.
    shown = await alice_there.slash(other_channel, "show", job=job.id)
    assert shown.acknowledged and not shown.ephemeral and (shown.followups or [shown.response])[-1].attachments
    harness.expect_user_errors()


async def test_buttons_of_a_private_job_answer_only_its_owner_and_moderators(harness):
    alice, bob, mod = harness.member("alice"), harness.member("bob"), harness.member("mod", moderator=True)
    job = await private_job(harness, alice, "a secret garden", negative_prompt="a hidden wish", count=2)
    posted = await forged_post(harness, harness.channel.id, buttons.result_view(job))
    before = await harness.job_count()

    for label in ("U1", "V1", "Reroll", "Remix", "Remove"):
        pressed = await bob.click(posted, label=label)
        assert refusal(pressed, job.id) == "Job #N does not exist, or you cannot see it here.", label
        assert pressed.modal is None
    assert await harness.job_count() == before
    assert len(bot_messages(harness.channel)) == 1  # the forged post alone

    # A moderator may: Vary queues a (private) job; Remix opens without the owner's negative prompt.
    varied = await mod.click(posted, label="V1")
    assert varied.acknowledged and varied.ephemeral
    assert await harness.job_count() == before + 1
    await harness.wait_for_job((await harness.latest_job(mod.id)).id)
    assert form_defaults(await mod.click(posted, label="Remix")) == {"prompt": "a secret garden", "negative_prompt": None}
    # Its owner's form has it.
    assert form_defaults(await alice.click(posted, label="Remix"))["negative_prompt"] == "a hidden wish"
    harness.expect_user_errors()


async def test_buttons_act_only_on_jobs_of_the_server_they_are_pressed_in(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="a public harbour", count=2)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    other = harness.env.create_guild(name="other club")
    other_channel = other.create_text_channel("imagine")
    bob_there = other.add_member(harness.env.create_user("bob"))
    await harness.settle()
    posted = await forged_post(harness, other_channel.id, buttons.result_view(job))
    before = await harness.job_count()

    for label in ("U1", "V1", "Reroll", "Remix"):
        pressed = await bob_there.click(posted, label=label)
        assert refusal(pressed, job.id) == "Job #N does not exist, or you cannot see it here.", label
    assert await harness.job_count() == before
    assert len(bot_messages(other_channel)) == 1
    harness.expect_user_errors()


async def test_a_remove_choice_deletes_only_posts_of_the_job_it_names(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await bob.slash(harness.channel, "imagine", prompt="bob's harbour", count=1)
    bobs = await harness.wait_for_job((await harness.latest_job(bob.id)).id)
    await alice.slash(harness.channel, "imagine", prompt="alice's kite", count=1)
    alices = await harness.wait_for_job((await harness.latest_job(alice.id)).id)

    # Alice's own job, but the message of Bob's result.
    view = discord.ui.View(timeout=None)
    view.add_item(RemoveChoiceButton(alices.id, harness.channel.id, bobs.message_id, files=False))
    posted = await forged_post(harness, harness.channel.id, view)
    pressed = await alice.click(posted, label="Remove message")
    assert "is not a post of job" in private_answer(pressed)
    assert bobs.message_id in {message.id for message in harness.channel.history()}
    assert (await harness.queue.get(alices.id)).removed_at is None
    harness.expect_user_errors()
