"""A1111 infotext read from an image's bytes, and mapped back to /imagine's options.

Where A1111 (and the bot) write it: a PNG's "parameters" text chunk (tEXt, iTXt or zTXt); a
JPEG's or WebP's EXIF UserComment (tag 0x9286), which A1111 writes through piexif as
b"UNICODE\\0" and UTF-16 big-endian. Other tools write it little-endian, or with the "ASCII\\0\\0\\0"
prefix, or none: all are read. The upload is opened with bot.inputs' checks (size before the
download, decompression bombs) and never decoded beyond what reading its metadata needs.

Torch-free: the bot uses it; the parsing itself is inference.infotext's, as the worker writes it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from bot.inputs import DECODE_ERRORS, download, open_image
from bot.jobs.params import GenerationOptions
from inference.infotext import NEGATIVE_PROMPT_KEY, PROMPT_KEY, parse_infotext
from inference.protocol import LATENT
from inference.samplers import find_sampler

if TYPE_CHECKING:
    import discord

    from bot.config import Settings

INFOTEXT_CHUNK = "parameters"
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
# The 8-byte character-code prefix of an EXIF UserComment (EXIF 2.3, 4.6.5).
UNICODE_PREFIX = b"UNICODE\0"
ASCII_PREFIX = b"ASCII\0\0\0"
UNDEFINED_PREFIX = b"\0" * 8
# How long parsed parameters are kept for a "Re-run here" button (bot.cogs.pnginfo).
KEEP_S = 15 * 60
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class NoInfotext(Exception):
    """The image has no generation parameters; the message says so to the user."""


def read_infotext_bytes(data: bytes, max_pixels: int, label: str) -> str | None:
    """The infotext in an image file, or None; InvalidOption when it is not an image."""
    image = open_image(data, max_pixels, label)
    with image:
        text = image.info.get(INFOTEXT_CHUNK)
        if not isinstance(text, str):
            try:
                # Text chunks after the pixels are read only once the pixels are: the size was
                # checked, so decoding is safe; a damaged image may still have its metadata.
                image.load()
            except DECODE_ERRORS:
                pass
            text = image.info.get(INFOTEXT_CHUNK)
        if not isinstance(text, str) or not text.strip():
            text = _exif_comment(image)
    return text.strip() if text and text.strip() else None


def _exif_comment(image) -> str | None:  # type: ignore[no-untyped-def]
    try:
        exif = image.getexif()
        value = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except DECODE_ERRORS + (KeyError, TypeError):
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return None
    return decode_user_comment(value)


def decode_user_comment(value: bytes) -> str | None:
    """An EXIF UserComment's text: UTF-16 (either byte order) after "UNICODE\\0", else UTF-8."""
    prefix, body = value[:8], value[8:]
    if prefix == UNICODE_PREFIX:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", errors="replace")
        else:
            # No byte-order mark: piexif (A1111) writes big-endian; some tools little-endian.
            # ASCII text has its zero bytes first in big-endian, second in little-endian.
            even, odd = body[0::2].count(0), body[1::2].count(0)
            text = body.decode("utf-16-le" if odd > even else "utf-16-be", errors="replace")
    elif prefix in (ASCII_PREFIX, UNDEFINED_PREFIX):
        text = body.decode("utf-8", errors="replace")
    else:
        text = value.decode("utf-8", errors="replace")
    text = text.rstrip("\0").strip()
    return text or None


def is_image(attachment: discord.Attachment) -> bool:
    content_type = attachment.content_type or ""
    return content_type.startswith("image/") or attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


async def read_attachment(attachment: discord.Attachment, settings: Settings) -> dict[str, str]:
    """The parsed infotext of an uploaded image: {"Prompt": ..., "Steps": "20", ...}.

    InvalidOption when it is too large or not an image; NoInfotext when it has none."""
    data, label = await download(attachment, settings)
    text = await asyncio.to_thread(read_infotext_bytes, data, settings.images.max_upload_pixels, label)
    if text is None:
        raise NoInfotext(
            f"No generation parameters found in this image: the {label} has no A1111 \"parameters\" text chunk "
            "or EXIF UserComment. Apps and sites that re-save images often remove them; the original file "
            "(a PNG from A1111 or from this bot) keeps them."
        )
    # Off the event loop too: A1111's parameter regex is slow on long lines (infotext.py).
    return await asyncio.to_thread(parse_infotext, text)


@dataclass
class Rerun:
    """What "Re-run here" queues: the options, the hires fix, and notes on what was left out."""

    options: GenerationOptions
    hires: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _number(params: dict[str, str], key: str, kind: type, notes: list[str]) -> object | None:
    value = params.get(key)
    if value is None or not value.strip():
        return None
    try:
        return kind(value.strip())
    except ValueError:
        notes.append(f"{key} `{value[:50]}` is not a number; this server's default was used.")
        return None


def rerun_options(params: dict[str, str], settings: Settings, upscalers: list[str]) -> Rerun:
    """A1111's keys as /imagine's options. Values are checked later by the same checks as
    /imagine's; what this server does not have (a model, a sampler) falls back to its default,
    with a note."""
    notes: list[str] = []
    prompt = params.get(PROMPT_KEY, "")
    if not prompt.strip():
        raise InvalidOption("This image's parameters have no prompt, so there is nothing to re-run.")
    width = height = None
    if size := params.get("Size"):
        try:
            width, height = (int(part) for part in size.lower().split("x"))
        except ValueError:
            notes.append(f"Size `{size[:50]}` is not WIDTHxHEIGHT; this server's default was used.")
    model = None
    if name := params.get("Model"):
        model = next((m.name for m in settings.models if m.name.casefold() == name.casefold()), None)
        if model is None:
            notes.append(f"Model `{name[:100]}` is not on this server; its default model `{settings.default_model}` was used.")
    sampler = _sampler(params, notes)
    seed = _number(params, "Seed", int, notes)
    options = GenerationOptions(
        prompt=prompt,
        negative_prompt=params.get(NEGATIVE_PROMPT_KEY, ""),
        width=width,
        height=height,
        steps=_number(params, "Steps", int, notes),  # type: ignore[arg-type]
        cfg_scale=_number(params, "CFG scale", float, notes),  # type: ignore[arg-type]
        sampler=sampler,
        seed=seed,  # type: ignore[arg-type]
        count=1,
        model=model,
        tiling=True if params.get("Tiling", "").casefold() == "true" else None,
    )
    hires: dict[str, object] = {}
    if (scale := _number(params, "Hires upscale", float, notes)) is not None and scale != 1:
        hires["scale"] = scale
        hires["steps"] = _number(params, "Hires steps", int, notes)
        hires["denoising"] = _number(params, "Denoising strength", float, notes)
        if upscaler := params.get("Hires upscaler"):
            known = next((u for u in [LATENT, *upscalers] if u.casefold() == upscaler.casefold()), None)
            if known is None and upscaler.casefold().startswith("latent"):
                known = LATENT  # A1111's "Latent (antialiased)", "Latent (nearest)"...
            if known is None:
                notes.append(f"Hires upscaler `{upscaler[:100]}` is not on this server; its default was used.")
            hires["upscaler"] = known
    if params.get("Variation seed strength"):
        notes.append("The variation seed was left out: the job uses the seed alone.")
    return Rerun(options, hires, notes)


def _sampler(params: dict[str, str], notes: list[str]) -> str | None:
    name = params.get("Sampler")
    if not name:
        return None
    schedule = params.get("Schedule type", "")
    if schedule and schedule.casefold() not in ("automatic", "normal"):
        found = find_sampler(f"{name} {schedule}")
        if found is not None:
            return found
        notes.append(f"Schedule type `{schedule[:50]}` is not available here; {name[:50]}'s own was used.")
    found = find_sampler(name)
    if found is None:
        notes.append(f"Sampler `{name[:100]}` is not available here; the default sampler was used.")
    return found


@dataclass
class _Kept:
    params: dict[str, str]
    expires_at: float


_kept: dict[str, _Kept] = {}


def keep(params: dict[str, str]) -> str:
    now = time.monotonic()
    for key in [key for key, kept in _kept.items() if kept.expires_at <= now]:
        del _kept[key]
    key = secrets.token_hex(4)
    _kept[key] = _Kept(params, now + KEEP_S)
    return key


def kept(key: str) -> dict[str, str] | None:
    found = _kept.get(key)
    if found is None or found.expires_at <= time.monotonic():
        _kept.pop(key, None)
        return None
    return found.params
