"""A1111's SDXL refiner: the base model denoises the first part, the refiner finishes.

A1111 ("Refiner" and "Refiner switch at" in txt2img) runs its sampler on the base checkpoint
until the switch point of the denoising and then on the refiner checkpoint, from the same
latents, with the prompts encoded again for the refiner (its CLIP-G alone, scored 6.0 / 2.5 for
aesthetics). With a k-diffusion sampler that is what runs here: one sampler run whose
denoiser swaps UNet and conditioning at the switch (k_denoiser.RefinerSwitch). With the hires
fix, A1111 (its default "hires_fix_refiner_pass": second pass) runs the first pass on the
base alone and switches inside the second pass (workflows.run_hires, check_hires_refiner).

DDIM and UniPC still run on diffusers' schedulers, whose "ensemble of expert denoisers" is
the same cut: the base pipeline runs
with ``denoising_end=switch_at`` and hands back its still-noisy latents, and the refiner's
img2img pipeline continues from them with ``denoising_start=switch_at`` adding no noise. The
cut is A1111's default one (sd_samplers_common.apply_refiner): A1111 maps the step's sigma to
its training timestep t and switches once (999 - t) / 1000 reaches the switch, that is at the
first t below 1000 * (1 - switch); diffusers hands the refiner the timesteps below
round(1000 * (1 - switch)): the same steps (to the nearest timestep for Karras-style
schedules, which A1111 rounds and diffusers does not).

Both models stay loaded while the job runs (PipelineCache.using); the progress counts the
requested steps across both passes.
"""

from __future__ import annotations

import math
from dataclasses import replace

from diffusers import DiffusionPipeline
from PIL import Image

from inference.conditioning import and_prompts_unet, encode_for_pass
from inference.conditioning_xl import is_sdxl
from inference.generate import (
    InvalidRequestError,
    IsCancelled,
    OnStep,
    generate_latents,
    refiner_switch,
    txt2img_latents,
    use_sampler,
    uses_k_sampling,
)
from inference.img2img import Progress, Schedule, check_cancelled, decode, derived_pipeline, pipeline_arguments
from inference.models import PipelineCache
from inference.common.protocol import GenerateRequest
from inference.tiling import seamless_tiling


def base_steps(pipe: DiffusionPipeline, steps: int, switch_at: float) -> int:
    """How many of ``steps`` the base runs before the switch: the timesteps diffusers keeps
    for ``denoising_end`` (its own cut), in steps rather than model evaluations. Call it once
    the sampler is set."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    cutoff = int(round(scheduler.config.num_train_timesteps * (1 - switch_at)))
    evaluations = int((scheduler.timesteps >= cutoff).sum())
    return min(steps, math.ceil(evaluations / getattr(scheduler, "order", 1)))


def check_refiner(base: DiffusionPipeline, refiner: DiffusionPipeline, request: GenerateRequest) -> None:
    if not is_sdxl(base):
        raise InvalidRequestError(f"the refiner works with SDXL models; `{request.model}` is not one")
    if not is_sdxl(refiner) or refiner.text_encoder_2 is None:
        raise InvalidRequestError(f"`{request.refiner}` is not an SDXL model and cannot refine")
    if not 0.0 < request.refiner_switch_at < 1.0:
        raise InvalidRequestError(
            f"refiner_switch_at must be above 0 and below 1, got {request.refiner_switch_at!r}"
        )


def check_hires_refiner(base: DiffusionPipeline, refiner: DiffusionPipeline, request: GenerateRequest) -> None:
    """check_refiner, and a sampler that switches inside the hires fix's second pass: one of
    A1111's k-diffusion samplers (the diffusers schedulers' path has no such switch)."""
    check_refiner(base, refiner, request)
    if not uses_k_sampling(base, request):
        raise InvalidRequestError(
            f"the refiner with the hires fix runs with A1111's k-diffusion samplers, not {request.sampler}"
        )


def run_refined(
    cache: PipelineCache, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled
) -> list[Image.Image]:
    """txt2img (or a variation) on the base, finished by the request's refiner."""
    with cache.using(request.model) as base, cache.using(request.refiner) as loaded_refiner:
        check_refiner(base, loaded_refiner, request)
        if uses_k_sampling(base, request):
            switch = refiner_switch(loaded_refiner, request, request.steps)
            with seamless_tiling(base, request.tiling):
                latents = txt2img_latents(base, request, on_step, is_cancelled, refiner=switch)
                return decode(base, latents)
        switch_at = request.refiner_switch_at
        use_sampler(base, request.sampler, request.seeds, schedule_type=request.schedule_type)
        first = base_steps(base, request.steps, switch_at)
        progress = Progress(on_step, request.steps)
        latents = generate_latents(
            base, replace(request, refiner=""), progress.reporter(first), is_cancelled,
            denoising_end=switch_at, progress_steps=first,
        )
        check_cancelled(is_cancelled)
        if first >= request.steps:  # nothing left for the refiner at this step count
            return decode(base, latents)
        # A refiner folder loads as img2img; one configured another way is made one.
        from diffusers import StableDiffusionXLImg2ImgPipeline

        refiner = derived_pipeline(loaded_refiner, StableDiffusionXLImg2ImgPipeline)
        use_sampler(refiner, request.sampler, request.seeds, base=loaded_refiner, schedule_type=request.schedule_type)
        conditioning = encode_for_pass(refiner, request, request.steps)
        schedule = Schedule(request.steps, 1.0, request.steps - first)
        arguments = pipeline_arguments(
            refiner, conditioning, request, request.seeds, schedule, progress, is_cancelled
        )
        with and_prompts_unet(refiner, conditioning):
            return list(
                refiner(
                    image=latents.to(refiner.unet.dtype), denoising_start=switch_at, output_type="pil", **arguments
                ).images
            )
