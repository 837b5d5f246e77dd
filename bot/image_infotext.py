"""A1111 infotext read from an image's bytes, and mapped back to /imagine's options.

Where A1111 (and the bot) write it: a PNG's "parameters" text chunk (tEXt, iTXt or zTXt); a
JPEG's or WebP's EXIF UserComment (tag 0x9286), which A1111 writes through piexif as
b"UNICODE\\0" and UTF-16 big-endian. Other tools write it little-endian, or with the "ASCII\\0\\0\\0"
prefix, or none: all are read; a comment that does not decode is refused, not guessed at. A PNG
with several "parameters" chunks is read as PIL (and so A1111) reads it: the last one, and the
answer says so. The text is cleaned as every prompt is (bot.prompts.cleaning). The upload is
opened with bot.inputs' checks (size before the download, decompression bombs) and never decoded
beyond what reading its metadata needs.

Torch-free: the bot uses it; the parsing itself is inference.common.infotext's, as the worker writes it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo
from bot.inputs import DECODE_ERRORS, download, open_image
from bot.jobs.params import GenerationOptions
from bot.jobs.model_checks import settings_vae_files
from bot.prompts.cleaning import clean_prompt_text
from inference.common.infotext import NEGATIVE_PROMPT_KEY, PROMPT_KEY, parse_infotext
from inference.common.protocol import LATENT, RNG_SOURCES
from inference.common.sampler_catalog import SAMPLERS, UnknownNameError, split_combined_name
from inference.common.sources import SINGLE_FILE_SUFFIXES
from inference.common.vae_files import NONE, find_vae

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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNK_TYPES = (b"tEXt", b"zTXt", b"iTXt")
# How long parsed parameters are kept for a "Re-run here" button (bot.cogs.pnginfo).
KEEP_S = 15 * 60
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class NoInfotext(Exception):
    """The image has no generation parameters; the message says so to the user."""


def read_infotext_bytes(data: bytes, max_pixels: int, label: str, notes: list[str] | None = None) -> str | None:
    """The infotext in an image file, or None; InvalidOption when it is not an image, or when
    its EXIF comment does not decode. ``notes``: what the member should know about the read."""
    image = open_image(data, max_pixels, label)
    chunks = parameters_chunk_count(data)
    if chunks > 1 and notes is not None:
        notes.append(
            f"This image has {chunks} \"{INFOTEXT_CHUNK}\" text chunks; the last one was read, as A1111 reads it."
        )
    with image:
        text = image.info.get(INFOTEXT_CHUNK)
        # Chunks after the pixels replace those before once the pixels are read: several
        # chunks are read to the end, so that the last one wins whichever side it is on.
        if not isinstance(text, str) or chunks > 1:
            try:
                # Text chunks after the pixels are read only once the pixels are: the size was
                # checked, so decoding is safe; a damaged image may still have its metadata.
                image.load()
            except DECODE_ERRORS:
                pass
            text = image.info.get(INFOTEXT_CHUNK)
        if not isinstance(text, str) or not text.strip():
            text = _exif_comment(image)
    text = clean_prompt_text(text) if text else None
    return text.strip() if text and text.strip() else None


def parameters_chunk_count(data: bytes) -> int:
    """How many "parameters" text chunks (tEXt, zTXt, iTXt) a PNG file holds; 0 for other
    files. Only the chunk headers are read, never the compressed data."""
    if not data.startswith(PNG_SIGNATURE):
        return 0
    keyword = INFOTEXT_CHUNK.encode() + b"\0"
    count, position = 0, len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        start = position + 8
        if kind in TEXT_CHUNK_TYPES and length >= len(keyword) and data.startswith(keyword, start):
            count += 1
        if kind == b"IEND":
            break
        position = start + length + 4  # the data, then its CRC
    return count


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
    """An EXIF UserComment's text: UTF-16 (either byte order) after "UNICODE\\0", else UTF-8.

    InvalidOption when it does not decode (a character code we do not read, such as JIS, or
    broken UTF-16/UTF-8): a prompt made of replacement characters would be queued as garbage."""
    prefix, body = value[:8], value[8:]
    try:
        if prefix == UNICODE_PREFIX:
            if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
                text = body.decode("utf-16")
            else:
                # No byte-order mark: piexif (A1111) writes big-endian; some tools little-endian.
                # ASCII text has its zero bytes first in big-endian, second in little-endian.
                even, odd = body[0::2].count(0), body[1::2].count(0)
                text = body.decode("utf-16-le" if odd > even else "utf-16-be")
        elif prefix in (ASCII_PREFIX, UNDEFINED_PREFIX):
            text = body.decode("utf-8")
        elif b"\0" in prefix:  # a character-code prefix, but not one of the above
            code = echo(prefix.rstrip(b"\0").decode("ascii", "replace"))
            raise InvalidOption(
                f"This image's EXIF comment is in a character code I can't read (`{code}`), "
                "so its parameters were not used. Save it again from A1111, or use the original PNG."
            )
        else:
            text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOption(
            "This image's EXIF comment is not text that decodes (broken UTF-16 or UTF-8), so its parameters "
            "were not used. Save it again from A1111, or use the original PNG."
        ) from None
    text = text.rstrip("\0").strip()
    return text or None


def is_image(attachment: discord.Attachment) -> bool:
    content_type = attachment.content_type or ""
    return content_type.startswith("image/") or attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


async def read_attachment(
    attachment: discord.Attachment, settings: Settings, notes: list[str] | None = None
) -> dict[str, str]:
    """The parsed infotext of an uploaded image: {"Prompt": ..., "Steps": "20", ...}.

    InvalidOption when it is too large or not an image; NoInfotext when it has none. ``notes``
    gets what the member should know about the read (which of several chunks)."""
    data, label = await download(attachment, settings)
    text = await asyncio.to_thread(read_infotext_bytes, data, settings.images.max_upload_pixels, label, notes)
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
    # A1111's "Refiner" (this server's model of that name) and "Refiner switch at".
    refiner: str | None = None
    refiner_switch_at: float | None = None


def _number(params: dict[str, str], key: str, kind: type, notes: list[str]) -> object | None:
    value = params.get(key)
    if value is None or not value.strip():
        return None
    try:
        return kind(value.strip())
    except ValueError:
        notes.append(f"{key} `{value[:50]}` is not a number; this server's default was used.")
        return None


def rerun_options(
    params: dict[str, str], settings: Settings, upscalers: list[str],
    model_by_hash: Callable[[str], str | None] = lambda short_hash: None,
) -> Rerun:
    """A1111's keys as /imagine's options. Values are checked later by the same checks as
    /imagine's; what this server does not have (a model, a sampler) falls back to its default,
    with a note. The model is found by its name, else by "Model hash" (``model_by_hash``: a
    checkpoint saved under another name, as Civitai finds it), else by its file's name (A1111
    writes "Model" without the subfolder a checkpoint is in here)."""
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
        if model is None and (short_hash := params.get("Model hash")):
            model = model_by_hash(short_hash)
        if model is None:
            model = next((m.name for m in settings.models if _file_stem(m.source) == name.casefold()), None)
        if model is None:
            notes.append(f"Model `{name[:100]}` is not on this server; its default model `{settings.default_model}` was used.")
    sampler, schedule_type = _sampler(params, notes) or (None, None)
    seed = _number(params, "Seed", int, notes)
    vae = None
    if name := params.get("VAE"):
        vae = find_vae(name, settings_vae_files(settings))
        if vae is None:
            notes.append(f"VAE `{name[:100]}` is not on this server; the model's own was used.")
            vae = NONE
    clip_skip = _number(params, "Clip skip", int, notes)
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
        vae=vae,
        clip_skip=clip_skip,  # type: ignore[arg-type]
        schedule_type=schedule_type,
        eta=_eta(params, sampler, notes),
        # A1111 writes RNG and ENSD only when they are not its defaults (GPU, 0).
        rng=_rng(params, notes),
        ensd=_number(params, "ENSD", int, notes) or 0,  # type: ignore[arg-type]
        seed_resize_from=params.get("Seed resize from") or None,
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
    refiner, switch_at = _refiner(params, settings, notes)
    if not_kept := [key for key in params if key not in _READ_KEYS and key not in _RECORD_KEYS]:
        if "Denoising strength" in hires or "scale" in hires:
            not_kept = [key for key in not_kept if key != "Denoising strength"]
        shown = ", ".join(f"`{key[:40]}`" for key in not_kept[:12]) + (" and more" if len(not_kept) > 12 else "")
        if not_kept:
            notes.append(f"Not kept (this server has no such setting): {shown}.")
    return Rerun(options, hires, notes, refiner, switch_at)


def _refiner(params: dict[str, str], settings: Settings, notes: list[str]) -> tuple[str | None, float | None]:
    """A1111's "Refiner: name [hash]" as this server's model of that name, and its switch."""
    title = params.get("Refiner")
    if not title:
        return None, None
    name = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", title.strip())
    found = next((m.name for m in settings.models if m.name.casefold() == name.casefold()), None)
    if found is None:
        notes.append(f"Refiner `{name[:100]}` is not on this server; the job runs without one.")
        return None, None
    return found, _number(params, "Refiner switch at", float, notes)  # type: ignore[return-value]


# The keys Re-run reads, and those that only record what was used (hashes, the version).
_READ_KEYS = frozenset({
    PROMPT_KEY, NEGATIVE_PROMPT_KEY, "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model",
    "VAE", "Clip skip", "Tiling", "Hires upscale", "Hires steps", "Hires upscaler", "Variation seed",
    "Variation seed strength", "Eta", "Eta DDIM", "ENSD", "RNG", "Seed resize from", "Refiner", "Refiner switch at",
})
_RECORD_KEYS = frozenset({"Model hash", "VAE hash", "Lora hashes", "TI hashes", "Hashes", "Version"})


def _eta(params: dict[str, str], sampler: str | None, notes: list[str]) -> float | None:
    """A1111 writes "Eta" (k-diffusion samplers) or "Eta DDIM" (DDIM's) when not the default."""
    info = SAMPLERS.get(sampler or "")
    key = info.eta_infotext_key if info is not None and info.uses_eta else None
    for written in ("Eta", "Eta DDIM"):
        if written in params and written != key:
            notes.append(f"{written} `{params[written][:20]}` was left out: this job's sampler does not use it.")
    return _number(params, key, float, notes) if key else None  # type: ignore[return-value]


def _rng(params: dict[str, str], notes: list[str]) -> str:
    written = params.get("RNG", RNG_SOURCES[0])
    found = next((known for known in RNG_SOURCES if known.casefold() == written.strip().casefold()), None)
    if found is None:
        notes.append(f"RNG `{written[:20]}` is not a random number source here; {RNG_SOURCES[0]} was used.")
    return found or RNG_SOURCES[0]


def _file_stem(source: str) -> str | None:
    """A single-file checkpoint's name without suffix, casefolded; None for other sources."""
    path = PurePath(source)
    return path.stem.casefold() if path.suffix.lower() in SINGLE_FILE_SUFFIXES else None


def _sampler(params: dict[str, str], notes: list[str]) -> tuple[str, str] | None:
    """(sampler, schedule type) as A1111 reads "Sampler" and "Schedule type" (an old combined
    name such as "DPM++ 2M Karras" too); what is not here falls back, with a note."""
    name = params.get("Sampler")
    if not name:
        return None
    schedule = params.get("Schedule type") or None
    try:
        sampler, schedule_type = split_combined_name(name, schedule, convert_automatic=False)
    except UnknownNameError as error:
        if error.kind == "sampler":
            notes.append(f"Sampler `{name[:100]}` is not available here; the default sampler was used.")
            return None
        notes.append(f"Schedule type `{(schedule or '')[:50]}` is not available here; {name[:50]}'s own was used.")
        return _sampler({"Sampler": name}, notes)
    if not SAMPLERS[sampler].accepts(schedule_type):
        # A1111's timestep samplers (DDIM, PLMS, UniPC) ignore the schedule type it wrote.
        schedule_type = "Automatic"
    return sampler, schedule_type


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
