"""Parameters of the image workflows: img2img, inpaint, outpaint (zoom out and pan), upscale.

Each builder takes what a command or a button knows (the options typed, the source image) and
returns validated JobParameters, or raises InvalidOption saying what this server allows. The
same builders serve the slash commands (on uploads) and the buttons (on the bot's own images),
so both refuse the same things with the same words.

Sizes: a source image keeps its own size, scaled down (keeping its shape) to fit the server's
limits and rounded to multiples of 8, which SD needs. The worker fits the source to the job's
size (see inference.common.protocol.GenerateRequest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo, listed
from bot.jobs.face_params import NO_FACE_RESTORATION
from bot.jobs.params import (
    NO_SERVER_DEFAULTS,
    GenerationOptions,
    JobParameters,
    ServerDefaults,
    random_seed,
    resolve_parameters,
)
from inference.common.protocol import (
    LANCZOS,
    LATENT,
    MAX_MASK_BLUR,
    MAX_SEGMENT_DILATION,
    MAX_SEGMENT_WORDS,
    JobKind,
    MaskedContent,
    ResizeMode,
)
from inference.common.upscaler_files import upscaler_files

if TYPE_CHECKING:
    from bot.config import LimitSettings, Settings
    from db.models import User

RESIZE_MODES = tuple(mode.value for mode in ResizeMode)
MASKED_CONTENT = tuple(content.value for content in MaskedContent)
OUTPAINT_DIRECTIONS = ("left", "right", "up", "down", "all")
# Outpainting repaints new canvas from almost nothing: A1111's outpainting scripts advise a
# denoising strength near 1. The seam band is blended back into the original anyway.
OUTPAINT_STRENGTH = 0.9
MAX_INPAINT_PADDING = 256
MAX_UPSCALE = 8.0
DEFAULT_MASK_BLUR = 4  # A1111's


def check_upscale(scale: float) -> None:
    """An upscale's factor (plain or SD upscale): above 1, at most MAX_UPSCALE."""
    if not 1.0 < scale <= MAX_UPSCALE:
        raise InvalidOption(f"scale must be above 1 and at most {MAX_UPSCALE:g}, got {scale:g}.")


@dataclass(frozen=True)
class SourceImage:
    """An image a job starts from: an upload the bot checked and saved, or one it made."""

    path: str
    width: int
    height: int
    seed: int | None = None
    parent_job_id: int | None = None
    parent_image_index: int | None = None


def fit_size(width: int, height: int, limits: LimitSettings) -> tuple[int, int]:
    """The largest size of this shape within the server's limits, in multiples of 8."""
    scale = min(
        1.0,
        limits.max_size / max(width, height),
        math.sqrt(limits.max_pixels / (width * height)),
    )
    # A small image is scaled up to the smallest size the server makes (SD needs a minimum).
    scale = max(scale, limits.min_size / min(width, height))
    return (
        _clamp(_floor8(width * scale), limits.min_size, limits.max_size),
        _clamp(_floor8(height * scale), limits.min_size, limits.max_size),
    )


def _floor8(value: float) -> int:
    return max(8, int(value + 1e-6) // 8 * 8)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _check_strength(strength: float, name: str = "strength") -> float:
    if not 0.0 <= strength <= 1.0:
        raise InvalidOption(f"{name} must be between 0 and 1, got {strength:g}.")
    return float(strength)


def _sized_options(options: GenerationOptions, source: SourceImage, limits: LimitSettings) -> GenerationOptions:
    """Width and height default to the source's shape; one given alone keeps that shape."""
    if options.aspect is not None:
        raise InvalidOption("The size of an image job follows its image: give width/height, not an aspect.")
    width, height = options.width, options.height
    if width is None and height is None:
        width, height = fit_size(source.width, source.height, limits)
    elif height is None:
        height = max(8, round(width * source.height / source.width / 8) * 8)
    elif width is None:
        width = max(8, round(height * source.width / source.height / 8) * 8)
    return replace(options, width=width, height=height)


def _derived(params: JobParameters, source: SourceImage, kind: JobKind, **workflow: object) -> JobParameters:
    return replace(
        params,
        kind=kind,
        init_image_path=source.path,
        parent_job_id=source.parent_job_id,
        parent_image_index=source.parent_image_index,
        **workflow,
    )


def img2img_parameters(
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    source: SourceImage,
    *,
    strength: float | None = None,
    resize_mode: str | None = None,
    loopback: int | None = None,
    loopback_final_strength: float | None = None,
    server: ServerDefaults = NO_SERVER_DEFAULTS,
) -> JobParameters:
    images = settings.images
    params = resolve_parameters(_sized_options(options, source, settings.limits), settings, user, server)
    strength = _check_strength(images.default_denoising_strength if strength is None else strength)
    mode = resize_mode or ResizeMode.JUST_RESIZE.value
    if mode not in RESIZE_MODES:
        raise InvalidOption(f"Unknown resize mode `{echo(mode)}`. Choose one of: {', '.join(RESIZE_MODES)}.")
    loops = 1 if loopback is None else loopback
    if not 1 <= loops <= images.max_loopback:
        raise InvalidOption(f"loopback must be between 1 and {images.max_loopback}, got {loops}.")
    if loopback_final_strength is not None:
        _check_strength(loopback_final_strength, "loopback_final_strength")
        if loops == 1:
            raise InvalidOption("loopback_final_strength needs loopback of 2 or more.")
    return _derived(
        params,
        source,
        JobKind.IMG2IMG,
        denoising_strength=strength,
        resize_mode=mode,
        loopback_count=loops,
        loopback_final_strength=loopback_final_strength,
    )


def inpaint_parameters(
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    source: SourceImage,
    mask_path: str,
    *,
    strength: float | None = None,
    masked_content: str | None = None,
    mask_blur: int | None = None,
    only_masked: bool | None = None,
    padding: int | None = None,
    server: ServerDefaults = NO_SERVER_DEFAULTS,
) -> JobParameters:
    params = resolve_parameters(_sized_options(options, source, settings.limits), settings, user, server)
    strength = _check_strength(settings.images.default_denoising_strength if strength is None else strength)
    content = masked_content or MaskedContent.ORIGINAL.value
    if content not in MASKED_CONTENT:
        raise InvalidOption(f"Unknown masked content `{echo(content)}`. Choose one of: {', '.join(MASKED_CONTENT)}.")
    blur = DEFAULT_MASK_BLUR if mask_blur is None else mask_blur
    if not 0 <= blur <= MAX_MASK_BLUR:
        raise InvalidOption(f"mask_blur must be between 0 and {MAX_MASK_BLUR}, got {blur}.")
    pad = 32 if padding is None else padding
    if not 0 <= pad <= MAX_INPAINT_PADDING:
        raise InvalidOption(f"padding must be between 0 and {MAX_INPAINT_PADDING}, got {pad}.")
    return _derived(
        params,
        source,
        JobKind.INPAINT,
        denoising_strength=strength,
        mask_path=mask_path,
        mask_blur=blur,
        masked_content=content,
        inpaint_only_masked=bool(only_masked),
        inpaint_padding=pad,
    )


def segment_parameters(inpaint: JobParameters, settings: Settings, segment: dict[str, object]) -> JobParameters:
    """A mask from words before ``inpaint`` (inpaint_parameters' job, without its mask): the
    segment job (JobKind.SEGMENT) previews the mask; its "Looks right" queues ``inpaint`` with
    it (bot.ui.mask_preview). ``segment``: check_segment's words, threshold and dilation."""
    if not settings.images.segmentation_model:
        raise InvalidOption(
            "This server has no segmentation model for masks from words: upload a mask (white where to repaint)."
        )
    return replace(inpaint, kind=JobKind.SEGMENT, mask_path=None, **segment)


def check_segment(
    settings: Settings, words: str | None, threshold: float | None = None, dilation: int | None = None
) -> dict[str, object]:
    """The segment_* columns of a mask from words, each checked; threshold and dilation
    default to the server's ([images] segment_threshold, segment_dilation)."""
    text = " ".join((words or "").split())
    if not text:
        raise InvalidOption("Say what to repaint in a few words (\"the sky\", \"her hat\"), or upload a mask.")
    if len(text) > MAX_SEGMENT_WORDS:
        raise InvalidOption(f"The mask words are {len(text)} characters long; the limit is {MAX_SEGMENT_WORDS}.")
    value = settings.images.segment_threshold if threshold is None else threshold
    if not 0.0 < value < 1.0:
        raise InvalidOption(f"mask_threshold must be above 0 and below 1, got {value:g}.")
    grow = settings.images.segment_dilation if dilation is None else dilation
    if not 0 <= grow <= MAX_SEGMENT_DILATION:
        raise InvalidOption(f"mask_dilation must be between 0 and {MAX_SEGMENT_DILATION} pixels, got {grow}.")
    return {"segment_words": text, "segment_threshold": float(value), "segment_dilation": grow}


def outpaint_parameters(
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    source: SourceImage,
    *,
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    strength: float | None = None,
    server: ServerDefaults = NO_SERVER_DEFAULTS,
) -> JobParameters:
    """Extend the canvas by these pixels. A canvas beyond the server's limits is scaled down as
    a whole (the source with it), so zooming out always works, as on Midjourney."""
    limits = settings.limits
    pads = (left, right, top, bottom)
    if any(pad < 0 for pad in pads) or not any(pads):
        raise InvalidOption("Give a positive number of pixels to add.")
    width, left, right = _extend(source.width, left, right, 1.0)
    height, top, bottom = _extend(source.height, top, bottom, 1.0)
    scale = min(1.0, limits.max_size / max(width, height), math.sqrt(limits.max_pixels / (width * height)))
    if scale < 1.0:
        width, left, right = _extend(source.width, left, right, scale)
        height, top, bottom = _extend(source.height, top, bottom, scale)
    if min(width, height) < limits.min_size:
        raise InvalidOption(
            f"The extended image would be {width}x{height}; this server makes images of at least "
            f"{limits.min_size} px a side. Add more pixels."
        )
    strength = _check_strength(OUTPAINT_STRENGTH if strength is None else strength)
    sized = replace(options, aspect=None, width=width, height=height)
    params = resolve_parameters(sized, settings, user, server)
    return _derived(
        params,
        source,
        JobKind.OUTPAINT,
        denoising_strength=strength,
        outpaint_left=left,
        outpaint_right=right,
        outpaint_top=top,
        outpaint_bottom=bottom,
    )


def _extend(side: int, before: int, after: int, scale: float) -> tuple[int, int, int]:
    """(canvas side, pixels before, pixels after) at this scale, the canvas a multiple of 8.

    The rounding goes to the sides being extended, so the source itself is only resized when
    the whole canvas had to shrink.
    """
    inner = max(8, round(side * scale))
    total = before + after
    if total == 0:
        canvas = _floor8(inner)
        return canvas, 0, 0  # the worker fits the source to the canvas on this axis
    canvas = max(8, round((inner + total * scale) / 8) * 8)
    added = max(0, canvas - inner)
    first = round(added * before / total)
    return canvas, first, added - first


def upscaler_names(settings: Settings) -> list[str]:
    """Lanczos, then every upscaler model file in the configured folders."""
    return [LANCZOS, *upscaler_files(settings.images.upscaler_dirs)]


def check_upscaler(settings: Settings, name: str, *, allow_latent: bool = False) -> str:
    known = upscaler_names(settings)
    if allow_latent:
        known = [LATENT, *known]
    match = next((k for k in known if k.casefold() == name.casefold()), None)
    if match is None:
        raise InvalidOption(f"Unknown upscaler `{echo(name)}`. Available: {listed(known)}.")
    return match


def upscale_parameters(
    settings: Settings,
    source: SourceImage,
    *,
    scale: float,
    upscaler: str | None,
    base: JobParameters | None = None,
    faces: Mapping[str, object] = NO_FACE_RESTORATION,
) -> JobParameters:
    """Upscale one image, then restore its faces when ``faces`` says so (A1111's Extras
    order; bot.jobs.face_params). ``base`` is the job that made it, whose prompt and seed the
    result keeps (as A1111's extras tab keeps the infotext); an upload has none."""
    check_upscale(scale)
    name = check_upscaler(settings, upscaler or settings.images.default_upscaler)
    width, height = round(source.width * scale), round(source.height * scale)
    limit = settings.images.max_upscaled_side
    if max(width, height) > limit:
        raise InvalidOption(
            f"Upscaling {source.width}x{source.height} by {scale:g} would make {width}x{height}; "
            f"this server makes images of at most {limit} px a side."
        )
    params = _extras_job(settings, source, width, height, base)
    return _derived(params, source, JobKind.UPSCALE, upscale_factor=float(scale), upscaler=name, **faces)


def restore_faces_parameters(
    settings: Settings, source: SourceImage, faces: Mapping[str, object], base: JobParameters | None = None
) -> JobParameters:
    """A1111's Extras face restoration of one image, at its own size; ``faces`` are the
    columns bot.jobs.face_params.face_restoration_columns made (with a restorer)."""
    if faces.get("face_restorer") is None:
        raise InvalidOption("Choose a face restorer.")
    params = _extras_job(settings, source, source.width, source.height, base)
    return _derived(params, source, JobKind.RESTORE_FACES, **faces)


def _extras_job(
    settings: Settings, source: SourceImage, width: int, height: int, base: JobParameters | None
) -> JobParameters:
    """The parameters of an Extras job (upscale, face restoration) on one image, before its
    workflow's own: its parent's prompt and seed (none for an upload), one image of this size."""
    if base is None:
        limits = settings.limits
        base = JobParameters(
            kind=JobKind.UPSCALE,
            prompt="",
            negative_prompt="",
            model=settings.default_model,
            width=width,
            height=height,
            steps=1,
            cfg_scale=limits.default_cfg_scale,
            sampler=limits.default_sampler,
            count=1,
            seed=source.seed if source.seed is not None else random_seed(),
        )
    cleared = {name: None for name in _WORKFLOW_FIELDS}
    return replace(
        base,
        **cleared,
        width=width,
        height=height,
        count=1,
        seed=source.seed if source.seed is not None else base.seed,
        subseed=None,
        subseed_strength=0.0,
    )


# The fields one workflow sets; a job derived from another starts with none of them.
_WORKFLOW_FIELDS = (
    "denoising_strength",
    "resize_mode",
    "loopback_count",
    "loopback_final_strength",
    "mask_path",
    "mask_blur",
    "masked_content",
    "inpaint_only_masked",
    "inpaint_padding",
    "outpaint_left",
    "outpaint_right",
    "outpaint_top",
    "outpaint_bottom",
    "hires_scale",
    "hires_steps",
    "hires_denoising",
    "hires_upscaler",
    "upscale_factor",
    "upscaler",
    *NO_FACE_RESTORATION,
    "segment_words",
    "segment_threshold",
    "segment_dilation",
    "plot_json",  # a plot's cells: what is made from one of its images is one image
)


def without_workflow(params: JobParameters) -> JobParameters:
    """The generation parameters alone (prompt, model, steps...), for a job derived from this one."""
    return replace(params, **{name: None for name in _WORKFLOW_FIELDS}, init_image_path=None)


def hires_parameters(
    params: JobParameters,
    settings: Settings,
    *,
    scale: float | None = None,
    steps: int | None = None,
    denoising: float | None = None,
    upscaler: str | None = None,
) -> JobParameters:
    """A1111's hires fix on a txt2img job: no scale (or 1) means off, and then the other
    hires options must not be given either, so a typo is not silently ignored."""
    images = settings.images
    if scale is None or scale == 1:
        if steps is not None or denoising is not None or upscaler is not None:
            raise InvalidOption("hires_steps, hires_denoising and hires_upscaler need a hires_scale above 1.")
        return params
    if not 1.0 < scale <= images.max_hires_scale:
        raise InvalidOption(f"hires_scale must be above 1 and at most {images.max_hires_scale:g}, got {scale:g}.")
    width, height = _floor8(params.width * scale), _floor8(params.height * scale)
    if max(width, height) > images.max_hires_side:
        raise InvalidOption(
            f"A hires fix of {params.width}x{params.height} by {scale:g} would make {width}x{height}; "
            f"this server allows at most {images.max_hires_side} px a side."
        )
    hires_steps = 0 if steps is None else steps
    if not 0 <= hires_steps <= settings.limits.max_steps:
        raise InvalidOption(
            f"hires_steps must be between 0 (same as steps) and {settings.limits.max_steps}, got {hires_steps}."
        )
    strength = _check_strength(images.default_hires_denoising if denoising is None else denoising, "hires_denoising")
    name = check_upscaler(settings, upscaler or LATENT, allow_latent=True)
    return replace(
        params,
        hires_scale=float(scale),
        hires_steps=hires_steps,
        hires_denoising=strength,
        hires_upscaler=name,
    )
