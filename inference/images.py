"""Saving finished images as PNGs with their infotext, and the grid of a multi-image job.

Files land in ``outputs_dir/YYYY-MM-DD/``: ``{job_id:06d}-{index}-{seed}.png`` per image and
``{job_id:06d}-grid.png``. The job id prefix keeps a job's files together and sorted; the seed
in the name lets an admin find an image from a user's report. The infotext goes in the PNG
"parameters" text chunk, where A1111 and most SD tools look for it.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

INFOTEXT_CHUNK = "parameters"


def day_folder(outputs_dir: str | Path, day: dt.date | None = None) -> Path:
    return Path(outputs_dir) / (day or dt.date.today()).isoformat()


def image_path(
    outputs_dir: str | Path, job_id: int, index: int, seed: int, day: dt.date | None = None
) -> Path:
    return day_folder(outputs_dir, day) / f"{job_id:06d}-{index}-{seed}.png"


def grid_path(outputs_dir: str | Path, job_id: int, day: dt.date | None = None) -> Path:
    return day_folder(outputs_dir, day) / f"{job_id:06d}-grid.png"


def save_png(image: Image.Image, path: str | Path, infotext: str, compress_level: int = 1) -> Path:
    """Write ``image`` to ``path`` (folders created) with ``infotext`` in its parameters chunk."""
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0..9, got {compress_level!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png_info = PngInfo()
    # iTXt rather than tEXt when needed: tEXt is Latin-1 only and prompts are often not.
    png_info.add_text(INFOTEXT_CHUNK, infotext, zip=False)
    # Write to a temporary name first, so the bot never uploads a half-written file.
    partial = path.with_name(path.name + ".partial")
    image.save(partial, format="PNG", pnginfo=png_info, compress_level=compress_level)
    partial.replace(path)
    return path


# Threads that write a job's PNGs side by side: zlib and PNG filtering run without the GIL, so
# a batch's files take about the time of one per core. Written one after the other, a batch's
# PNGs leave the GPU idle for a sizeable share of the job (bench.pipeline: worker_job against
# worker_generate; figures in docs/performance.md).
PNG_WRITERS = min(8, os.cpu_count() or 1)
_writers: ThreadPoolExecutor | None = None
_writers_lock = threading.Lock()


def save_pngs(files: Sequence[tuple[Image.Image, str | Path, str]], compress_level: int = 1) -> None:
    """save_png for each (image, path, infotext), side by side; returns when all are written.

    The first error is raised once every write has ended, so no file is still being written
    when the job's failure is reported.
    """
    global _writers
    if len(files) <= 1:
        for image, path, text in files:
            save_png(image, path, text, compress_level)
        return
    with _writers_lock:
        if _writers is None:
            _writers = ThreadPoolExecutor(PNG_WRITERS, thread_name_prefix="png")
    futures = [_writers.submit(save_png, image, path, text, compress_level) for image, path, text in files]
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


def read_infotext(path: str | Path) -> str | None:
    """The infotext a PNG carries in its parameters chunk, or None."""
    with Image.open(path) as image:
        image.load()
        return image.text.get(INFOTEXT_CHUNK) if hasattr(image, "text") else None


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) without empty cells where possible: 2 -> 1x2, 3 -> 1x3, 4 -> 2x2.

    A1111's layout with "prevent empty spots": start from floor(sqrt(n)) rows and go down
    until the rows divide the count.
    """
    if count < 1:
        raise ValueError(f"a grid needs at least one image, got {count}")
    rows = math.isqrt(count)
    while count % rows:
        rows -= 1
    return rows, math.ceil(count / rows)


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """The images side by side in grid_shape's layout, each cell the size of the first image."""
    if not images:
        raise ValueError("a grid needs at least one image, got none")
    rows, columns = grid_shape(len(images))
    cell_width, cell_height = images[0].size
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height))
    for index, image in enumerate(images):
        if image.size != (cell_width, cell_height):
            raise ValueError(
                f"grid images must share one size: image {index} is {image.size}, "
                f"image 0 is {(cell_width, cell_height)}"
            )
        grid.paste(image, ((index % columns) * cell_width, (index // columns) * cell_height))
    return grid
