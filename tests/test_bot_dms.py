"""Direct messages and private results: the member commands work in a DM with the bot (the
admin commands do not), and a member with private results sees their jobs alone: an ephemeral
status message while the interaction token lives, then a DM."""

from __future__ import annotations

from dataclasses import replace

import pytest

from db.models import JobStatus
from tests.harness import button_labels
from tests.test_bot_queue import SLOW, wait_running
from tests.test_bot_settings import line

MEMBER_COMMANDS = {"imagine", "img2img", "inpaint", "outpaint", "upscale", "settings", "history", "show", "queue",
                   "cancel", "style", "pnginfo", "promptmatrix", "xyplot"}


def bot_messages(channel) -> list:
    return [message for message in channel.history() if message.author.bot]


async def test_private_results_are_ephemeral_then_sent_by_dm(harness):
    alice = harness.member("alice")
    shown = await alice.slash(harness.channel, "settings")
    await alice.click(shown.response, label="Private results: off")
    assert line(shown.response, "Private results") == "**Private results**: **on** · server: off"
    public_before = len(bot_messages(harness.channel))

    # While the token lives: the status message is ephemeral and becomes the result.
    result = await alice.slash(harness.channel, "imagine", prompt="a secret garden", count=2)
    assert result.ephemeral
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert job.status == JobStatus.COMPLETED and job.message_id is None
    assert result.response.embeds[0].title == "a secret garden" and result.response.attachments
    # Its U buttons post privately too.
    single = await alice.click(result.response, label="U1")
    assert single.ephemeral and (single.followups or [single.response])[-1].attachments
    assert len(bot_messages(harness.channel)) == public_before

    # After the token expired: the result arrives by DM, never in the channel.
    await alice.slash(harness.channel, "imagine", prompt="blocking", **SLOW)
    await wait_running(harness, (await harness.latest_job(alice.id)).id)
    late = await alice.slash(harness.channel, "imagine", prompt="a late letter", count=1)
    assert late.ephemeral
    job = await harness.latest_job(alice.id)
    await harness.env.advance_time(16 * 60)
    job = await harness.wait_for_job(job.id)
    assert job.status == JobStatus.COMPLETED
    await harness.wait_for_job(job.id - 1)
    assert len(bot_messages(harness.channel)) == public_before
    dm = alice.user.dm_channel
    [sent] = [m for m in bot_messages(dm) if f"job #{job.id} is done" in m.content]
    assert sent.attachments and sent.embeds[0].title == "a late letter"
    assert "Remove" in button_labels(sent)
    # 🗑️ works there too: the owner removes the DM.
    asked = await alice.user.click(sent, label="Remove")
    await alice.user.click(asked.response, label="Remove message")
    assert sent.id not in {m.id for m in dm.history()}
    assert (await harness.queue.get(job.id)).removed_by == alice.id
    assert harness.expect_user_errors() == []


@pytest.fixture
async def late_harness(settings):
    """The bot, every interaction token taken as expired at once: each result is late."""
    from tests.harness import BotHarness

    expired = replace(settings, discord=replace(settings.discord, interaction_token_lifetime_s=0))
    async with BotHarness(expired) as harness:
        yield harness


async def finished_with_dms_closed(harness, alice, prompt: str):  # type: ignore[no-untyped-def]
    """A late private result of alice's, her DMs closed."""
    await harness.bot.queue.update_user(alice.id, "alice", private_results=True)
    # Discord answers 403 50007 to a DM the member does not accept; simcord, only for bots.
    harness.env.inject_error(
        "POST", f"/channels/{alice.user.dm_channel.id}/messages", status=403, code=50007,
        message="Cannot send messages to this user", times=None,
    )
    answer = await alice.slash(harness.channel, "imagine", prompt=prompt, count=1)
    assert answer.ephemeral
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert job.status == JobStatus.COMPLETED
    return job


async def test_a_private_result_with_dms_closed_is_announced_in_the_channel_without_itself(late_harness):
    harness = late_harness
    alice = harness.member("alice")
    job = await finished_with_dms_closed(harness, alice, "a sealed letter")
    assert bot_messages(alice.user.dm_channel) == []
    [notice] = [m for m in bot_messages(harness.channel) if f"job #{job.id}" in m.content]
    # It names the member and where to look, and nothing of the job itself.
    assert notice.content.startswith(f"<@{alice.id}>") and "DMs are closed" in notice.content
    assert "/history" in notice.content and f"/show job:{job.id}" in notice.content
    assert "sealed letter" not in notice.content and not notice.attachments and not notice.embeds
    assert not notice.components
    history = await alice.slash(harness.channel, "history")
    assert history.ephemeral and f"**#{job.id}**" in history.response.embeds[0].description
    assert harness.expect_user_errors() == []


async def test_the_owner_shows_a_private_result_their_dms_refused_privately(late_harness):
    harness = late_harness
    alice = harness.member("alice")
    job = await finished_with_dms_closed(harness, alice, "a sealed letter")
    shown = await alice.slash(harness.channel, "show", job=job.id)
    assert shown.ephemeral
    assert (shown.followups or [shown.response])[-1].attachments
    assert not [m for m in bot_messages(harness.channel) if m.attachments and "sealed letter" in str(m.embeds[0].title)]


async def test_member_commands_work_in_a_dm_and_deliver_there(harness):
    alice = harness.member("alice")
    available = {name.split()[0] for name in alice.user.available_commands()}  # "style add" -> style
    assert MEMBER_COMMANDS <= available and "admin" not in available

    result = await alice.user.slash("imagine", prompt="a paper boat", count=1, seed=8)
    assert result.acknowledged and not result.ephemeral
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert job.status == JobStatus.COMPLETED and job.guild_id is None
    assert job.channel_id == alice.user.dm_channel.id == result.response.channel_id
    assert result.response.embeds[0].title == "a paper boat" and result.response.attachments
    # Its buttons work there too.
    again = await alice.user.click(result.response, label="Reroll")
    assert again.acknowledged and not again.ephemeral
    await harness.wait_for_job((await harness.latest_job(alice.id)).id)

    settings = await alice.user.slash("settings")
    assert settings.ephemeral
    history = await alice.user.slash("history")
    assert history.ephemeral and f"**#{job.id}**" in history.response.embeds[0].description
    assert harness.expect_user_errors() == []


async def test_private_results_hold_at_the_first_command_after_a_restart(settings):
    """The privacy index is read from the rows at start-up, before any acknowledgement needs
    it: the first burst after a restart does not wait on that read, and still answers
    privately where the member chose it."""
    from tests.harness import BotHarness

    async with BotHarness(settings) as first:
        alice = first.member("alice")
        await first.bot.queue.update_user(alice.id, "alice", private_results=True)

    async with BotHarness(settings) as again:
        assert again.bot.queue.privacy.loaded
        alice = again.member("alice")
        assert alice.id == await _only_user_id(again)
        result = await alice.slash(again.channel, "imagine", prompt="a secret garden")
        assert result.ephemeral


async def _only_user_id(harness) -> int:
    from sqlalchemy import select

    from db.models import User

    async with harness.db.session() as session:
        (user_id,) = list(await session.scalars(select(User.id)))
    return user_id
