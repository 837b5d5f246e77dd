"""Batching across users: which jobs may share a pass, the pass itself on the tiny model (each
job's images as when it runs alone), per-job progress and cancel, and the queue's batch claim."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bot.jobs.queue import Requester
from tests.test_queue import ALICE, BOB, CAROL, finish, params, queue  # noqa: F401 (queue: a fixture)
from db.models import JobStatus
from inference.batching import BatchConditioning, batch_key, generate_batch, run_batch
from inference.conditioning import encode_for_pass
from inference.generate import JobCancelledError, generate, use_sampler
from inference import progress
from inference.jobs import JobRunner
from inference.common.protocol import (
    HiresFix,
    ImageInput,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobKind,
    JobProgress,
    JobStarted,
    PlotCell,
    PlotOptions,
)
from tests.inference_fixtures import runner_for, tiny_request, tiny_worker_config

# Three users' jobs that may share a pass: different prompts (attention weights, prompt editing,
# negative prompts), seeds, counts, and one A1111 variation.
THREE_JOBS = (
    tiny_request(job_id=1, prompt="a photo of a cat", seeds=(11, 12)),
    tiny_request(
        job_id=2, kind=JobKind.VARIATION, prompt="[a red car:a blue boat:0.5]", negative_prompt="",
        seeds=(5,), subseeds=(99,), subseed_strength=0.4,
    ),
    tiny_request(job_id=3, prompt="(a lighthouse:1.3) at dusk", negative_prompt="ugly", seeds=(7, 8, 9)),
)

# The claims (the tests that use the database) run on both databases (tests/conftest.py).
pytestmark = pytest.mark.both_backends


def pixels(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(image, dtype=np.int16)


def assert_same_images(batched, alone) -> None:  # type: ignore[no-untyped-def]
    """Equal within float tolerance: batched matrix products round differently, by at most a
    level of 8-bit colour here."""
    assert len(batched) == len(alone)
    for one, other in zip(batched, alone):
        assert np.abs(pixels(one) - pixels(other)).max() <= 2


# --- which jobs may share a pass -------------------------------------------------------------


def test_jobs_differing_only_per_image_share_a_key():
    key = batch_key(THREE_JOBS[0])
    assert key is not None
    assert all(batch_key(request) == key for request in THREE_JOBS)
    # Embeddings and a safety check are per image too.
    assert batch_key(replace(THREE_JOBS[0], prompt="my-embedding cat", safety_check=True)) == key


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"width": 128},
        {"height": 128},
        {"steps": 4},
        {"sampler": "Euler"},
        {"cfg_scale": 5.0},
        {"tiling": True},
        {"prompt": "a cat <lora:style:0.8>"},
    ],
)
def test_jobs_differing_in_the_pass_do_not_share_a_key(change):
    assert batch_key(replace(THREE_JOBS[0], **change)) != batch_key(THREE_JOBS[0])


def test_the_same_lora_set_shares_a_key_whatever_the_prompts():
    one = replace(THREE_JOBS[0], prompt="a cat <lora:style:0.8>, <lora:ink:0.5>")
    other = replace(THREE_JOBS[2], prompt="<lora:ink:0.5> a dog", negative_prompt="<lora:style:0.8>")
    assert batch_key(one) == batch_key(other) is not None
    assert batch_key(replace(other, prompt="<lora:ink:0.6> a dog")) != batch_key(one)


@pytest.mark.parametrize(
    "change",
    [
        {"hires": HiresFix(scale=2.0, steps=0, denoising_strength=0.7)},
        {"kind": JobKind.IMG2IMG, "image": ImageInput(path="source.png")},
        {"kind": JobKind.PLOT, "plot": PlotOptions(cells=(PlotCell(),), columns=1)},
        {"prompt": "a cat <lora:style"},  # malformed: it fails alone, with its message
    ],
)
def test_jobs_that_are_not_plain_txt2img_run_alone(change):
    assert batch_key(replace(THREE_JOBS[0], **change)) is None


# --- the pass ------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_a_batch_gives_each_job_the_images_it_gets_alone(tiny_pipe, sampler):
    requests = [replace(request, sampler=sampler) for request in THREE_JOBS]
    progress: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def on_step(index, step, total, latents):  # type: ignore[no-untyped-def]
        assert latents.shape[0] == len(requests[index].seeds)  # its own slice of the batch
        progress[index].append(step)

    batched = generate_batch(tiny_pipe, requests, on_step=on_step)
    for request, images in zip(requests, batched):
        assert_same_images(images, generate(tiny_pipe, request))
    assert all(steps[-1] == 3 for steps in progress.values())
    # The comparison means something: the model answers to prompts, seeds and prompt editing.
    assert np.abs(pixels(batched[0][0]) - pixels(batched[0][1])).max() > 10
    assert np.abs(pixels(batched[0][0]) - pixels(batched[2][0])).max() > 10


def test_each_job_keeps_its_prompt_schedule_in_the_batch(tiny_pipe):
    # This tiny model's images hardly move after the first step, so the schedule is checked on
    # the embeddings the pass swaps in: each job's rows follow that job's own schedule.
    requests = [
        replace(THREE_JOBS[0], prompt="[a red car:a blue boat:2]", steps=4),
        replace(THREE_JOBS[1], prompt="[a cat|a dog] running", steps=4),
        replace(THREE_JOBS[2], steps=4),
    ]
    use_sampler(tiny_pipe, "Euler a", [1])
    parts = [encode_for_pass(tiny_pipe, r, r.steps) for r in requests]
    batch = BatchConditioning(tuple((c, len(r.seeds)) for c, r in zip(parts, requests)))
    images = sum(len(r.seeds) for r in requests)
    rows = batch.pipeline_kwargs()["prompt_embeds"]
    swaps = 0
    for step in range(1, 8):
        tensors = {"latents": torch.zeros(images, 4, 8, 8), "prompt_embeds": torch.cat([rows, rows])}
        swapped = batch.callback_embeds(step, tensors)
        if swapped is None:  # no job's prompt changes at this step
            assert all(part.at_step(step) == part.at_step(step - 1) for part in parts)
            continue
        swaps += 1
        expected = [
            part.at_step(step)[which].expand(len(r.seeds), -1, -1)
            for which in (1, 0)  # uncond rows, then cond rows, as diffusers holds them
            for part, r in zip(parts, requests)
        ]
        assert torch.equal(swapped, torch.cat(expected))
    assert swaps >= 2
    assert not torch.equal(parts[0].at_step(1)[0], parts[0].at_step(3)[0])  # job 1 edited at 2


def test_prompts_of_different_lengths_run_as_consecutive_passes(tiny_pipe):
    long_prompt = ", ".join(["a very detailed photo of a red car"] * 12)  # over 75 tokens
    requests = [THREE_JOBS[0], replace(THREE_JOBS[2], prompt=long_prompt)]
    batched = generate_batch(tiny_pipe, requests)
    for request, images in zip(requests, batched):
        assert_same_images(images, generate(tiny_pipe, request))


# --- run_batch: events, cancel, failure ------------------------------------------------------


@pytest.fixture
def runner(tiny_model_spec, tiny_pipe, tmp_path) -> JobRunner:
    config = tiny_worker_config(tiny_model_spec, tmp_path, preview_interval_s=0)
    return runner_for(tiny_pipe, config)


def events_of(sent: list, job_id: int) -> list:
    return [event for event in sent if event.job_id == job_id]


def test_every_job_of_a_batch_gets_its_own_events_and_images(runner, tiny_pipe):
    sent: list = []
    run_batch(runner, THREE_JOBS, lambda: False, lambda job_id: False, sent.append)
    for request in THREE_JOBS:
        events = events_of(sent, request.job_id)
        assert events[0] == JobStarted(request.job_id)
        assert [e.step for e in events if isinstance(e, JobProgress)] == [1, 2, 3]
        completed = events[-1]
        assert isinstance(completed, JobCompleted)
        assert [image.seed for image in completed.images] == list(request.seeds)
        assert (completed.grid_path is None) == (len(request.seeds) == 1)
        saved = [pixels(Image.open(image.path).convert("RGB")) for image in completed.images]
        alone = generate(tiny_pipe, request)
        assert all(np.abs(one - pixels(other)).max() <= 2 for one, other in zip(saved, alone))


def test_the_jobs_of_a_batch_share_one_pass_s_preview_budget(runner, monkeypatch):
    """Each job previews its own images during the one pass: together, not each, they keep
    the 2% budget, in proportion to their images (2, 1 and 3 of 6)."""
    budgets: dict[int, float] = {}

    class Recording(progress.ProgressReporter):
        def __call__(self, step, total_steps, latents):  # type: ignore[no-untyped-def]
            budgets[self.job_id] = self.budget
            super().__call__(step, total_steps, latents)

    monkeypatch.setattr(progress, "ProgressReporter", Recording)
    run_batch(runner, THREE_JOBS, lambda: False, lambda job_id: False, [].append)
    share = progress.PREVIEW_BUDGET / 6
    assert budgets == pytest.approx({1: 2 * share, 2: share, 3: 3 * share})


def test_a_job_cancelled_mid_batch_is_dropped_and_the_others_finish(runner, tmp_path):
    sent: list = []

    def cancelled(job_id: int) -> bool:
        # Bob cancels job 2 once it has shown its first step.
        return job_id == 2 and any(isinstance(e, JobProgress) and e.job_id == 2 for e in sent)

    run_batch(runner, THREE_JOBS, lambda: False, cancelled, sent.append)
    bob = events_of(sent, 2)
    assert isinstance(bob[-1], JobCanceled)
    assert [e.step for e in bob if isinstance(e, JobProgress)] == [1]
    assert not list(tmp_path.rglob("000002-*"))  # nothing of it saved
    for job_id in (1, 3):
        assert isinstance(events_of(sent, job_id)[-1], JobCompleted)


def test_a_batch_whose_jobs_are_all_cancelled_stops(runner, tmp_path):
    sent: list = []
    run_batch(
        runner, THREE_JOBS, lambda: False,
        lambda job_id: any(isinstance(e, JobProgress) for e in sent), sent.append,
    )
    assert {e.job_id for e in sent if isinstance(e, JobCanceled)} == {1, 2, 3}
    assert max(e.step for e in sent if isinstance(e, JobProgress)) == 1  # it stopped there
    assert not any(isinstance(e, JobCompleted) for e in sent)
    assert not list(tmp_path.rglob("*.png"))


def test_a_failing_batch_runs_its_jobs_alone_so_only_the_bad_one_fails(runner):
    too_many = replace(THREE_JOBS[1], seeds=tuple(range(17)), subseeds=tuple(range(17)))
    sent: list = []
    run_batch(runner, (THREE_JOBS[0], too_many, THREE_JOBS[2]), lambda: False, lambda job_id: False, sent.append)
    assert isinstance(events_of(sent, 1)[-1], JobCompleted)
    assert isinstance(events_of(sent, 3)[-1], JobCompleted)
    failed = events_of(sent, 2)[-1]
    assert isinstance(failed, JobFailed) and "seeds must hold 1 to 16" in failed.message


def test_shutdown_mid_batch_sends_nothing_more(runner):
    sent: list = []
    with pytest.raises(JobCancelledError):
        run_batch(
            runner, THREE_JOBS, lambda: any(isinstance(e, JobProgress) for e in sent),
            lambda job_id: False, sent.append,
        )
    assert not any(isinstance(e, (JobCompleted, JobCanceled, JobFailed)) for e in sent)


# --- the queue's batch claim ---------------------------------------------------------------

DAVE = Requester(user_id=4, user_name="dave", channel_id=10)


async def test_a_batch_takes_compatible_jobs_in_fair_order_up_to_the_image_limit(queue):
    for prompt in ("a0", "a1", "a2"):
        await queue.enqueue(params(prompt), ALICE)
    await queue.enqueue(params("b0", steps=8), BOB)  # another step count: not with Alice's
    await queue.enqueue(params("c0", count=2, seed=50), CAROL)
    await queue.enqueue(params("d0", count=4), DAVE)

    # Alice's a0 is fairest; then, in fair order, Carol's job fits, Dave's 4 images do not,
    # and only then Alice's next one (she has just had her turn).
    batch = await queue.claim_batch(max_images=4)
    assert [job.prompt for job in batch] == ["a0", "c0", "a1"]
    for job in batch:
        stored = await queue.get(job.id)
        assert stored.status == JobStatus.RUNNING and stored.attempts == 1
    await finish(queue, batch)
    # Those passed over keep their turns: Bob and Dave have not run yet.
    order = []
    while batch := await queue.claim_batch(max_images=4):
        order.append([job.prompt for job in batch])
        await finish(queue, batch)
    assert order == [["b0"], ["d0"], ["a2"]]


async def test_a_users_many_jobs_leave_room_for_others(queue):
    for i in range(8):
        await queue.enqueue(params(f"a{i}"), ALICE)
    await queue.enqueue(params("b0"), BOB)
    await queue.enqueue(params("c0"), CAROL)
    batch = await queue.claim_batch(max_images=3)
    assert [job.prompt for job in batch] == ["a0", "b0", "c0"]


async def test_one_image_per_batch_claims_jobs_one_by_one(queue):
    for prompt in ("a0", "a1"):
        await queue.enqueue(params(prompt), ALICE)
    await queue.enqueue(params("b0"), BOB)
    assert [job.prompt for job in await queue.claim_batch(max_images=1)] == ["a0"]
    assert [job.prompt for job in await queue.claim_batch(max_images=1)] == ["b0"]


async def test_a_canceled_or_incompatible_job_is_not_taken(queue):
    await queue.enqueue(params("a0"), ALICE)
    canceled = await queue.enqueue(params("b0"), BOB)
    await queue.request_cancel(canceled.id)
    await queue.enqueue(params("c0", hires_scale=2.0), CAROL)
    await queue.enqueue(params("d0 <lora:style:0.5>"), DAVE)
    batch = await queue.claim_batch(max_images=8)
    assert [job.prompt for job in batch] == ["a0"]
    assert (await queue.get(canceled.id)).status == JobStatus.CANCELED
    assert await queue.claim_batch(max_images=0) != []  # the fairest job always runs


async def test_nothing_waiting_claims_nothing(queue):
    assert await queue.claim_batch(max_images=8) == []
