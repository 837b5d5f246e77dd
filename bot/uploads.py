"""Images that fit the interaction's attachment_size_limit: PNG when it fits, else smaller.

Discord answers 413 to an upload over the limit and the result would be lost; a big upscale
goes out as a high-quality JPEG or WebP instead, and only as a last resort smaller in pixels.
Encoding runs in a thread: a 2048 px PNG takes long enough to stall the event loop.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import discord
from PIL import Image

DEFAULT_LIMIT = 10 * 1024 * 1024  # Discord's limit for servers without boosts
# The multipart envelope and the embed count against the request size too: keep 1/16 of the
# limit (64 KiB of a 10 MiB one) for them.
_MAX_MARGIN = 64 * 1024
_ATTEMPTS = (("JPEG", 95), ("WEBP", 90), ("JPEG", 85), ("WEBP", 80), ("JPEG", 75))


def fit_image_bytes(data: bytes, limit: int, stem: str) -> tuple[bytes, str]:
    """The image as bytes at most `limit` long, and a filename with the right extension."""
    budget = limit - min(_MAX_MARGIN, limit // 16)
    if len(data) <= budget:
        return data, f"{stem}.png"
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    while True:
        for fmt, quality in _ATTEMPTS:
            encoded = io.BytesIO()
            image.save(encoded, format=fmt, quality=quality)
            if encoded.tell() <= budget:
                return encoded.getvalue(), f"{stem}.{'jpg' if fmt == 'JPEG' else 'webp'}"
        image = image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)), Image.Resampling.LANCZOS)


async def image_file(path: str | Path, limit: int | None, stem: str) -> discord.File:
    return await _fitted_file(Path(path).read_bytes, limit, stem)


async def bytes_file(data: bytes, limit: int | None, stem: str) -> discord.File:
    """An image already in memory (a blurred copy, bot.flagged_results), fitted like image_file's."""
    return await _fitted_file(lambda: data, limit, stem)


async def _fitted_file(read: Callable[[], bytes], limit: int | None, stem: str) -> discord.File:
    # Read and fitted in one trip to a thread: each trip is a wake-up of the loop.
    def read_and_fit() -> tuple[bytes, str]:
        return fit_image_bytes(read(), limit or DEFAULT_LIMIT, stem)

    fitted, filename = await asyncio.to_thread(read_and_fit)
    return discord.File(io.BytesIO(fitted), filename=filename)


def preview_file(jpeg: bytes) -> discord.File:
    return discord.File(io.BytesIO(jpeg), filename="preview.jpg")
