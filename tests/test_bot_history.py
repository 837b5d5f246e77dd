"""/history (pages, Previous/Next, Re-run) and /show (a result posted again, months later)."""

from __future__ import annotations

import re
from pathlib import Path

import discord

from bot.jobs.job_rows import parameters_of
from bot.ui.history_page import HistoryPageButton, RerunSelect
from db.models import Job, JobStatus, User
from tests.harness import attachment_image, button_labels, private_answer
from tests.test_bot_queue import SLOW, wait_running


async def refused(result, expected: str) -> None:
    assert expected in (text := private_answer(result)), text


async def add_jobs(harness, user_id: int, count: int, **values) -> list[int]:
    """Finished job rows written directly (their images are not needed to list them)."""
    columns = dict(
        kind="txt2img", status=JobStatus.COMPLETED, prompt="an old job", model="tiny", width=64, height=64,
        steps=3, cfg_scale=7.0, sampler="Euler a", count=1, seed=5, guild_id=harness.guild.id,
    )
    columns.update(values)
    async with harness.db.session() as session, session.begin():
        if await session.get(User, user_id) is None:
            session.add(User(id=user_id, name=f"user {user_id}"))
        jobs = [Job(user_id=user_id, **{**columns, "prompt": f"{columns['prompt']} {i}"}) for i in range(count)]
        session.add_all(jobs)
    return [job.id for job in jobs]


def lines(result) -> list[str]:
    """One entry per job (a job takes two lines)."""
    return re.split(r"\n(?=\*\*#)", result.response.embeds[0].description)


async def test_history_pages_and_rerun_with_the_same_seed(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    first = await alice.slash(harness.channel, "imagine", prompt="a green door", count=1, seed=77)
    original = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert original.status == JobStatus.COMPLETED
    await add_jobs(harness, alice.id, 11)
    await add_jobs(harness, bob.id, 2, prompt="bob's secret")

    shown = await alice.slash(harness.channel, "history")
    assert shown.ephemeral
    page = lines(shown)
    assert len(page) == 10 and page[0].startswith("**#12**") and page[-1].startswith("**#3**")
    assert "bob's secret" not in shown.response.embeds[0].description
    assert shown.response.embeds[0].footer.text.startswith("Page 1 of 2 · 12 jobs")
    assert "seed 5 · tiny" in page[0] and "<t:" in page[0] and ":R>" in page[0]

    await alice.click(shown.response, label="Next")
    page = lines(shown)
    assert [line.split("**")[1] for line in page] == ["#2", "#1"]
    link = f"https://discord.com/channels/{harness.guild.id}/{harness.channel.id}/{first.response.id}"
    assert f"[message]({link})" in page[1] and "seed 77" in page[1] and "a green door" in page[1]
    await alice.click(shown.response, label="Previous")
    assert lines(shown)[0].startswith("**#12**")
    # A page number past the end shows the last page.
    assert lines(await alice.slash(harness.channel, "history", page=9))[-1].startswith("**#1**")

    # Re-run job 1 from the second page: the same parameters, the same seed, a public status.
    await alice.click(shown.response, label="Next")
    rerun = await alice.select(shown.response, ["1"])
    assert rerun.acknowledged and not rerun.ephemeral
    assert harness.first_response()["embeds"][0]["title"] == "Generating"  # the idle worker took it
    again = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert again.status == JobStatus.COMPLETED and again.parent_job_id == original.id
    assert again.id != original.id and [image.seed for image in again.images] == [77]
    exact = parameters_of(original)
    assert parameters_of(again) == exact.__class__(**{**exact.__dict__, "parent_job_id": original.id})
    assert harness.expect_user_errors() == []

    # Only Alice may turn her pages or re-run from them. The history is private; a public
    # message carrying its custom ids stands in for a forged press.
    count = await harness.job_count()
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryPageButton(alice.id, 1, "next"))
    jobs = [await harness.queue.get(job_id) for job_id in (1, 2)]
    view.add_item(RerunSelect(alice.id, 0, jobs))
    posted = await harness.bot.get_channel(harness.channel.id).send("alice's history", view=view)
    await harness.settle()

    pressed = await bob.click(posted, label="Next")
    await refused(pressed, "someone else's history")
    chosen = await bob.select(posted, ["1"])
    await refused(chosen, "someone else's history")
    assert await harness.job_count() == count
    # Alice's own press works (edits the message into her page 2).
    turned = await alice.click(posted, label="Next")
    assert turned.acknowledged and "Page 2 of 2" in harness.message(posted.id).embeds[0].footer.text
    assert harness.expect_user_errors() == []


async def test_show_reposts_a_finished_job_after_a_restart(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="a quiet harbour", count=2, seed=3)
    job = await harness.wait_for_job((await harness.latest_job()).id)

    await harness.restart()

    shown = await bob.slash(harness.channel, "show", job=job.id)
    assert shown.acknowledged and not shown.ephemeral
    message = shown.followups[0] if shown.followups else shown.response
    posted = harness.message(message.id)
    assert f"Job #{job.id}" in posted.content
    assert posted.embeds[0].title == "a quiet harbour"
    assert {f.name: f.value for f in posted.embeds[0].fields}["Seeds"] == "3, 4"
    assert button_labels(posted) == ["U1", "U2", "Reroll", "V1", "V2", "Remix", "Remove"]
    assert (await attachment_image(posted)).size[0] >= 128
    # Its buttons work like the original's.
    single = await bob.click(posted, label="U2")
    assert not single.ephemeral

    # Once the files are gone, /show says so privately.
    for path in {job.grid_path, *(image.path for image in job.images)} - {None}:
        Path(path).unlink()
    await refused(await alice.slash(harness.channel, "show", job=job.id), "no longer on disk")
    harness.expect_user_errors()


async def test_show_of_jobs_without_a_result_is_answered_privately(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="a long night", **SLOW)
    running = await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="waiting", count=1)
    waiting = await harness.latest_job()
    [failed] = await add_jobs(harness, alice.id, 1, status=JobStatus.FAILED, error="Out of memory: use fewer images.")
    [elsewhere] = await add_jobs(harness, alice.id, 1, guild_id=harness.guild.id + 1)

    await refused(await bob.slash(harness.channel, "show", job=running.id), f"Job #{running.id} is running now")
    await refused(await bob.slash(harness.channel, "show", job=waiting.id), "still waiting in the queue (#1 in line)")
    await refused(await bob.slash(harness.channel, "show", job=failed), "failed, so there is nothing to show: Out of memory")
    await refused(await bob.slash(harness.channel, "show", job=999), "Job #999 does not exist, or you cannot see it here.")
    # Another server's job, and in direct messages another member's, read as if they did not exist.
    await refused(await bob.slash(harness.channel, "show", job=elsewhere), f"Job #{elsewhere} does not exist, or you")
    await refused(await bob.user.slash("show", job=failed), f"Job #{failed} does not exist, or you cannot see it here.")

    await alice.slash(harness.channel, "cancel", job=waiting.id)
    await refused(await bob.slash(harness.channel, "show", job=waiting.id), "was canceled")
    await alice.slash(harness.channel, "cancel", job=running.id)
    await harness.wait_for_job(running.id)
    harness.expect_user_errors()
