"""Batching across users through the whole bot: three users' compatible jobs wait behind a long
job, then run as one pass on the real worker, each with its own images, progress and cancel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.jobs.job_rows import generate_request
from db.models import JobStatus
from inference.generate import generate
from tests.harness import private_answer

# Keeps the worker busy while the three are queued; then it is canceled.
BLOCKER = {"steps": 60, "count": 4, "width": 128, "height": 128}
# Three users' jobs that may share a pass: different prompts, seeds and counts.
BATCH = (
    ("alice", {"prompt": "a red fox in the snow", "count": 2, "seed": 11}),
    ("bob", {"prompt": "[a lighthouse:a castle:0.5] at dusk", "count": 1, "seed": 5}),
    ("carol", {"prompt": "(a teapot:1.3), studio light", "negative_prompt": "blurry", "count": 3, "seed": 7}),
)


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The shared settings with batching on as configured by default, whatever they say."""
    return replace(settings, worker=replace(settings.worker, max_batch_images=8))


async def queue_batch_behind_a_blocker(harness, steps: int):  # type: ignore[no-untyped-def]
    """The three jobs, queued while another user's long job runs: their ids and members."""
    xavier = harness.member("xavier")
    await xavier.slash(harness.channel, "imagine", prompt="a long night", **BLOCKER)
    blocker = await harness.latest_job()
    await harness.wait_for_job(blocker.id, statuses=(JobStatus.RUNNING,))
    ids, members = [], []
    for name, options in BATCH:
        member = harness.member(name)
        await member.slash(harness.channel, "imagine", steps=steps, **options)
        ids.append((await harness.latest_job(member.id)).id)
        members.append(member)
    # Otherwise the first of them started alone and this test would prove nothing.
    assert (await harness.queue.get(blocker.id)).status == JobStatus.RUNNING, "the blocker ended too soon"
    # The worker is free again once the blocker stops: the three go out together.
    await xavier.slash(harness.channel, "cancel")
    return ids, members


async def wait_running_together(harness, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    async def together() -> bool:
        return set(harness.dispatcher.running) == set(ids)

    await harness.wait_for(together, f"jobs {ids} to run as one batch")


def progress_shown(harness, job_id: int) -> bool:  # type: ignore[no-untyped-def]
    return any(
        request.method == "PATCH" and f"Job #{job_id} ·" in str(request.json) and "Generating · step" in str(request.json)
        for request in harness.env.http_requests
    )


async def test_three_users_jobs_run_as_one_batch_each_as_it_runs_alone(harness, tiny_pipe):
    ids, _ = await queue_batch_behind_a_blocker(harness, steps=4)
    await wait_running_together(harness, ids)
    for job_id, (_, options) in zip(ids, BATCH):
        job = await harness.wait_for_job(job_id)
        assert job.status == JobStatus.COMPLETED, job.error
        assert [image.seed for image in job.images] == [options["seed"] + i for i in range(options["count"])]
        assert progress_shown(harness, job_id)
        # The very images its job makes alone, with its own prompt and seeds (float tolerance).
        alone = generate(tiny_pipe, generate_request(job))
        for image, expected in zip(sorted(job.images, key=lambda i: i.index), alone):
            saved = np.asarray(Image.open(image.path).convert("RGB"), dtype=np.int16)
            assert np.abs(saved - np.asarray(expected, dtype=np.int16)).max() <= 2
        message = harness.message(job.message_id)
        assert message.attachments and message.embeds[0].title == options["prompt"]


async def test_a_job_canceled_mid_batch_ends_without_images_and_the_others_complete(harness, settings):
    ids, (_, bob, _) = await queue_batch_behind_a_blocker(harness, steps=20)
    await wait_running_together(harness, ids)
    alice_job, bob_job, carol_job = ids
    await harness.wait_for(lambda: _shown(harness, bob_job), "Bob's job to show progress")

    answer = await bob.slash(harness.channel, "cancel")
    assert f"Stopping job #{bob_job}" in private_answer(answer)

    job = await harness.wait_for_job(bob_job)
    assert job.status == JobStatus.CANCELED and job.images == []
    for other in (alice_job, carol_job):
        assert (await harness.wait_for_job(other)).status == JobStatus.COMPLETED
    await harness.settle()
    assert not list(Path(settings.outputs_dir).rglob(f"{bob_job:06d}-*"))


async def _shown(harness, job_id: int) -> bool:  # type: ignore[no-untyped-def]
    return progress_shown(harness, job_id)


@pytest.mark.allow_error_logs  # the dispatcher logs the worker's death at ERROR
async def test_a_worker_crash_mid_batch_requeues_every_job_of_it(harness):
    ids, _ = await queue_batch_behind_a_blocker(harness, steps=4)
    await wait_running_together(harness, ids)

    harness.dispatcher.kill_worker()

    for job_id in ids:
        job = await harness.wait_for_job(job_id)
        assert job.status == JobStatus.COMPLETED and job.attempts == 2, job.error
        told = [r for r in harness.env.http_requests if r.json and "Re-queued" in str(r.json) and f"Job #{job_id} ·" in str(r.json)]
        assert told and "stopped unexpectedly" in str(told[0].json)
