"""A1111's img2img "Inpaint sketch": the mask is where a painted copy differs from the original.

A member uploads the original and a copy they painted on (any phone editor does it). As in
A1111 (modules/img2img.py, mode 3) the difference is taken on the two full-size uploads,
before any resize to the job's size, and

- the mask is where they differ, darkened by the mask transparency (A1111's "Mask
  transparency", ``mask_alpha``: 0 repaints fully, 50 half);
- the start image is the painted copy blurred by the mask blur, laid over the original
  through the mask blurred the same way, so the strokes' colours are what the area starts from.

The inpaint job then runs with that start image and mask, like any /inpaint (the worker blurs
the mask's edge again, as A1111's processing does).

A1111 compares pixels exactly: its canvas gives back the original's own pixels. A phone editor
saves its copy again, often as JPEG, so every pixel moves a little. Here a pixel counts as
painted when one of its channels differs by more than CHANGE_TOLERANCE, and the painted area
is cleaned with a 3x3 opening (specks of one or two pixels, JPEG ringing along strong edges,
go) and a 3x3 closing (pinholes inside strokes are filled). A stroke painted within the
tolerance of what was there (a slightly darker shade) is not seen: paint in a colour that
stands out.

PIL, numpy and scipy.ndimage only: the bot never imports torch. It runs in a thread (a
4096 px pair takes long enough to stall the event loop).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage

from bot import inputs
from bot.errors import InvalidOption
from bot.jobs.workflow_params import SourceImage
from inference.common.protocol import MAX_MASK_BLUR

if TYPE_CHECKING:
    import discord

    from bot.config import Settings

# Per channel, out of 255: above a high-quality JPEG's error (a few levels, up to ~20 next to
# strong edges), below any stroke meant to be seen.
CHANGE_TOLERANCE = 32
_CLEAN_UP = np.ones((3, 3), dtype=bool)
# A1111's slider goes to 100, where the mask is black and the job would repaint nothing.
MAX_MASK_TRANSPARENCY = 99


@dataclass(frozen=True)
class InpaintSketch:
    """What an inpaint job needs from a sketch: its start image and its mask, saved."""

    start: SourceImage
    mask_path: str


def painted_area(original: Image.Image, sketch: Image.Image, tolerance: int = CHANGE_TOLERANCE) -> Image.Image:
    """White where ``sketch`` differs from ``original`` beyond ``tolerance``, cleaned of specks
    and pinholes (see the module doc); both RGB of one size."""
    difference = np.abs(np.asarray(sketch, dtype=np.int16) - np.asarray(original, dtype=np.int16))
    # Padded with its own edge, so a stroke that reaches the image's edge keeps its last row.
    changed = np.pad(difference.max(axis=-1) > tolerance, 1, mode="edge")
    changed = ndimage.binary_opening(changed, structure=_CLEAN_UP)
    changed = ndimage.binary_closing(changed, structure=_CLEAN_UP)[1:-1, 1:-1]
    return Image.fromarray(changed.astype(np.uint8) * 255, mode="L")


def sketch_start(
    original: Image.Image, sketch: Image.Image, area: Image.Image, mask_blur: int, transparency: int
) -> tuple[Image.Image, Image.Image]:
    """A1111's inpaint sketch: (the start image, the mask) from the painted area."""
    mask = ImageEnhance.Brightness(area).enhance(1 - transparency / 100)
    blur = ImageFilter.GaussianBlur(mask_blur)
    start = Image.composite(sketch.filter(blur), original, mask.filter(blur))
    return start.convert("RGB"), mask


async def read_inpaint_sketch(
    original: discord.Attachment,
    sketch: discord.Attachment,
    settings: Settings,
    *,
    mask_blur: int,
    transparency: int,
) -> InpaintSketch:
    """Both uploads read and checked as any image upload, then compared and saved."""
    if not 0 <= transparency <= MAX_MASK_TRANSPARENCY:
        raise InvalidOption(f"mask_transparency must be between 0 and {MAX_MASK_TRANSPARENCY}, got {transparency}.")
    if not 0 <= mask_blur <= MAX_MASK_BLUR:  # before the blur is spent on the uploads
        raise InvalidOption(f"mask_blur must be between 0 and {MAX_MASK_BLUR}, got {mask_blur}.")
    original_data, original_label = await inputs.download(original, settings, what="original")
    sketch_data, sketch_label = await inputs.download(sketch, settings, what="sketch")

    def compare_and_save() -> InpaintSketch:
        before = inputs.decode_image(original_data, settings, original_label)
        after = inputs.decode_image(sketch_data, settings, sketch_label)
        if before.size != after.size:
            raise InvalidOption(
                f"The {sketch_label} is {after.width}x{after.height} but the {original_label} is "
                f"{before.width}x{before.height}: upload the painted copy at the original's size "
                "(saved from the editor, not a screenshot or a crop)."
            )
        area = painted_area(before, after)
        if area.getbbox() is None:
            raise InvalidOption(
                f"The {sketch_label} does not differ from the {original_label}: paint over the part to change "
                "(in a colour that stands out), then upload the original and the painted copy."
            )
        start, mask = sketch_start(before, after, area, mask_blur, transparency)
        start_path = inputs.save_image(start, settings)
        return InpaintSketch(SourceImage(start_path, start.width, start.height), inputs.save_image(mask, settings))

    return await asyncio.to_thread(compare_and_save)
