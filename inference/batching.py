"""Batching across users: several compatible jobs run as one diffusion pass.

A GPU turns out many more images per second at batch 8 than at batch 1, and most jobs of a busy
server share their model, size, steps, sampler and CFG. The bot's queue claims such jobs
together (inference.common.batch_keys says which may share a pass; bot.jobs.queue.JobQueue.claim_batch) and
sends them as one ``RunBatch``; the worker runs them here as one pipeline call: one row of
prompt embeddings and one generator per image, so each image gets exactly the noise and
conditioning it gets when its job runs alone (generate.initial_noise per job, A1111 variation
noise per job, each job's own prompt-editing schedule swapped in per step). Results, progress
and cancel stay per job: every job gets its own JobStarted, JobProgress and final event.

- Cancel: a cancelled job's slot keeps being computed (the samplers keep per-batch state that
  cannot be cut mid-pass) but it gets JobCanceled at once, no more progress, and its images are
  never saved. When every job of the pass is cancelled the pass stops.
- Failure: when the pass fails (out of GPU memory at this batch size, or one job's bad
  embedding or LoRA) each job still alive is run again alone, so a job fails only for a reason
  of its own, with the message it would get alone.
- Prompts longer than one 75-token chunk are encoded to longer embeddings, and padding them
  would change the images; jobs whose embeddings differ in length run as consecutive passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inference.common.batch_keys import batch_key
from inference.common.protocol import GenerateRequest, JobCanceled, JobStarted

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from PIL import Image

    from inference.conditioning import Conditioning
    from inference.jobs import JobRunner, Send

log = logging.getLogger(__name__)

def check_batch(requests: Sequence[GenerateRequest]) -> None:
    """Raise ValueError unless the requests may run as one pass (a bot bug if they may not)."""
    if not requests:
        raise ValueError("a batch needs at least one request")
    keys = {batch_key(request) for request in requests}
    if None in keys or len(keys) != 1:
        raise ValueError(f"jobs {[r.job_id for r in requests]} cannot share a pass: {keys}")


# --- the worker side ---------------------------------------------------------------------------

# (job's index in the batch, steps done, total steps, that job's latents)
BatchOnStep = Callable[[int, int, int, "torch.Tensor | None"], None]
# Whether the job at this index is cancelled (or the worker is stopping).
IsJobCancelled = Callable[[int], bool]


def run_batch(
    runner: JobRunner,
    requests: Sequence[GenerateRequest],
    stopping: Callable[[], bool],
    cancelled: Callable[[int], bool],
    send: Send,
) -> None:
    """Run a RunBatch's jobs as one pass and send each job's events.

    ``cancelled(job_id)`` is the user's cancel; ``stopping()`` the worker's shutdown, on which
    JobCancelledError is raised and no event is sent (the bot runs the jobs again later).
    """
    from inference.generate import JobCancelledError
    from inference.jobs import loading_events
    from inference.progress import PREVIEW_BUDGET, ProgressReporter
    from inference.models import free_accelerator_memory

    try:
        check_batch(requests)
    except ValueError:
        log.exception("not a valid batch; running its jobs one by one")
        for request in requests:
            _run_alone(runner, request, stopping, cancelled, send)
        return
    for request in requests:
        send(JobStarted(request.job_id))
        runner.start_model_hashes(request)
    jobs = _BatchJobs(requests, stopping, cancelled, send)
    # Each job previews its own images: together they keep the one pass's preview budget.
    total_images = sum(len(r.seeds) for r in requests)
    reporters = [
        ProgressReporter(
            r.job_id, send, runner.config.preview_interval_s, runner.config.preview_max_side, runner.previewer,
            budget=PREVIEW_BUDGET * len(r.seeds) / total_images,
        )
        for r in requests
    ]

    def on_step(index: int, step: int, total: int, latents) -> None:  # type: ignore[no-untyped-def]
        reporters[index](step, total, latents)

    started = time.monotonic()
    try:
        with runner.cache.reporting_loads(loading_events(tuple(r.job_id for r in requests), send)):
            made = _make_batch(runner, requests, on_step, jobs.is_cancelled)
    except Exception as exc:  # noqa: BLE001 - every job gets its own outcome below
        if stopping():
            raise JobCancelledError from exc
        log.warning(
            "batch of jobs %s failed (%s: %s); running them one by one",
            [r.job_id for r in requests], type(exc).__name__, exc, exc_info=True,
        )
        free_accelerator_memory()
        for index, request in enumerate(requests):
            if not jobs.is_cancelled(index):
                _run_alone(runner, request, stopping, cancelled, send)
        return
    if stopping():
        raise JobCancelledError
    seconds = time.monotonic() - started
    runner.saver.wait()  # the pass before has saved (one pass's images at a time); these side by side
    for index, request in enumerate(requests):
        # A cancel that came during the last step or the decode still drops the job's images.
        if made[index] is None or jobs.is_cancelled(index):
            continue
        share = seconds * len(request.seeds) / total_images  # for the queue's ETAs
        runner.run(request, lambda: False, send, made=made[index], batch_seconds=share)


def _run_alone(
    runner: JobRunner,
    request: GenerateRequest,
    stopping: Callable[[], bool],
    cancelled: Callable[[int], bool],
    send: Send,
) -> None:
    from inference.generate import JobCancelledError

    try:
        runner.run(request, lambda: stopping() or cancelled(request.job_id), send)
    except JobCancelledError:
        if stopping():
            raise
        send(JobCanceled(request.job_id))


class _BatchJobs:
    """Which jobs of the batch are still wanted; a job's JobCanceled is sent once, when its
    cancel is first seen."""

    def __init__(
        self,
        requests: Sequence[GenerateRequest],
        stopping: Callable[[], bool],
        cancelled: Callable[[int], bool],
        send: Send,
    ):
        self.requests = requests
        self.stopping = stopping
        self.cancelled = cancelled
        self.send = send
        self.dropped: set[int] = set()

    def is_cancelled(self, index: int) -> bool:
        if index in self.dropped:
            return True
        if self.stopping():
            return True
        job_id = self.requests[index].job_id
        if not self.cancelled(job_id):
            return False
        log.info("job %s: cancelled; its slot of the batch is dropped", job_id)
        self.dropped.add(index)
        self.send(JobCanceled(job_id))
        return True


def _make_batch(
    runner: JobRunner,
    requests: Sequence[GenerateRequest],
    on_step: BatchOnStep,
    is_cancelled: IsJobCancelled,
) -> list[list[Image.Image] | None]:
    """The pass, with every job's embeddings loaded and the batch's LoRAs on (JobRunner._make's
    networks step, once per job: the LoRA set is the same for all, by batch_key)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        runs = [stack.enter_context(runner.networks.applied(runner.cache, r)) for r in requests]
        pipe = runner.cache.get(requests[0].model)
        stack.enter_context(runner.vaes.applied(pipe, requests[0]))  # one VAE: batch_key
        return generate_batch(pipe, runs, on_step, is_cancelled)


def generate_batch(
    pipe: DiffusionPipeline,
    requests: Sequence[GenerateRequest],
    on_step: BatchOnStep = lambda index, step, total, latents: None,
    is_cancelled: IsJobCancelled = lambda index: False,
) -> list[list[Image.Image] | None]:
    """generate() for several compatible requests at once: each request's images, as
    generate(pipe, request) makes them alone (within float tolerance), or None for a request
    cancelled on the way. JobCancelledError is never raised: a pass whose jobs are all
    cancelled stops and their entries are None.
    """
    from inference.conditioning import encode_for_pass
    from inference.generate import JobCancelledError, k_conditioning, use_sampler, uses_k_sampling, validate_request

    for request in requests:
        validate_request(request)
    check_batch(requests)
    first = requests[0]
    if uses_k_sampling(pipe, first):
        conditionings = [k_conditioning(pipe, r, r.steps) for r in requests]
    else:
        # Schedules count model evaluations, which depend on the sampler: set it before encoding.
        use_sampler(pipe, first.sampler, [seed for r in requests for seed in r.seeds], schedule_type=first.schedule_type)
        conditionings = [encode_for_pass(pipe, r, r.steps) for r in requests]
    passes: dict[tuple[int, ...], list[int]] = {}
    for index, conditioning in enumerate(conditionings):
        passes.setdefault(tuple(conditioning.cond[0][1].shape), []).append(index)
    made: list[list[Image.Image] | None] = [None] * len(requests)
    for indices in passes.values():
        live = [index for index in indices if not is_cancelled(index)]
        if not live:
            continue
        try:
            images = _one_pass(
                pipe, [requests[i] for i in live], [conditionings[i] for i in live],
                lambda k, step, total, latents: on_step(live[k], step, total, latents),
                lambda k: is_cancelled(live[k]),
            )
        except JobCancelledError:
            continue  # every job of this pass was cancelled
        for k, index in enumerate(live):
            if not is_cancelled(index):
                made[index] = images[k]
    return made


def _one_pass(
    pipe: DiffusionPipeline,
    requests: Sequence[GenerateRequest],
    conditionings: Sequence[Conditioning],
    on_step: BatchOnStep,
    is_cancelled: IsJobCancelled,
) -> list[list[Image.Image]]:
    """One pipeline call (generate.sample) with every request's rows side by side."""
    import torch

    from inference import generate

    first = requests[0]
    counts = [len(r.seeds) for r in requests]
    offsets = [sum(counts[:k]) for k in range(len(counts) + 1)]
    scale = pipe.vae_scale_factor
    latent_shape = (1, pipe.unet.config.in_channels, first.height // scale, first.width // scale)

    def batch_on_step(step: int, total: int, latents: torch.Tensor | None) -> None:
        for k in range(len(requests)):
            if not is_cancelled(k):
                rows = None if latents is None else latents[offsets[k] : offsets[k + 1]]
                on_step(k, step, total, rows)

    def all_cancelled() -> bool:
        # Every job is asked (not any()): each cancel is seen, and its JobCanceled sent, at once.
        return all([is_cancelled(k) for k in range(len(requests))])

    if generate.uses_k_sampling(pipe, first):
        # Each job's noise (seeds, RNG source, ENSD, Brownian trees) exactly as when it runs alone.
        sigmas = generate.request_sigmas(pipe, first, first.steps)
        noises = [generate.request_noise(r, latent_shape[1:], pipe.unet.device) for r in requests]
        start = torch.cat([noise.next() for noise in noises]) * sigmas[0]
        callback = generate.k_step_callback(first.steps, len(sigmas) - 1, batch_on_step, all_cancelled)
        jobs = list(zip(conditionings, counts))
        with generate.seamless_tiling(pipe, first.tiling):
            latents = generate.k_sample(pipe, first, jobs, start, sigmas, noises, callback)
            images = generate.decode_latents(pipe, latents)
        return [list(images[offsets[k] : offsets[k + 1]]) for k in range(len(requests))]

    generate.use_sampler(pipe, first.sampler, [seed for r in requests for seed in r.seeds], schedule_type=first.schedule_type)
    dtype = generate.model_dtype(pipe)
    noise_rows, generators = [], []
    for request in requests:  # each job's noise and generators exactly as when it runs alone
        noise, job_generators = generate.initial_noise(request, latent_shape, dtype)
        noise_rows.append(noise)
        generators.extend(job_generators)
    conditioning = BatchConditioning(tuple(zip(conditionings, counts)))
    images = generate.sample(
        pipe, first, conditioning, torch.cat(noise_rows), generators,
        generate.step_callback(first.steps, batch_on_step, all_cancelled, conditioning),
        images_per_prompt=1,  # the embeddings already hold one row per image
        output_type="pil",
    )
    return [list(images[offsets[k] : offsets[k + 1]]) for k in range(len(requests))]


@dataclass(frozen=True)
class BatchConditioning:
    """Several jobs' Conditioning as one pass's embeddings: each job's rows repeated for its
    images, side by side, and each job's own schedule followed step by step (the interface
    generate.step_callback expects of a Conditioning)."""

    parts: tuple[tuple[Conditioning, int], ...]  # (a job's conditioning, its image count)

    def _rows(self, step: int, pooled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond rows, uncond rows) at ``step``: the embeddings, or SDXL's pooled vectors."""
        import torch

        conds, unconds = [], []
        for conditioning, images in self.parts:
            cond, uncond = conditioning.pooled_at_step(step) if pooled else conditioning.at_step(step)
            conds.append(cond.expand(images, *cond.shape[1:]))
            unconds.append(uncond.expand(images, *uncond.shape[1:]))
        return torch.cat(conds), torch.cat(unconds)

    def pipeline_kwargs(self) -> dict:
        cond, uncond = self._rows(0)
        kwargs = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
        if self.parts[0][0].cond_pooled:
            pooled, negative_pooled = self._rows(0, pooled=True)
            kwargs.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
        return kwargs

    def callback_embeds(self, step: int, tensors: dict) -> torch.Tensor | None:
        """As Conditioning.callback_embeds, for the whole batch: diffusers holds
        ``cat([uncond rows] + [cond rows])`` under guidance, else the cond rows."""
        return self._swapped(step, tensors["prompt_embeds"], pooled=False)

    def callback_pooled(self, step: int, tensors: dict) -> torch.Tensor | None:
        """As Conditioning.callback_pooled, for the whole batch (SDXL's add_text_embeds)."""
        if not self.parts[0][0].cond_pooled:
            return None
        return self._swapped(step, tensors["add_text_embeds"], pooled=True)

    def _swapped(self, step: int, current: torch.Tensor, pooled: bool) -> torch.Tensor | None:
        import torch

        def at(conditioning: Conditioning, when: int) -> tuple[torch.Tensor, torch.Tensor]:
            return conditioning.pooled_at_step(when) if pooled else conditioning.at_step(when)

        if step <= 0 or all(
            now is before
            for conditioning, _ in self.parts
            for now, before in zip(at(conditioning, step), at(conditioning, step - 1))
        ):
            return None
        cond, uncond = self._rows(step, pooled)
        parts = [uncond, cond] if current.shape[0] == 2 * cond.shape[0] else [cond]
        return torch.cat(parts).to(device=current.device, dtype=current.dtype)
