"""img2img, and the diffusion pass every image workflow shares: latents in, images out.

The workflows (img2img with loopback, the hires fix's second pass, inpaint, outpaint) all start
from latents we encode ourselves. With one of A1111's k-diffusion samplers the pass is A1111's
sample_img2img over those latents (img2img_pass here, inpaint._k_inpaint_pass): A1111's step
counts, each image's noise from its ImageNoise at the first sigma, SD 1.x/2.x and SDXL alike.
DDIM and UniPC hand them to a stock diffusers pipeline as its ``image`` (a 4-channel tensor is
taken as latents as they are). Owning that step is what lets inpaint edit the starting latents
("latent noise", "latent nothing") and the hires fix resize them.

Seeds: each image's noise comes from its own seed alone (one generator per image), so image i
is reproduced by running its seed alone.

The img2img and inpaint pipelines are built from the loaded model's components, once per
model: the same weights in memory, nothing loaded again.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
)
from PIL import Image

from inference.conditioning import Conditioning, and_prompts_unet, encode_for_pass
from inference.conditioning_xl import is_sdxl, sdxl_size_kwargs
from inference.generate import (
    callback_tensors,
    decode_latents,
    InvalidRequestError,
    IsCancelled,
    JobCancelledError,
    k_conditioning,
    k_sample,
    k_step_callback,
    OnStep,
    request_noise,
    refiner_switch,
    request_sigmas,
    resolve_sampler,
    step_callback,
    use_sampler,
    uses_k_sampling,
)
from inference.schedules import Img2ImgSteps, img2img_sigmas, img2img_steps
from inference.masks import flatten, resize_image
from inference.common.protocol import GenerateRequest, ImageInput
from inference.tiling import seamless_tiling

# --- pipelines built from a loaded one -----------------------------------------------------

# Per loaded pipeline: the other pipeline classes built from its components. Weak keys, so a
# model the PipelineCache evicts takes its img2img and inpaint pipelines with it.
_derived: weakref.WeakKeyDictionary[DiffusionPipeline, dict[type, DiffusionPipeline]] = (
    weakref.WeakKeyDictionary()
)


# An SD pipeline class asked of an SDXL model: its SDXL counterpart.
_SDXL_COUNTERPARTS: dict[type, type] = {
    StableDiffusionImg2ImgPipeline: StableDiffusionXLImg2ImgPipeline,
    StableDiffusionInpaintPipeline: StableDiffusionXLInpaintPipeline,
}


def derived_pipeline(base: DiffusionPipeline, pipeline_class: type) -> DiffusionPipeline:
    """``base``'s weights as a ``pipeline_class`` (img2img, inpaint), built once and reused;
    for an SDXL model, the SDXL class of that workflow."""
    if is_sdxl(base):
        pipeline_class = _SDXL_COUNTERPARTS.get(pipeline_class, pipeline_class)
    if isinstance(base, pipeline_class):
        return base
    by_class = _derived.setdefault(base, {})
    if pipeline_class not in by_class:
        if is_sdxl(base):
            # The same modules; no watermark (A1111 stamps none); the aesthetic-score
            # conditioning only where the model was trained with it (the refiner).
            pipe = pipeline_class(
                **base.components,
                add_watermarker=False,
                requires_aesthetics_score=getattr(base.config, "requires_aesthetics_score", False),
                force_zeros_for_empty_prompt=base.config.force_zeros_for_empty_prompt,
            )
        else:
            pipe = pipeline_class(**base.components, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        by_class[pipeline_class] = pipe
    return by_class[pipeline_class]


# --- how many steps a pass runs ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a pass asks of diffusers, and the steps that really run (what progress counts).

    ``a1111``: A1111's counts, for a pass run by a k-diffusion sampler (img2img_pass then
    walks the last t_enc + 1 sigmas of a schedule of ``num_inference_steps``); None: a
    diffusers pipeline's pass."""

    num_inference_steps: int
    strength: float
    steps: int  # 0: the pass is skipped and its input kept
    a1111: Img2ImgSteps | None = None


def _a1111_schedule(counts: Img2ImgSteps, strength: float) -> Schedule:
    return Schedule(counts.schedule_steps, strength, counts.steps_run, counts)


def img2img_schedule(steps: int, strength: float, a1111: bool = False) -> Schedule:
    """img2img's steps: ``steps`` spread over the whole schedule, the last int(steps * strength)
    of them run (diffusers' count); with ``a1111`` (a k-diffusion sampler), A1111's
    int(min(strength, 0.999) * steps) + 1 (schedules.img2img_steps).

    A strength too small for one step still runs one, at the lowest noise, as A1111 does; only
    a strength of 0 runs nothing.
    """
    if strength <= 0:
        return Schedule(steps, 0.0, 0)
    if a1111:
        return _a1111_schedule(img2img_steps(steps, strength), strength)
    run = min(int(steps * strength), steps)
    if run >= 1:
        return Schedule(steps, strength, run)
    # int(steps * 1.5 / steps) is 1 whatever the rounding: exactly the last step runs.
    return Schedule(steps, min(1.0, 1.5 / steps), 1)


# diffusers' DDPM-family schedulers refuse more inference steps than training timesteps.
_MAX_SCHEDULE_STEPS = 1000


def exact_steps_schedule(steps: int, strength: float, a1111: bool = False) -> Schedule:
    """A schedule that runs exactly ``steps`` (the hires fix's second pass).

    A1111 asks for int(steps / strength) steps so that ``steps`` of them run: with ``a1111``
    (a k-diffusion sampler) exactly that (schedules.img2img_steps). With diffusers' flooring
    that can run one fewer, so the smallest total that runs ``steps`` is searched.
    """
    if strength <= 0:
        return Schedule(steps, 0.0, 0)
    if a1111:
        return _a1111_schedule(img2img_steps(steps, strength, requested_steps=steps), strength)
    total = max(steps, math.ceil(steps / strength))
    if total >= _MAX_SCHEDULE_STEPS:
        # A tiny strength: as many steps as the scheduler allows, fewer than asked for.
        return img2img_schedule(_MAX_SCHEDULE_STEPS, strength)
    while int(total * strength) < steps:
        total += 1
    while total > steps and int((total - 1) * strength) >= steps:
        total -= 1
    return Schedule(total, strength, steps)


class Progress:
    """One job's progress over all its passes: each pass reports into one running total."""

    def __init__(self, on_step: OnStep, total: int):
        self.on_step = on_step
        self.total = total
        self._next = 0

    def reporter(self, steps: int) -> OnStep:
        """An on_step for the next pass of ``steps`` steps, counting after the earlier ones."""
        offset = self._next
        self._next += steps

        def report(done: int, _total: int, latents: torch.Tensor | None) -> None:
            self.on_step(offset + done, self.total, latents)

        return report

    def callback(
        self, steps: int, is_cancelled: IsCancelled, conditioning: Conditioning | None = None
    ):
        """The pipeline callback (progress, cancel, prompt schedule) for the next pass."""
        return step_callback(steps, self.reporter(steps), is_cancelled, conditioning)


def check_cancelled(is_cancelled: IsCancelled) -> None:
    if is_cancelled():
        raise JobCancelledError


# --- images and latents --------------------------------------------------------------------


def load_image(
    path: str, what: str, convert: Callable[[Image.Image], Image.Image] = flatten
) -> Image.Image:
    """An image file, fully read and converted; a missing or broken file is the user's to fix
    (the message names the image, not the server's path)."""
    try:
        with Image.open(path) as image:
            image.load()
            return convert(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        message = f"the {what} could not be read; send it again"
        raise InvalidRequestError(message, detail=f"{type(exc).__name__}: {exc}") from exc


@torch.no_grad()
def encode(
    pipe: DiffusionPipeline, images: Sequence[Image.Image], keep: torch.Tensor | None = None
) -> torch.Tensor:
    """The images' latents, scaled as the UNet sees them: one row per image.

    ``keep`` (1 or 0 per pixel) blanks pixels to the grey of 0 before encoding: the masked
    image an inpainting checkpoint is conditioned on. The VAE's mean is used rather than a
    sample: the spread is tiny for SD's VAE, and this way the latents depend on the image
    alone. One image repeated over a batch (a job's shared source) is encoded once.
    """
    if len(images) > 1 and all(image is images[0] for image in images):
        return encode(pipe, images[:1], keep).repeat(len(images), 1, 1, 1)
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(list(images))  # -1..1
    if keep is not None:
        pixels = pixels * keep.to(pixels)
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


decode = decode_latents


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def pass_seeds(seeds: Sequence[int], offset: int) -> list[int]:
    """Seeds of a later pass: A1111's loopback adds one per pass (kept within 64 bits)."""
    return [(seed + offset) % 2**64 for seed in seeds]


def pipeline_arguments(
    pipe: DiffusionPipeline,
    conditioning: Conditioning,
    request: GenerateRequest,
    seeds: Sequence[int],
    schedule: Schedule,
    progress: Progress,
    is_cancelled: IsCancelled,
    size: tuple[int, int] | None = None,
) -> dict:
    """The arguments img2img and inpaint pipeline calls share; ``size`` (width, height) is
    the pass's, SDXL's size conditioning (the request's when not given)."""
    width, height = size or (request.width, request.height)
    return dict(
        **conditioning.pipeline_kwargs(),
        **sdxl_size_kwargs(pipe, width, height),
        strength=schedule.strength,
        num_inference_steps=schedule.num_inference_steps,
        guidance_scale=request.cfg_scale,
        num_images_per_prompt=len(seeds),
        generator=generators(seeds),
        callback_on_step_end=progress.callback(schedule.steps, is_cancelled, conditioning),
        callback_on_step_end_tensor_inputs=callback_tensors(pipe),
    )


def img2img_pass(
    base: DiffusionPipeline,
    request: GenerateRequest,
    latents: torch.Tensor,
    seeds: Sequence[int],
    schedule: Schedule,
    progress: Progress,
    is_cancelled: IsCancelled,
    hires_steps: int | None = None,
    refiner: DiffusionPipeline | None = None,
) -> list[Image.Image]:
    """One img2img pass from ``latents`` (one row per seed); ``schedule.steps`` must be >= 1.

    The prompts' schedule spans the request's steps (A1111's img2img), or with
    ``hires_steps`` the hires fix's second pass (see conditioning.encode_for_pass).
    ``refiner`` (a k-diffusion sampler only): the SDXL refiner the pass switches to at the
    request's "Refiner switch at", as A1111's hires pass does.
    """
    if schedule.a1111 is not None:
        # A k-diffusion sampler, as A1111's KDiffusionSampler.sample_img2img: the schedule's
        # last t_enc + 1 sigmas, from the source latents plus the seeds' noise (the variation
        # seed and "Resize seed from" mixed in, as A1111's ImageRNG makes it) at the first.
        conditioning = k_conditioning(base, request, request.steps, hires_steps)
        sigmas = img2img_sigmas(
            request_sigmas(base, request, schedule.num_inference_steps), schedule.a1111, resolve_sampler(request)[0]
        )
        pass_request = replace(request, seeds=tuple(seeds))
        noise = request_noise(pass_request, latents.shape[1:], base.unet.device)
        start = latents.float() + noise.next() * sigmas[0]
        report = progress.reporter(schedule.steps)
        callback = k_step_callback(schedule.steps, len(sigmas) - 1, report, is_cancelled)
        jobs = [(conditioning, len(seeds))]
        switch = None
        if refiner is not None:
            size = (latents.shape[-1] * base.vae_scale_factor, latents.shape[-2] * base.vae_scale_factor)
            switch = refiner_switch(refiner, pass_request, request.steps, hires_steps, size)
        latents = k_sample(base, pass_request, jobs, start, sigmas, [noise], callback, img2img=True, refiner=switch)
        return decode_latents(base, latents)
    if refiner is not None:
        raise InvalidRequestError(
            f"the refiner runs in an image pass with A1111's k-diffusion samplers only, not {request.sampler}"
        )
    pipe = derived_pipeline(base, StableDiffusionImg2ImgPipeline)
    use_sampler(pipe, request.sampler, seeds, base=base, schedule_type=request.schedule_type)
    conditioning = encode_for_pass(pipe, request, request.steps, hires_steps)
    # The pass's own size: the hires fix's second pass is conditioned on its larger size, as
    # A1111 conditions it (calculate_hr_conds).
    size = (latents.shape[-1] * pipe.vae_scale_factor, latents.shape[-2] * pipe.vae_scale_factor)
    arguments = pipeline_arguments(pipe, conditioning, request, seeds, schedule, progress, is_cancelled, size)
    with and_prompts_unet(pipe, conditioning):
        return list(pipe(image=latents, output_type="pil", **arguments).images)


# --- the img2img workflow ------------------------------------------------------------------


def loopback_strengths(image: ImageInput) -> list[float]:
    """Each pass's denoising strength: A1111's loopback script with its linear curve."""
    first = image.denoising_strength
    last = first if image.loopback_final_strength is None else image.loopback_final_strength
    count = image.loopback_count
    if count == 1:
        return [first]
    return [first + (last - first) * index / (count - 1) for index in range(count)]


def run_img2img(
    base: DiffusionPipeline,
    request: GenerateRequest,
    on_step: OnStep,
    is_cancelled: IsCancelled,
) -> list[Image.Image]:
    """The source fitted to width x height, then ``loopback_count`` img2img passes.

    Each pass starts from the previous one's images. Pass k uses seed + k for every image, as
    A1111's loopback script does (it adds one to the seed after each pass), so with the bot's
    seed + i batches image i's pass k has seed + i + k, A1111's exact seeds.
    """
    options = request.image
    source = load_image(options.path, "source image")
    fitted = resize_image(options.resize_mode, source, request.width, request.height)
    a1111 = uses_k_sampling(base, request)
    schedules = [img2img_schedule(request.steps, s, a1111) for s in loopback_strengths(options)]
    progress = Progress(on_step, sum(schedule.steps for schedule in schedules))
    current = [fitted] * len(request.seeds)
    # --tile: the VAE's encoding wraps around too, as in A1111 (the whole model is switched).
    with seamless_tiling(base, request.tiling):
        for index, schedule in enumerate(schedules):
            check_cancelled(is_cancelled)
            if not schedule.steps:
                continue  # strength 0 keeps the image as it is
            latents = encode(base, current)
            seeds = pass_seeds(request.seeds, index)
            current = img2img_pass(
                base, request, latents, seeds, schedule, progress, is_cancelled
            )
    return current
