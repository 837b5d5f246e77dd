"""Uploaded images and masks, checked and saved before any job is queued for them.

A member can upload anything: a text file renamed .png, an animated GIF, a truncated download,
a 50000x50000 PNG of a few kilobytes that would take gigabytes to decode. Each is refused here
with an InvalidOption naming the file, before a job row exists. What passes is normalized (EXIF
rotation applied, 8-bit RGB or L, no metadata) and saved as a PNG named by the SHA-256 of its
pixels under ``outputs_dir/inputs/``, so the same upload twice is one file and the worker reads
one simple format.

Downloads are awaited on the event loop; decoding, resizing and encoding run in a thread, since
a 4096x4096 photo takes long enough to stall every other interaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from PIL import Image, ImageOps

from bot.errors import InvalidOption
from bot.jobs.workflow_params import SourceImage

if TYPE_CHECKING:
    from bot.config import Settings

# Only the formats people post. Pillow can open many more, and some plugins are risky to feed
# untrusted files (EPS runs Ghostscript) or rarely exercised; none is worth that exposure.
# JPEG includes MPO: phones embed a second picture (depth map, gain map) in their JPEGs.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# What Pillow raises for a file that is not what it claims or is cut short. (UnidentifiedImageError
# is an OSError; struct.error comes from short headers in some plugins.)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Transparent areas become white in an image, as A1111 flattens img2img uploads (its default
# img2img background colour); in a mask they become black, "keep": a mask painted in white on
# a transparent layer then repaints only the painted strokes.
IMAGE_BACKGROUND = (255, 255, 255)
MASK_BACKGROUND = (0, 0, 0)
# A mask whose shape is this close to the image's is a scaled copy of it (rounding of sizes).
ASPECT_TOLERANCE = 0.01
MASK_THRESHOLD = 127  # the worker treats mask pixels above this as "repaint"


async def read_image_upload(attachment: discord.Attachment, settings: Settings, *, what: str = "image") -> SourceImage:
    """The upload checked, normalized to RGB and saved; `what` names it in messages."""
    label = _label(what, attachment)
    data = await _download(attachment, settings, label)
    return await saved_image(data, settings, label)


async def saved_image(data: bytes, settings: Settings, label: str) -> SourceImage:
    """An upload's bytes (``download``'s) checked, normalized to RGB and saved: for a command
    that reads the upload's own metadata too (the detailed /upscale reads its infotext)."""
    path, width, height = await asyncio.to_thread(_save_image, data, settings, label)
    return SourceImage(path=path, width=width, height=height)


def read_image_file(path: Path, settings: Settings) -> SourceImage:
    """A local image (`sdbot generate --image`) checked and saved as an upload is."""
    label = f"image {path.name}"
    try:
        size = path.stat().st_size
        if size > settings.images.max_upload_bytes:
            raise InvalidOption(_too_many_bytes(label, size, settings.images.max_upload_bytes))
        data = path.read_bytes()
    except OSError as error:
        raise InvalidOption(f"The {label} could not be read: {error.strerror or error}.") from None
    saved, width, height = _save_image(data, settings, label)
    return SourceImage(path=saved, width=width, height=height)


async def read_mask_upload(
    attachment: discord.Attachment, settings: Settings, image: SourceImage
) -> tuple[str, str | None]:
    """The mask saved as greyscale at the image's size, and a note for the user when it had to
    be resized (it must have the image's shape: a mask for another crop would repaint the wrong
    place). White is repainted, black is kept; the worker blurs the edge."""
    label = _label("mask", attachment)
    data = await _download(attachment, settings, label)
    return await asyncio.to_thread(_save_mask, data, settings, label, image)


def _label(what: str, attachment: discord.Attachment) -> str:
    # The filename is the user's text: keep it from breaking out of the code span.
    name = attachment.filename.replace("`", "'")[:100]
    return f"{what} `{name}`"


async def _download(attachment: discord.Attachment, settings: Settings, label: str) -> bytes:
    limit = settings.images.max_upload_bytes
    # Discord states the size up front: refuse before spending the bandwidth.
    if attachment.size > limit:
        raise InvalidOption(_too_many_bytes(label, attachment.size, limit))
    try:
        data = await attachment.read()
    except discord.HTTPException as error:
        raise InvalidOption(
            f"The {label} could not be downloaded from Discord (HTTP {error.status}); please try again."
        ) from error
    if len(data) > limit:
        raise InvalidOption(_too_many_bytes(label, len(data), limit))
    return data


def _too_many_bytes(label: str, size: int, limit: int) -> str:
    return f"The {label} is {_megabytes(size)}; this server accepts uploads of up to {_megabytes(limit)}."


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def _save_image(data: bytes, settings: Settings, label: str) -> tuple[str, int, int]:
    image = _flattened(_decode(data, settings.images.max_upload_pixels, label), IMAGE_BACKGROUND)
    return _save(image, settings), image.width, image.height


def _save_mask(data: bytes, settings: Settings, label: str, image: SourceImage) -> tuple[str, str | None]:
    mask = _flattened(_decode(data, settings.images.max_upload_pixels, label), MASK_BACKGROUND).convert("L")
    wanted = (image.width, image.height)
    if abs(mask.width / mask.height - image.width / image.height) > ASPECT_TOLERANCE * image.width / image.height:
        raise InvalidOption(
            f"The {label} is {mask.width}x{mask.height} but the image is {image.width}x{image.height}: "
            "they must have the same shape (the mask may be a scaled copy)."
        )
    note = None
    if mask.size != wanted:
        note = (
            f"The mask was {mask.width}x{mask.height} and was resized to the image's "
            f"{image.width}x{image.height}."
        )
        mask = mask.resize(wanted, Image.Resampling.BILINEAR)
    if mask.getextrema()[1] <= MASK_THRESHOLD:  # type: ignore[operator]
        raise InvalidOption(
            f"The {label} is all black, so there is nothing to repaint: paint the area to change in white."
        )
    return _save(mask, settings), note


async def download(attachment: discord.Attachment, settings: Settings, *, what: str = "image") -> tuple[bytes, str]:
    """The upload's bytes, refused when too large (from the size Discord states, before the
    download), and the label that names it in messages."""
    label = _label(what, attachment)
    return await _download(attachment, settings, label), label


def decode_image(data: bytes, settings: Settings, label: str) -> Image.Image:
    """An upload's bytes decoded and checked as read_image_upload does, as 8-bit RGB (for
    work on the pixels before saving: bot.sketch)."""
    return _flattened(_decode(data, settings.images.max_upload_pixels, label), IMAGE_BACKGROUND)


def save_image(image: Image.Image, settings: Settings) -> str:
    """An image the bot made from uploads, saved beside them; its path."""
    return _save(image, settings)


def open_image(data: bytes, max_pixels: int, label: str) -> Image.Image:
    """The image opened, not decoded: an accepted format, its size checked from the header, so
    a decompression bomb is refused before any pixel is decoded."""
    _let_pillow_open(max_pixels)
    too_many = f"this server accepts at most {max_pixels:,} pixels"
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidOption(f"The {label} has far too many pixels; {too_many}.") from error
    except DECODE_ERRORS as error:
        raise InvalidOption(f"The {label} is not an image I can read. Upload a {FORMAT_NAMES} file.") from error
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidOption(f"The {label} is {width}x{height} ({width * height:,} pixels); {too_many}.")
    return image


def _decode(data: bytes, max_pixels: int, label: str) -> Image.Image:
    """One still frame, fully decoded and upright; the size is checked from the header first,
    so a decompression bomb is refused without being decoded."""
    image = open_image(data, max_pixels, label)
    damaged = f"The {label} is damaged or incomplete and cannot be decoded. Upload it again, or save it again as PNG."
    try:
        # An MPO's other frames are a phone's depth or gain map: its first frame is the photo.
        frames = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
        if frames > 1:
            raise InvalidOption(f"The {label} is animated or has {frames} frames; upload a single still image.")
        image.load()
    except DECODE_ERRORS as error:
        raise InvalidOption(damaged) from error
    try:
        # Phones store photos sideways with an EXIF orientation tag; A1111 applies it too.
        upright = ImageOps.exif_transpose(image)
    except DECODE_ERRORS:
        upright = image  # unreadable EXIF: the pixels are still good, take them as stored
    upright.info.clear()  # metadata (ICC, text chunks) is not carried into the saved PNG
    return upright


def _let_pillow_open(max_pixels: int) -> None:
    # Pillow refuses images above twice MAX_IMAGE_PIXELS (89 M pixels by default) at open, a
    # backstop to the check above. Raise it when this server accepts more, never lower it:
    # it is process-wide, and the bot also opens its own results (upscales up to
    # max_upscaled_side), which an upload limit must not make undeliverable.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _flattened(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit RGB, transparent areas on `background`."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greyscale: Pillow's convert clips at 255 (nearly all white) instead of scaling.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if not image.has_transparency_data:
        return image.convert("RGB")
    flat = Image.new("RGBA", image.size, (*background, 255))
    flat.alpha_composite(image.convert("RGBA"))
    return flat.convert("RGB")


def _save(image: Image.Image, settings: Settings) -> str:
    """Save under the SHA-256 of the pixels (mode and size included): the same picture uploaded
    twice, or once as PNG and once as BMP, is one file. Written through a temporary file and an
    atomic rename, so the worker never reads a half-written PNG."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    folder = Path(settings.outputs_dir) / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{digest.hexdigest()}.png").resolve()
    if path.is_file():
        return str(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            image.save(file, format="PNG", compress_level=settings.worker.png_compress_level)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return str(path)
