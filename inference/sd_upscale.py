"""A1111's "SD upscale" script (scripts/sd_upscale.py; the community's "Ultimate SD upscale"):
upscale with an upscaler, then redraw the result tile by tile with img2img at a low denoising
strength, so that the detail an upscaler cannot invent is painted in by the model.

As A1111 does it: the upscaled image is cut into tiles of the model's base size (512 SD 1.x,
1024 SDXL: the size it draws best at) that overlap by ``overlap_for(tile)`` pixels
(images.split_grid), each tile is img2img'd with the job's prompt and seed + its index (A1111
adds one to the seed after every tile), and the tiles are put back with their overlaps blended
by a linear ramp (images.combine_grid), so no seam shows. Progress counts the upscaler's tiles
and then every tile's denoising steps; a cancel stops between two steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from diffusers import DiffusionPipeline
from PIL import Image

from inference.common.protocol import MAX_SD_UPSCALE_SIDE, GenerateRequest, ImageInput, JobKind
from inference.generate import InvalidRequestError, IsCancelled, OnStep, uses_k_sampling
from inference.img2img import Progress, check_cancelled, encode, img2img_pass, img2img_schedule, load_image
from inference.models import PipelineCache
from inference.tiling import seamless_tiling
from inference.upscale import Upscalers

__all__ = ["Grid", "combine_grid", "infotext_request", "overlap_for", "run_sd_upscale", "split_grid", "tile_overlap"]



def overlap_for(tile: int) -> int:
    """The tiles' overlap: A1111's default 64 px for 512 px tiles, the same share for others."""
    return max(8, tile // 8 // 8 * 8)


@dataclass
class Grid:
    """A1111's images.Grid: rows of (y, height, [[x, width, tile], ...]) over an image."""

    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int
    tiles: list[list] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(row) for _y, _h, row in self.tiles)


def split_grid(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> Grid:
    """A1111's images.split_grid: as few tiles as cover the image with at least ``overlap``
    shared between neighbours, spread evenly, the last ones flush with the far edges."""
    width, height = image.size
    cols = max(1, math.ceil((width - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((height - overlap) / (tile_h - overlap)))
    dx = (width - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (height - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid(tile_w, tile_h, width, height, overlap)
    for row in range(rows):
        y = min(int(row * dy), height - tile_h)
        cells = []
        for col in range(cols):
            x = min(int(col * dx), width - tile_w)
            cells.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, cells])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """A1111's images.combine_grid: each tile pasted over the one before it, its first
    ``overlap`` pixels (left, then top) faded in linearly so the seam blends."""
    ramp = np.arange(grid.overlap, dtype=np.float32) * 255 / grid.overlap
    mask_w = Image.fromarray(np.repeat(ramp.reshape(1, -1), grid.tile_h, axis=0).astype(np.uint8), "L")
    mask_h = Image.fromarray(np.repeat(ramp.reshape(-1, 1), grid.image_w, axis=1).astype(np.uint8), "L")
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                line.paste(tile, (0, 0))
                continue
            line.paste(tile.crop((0, 0, grid.overlap, h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((grid.overlap, 0, w, h)), (x + grid.overlap, 0))
        if y == 0:
            combined.paste(line, (0, 0))
            continue
        combined.paste(line.crop((0, 0, line.width, grid.overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, grid.overlap, line.width, h)), (0, y + grid.overlap))
    return combined


def base_tile(pipe: DiffusionPipeline) -> int:
    """The model's base size (what its UNet was trained at): 512 SD 1.x, 1024 SDXL."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def tile_size(pipe: DiffusionPipeline, request: GenerateRequest) -> tuple[int, int]:
    """The tiles' (width, height): the base size, or the image's side where it is smaller."""
    side = base_tile(pipe)
    return min(side, request.width) // 8 * 8, min(side, request.height) // 8 * 8


def infotext_request(cache: PipelineCache, request: GenerateRequest) -> GenerateRequest:
    """The request whose infotext the result carries: A1111 writes the tile as "Size", and
    the overlap used (an SD upscale's model is loaded: it just ran)."""
    assert request.upscale is not None
    width, height = tile_size(cache.get(request.model), request)
    upscale = replace(request.upscale, tile_overlap=tile_overlap(width, height))
    return replace(request, width=width, height=height, upscale=upscale)


def tile_overlap(tile_w: int, tile_h: int) -> int:
    return min(overlap_for(max(tile_w, tile_h)), tile_w // 2, tile_h // 2)


def validate_sd_upscale(request: GenerateRequest, upscalers: Upscalers) -> None:
    if request.image is None or request.upscale is None:
        raise InvalidRequestError("an SD upscale job needs a source image and upscale options")
    if max(request.width, request.height) > MAX_SD_UPSCALE_SIDE:
        raise InvalidRequestError(
            f"SD upscale to {request.width}x{request.height} is too large: at most {MAX_SD_UPSCALE_SIDE} px "
            "on the longer side; pick a smaller scale"
        )
    if request.width % 8 or request.height % 8:
        raise InvalidRequestError(f"the SD upscale size must be multiples of 8, got {request.width}x{request.height}")
    name = request.upscale.upscaler
    if not upscalers.has(name):
        raise InvalidRequestError(f"unknown upscaler `{name}`")


def run_sd_upscale(
    cache: PipelineCache, upscalers: Upscalers, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled
) -> list[Image.Image]:
    """The job's one image: its source upscaled to width x height and redrawn by tiles."""
    validate_sd_upscale(request, upscalers)
    assert request.image is not None and request.upscale is not None
    base = cache.get(request.model)
    tile_w, tile_h = tile_size(base, request)
    overlap = tile_overlap(tile_w, tile_h)
    source = load_image(request.image.path, "source image")
    # The upscaler's tiles are counted as steps until the diffusion's total is known.
    upscaled = upscalers.upscale_to(
        source, request.width, request.height, request.upscale.upscaler, is_cancelled,
        on_progress=lambda done, total: on_step(done, total, None),
    )
    grid = split_grid(upscaled, tile_w, tile_h, overlap)
    tile_request = replace(
        request, kind=JobKind.IMG2IMG, width=tile_w, height=tile_h, upscale=None,
        image=ImageInput(request.image.path, request.image.denoising_strength),
    )
    schedule = img2img_schedule(request.steps, request.image.denoising_strength, uses_k_sampling(base, tile_request))
    progress = Progress(on_step, max(1, schedule.steps) * grid.count)
    seed = request.seeds[0]
    index = 0
    with seamless_tiling(base, request.tiling):
        for _y, _h, row in grid.tiles:
            for cell in row:
                check_cancelled(is_cancelled)
                if schedule.steps:  # strength 0 leaves the upscaler's tile as it is
                    latents = encode(base, [cell[2]])
                    [cell[2]] = img2img_pass(
                        base, tile_request, latents, [seed + index], schedule, progress, is_cancelled
                    )
                index += 1
    return [combine_grid(grid)]
