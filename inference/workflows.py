"""The diffusion workflows beyond plain txt2img: which one a job runs, checked first.

jobs.py sends here every job that is not an upscale and not a plain txt2img or variation:
img2img (with A1111's loopback) and the shared diffusion pass live in img2img.py, inpaint and
outpaint in inpaint.py, the pixel work in masks.py; the hires fix, A1111's two-pass txt2img, is
here. validate_workflow refuses a bad request with a message for the user before any model is
loaded or any step run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from inference.generate import (
    MAX_STEPS,
    InvalidRequestError,
    IsCancelled,
    OnStep,
    generate,
    generate_latents,
    uses_k_sampling,
    validate_request,
)
from inference.img2img import (
    Progress,
    check_cancelled,
    decode,
    encode,
    exact_steps_schedule,
    img2img_pass,
    run_img2img,
)
from inference.inpaint import run_inpaint, run_outpaint
from inference.models import PipelineCache
from inference.refiner import check_hires_refiner, run_refined
from inference.common.protocol import (
    LANCZOS,
    LATENT,
    GenerateRequest,
    JobKind,
    MAX_MASK_BLUR,
    MaskedContent,
    ResizeMode,
)
from inference.tiling import seamless_tiling
from inference.upscale import Upscalers

# Sanity bounds for what the bot's own settings should already have limited.
MAX_LOOPBACK = 100
MAX_PADDING = 2048
MAX_HIRES_SIDE = 4096  # the hires result; the first pass stays within generate's MAX_SIDE
MIN_SOURCE_SIDE = 8  # what an outpaint must leave of the source on its canvas

TXT2IMG_KINDS = (JobKind.TXT2IMG, JobKind.VARIATION)
IMAGE_KINDS = (JobKind.IMG2IMG, JobKind.INPAINT, JobKind.OUTPAINT)
# The options each kind takes (see protocol.JobKind); any other set is a mistake to report.
_OPTIONS = {
    JobKind.TXT2IMG: {"hires"},
    JobKind.VARIATION: {"hires"},
    JobKind.IMG2IMG: {"image"},
    JobKind.INPAINT: {"image", "inpaint"},
    JobKind.OUTPAINT: {"image", "outpaint"},
}
_ALL_OPTIONS = ("image", "inpaint", "outpaint", "hires", "upscale")
_REQUIRED = {
    JobKind.IMG2IMG: {"image"},
    JobKind.INPAINT: {"image", "inpaint"},
    JobKind.OUTPAINT: {"image", "outpaint"},
}


def run_workflow(
    cache: PipelineCache,
    upscalers: Upscalers,
    request: GenerateRequest,
    on_step: OnStep,
    is_cancelled: IsCancelled,
) -> list[Image.Image]:
    """The job's images, one per seed; raises InvalidRequestError or JobCancelledError."""
    validate_workflow(request, upscalers)
    check_cancelled(is_cancelled)
    if request.kind == JobKind.INPAINT:
        return run_inpaint(cache, request, on_step, is_cancelled)
    if request.kind == JobKind.OUTPAINT:
        return run_outpaint(cache, request, on_step, is_cancelled)
    if request.refiner and request.hires is None:
        return run_refined(cache, request, on_step, is_cancelled)
    if request.refiner:
        # A1111's default ("second pass"): the first pass on the base alone, the switch to
        # the refiner inside the second pass.
        with cache.using(request.model) as base, cache.using(request.refiner) as refiner:
            check_hires_refiner(base, refiner, request)
            with seamless_tiling(base, request.tiling):
                return run_hires(base, upscalers, request, on_step, is_cancelled, refiner=refiner)
    base = cache.get(request.model)
    if request.kind == JobKind.IMG2IMG:
        return run_img2img(base, request, on_step, is_cancelled)
    if request.hires is None:
        return generate(base, request, on_step, is_cancelled)
    # --tile wraps the whole hires fix: both passes, and the decoding and encoding between.
    with seamless_tiling(base, request.tiling):
        return run_hires(base, upscalers, request, on_step, is_cancelled)


# --- the hires fix -------------------------------------------------------------------------


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: A1111's int(side * scale), down to a multiple of 8 (the latent
    grid; A1111 drops the remainder the same way). The bot computes the same to check it."""
    return tuple(max(8, int(side * scale + 1e-6) // 8 * 8) for side in (width, height))


def run_hires(
    base: DiffusionPipeline,
    upscalers: Upscalers,
    request: GenerateRequest,
    on_step: OnStep,
    is_cancelled: IsCancelled,
    refiner: DiffusionPipeline | None = None,
) -> list[Image.Image]:
    """A1111's hires fix: txt2img, upscale, img2img at the larger size (switching to the
    ``refiner`` inside that second pass where its sigmas reach "Refiner switch at": at its
    start when the hires denoising strength leaves less noise than the switch point).

    The first pass is generate()'s own run (same noise, so the same images as without the
    fix). "Latent" resizes its latents bilinearly, as A1111's default latent mode; any other
    upscaler works on the decoded images, which are encoded again. The second pass draws
    fresh noise from each image's seed, as A1111 does (with a k-diffusion sampler, the
    variation seed mixed in as A1111's second ImageRNG does), and runs exactly hires.steps
    steps (0: the first pass's count) of a schedule of int(steps / denoise), with the prompt
    scheduled over them as A1111 does (a "when" past the first pass's steps lands in the
    second). Progress counts both passes.
    """
    hires = request.hires
    width, height = hires_size(request.width, request.height, hires.scale)
    a1111 = uses_k_sampling(base, request)
    schedule = exact_steps_schedule(hires.steps or request.steps, hires.denoising_strength, a1111)
    progress = Progress(on_step, request.steps + schedule.steps)
    first_pass = replace(request, hires=None, refiner="")
    latents = generate_latents(base, first_pass, progress.reporter(request.steps), is_cancelled)
    check_cancelled(is_cancelled)
    if hires.upscaler == LATENT:
        factor = base.vae_scale_factor
        latents = torch.nn.functional.interpolate(
            latents, size=(height // factor, width // factor), mode="bilinear", antialias=False
        )
        if not schedule.steps:
            return decode(base, latents)
    else:
        images = [
            upscalers.upscale_to(image, width, height, hires.upscaler, is_cancelled=is_cancelled)
            for image in decode(base, latents)
        ]
        if not schedule.steps:
            return images
        latents = encode(base, images)
    check_cancelled(is_cancelled)
    return img2img_pass(
        base,
        request,
        latents,
        request.seeds,
        schedule,
        progress,
        is_cancelled,
        hires_steps=schedule.steps,
        refiner=refiner,
    )


# --- validation ----------------------------------------------------------------------------


def validate_workflow(request: GenerateRequest, upscalers: Upscalers | None = None) -> None:
    """Raise InvalidRequestError naming the first bad option; cheap (no image decoded).

    ``upscalers`` knows the hires fix's upscaler names; without it only Latent and Lanczos
    pass.
    """
    validate_request(request)
    kind = request.kind
    if kind not in _OPTIONS:
        raise InvalidRequestError(f"{kind} jobs are not run as a diffusion workflow")
    given = {name for name in _ALL_OPTIONS if getattr(request, name) is not None}
    missing = sorted(_REQUIRED.get(kind, set()) - given)
    if missing:
        raise InvalidRequestError(f"a {kind} job needs its {missing[0]} options")
    extra = sorted(given - _OPTIONS[kind])
    if extra:
        raise InvalidRequestError(f"{extra[0]} options do not apply to a {kind} job")
    if request.hires is not None:
        _check_hires(request, upscalers)
    if request.refiner and kind not in TXT2IMG_KINDS:
        raise InvalidRequestError("the refiner runs with txt2img and variations (and their hires fix)")
    if request.image is not None:
        _check_image(request)
    if request.inpaint is not None:
        _check_inpaint(request)
    if request.outpaint is not None:
        _check_outpaint(request)


def _check_strength(value: object, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise InvalidRequestError(f"{name} must be between 0 and 1, got {value!r}")


def _check_int(value: object, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(
            f"{name} must be a whole number from {low} to {high}, got {value!r}"
        )


def _check_file(path: object, what: str) -> None:
    """The file is there and starts like an image (its header only: decoding comes later).

    The messages go to the user as they are, so they name the image, not the server's path.
    """
    if not isinstance(path, str) or not path or not Path(path).is_file():
        raise InvalidRequestError(f"the {what} is missing on the server; send it again")
    try:
        with Image.open(path):
            pass
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = type(exc).__name__
        raise InvalidRequestError(f"the {what} is not an image we can read ({reason})") from exc


def _check_enum(value: object, enum: type, name: str) -> None:
    try:
        enum(value)
    except ValueError:
        known = ", ".join(member.value for member in enum)
        raise InvalidRequestError(f"unknown {name} {value!r}; known: {known}") from None


def _check_image(request: GenerateRequest) -> None:
    image = request.image
    _check_strength(image.denoising_strength, "denoising strength")
    _check_enum(image.resize_mode, ResizeMode, "resize mode")
    _check_int(image.loopback_count, "loopback count", 1, MAX_LOOPBACK)
    if image.loopback_final_strength is not None:
        _check_strength(image.loopback_final_strength, "loopback final strength")
    _check_file(image.path, "source image")


def _check_inpaint(request: GenerateRequest) -> None:
    inpaint = request.inpaint
    _check_int(inpaint.mask_blur, "mask blur", 0, MAX_MASK_BLUR)
    _check_enum(inpaint.masked_content, MaskedContent, "masked content")
    _check_int(inpaint.only_masked_padding, "masked area padding", 0, MAX_PADDING)
    _check_file(inpaint.mask_path, "mask")


def _check_outpaint(request: GenerateRequest) -> None:
    outpaint = request.outpaint
    sides = {side: getattr(outpaint, side) for side in ("left", "right", "top", "bottom")}
    for side, pixels in sides.items():
        _check_int(pixels, f"outpaint {side}", 0, request.width + request.height)
    _check_int(outpaint.blend, "outpaint blend", 0, MAX_PADDING)
    if not any(sides.values()):
        raise InvalidRequestError("outpainting needs pixels to add on at least one side")
    kept = (
        request.width - sides["left"] - sides["right"],
        request.height - sides["top"] - sides["bottom"],
    )
    if min(kept) < MIN_SOURCE_SIDE:
        raise InvalidRequestError(
            f"outpainting {request.width}x{request.height} with these sides leaves "
            f"{kept[0]}x{kept[1]} px for the source; add fewer pixels"
        )


def _check_hires(request: GenerateRequest, upscalers: Upscalers | None) -> None:
    hires = request.hires
    scale = hires.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidRequestError(f"hires scale must be a number, got {scale!r}")
    if scale < 1:
        raise InvalidRequestError(f"hires scale must be at least 1, got {scale!r}")
    width, height = hires_size(request.width, request.height, scale)
    if max(width, height) > MAX_HIRES_SIDE:
        raise InvalidRequestError(
            f"a hires fix to {width}x{height} is too large; at most {MAX_HIRES_SIDE} px a side"
        )
    _check_int(hires.steps, "hires steps", 0, MAX_STEPS)
    _check_strength(hires.denoising_strength, "hires denoising strength")
    known = hires.upscaler in (LATENT, LANCZOS) or (
        upscalers is not None and upscalers.has(hires.upscaler)
    )
    if not known:
        names = [LATENT, *(upscalers.names() if upscalers is not None else [LANCZOS])]
        raise InvalidRequestError(
            f"unknown hires upscaler {hires.upscaler!r}; available: {', '.join(names)}"
        )
