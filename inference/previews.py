"""Cheap previews of an image while it forms, straight from the latents.

A1111's "Approx cheap": a fixed linear map from the 4 latent channels to RGB. It costs a tiny
matrix product, never touches the VAE (whose decode would cost as much as a step), and is
good enough to show composition and colours in a Discord message.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

from inference.images import make_grid

# A1111 modules/sd_vae_approx.py cheap_approximation, for SD 1.x/2.x latents (4 channels):
# row c is latent channel c's contribution to (R, G, B).
SD1_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)

# Latent channel count -> map. SD3/Flux latents (16 channels) have no map here yet.
LATENT_RGB_MAPS: dict[int, tuple[tuple[float, float, float], ...]] = {4: SD1_LATENT_RGB}

JPEG_QUALITY = 80


def latents_to_rgb(latents: torch.Tensor) -> torch.Tensor | None:
    """(B, C, h, w) latents -> (B, h, w, 3) uint8 on the CPU, or None for an unknown C."""
    if latents.ndim != 4:
        raise ValueError(f"latents must have shape (B, C, h, w), got {tuple(latents.shape)}")
    coefficients = LATENT_RGB_MAPS.get(latents.shape[1])
    if coefficients is None:
        return None
    weights = torch.tensor(coefficients, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("bchw,cr->bhwr", latents.float(), weights)
    # The map lands roughly in [-1, 1], like the VAE's output.
    rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    return (rgb * 255).round().to(torch.uint8).cpu()


def make_preview(latents: torch.Tensor, max_side: int = 256) -> bytes | None:
    """A JPEG of the batch (a grid when there are several images), at most max_side px a side.

    Returns None when there is no RGB map for these latents' channel count.
    """
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8 px, got {max_side}")
    pixels = latents_to_rgb(latents.detach())
    if pixels is None:
        return None
    sheet = make_grid([Image.fromarray(tile.numpy(), "RGB") for tile in pixels])
    # Latents are 1/8 of the image's side; scale up towards the image's own size but never
    # past max_side, keeping the aspect ratio.
    scale = min(max_side / max(sheet.size), 8.0)
    size = (max(1, round(sheet.width * scale)), max(1, round(sheet.height * scale)))
    if size != sheet.size:
        sheet = sheet.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
