"""Which jobs may share one diffusion pass (inference.batching): the bot's queue claims jobs
with the same key together (bot.jobs.queue.JobQueue.claim_batch), the worker checks it again.

Torch-free: the bot imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.common.network_files import MalformedNetworkError, find_loras
from inference.common.prompt_parser import is_composable
from inference.common.protocol import GenerateRequest, JobKind

BATCHABLE_KINDS = (JobKind.TXT2IMG, JobKind.VARIATION)


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What every job of one pass must share: it is one pipeline call with one set of weights.

    Prompts, negative prompts, embeddings, seeds, subseeds and variation strength are per image
    and may differ; so may the image count and the safety check.
    """

    model: str
    width: int
    height: int
    steps: int
    sampler: str
    schedule_type: str
    eta: float | None
    cfg_scale: float
    tiling: bool
    vae: str  # the VAE decodes the whole pass (clip skip is per job: its prompts' encoding)
    # <lora:name:weight> tags of both prompts, sorted: a LoRA changes the weights for the pass.
    loras: tuple[tuple[str, float, float | None], ...]


def batch_key(request: GenerateRequest) -> BatchKey | None:
    """The key a job shares with the jobs it may run with in one pass; None: it runs alone.

    Batchable: txt2img and variations without hires fix, source images or plot, and whose LoRA
    tags can be read (a malformed one fails the job alone, with its message), without AND
    (composable prompts run the UNet once per part: inference/conditioning.py).
    """
    if request.kind not in BATCHABLE_KINDS or is_composable(request.prompt) or request.refiner:
        return None
    if any(
        option is not None
        for option in (
            request.hires, request.image, request.inpaint, request.outpaint, request.upscale, request.plot
        )
    ):
        return None
    try:
        loras = sorted(
            (use.name, use.weight, use.unet_weight)
            for prompt in (request.prompt, request.negative_prompt)
            for use in find_loras(prompt)
        )
    except MalformedNetworkError:
        return None
    return BatchKey(
        model=request.model,
        width=request.width,
        height=request.height,
        steps=request.steps,
        sampler=request.sampler,
        schedule_type=request.schedule_type,
        eta=request.eta,
        cfg_scale=request.cfg_scale,
        tiling=request.tiling,
        vae=request.vae,
        loras=tuple(loras),
    )
