"""Seamless tiling (--tile, A1111's "Tiling"): every convolution wraps around the image edges.

A1111 (sd_hijack.apply_circular) switches every Conv2d of the model to circular padding for
the job: what leaves the image on the right comes back on the left, so the image tiles
without seams. Here the UNet's and the VAE's convolutions are switched (CLIP has none), for
the duration of a ``with`` block, and switched back afterwards whatever happens, a cancelled
or failed job included, so the next job is made without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from diffusers import DiffusionPipeline
from torch import nn


@contextmanager
def seamless_tiling(pipe: DiffusionPipeline, enabled: bool = True) -> Iterator[None]:
    """Circular padding in ``pipe``'s UNet and VAE inside the block (nothing when disabled).

    Nesting is fine: each block restores the modes it found. torch reads ``padding_mode`` at
    every forward, so setting the attribute is enough (LoRA-wrapped convolutions keep an
    nn.Conv2d inside, which is switched too).
    """
    if not enabled:
        yield
        return
    convolutions = [
        module
        for model in (pipe.unet, pipe.vae)
        for module in model.modules()
        if isinstance(module, nn.Conv2d)
    ]
    saved = [(module, module.padding_mode) for module in convolutions]
    try:
        for module in convolutions:
            module.padding_mode = "circular"
        yield
    finally:
        for module, mode in saved:
            module.padding_mode = mode
