"""Cheap previews of an image while it forms, straight from the latents; never the full VAE.

Two methods, as A1111 has them ([worker] preview_method):
- "approx", A1111's "Approx cheap": a fixed linear map from the 4 latent channels to RGB. A
  tiny matrix product, good enough to show composition and colours in a Discord message.
- "taesd": TAESD (diffusers' AutoencoderTiny), a distilled decoder of about a million
  parameters that gives a recognisable image for a few milliseconds on a GPU.
The full VAE is never used: its decode costs about as much as a denoising step, at every
preview. Either is meant to cost a small fraction of sampling time; where one costs more
(TAESD on a CPU), ProgressReporter (inference/progress.py), which times every preview,
spaces them out to stay within that budget (bench.previews measures both).

SD 1.x/2.x and SDXL latents both have 4 channels but different colours, so the map, and the
TAESD (TAESD or TAESD-XL), are chosen by the model family (``latent_family``), not by the
channel count; an SDXL job without a TAESD-XL gets "approx" previews.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from inference.diffusers_versions import dtype_keyword
from inference.images import make_grid

log = logging.getLogger(__name__)

# A1111 modules/sd_vae_approx.py cheap_approximation: row c is latent channel c's
# contribution to (R, G, B). SD 1.x/2.x latents:
SD1_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
# ... and SDXL's, whose VAE was trained anew.
SDXL_LATENT_RGB = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)

SD1 = "sd1"
SDXL = "sdxl"
# Model family -> map. SD3/Flux latents (16 channels) have no map here yet.
LATENT_RGB_MAPS: dict[str, tuple[tuple[float, float, float], ...]] = {
    SD1: SD1_LATENT_RGB,
    SDXL: SDXL_LATENT_RGB,
}

APPROX = "approx"
TAESD = "taesd"

JPEG_QUALITY = 80


def latent_family(pipe: object) -> str:
    """The latent space a pipeline works in: "sdxl" for the SDXL pipelines, else "sd1"."""
    return SDXL if "StableDiffusionXL" in type(pipe).__name__ else SD1


def latents_to_rgb(latents: torch.Tensor, family: str = SD1) -> torch.Tensor | None:
    """(B, C, h, w) latents -> (B, h, w, 3) uint8 on the CPU; None when the map does not fit."""
    if latents.ndim != 4:
        raise ValueError(f"latents must have shape (B, C, h, w), got {tuple(latents.shape)}")
    coefficients = LATENT_RGB_MAPS.get(family)
    if coefficients is None or latents.shape[1] != len(coefficients):
        return None
    weights = torch.tensor(coefficients, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("bchw,cr->bhwr", latents.float(), weights)
    # The map lands roughly in [-1, 1], like the VAE's output.
    return to_uint8(rgb)


def taesd_to_rgb(taesd: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) latents as the UNet sees them -> (B, 8h, 8w, 3) uint8 on the CPU.

    TAESD takes the latents unscaled (its scaling factor is 1: diffusers' pipelines divide by
    ``vae.config.scaling_factor`` before decoding) and returns images in [-1, 1].
    """
    parameter = next(taesd.parameters())
    with torch.inference_mode():
        images = taesd.decode(latents.to(parameter.device, parameter.dtype)).sample
    return to_uint8(images.float().permute(0, 2, 3, 1))


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) values in [-1, 1], as the VAE and the maps give them -> uint8 on the CPU."""
    rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    return (rgb * 255).round().to(torch.uint8).cpu()


def load_taesd(source: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """TAESD from a hub id ("madebyollin/taesd" for SD 1.x/2.x, "madebyollin/taesdxl" for
    SDXL) or a local folder, on the worker's device; a ValueError names what is wrong."""
    from diffusers import AutoencoderTiny

    if not source:
        raise ValueError('preview_method "taesd" needs taesd_source (a hub id or a folder)')
    path = Path(source).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"taesd_source {source!r} is a path but holds no config.json")
    try:
        taesd = AutoencoderTiny.from_pretrained(
            str(path) if path.exists() else source, **{dtype_keyword(): dtype}
        )
    except (OSError, ValueError) as exc:
        raise ValueError(f"taesd_source {source!r} cannot be loaded: {exc}") from exc
    return taesd.to(device).eval().requires_grad_(False)


class Previewer:
    """Makes the preview JPEGs of a worker, with its configured method.

    ``family`` says which model family the latents come from (the PipelineCache knows which
    pipeline runs); without it, SD 1.x is assumed.
    """

    def __init__(
        self,
        method: str = APPROX,
        max_side: int = 256,
        taesd: torch.nn.Module | None = None,
        family: Callable[[], str] | None = None,
        taesd_xl: torch.nn.Module | None = None,
    ):
        if method not in (APPROX, TAESD):
            raise ValueError(f"preview_method must be {APPROX!r} or {TAESD!r}, got {method!r}")
        if method == TAESD and taesd is None:
            raise ValueError('preview_method "taesd" needs a loaded TAESD (taesd_source)')
        if max_side < 8:
            raise ValueError(f"max_side must be at least 8 px, got {max_side}")
        self.method = method
        self.max_side = max_side
        self.taesd = taesd
        self.taesd_xl = taesd_xl
        self._family = family or (lambda: SD1)
        # What a preview costs per latent value, as ProgressReporter (inference/progress.py) last
        # timed one: it spaces previews to keep them within their budget (see record_cost).
        self.seconds_per_value = 0.0
        self._shapes_timed: set[tuple[int, ...]] = set()

    def record_cost(self, seconds: float, latents: torch.Tensor) -> None:
        """Keep what a preview of ``latents`` took. The first at each shape is not kept: it
        pays one-time costs (cuDNN's algorithm search, the allocator's growth), and a cost
        taken too high would space previews out past the jobs that could measure it again."""
        shape = tuple(latents.shape)
        if shape in self._shapes_timed:
            self.seconds_per_value = seconds / max(1, latents.numel())
        elif len(self._shapes_timed) < 1000:
            self._shapes_timed.add(shape)

    def held_back(self) -> None:
        """A pass made no preview because of the cost kept: halve it, so a cost measured
        too high (a preview that met a garbage collection) is measured again within a few
        jobs instead of keeping previews away for good."""
        self.seconds_per_value /= 2

    def make(self, latents: torch.Tensor) -> bytes | None:
        """A JPEG of the batch (a grid when there are several images), or None when these
        latents have no preview (a family or channel count without a map)."""
        latents = latents.detach()
        family = self._family()
        decoder = self.taesd_xl if family == SDXL else self.taesd
        if self.method == TAESD and decoder is not None and latents.ndim == 4 and latents.shape[1] == 4:
            # Full-size pixels: only ever scaled down.
            return jpeg_sheet(taesd_to_rgb(decoder, latents), self.max_side, max_scale=1.0)
        pixels = latents_to_rgb(latents, family)
        return None if pixels is None else jpeg_sheet(pixels, self.max_side)


def make_preview(latents: torch.Tensor, max_side: int = 256, family: str = SD1) -> bytes | None:
    """An "approx" preview JPEG of the batch, at most max_side px a side.

    Returns None when there is no RGB map for these latents.
    """
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8 px, got {max_side}")
    pixels = latents_to_rgb(latents.detach(), family)
    return None if pixels is None else jpeg_sheet(pixels, max_side)


def jpeg_sheet(pixels: torch.Tensor, max_side: int, max_scale: float = 8.0) -> bytes:
    """(B, h, w, 3) uint8 pixels -> one JPEG of them side by side, at most max_side px."""
    sheet = make_grid([Image.fromarray(tile.numpy(), "RGB") for tile in pixels])
    # Approx pixels are 1/8 of the image's side: scale up towards the image's own size
    # (max_scale) but never past max_side, keeping the aspect ratio.
    scale = min(max_side / max(sheet.size), max_scale)
    size = (max(1, round(sheet.width * scale)), max(1, round(sheet.height * scale)))
    if size != sheet.size:
        sheet = sheet.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
