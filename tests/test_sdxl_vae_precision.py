"""The SDXL VAE in half precision without black images: a decode that overflows float16 is
done again in float32 (A1111's automatic revert), on the CPU with a tiny VAE whose float16
activations overflow."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from inference.common.protocol import ModelSpec
from inference.img2img import decode, encode
from inference.models import load_pipeline
from inference.vae_precision import guard_vae_precision


@pytest.fixture
def half_pipe(tiny_sdxl_dir):
    """The tiny SDXL in float16, its VAE's first decoder convolution scaled to the edge of
    float16 (60000): its weights are finite, the activations of large latents overflow."""
    pipe = load_pipeline(ModelSpec("tiny-xl", str(tiny_sdxl_dir)), torch.device("cpu"), torch.float16)
    conv = pipe.vae.decoder.conv_in
    with torch.no_grad():
        conv.weight.mul_(60000 / conv.weight.float().abs().max())
    assert torch.isfinite(conv.weight).all()
    return pipe


LATENTS = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 100


def test_an_unguarded_half_vae_makes_nans_here(half_pipe):
    # What the guard is for: without it this decode is all NaNs, a black image.
    with torch.no_grad():
        raw = half_pipe.vae.decode(LATENTS.half() / half_pipe.vae.config.scaling_factor).sample
    assert torch.isnan(raw).all()


def test_nans_in_half_precision_are_decoded_again_in_float32(half_pipe, caplog):
    assert guard_vae_precision(half_pipe)
    assert not half_pipe.vae.config.force_upcast  # the guard replaces diffusers' upcast-always
    with caplog.at_level(logging.WARNING, logger="inference.vae_precision"):
        [image] = decode(half_pipe, LATENTS.half())
    assert "A tensor with NaNs was produced in VAE" in caplog.text
    assert half_pipe.vae.dtype == torch.float32  # kept in float32 from then on, as A1111
    pixels = np.asarray(image)
    assert pixels.std() > 0  # a picture, not a black square
    # The float32 VAE's own decode of the same latents.
    with torch.no_grad():
        expected = half_pipe.vae.decode(LATENTS / half_pipe.vae.config.scaling_factor).sample
    assert np.abs(pixels.astype(int) - np.asarray(half_pipe.image_processor.postprocess(expected)[0]).astype(int)).max() <= 1
    # Encoding (img2img's start) works through the guard too, now in float32.
    assert torch.isfinite(encode(half_pipe, [image])).all()


def test_a_float32_vae_is_left_alone(tiny_sdxl_pipe):
    assert not guard_vae_precision(tiny_sdxl_pipe)
    assert "decode" not in vars(tiny_sdxl_pipe.vae)
