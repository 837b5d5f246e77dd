"""SD upscale jobs (A1111's "SD upscale" script): the *Upscale (detailed)* button and
`/upscale detailed:True` make one from an image, its prompt and its seed.

The job keeps the generation parameters of what made the image (the button's job, or the
upload's own A1111 infotext, or a prompt given), and redraws the upscaled image by tiles at a
low denoising strength in the worker (inference.sd_upscale).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from bot.jobs.workflow_params import SourceImage, check_upscale, check_upscaler, without_workflow
from bot.jobs.params import JobParameters
from inference.common.protocol import MAX_SD_UPSCALE_SIDE, JobKind, ResizeMode

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = ["DETAILED_STRENGTH", "sd_upscale_parameters"]

# The denoising strength of a detailed upscale unless one is given: low enough to keep the
# image, high enough to draw detail (the community's usual 0.2-0.4).
DETAILED_STRENGTH = 0.3


def sd_upscale_parameters(
    settings: Settings,
    source: SourceImage,
    base: JobParameters,
    *,
    scale: float,
    upscaler: str | None = None,
    strength: float | None = None,
) -> JobParameters:
    """SD upscale of ``source`` by ``scale`` with ``base``'s prompt, model, sampler and seed;
    InvalidOption naming what is out of range (the scale, the strength, the result's size)."""
    check_upscale(scale)
    strength = DETAILED_STRENGTH if strength is None else strength
    if not 0.0 <= strength <= 1.0:
        raise InvalidOption(f"denoising must be between 0 and 1, got {strength:g}.")
    name = check_upscaler(settings, upscaler or settings.images.default_upscaler)
    # Multiples of 8, as every diffusion size; A1111 rounds the same way (down).
    width, height = int(source.width * scale) // 8 * 8, int(source.height * scale) // 8 * 8
    limit = min(settings.images.max_upscaled_side, MAX_SD_UPSCALE_SIDE)
    if max(width, height) > limit:
        raise InvalidOption(
            f"A detailed upscale of {source.width}x{source.height} by {scale:g} would make {width}x{height}; "
            f"it makes images of at most {limit} px a side (each tile is redrawn): pick a smaller scale."
        )
    if min(width, height) < 8:  # a sliver of an upload: rounded down to no pixels, the worker failed it
        raise InvalidOption(
            f"A detailed upscale of {source.width}x{source.height} by {scale:g} would make {width}x{height}, "
            "and it redraws images of at least 8 px a side: pick a larger scale, or a plain upscale."
        )
    seed = source.seed if source.seed is not None else base.seed
    # One image from the source, with the job's prompt and model: no variation, refiner or plot.
    return replace(
        without_workflow(base), kind=JobKind.SD_UPSCALE, count=1, seed=seed, width=width, height=height,
        subseed=None, subseed_strength=0.0, refiner=None, refiner_switch_at=None,
        init_image_path=source.path, parent_job_id=source.parent_job_id, parent_image_index=source.parent_image_index,
        denoising_strength=float(strength), resize_mode=ResizeMode.JUST_RESIZE.value,
        upscale_factor=float(scale), upscaler=name,
    )
