"""The queue seen through the bot: cancel, fairness, /queue, restarts, crashes, old tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db.models import Job, JobStatus
from tests.harness import SINGLE_IMAGE_BUTTONS, attachment_image, button_labels, private_answer

LIMIT = 100 * 1024
SLOW = {"steps": 60, "count": 4, "width": 128, "height": 128}  # long enough to act while it runs
# A blocker that runs to its end again (handed back, re-queued): still long enough to act while
# it runs, an eighth of SLOW's work to run twice.
RERUN = {"steps": 60, "count": 2, "width": 64, "height": 64}


async def wait_running(harness, job_id: int) -> Job:
    return await harness.wait_for_job(job_id, statuses=(JobStatus.RUNNING,))


async def test_cancel_a_running_job(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a long night", **SLOW)
    job = await wait_running(harness, (await harness.latest_job()).id)

    clicked = await alice.click(harness.message(result.response.id), label="Cancel")
    assert "Stopping job" in private_answer(clicked)
    job = await harness.wait_for_job(job.id)
    assert job.status == JobStatus.CANCELED and job.images == []
    message = harness.message(result.response.id)
    assert message.embeds[0].title == "Canceled" and button_labels(message) == []

    # The worker stopped between steps and serves the next job.
    await alice.slash(harness.channel, "imagine", prompt="a short day", count=1)
    assert (await harness.wait_for_job((await harness.latest_job()).id)).status == JobStatus.COMPLETED


async def test_only_the_owner_or_a_moderator_may_cancel(harness):
    alice, bob, mod = harness.member("alice"), harness.member("bob"), harness.member("mod", moderator=True)
    await alice.slash(harness.channel, "imagine", prompt="a long night", **SLOW)
    first = await harness.latest_job()
    result = await alice.slash(harness.channel, "imagine", prompt="waiting its turn", count=1)
    waiting = await harness.latest_job()

    refused = await bob.click(harness.message(result.response.id), label="Cancel")
    assert "Only the person who started" in private_answer(refused)
    assert (await harness.queue.get(waiting.id)).status == JobStatus.PENDING
    assert harness.expect_user_errors() == []  # answered by the button itself, nothing raised

    by_mod = await mod.click(harness.message(result.response.id), label="Cancel")
    assert by_mod.ephemeral and by_mod.response.content == f"Job #{waiting.id} canceled."
    assert (await harness.wait_for_job(waiting.id)).status == JobStatus.CANCELED

    # /cancel with no job number stops the user's running job.
    answer = await alice.slash(harness.channel, "cancel")
    assert f"Stopping job #{first.id}" in private_answer(answer)
    assert (await harness.wait_for_job(first.id)).status == JobStatus.CANCELED


async def test_queue_lists_positions_and_a_lone_job_of_another_user_goes_next(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="alice 0", **SLOW)
    await wait_running(harness, (await harness.latest_job()).id)
    for i in range(1, 5):
        await alice.slash(harness.channel, "imagine", prompt=f"alice {i}", count=1)
    await bob.slash(harness.channel, "imagine", prompt="bob 0", count=1)

    listing = await bob.slash(harness.channel, "queue")
    assert listing.ephemeral
    text = listing.response.embeds[0].description
    assert "#1 in line" in text and "bob 0" in text

    await alice.slash(harness.channel, "cancel")  # her running job: the next turn now, not in 60 steps
    bob_job = await harness.latest_job(bob.id)
    await harness.wait_for_job(bob_job.id)
    async with harness.db.session() as session:
        jobs = (await session.scalars(select(Job).where(Job.started_at.is_not(None)).order_by(Job.started_at))).all()
    started = [job.prompt for job in jobs]
    # Alice queued four more before Bob's one, and Bob still ran right after her running job.
    assert started[:2] == ["alice 0", "bob 0"]

    mine = await alice.slash(harness.channel, "queue")
    assert "alice 4" in mine.response.embeds[0].description


async def test_waiting_messages_show_their_new_place_when_the_queue_moves(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="first", **RERUN)
    await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="second", count=1)
    third = await alice.slash(harness.channel, "imagine", prompt="third", count=1)
    assert harness.first_response()["embeds"][0]["fields"][0]["value"] == "2 in line"

    await alice.slash(harness.channel, "cancel", job=1)
    await harness.wait_for_job(2, statuses=(JobStatus.RUNNING, JobStatus.COMPLETED))
    await harness.settle()
    # When job 2 started, job 3's message was edited to say it is next.
    edits = [
        r for r in harness.env.http_requests
        if r.method == "PATCH" and r.json and "Job #3 ·" in str(r.json) and "'Queued'" in str(r.json)
    ]
    assert edits and "'value': 'next'" in str(edits[0].json)
    await harness.wait_for_job(3)
    assert harness.message(third.response.id).embeds[0].title == "third"


async def test_a_click_after_a_restart_still_works(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a quiet harbour", count=2, seed=3)
    job = await harness.wait_for_job((await harness.latest_job()).id)

    await harness.restart()

    posted = await alice.click(harness.message(result.response.id), label="U1")
    assert not posted.ephemeral
    assert {f.name: f.value for f in posted.response.embeds[0].fields}["Seed"] == "3"
    assert (await attachment_image(posted.response.message)).size == (64, 64)
    varied = await alice.click(harness.message(result.response.id), label="V2")
    assert varied.acknowledged and not varied.ephemeral
    variation = await harness.wait_for_job((await harness.latest_job()).id)
    assert variation.status == JobStatus.COMPLETED and variation.parent_job_id == job.id


async def test_jobs_pending_at_shutdown_complete_after_the_restart(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await alice.slash(harness.channel, "imagine", prompt="first", **RERUN)
    await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="second", count=1)
    await bob.slash(harness.channel, "imagine", prompt="third", count=1)

    await harness.restart()

    ids = [job_id for job_id in range(1, 4)]
    for job_id in ids:
        job = await harness.wait_for_job(job_id)
        assert job.status == JobStatus.COMPLETED, job.error
    first = await harness.queue.get(1)
    assert first.attempts == 1  # a graceful stop hands the job back without counting a try
    # The interactions died with the old bot: results arrive as new messages to their owners.
    for job_id in ids:
        job = await harness.queue.get(job_id)
        message = harness.message(job.message_id)
        assert message.content == f"<@{job.user_id}> job #{job.id} is done."
        assert message.attachments


@pytest.mark.allow_error_logs  # the dispatcher logs the worker's death at ERROR
async def test_a_killed_worker_requeues_its_job_tells_the_user_and_serves_the_next(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="doomed once", **RERUN)
    job = await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="next in line", count=1)

    harness.dispatcher.kill_worker()

    retried = await harness.wait_for_job(job.id)
    assert retried.status == JobStatus.COMPLETED and retried.attempts == 2
    told = [r for r in harness.env.http_requests if r.json and "Re-queued" in str(r.json)]
    assert told and "stopped unexpectedly" in str(told[0].json)
    # Its answer said "Generating" (an idle worker took it); its second start is shown anew.
    assert status_titles(harness, job.id)[-3:] == ["Re-queued", "Generating", "doomed once"]
    following = await harness.wait_for_job((await harness.latest_job()).id)
    assert following.status == JobStatus.COMPLETED


def status_titles(harness, job_id: int) -> list[str]:
    """The titles of the status edits of one job, in order, progress frames left out."""
    return [
        request.json["embeds"][0]["title"] for request in harness.env.http_requests
        if request.method == "PATCH" and request.json and request.json.get("embeds")
        and f"Job #{job_id} ·" in str(request.json) and "· step" not in request.json["embeds"][0]["title"]
    ]


async def test_a_requeue_before_the_start_arrived_still_shows_the_next_start(harness):
    """The answer of a job the idle worker claimed says "Generating", so the worker's
    JobStarted edits nothing. A crash before that JobStarted arrived re-queues the job: its
    next start must be shown, or the message would say "Re-queued" while it runs."""
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="a second attempt", **SLOW)
    job = await wait_running(harness, (await harness.latest_job()).id)
    await harness.settle()
    delivery = harness.bot.delivery
    delivery.answered_running(job.id)  # the answer showed it; its JobStarted has not come yet
    delivery.job_requeued(job, "The image worker stopped.")
    delivery.job_started(job)  # the second attempt
    await delivery.drain()
    assert status_titles(harness, job.id)[-2:] == ["Re-queued", "Generating"]


@pytest.mark.allow_error_logs
async def test_a_job_running_at_a_crash_is_requeued_once_then_failed(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="unlucky", **SLOW)
    job = await wait_running(harness, (await harness.latest_job()).id)
    await harness.restart(crash=True)
    await wait_running(harness, job.id)
    assert (await harness.queue.get(job.id)).attempts == 2
    await harness.restart(crash=True)

    failed = await harness.wait_for_job(job.id)
    assert failed.status == JobStatus.FAILED and "restarted" in failed.error
    message = harness.message(result.response.id)
    assert message.embeds[0].title == "Failed"
    assert "will not be tried again" in message.embeds[0].fields[-1].value


async def test_a_result_after_the_interaction_token_expired_arrives_as_a_new_message(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="blocking", **SLOW)
    await wait_running(harness, (await harness.latest_job()).id)
    result = await alice.slash(harness.channel, "imagine", prompt="patient", count=1)
    job = await harness.latest_job()
    await harness.env.advance_time(16 * 60)  # the interaction's 15 minutes are over
    await alice.slash(harness.channel, "cancel", job=job.id - 1)  # the blocker: her job's turn now

    job = await harness.wait_for_job(job.id)
    assert job.status == JobStatus.COMPLETED
    assert job.message_id != result.response.id
    posted = harness.message(job.message_id)
    assert posted.content == f"<@{alice.id}> job #{job.id} is done." and posted.attachments
    assert button_labels(posted) == [*SINGLE_IMAGE_BUTTONS[:3], "Remix", "Reroll", *SINGLE_IMAGE_BUTTONS[3:]]
    # The old status message links to the result in this server's channel, not to a DM's.
    link = f"https://discord.com/channels/{harness.guild.id}/{harness.channel.id}/{job.message_id}"
    assert harness.message(result.response.id).content == f"Job #{job.id} is done: {link}"


async def test_a_result_larger_than_the_upload_limit_is_sent_smaller(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="blocking", **SLOW)
    await wait_running(harness, (await harness.latest_job()).id)
    result = await alice.slash(harness.channel, "imagine", prompt="big", count=4, width=128, height=128)
    job = await harness.latest_job()
    async with harness.db.session() as session, session.begin():
        # As if the interaction allowed only 100 KiB, less than the 256 px grid's PNG.
        await session.execute(update(Job).where(Job.id == job.id).values(upload_limit_bytes=LIMIT))
    await alice.slash(harness.channel, "cancel", job=job.id - 1)  # the blocker: this job's turn now

    job = await harness.wait_for_job(job.id)
    sent = harness.message(result.response.id).attachments[0]
    png_size = Path(job.grid_path).stat().st_size
    assert png_size > LIMIT, "the test needs a grid larger than the limit"
    assert sent.filename.endswith((".jpg", ".webp")) and sent.size <= LIMIT
    assert (await attachment_image(harness.message(result.response.id))).size == (256, 256)


async def test_a_new_job_on_an_idle_bot_is_claimed_before_its_place_is_read(harness, monkeypatch):
    """The answer waits for the dispatcher to look for work (Dispatcher.wake_and_wait), so the
    claim does not race the place-in-line reads for the database: the answer asks for the
    place of the job the dispatcher holds, which the row says is running."""
    seen: list[tuple[JobStatus, bool]] = []
    entry = harness.bot.queue.entry

    async def entry_seeing_the_row(job_id: int, claimed=None):  # type: ignore[no-untyped-def]
        seen.append(((await harness.bot.queue.get(job_id)).status, claimed is not None and claimed.id == job_id))
        return await entry(job_id, claimed)

    monkeypatch.setattr(harness.bot.queue, "entry", entry_seeing_the_row)
    alice = harness.member("alice")
    for prompt in ("a first one", "a second one"):
        await alice.slash(harness.channel, "imagine", prompt=prompt, count=1)
        await harness.wait_for_job((await harness.latest_job()).id)
    assert seen == [(JobStatus.RUNNING, True), (JobStatus.RUNNING, True)]


async def test_waking_a_busy_dispatcher_waits_no_longer_than_its_limit(harness, monkeypatch):
    dispatcher = harness.dispatcher
    released = asyncio.Event()

    async def stuck() -> None:  # as while a dead worker's replacement starts
        await released.wait()

    monkeypatch.setattr(dispatcher, "_dispatch_if_idle", stuck)
    dispatcher.wake()  # the dispatcher takes it and is then stuck looking for work
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await dispatcher.wake_and_wait(limit_s=0.2)
    assert 0.15 <= asyncio.get_running_loop().time() - started < 5
    released.set()
