"""Upscaling: model upscalers (Real-ESRGAN, ESRGAN, SwinIR, ... through spandrel) and Lanczos.

Upscale jobs use this directly; the hires fix and outpaint use ``Upscalers.upscale_to``. Models
run on overlapping tiles so that a 4x of a large image fits a small GPU, and the tiles are
blended so that the seams do not show (see ``_axis_weights``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import spandrel
import torch
from PIL import Image

from inference import images
from inference.common import infotext
from inference.generate import InvalidRequestError, IsCancelled, JobCancelledError, OnStep
from inference.models import free_accelerator_memory
from inference.common.protocol import LANCZOS, GenerateRequest
from inference.common.upscaler_files import upscaler_files

log = logging.getLogger(__name__)

# An upscale job's output may not be larger than this on its longer side: 8192 px is already
# 200 MB of RGB, and the blend buffer holds it in float32.
MAX_OUTPUT_SIDE = 8192
# A1111's upscale loop runs a model at most three times (a 2x model reaching 8x).
MAX_PASSES = 3

# (tiles done, total tiles) over all the passes of one upscale_to call.
OnTile = Callable[[int, int], None]


class UpscalerLoadError(ValueError):
    """An upscaler file exists but is not a model we can use; the message names the file."""


class Upscalers:
    """The upscalers in the configured folders, by name, with the last used model kept loaded.

    One model at a time: a 4x ESRGAN is 64 MB, but keeping every model an admin dropped in the
    folder resident on a GPU that also holds an SD checkpoint is not worth the memory.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        device: torch.device,
        dtype: torch.dtype,
        tile: int = 256,
        tile_overlap: int = 32,
    ):
        if tile < 0 or tile_overlap < 0:
            raise ValueError(
                f"upscale_tile and upscale_tile_overlap must be >= 0, got {tile}, {tile_overlap}"
            )
        if tile and tile_overlap >= tile:
            raise ValueError(
                f"upscale_tile_overlap ({tile_overlap}) must be smaller than upscale_tile ({tile})"
            )
        self.dirs = tuple(dirs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.tile = tile
        self.tile_overlap = tile_overlap
        # (file, its mtime, the model): a file replaced under the same name is loaded again.
        self._loaded: tuple[Path, int, spandrel.ImageModelDescriptor] | None = None

    def _files(self) -> dict[str, Path]:
        # Listed on every use (a few directory reads): a model an admin adds while the bot runs
        # is usable at once, as the bot, which lists the same folders, already offers it.
        files = upscaler_files(self.dirs)
        files.pop(LANCZOS, None)  # the name is taken by the plain resize
        return files

    def names(self) -> list[str]:
        """Every upscaler name a job may use: Lanczos first, then the model files by name."""
        return [LANCZOS, *self._files()]

    def has(self, name: str) -> bool:
        return name == LANCZOS or name in self._files()

    def upscale_to(
        self,
        image: Image.Image,
        width: int,
        height: int,
        name: str,
        is_cancelled: IsCancelled = lambda: False,
        on_progress: OnTile | None = None,
    ) -> Image.Image:
        """``image`` (as RGB) resized to exactly width x height with the upscaler ``name``.

        A model runs until the image is at least the target size (A1111's loop: at most
        MAX_PASSES times), then Lanczos makes the exact size, which also brings a 4x model's
        result down to a 2x target. Raises InvalidRequestError for an unknown name, and
        JobCancelledError between two tiles once ``is_cancelled()`` is true.
        """
        if width < 1 or height < 1:
            raise InvalidRequestError(f"upscale target must be at least 1x1, got {width}x{height}")
        image = image if image.mode == "RGB" else image.convert("RGB")
        if name == LANCZOS:
            return _resize(image, width, height)
        model = self._model(name)
        tile = 0 if model.tiling == spandrel.ModelTiling.INTERNAL else self.tile
        sizes = _pass_sizes(image.size, (width, height), model.scale)
        total = sum(_tile_count(size, tile, self.tile_overlap) for size in sizes)
        done = 0

        def tile_done() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        for _ in sizes:
            image = _run_model(model, image, tile, self.tile_overlap, tile_done, is_cancelled)
        return _resize(image, width, height)

    def _model(self, name: str) -> spandrel.ImageModelDescriptor:
        path = self._files().get(name)
        if path is None:
            raise InvalidRequestError(
                f"unknown upscaler {name!r}; available: {', '.join(self.names())}"
            )
        mtime = path.stat().st_mtime_ns
        if self._loaded is not None and self._loaded[:2] == (path, mtime):
            return self._loaded[2]
        if self._loaded is not None:
            # Free the previous model before loading the next, so both never share the GPU.
            self._loaded = None
            free_accelerator_memory()
        model = load_upscaler(path, self.device, self.dtype)
        self._loaded = (path, mtime, model)
        return model


def load_upscaler(
    path: str | Path, device: torch.device, dtype: torch.dtype
) -> spandrel.ImageModelDescriptor:
    """Load an upscaler file with spandrel, checked, in eval mode, in the dtype it supports.

    A .pth is a pickle, and a pickle can run code when loaded. spandrel's ModelLoader unpickles
    it with its RestrictedUnpickler, an allow-list (OrderedDict, tensor rebuilds, storages) that
    refuses any other global before it is called: the same protection as torch.load's
    weights_only=True (which torch itself switches off when a pickle_module is passed, so the
    allow-list is what protects us). .safetensors files hold no code at all.
    """
    path = Path(path)
    log.info("loading upscaler %s", path)
    try:
        model = spandrel.ModelLoader(device=device).load_from_file(path)
    except Exception as exc:  # unpickling, unknown architecture, truncated file: the admin's
        raise UpscalerLoadError(
            f"upscaler file {path} could not be loaded ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise UpscalerLoadError(
            f"upscaler file {path} holds a {model.architecture.name} model, which is not an "
            "image-to-image model (an inpainting model, say)"
        )
    if model.input_channels != 3 or model.output_channels != 3:
        raise UpscalerLoadError(
            f"upscaler file {path} is a {model.input_channels}-to-{model.output_channels} "
            "channel model; only RGB models (3 to 3) are supported"
        )
    return model.to(_model_dtype(model, device, dtype)).eval()


def _model_dtype(
    model: spandrel.ImageModelDescriptor, device: torch.device, wanted: torch.dtype
) -> torch.dtype:
    """fp32 on the CPU (half kernels there are slow or missing); else the worker's dtype when
    the architecture supports it, falling back to fp16, then fp32."""
    if device.type == "cpu" or wanted == torch.float32:
        return torch.float32
    if wanted == torch.bfloat16 and model.supports_bfloat16:
        return torch.bfloat16
    return torch.float16 if model.supports_half else torch.float32


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _pass_sizes(
    size: tuple[int, int], target: tuple[int, int], scale: int
) -> list[tuple[int, int]]:
    """The input size of each model pass, as A1111's Upscaler.upscale loops.

    Run until the image is at least the target on both sides; a model asked for the source's
    own size (a 1x restoration model) still runs once. A 1x model never grows the image, so
    it runs once at most.
    """
    width, height = size
    sizes = []
    for index in range(MAX_PASSES):
        if width >= target[0] and height >= target[1] and (index > 0 or size != target):
            break
        sizes.append((width, height))
        width, height = width * scale, height * scale
        if scale == 1:
            break
    return sizes


# --- tiles ---------------------------------------------------------------------------------


def _axis_tiles(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles covering 0..length on one axis, spread evenly.

    Every tile is full size (the last one is not a sliver at the edge), and neighbours overlap
    by at least ``overlap``: the count is the smallest that allows that, and spreading the
    tiles evenly only makes the overlaps larger.
    """
    if tile <= 0 or length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def _tile_count(size: tuple[int, int], tile: int, overlap: int) -> int:
    return len(_axis_tiles(size[0], tile, overlap)) * len(_axis_tiles(size[1], tile, overlap))


def _axis_weights(
    starts: list[int], tile_length: int, length: int, scale: int, overlap: int
) -> list[torch.Tensor]:
    """Each tile's blend weight along one axis, per output pixel; they sum to 1 everywhere.

    A tile's output is wrong near an edge it shares with a neighbour, where the model could not
    see the pixels beyond, for as far as the model's receptive field reaches. So along such an
    edge a tile's weight is 0 for the first quarter of the overlap, ramps linearly to 1 over
    the middle half (a crossfade with the neighbour, which hides any seam), and is 1 beyond.
    When the model's receptive field is within overlap/4 input pixels, no output pixel comes
    from a wrong tile pixel, and the tiled result equals the untiled one up to float rounding.
    The image's own borders are not ramped: no other tile covers them.
    """
    margin = overlap // 4 * scale
    ramp = (overlap - 2 * (overlap // 4)) * scale
    span = tile_length * scale
    # Distance of each output pixel's centre from the tile's leading edge.
    distance = torch.arange(span, dtype=torch.float64) + 0.5
    if ramp:
        rising = ((distance - margin) / ramp).clamp(0, 1)
    else:
        rising = torch.ones(span, dtype=torch.float64)
    profiles = []
    for index in range(len(starts)):
        weight = torch.ones(span, dtype=torch.float64)
        if index > 0:
            weight = weight * rising
        if index < len(starts) - 1:
            weight = weight * rising.flip(0)
        profiles.append(weight)
    # Overlaps larger than ``overlap`` (tiles spread evenly) make the ramps not mirror each
    # other exactly; dividing by the sum keeps the weights a partition of 1 regardless.
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, weight in zip(starts, profiles):
        total[start * scale : start * scale + span] += weight
    return [
        (weight / total[start * scale : start * scale + span]).float()
        for start, weight in zip(starts, profiles)
    ]


@torch.inference_mode()
def _run_model(
    model: spandrel.ImageModelDescriptor,
    image: Image.Image,
    tile: int,
    overlap: int,
    tile_done: Callable[[], None],
    is_cancelled: IsCancelled,
) -> Image.Image:
    """One pass of the model over ``image``, tile by tile, blended into a CPU buffer.

    spandrel's descriptor pads each tile (by reflection) to the architecture's size multiple
    and crops the padding off the result, and clamps the output to [0, 1]; a tile at the
    image's edge therefore needs nothing more here. The buffer stays on the CPU so that only
    one tile at a time occupies the GPU.
    """
    scale = model.scale
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    tile_height, tile_width = (min(tile, height), min(tile, width)) if tile else (height, width)
    rows = _axis_tiles(height, tile, overlap)
    columns = _axis_tiles(width, tile, overlap)
    if len(rows) == len(columns) == 1:
        # One tile: its weight is 1 everywhere, so the blend buffer would only copy it. Made
        # into bytes where the model ran, a quarter of the float32 result crosses to the CPU,
        # and the CPU does no float work on a large result (bench.upscale: worker_untiled
        # against bare).
        if is_cancelled():
            raise JobCancelledError
        result = _model_tile(model, pixels)
        tile_done()
        return _to_image(result.float())
    row_weights = _axis_weights(rows, tile_height, height, scale, overlap)
    column_weights = _axis_weights(columns, tile_width, width, scale, overlap)
    output = torch.zeros(3, height * scale, width * scale)
    for top, row_weight in zip(rows, row_weights):
        for left, column_weight in zip(columns, column_weights):
            if is_cancelled():
                raise JobCancelledError
            piece = pixels[:, top : top + tile_height, left : left + tile_width]
            result = _model_tile(model, piece).float().cpu()
            weight = row_weight[:, None] * column_weight[None, :]
            output[
                :,
                top * scale : (top + tile_height) * scale,
                left * scale : (left + tile_width) * scale,
            ] += result * weight
            tile_done()
    return _to_image(output)


def _model_tile(model: spandrel.ImageModelDescriptor, piece: torch.Tensor) -> torch.Tensor:
    """The model's (3, H*scale, W*scale) result for a (3, H, W) piece, on the model's device."""
    result = model(piece.unsqueeze(0).to(model.device, model.dtype))[0]
    expected = (3, piece.shape[1] * model.scale, piece.shape[2] * model.scale)
    if tuple(result.shape) != expected:
        raise RuntimeError(f"upscaler returned {tuple(result.shape)} for a tile, expected {expected}")
    return result


def _to_image(pixels: torch.Tensor) -> Image.Image:
    """A (3, H, W) float tensor in [0, 1], on any device, as an RGB image."""
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


# --- jobs ----------------------------------------------------------------------------------


def run_upscale(
    upscalers: Upscalers, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled
) -> list[Image.Image]:
    """An upscale job: the source image at exactly request.width x request.height.

    Progress is counted in tiles; there are no latents, so no previews.
    """
    options = request.upscale
    if request.image is None or options is None:
        raise InvalidRequestError("an upscale job needs a source image and upscale options")
    if max(request.width, request.height) > MAX_OUTPUT_SIDE:
        raise InvalidRequestError(
            f"upscaled size {request.width}x{request.height} is too large: at most "
            f"{MAX_OUTPUT_SIDE} px on the longer side; pick a smaller scale"
        )
    with Image.open(request.image.path) as source:
        source.load()
        image = upscalers.upscale_to(
            source,
            request.width,
            request.height,
            options.upscaler,
            is_cancelled=is_cancelled,
            on_progress=lambda done, total: on_step(done, total, None),
        )
    return [image]


def upscale_infotext(request: GenerateRequest) -> str:
    """The source image's infotext with A1111's extras keys added to its last line.

    The upscale changes no generation parameter, so the source's infotext stays true of the
    result, and A1111's PNG Info and Civitai still show how it was made.
    """
    options = request.upscale
    extras = (
        f"Postprocess upscale by: {infotext.format_number(options.scale)}, "
        f"Postprocess upscaler: {infotext.quote(options.upscaler)}"
    )
    source = images.read_infotext(request.image.path)
    if not source or not source.strip():
        return extras
    return f"{source.rstrip()}, {extras}"
