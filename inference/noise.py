"""Noise exactly as AUTOMATIC1111 1.10 makes it, so that a seed gives A1111's image.

A1111 (modules/rng.py, used by modules/processing.py and the samplers) draws each image's
noise on its own from the image's seed, and its "Random number generator source" setting
says with what:

- ``GPU`` (A1111's default): ``torch.randn`` on the device with a generator seeded like
  ``torch.manual_seed``. On a machine without CUDA the device is the CPU, so it is the CPU
  generator; on CUDA it is torch's CUDA generator, whose large draws can differ from one
  card to another (its launch size depends on the card), as in A1111.
- ``CPU``: torch's CPU generator (Mersenne Twister), moved to the device afterwards.
- ``NV``: A1111's numpy reimplementation of what CUDA's Philox 4x32-10 and Box-Muller give
  ``torch.randn``, so a seed's noise is the same on any machine (see PhiloxNormalGenerator).

:class:`ImageNoise` follows A1111's ``ImageRNG``: ``first()`` is the initial noise (the
variation seed mixed in by slerp, the "Resize seed from" noise pasted into the centre), and
every later ``next()`` is the noise an ancestral sampler draws during sampling (A1111
routes k-diffusion's ``torch.randn_like`` there), from the same per-image generators, or
from generators seeded with seed + ENSD when an eta noise seed delta is set. The DPM++ SDE
samplers' Brownian tree draws through ``randn_local`` instead.

Nothing here touches torch's global random state: where A1111 reseeds the global generator
(``torch.manual_seed``) and draws once, a fresh generator with that seed gives the same
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

RNG_SOURCES = ("GPU", "CPU", "NV")

# Pixels per latent pixel: "Resize seed from" sizes are in pixels (A1111's opt_f).
LATENT_SCALE = 8

# A1111 interpolates linearly instead of spherically once the noises are this parallel.
SLERP_PARALLEL_DOT = 0.9995

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF

# Random123's Philox 4x32 constants (Salmon et al., "Parallel Random Numbers: As Easy as
# 1, 2, 3", SC'11): the round multipliers and the Weyl sequence bumping the key each round.
_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY_BUMPS = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUNDS = 10

# cuRAND's single-precision constants for Box-Muller (CURAND_2POW32_INV and
# CURAND_2POW32_INV_2PI), rounded to float32 as A1111 keeps them.
_TWO_POW32_INV = np.float32(2.3283064e-10)
_TWO_POW32_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox 4x32-10 of every column of ``counter`` (shape (4, n), uint32) under ``key``.

    Returns the (4, n) uint32 outputs, word for word as Random123's ``philox4x32`` with 10
    rounds: each round multiplies words 0 and 2 into 64-bit products and mixes their high
    halves with words 1 and 3 and the key, which is bumped between rounds.
    """
    words = [np.array(counter[index], dtype=np.uint32) for index in range(4)]
    key_low, key_high = key[0] & _MASK32, key[1] & _MASK32
    for round_index in range(_PHILOX_ROUNDS):
        if round_index:
            key_low = (key_low + _PHILOX_KEY_BUMPS[0]) & _MASK32
            key_high = (key_high + _PHILOX_KEY_BUMPS[1]) & _MASK32
        product0 = words[0].astype(np.uint64) * np.uint64(_PHILOX_MULTIPLIERS[0])
        product2 = words[2].astype(np.uint64) * np.uint64(_PHILOX_MULTIPLIERS[1])
        words = [
            (product2 >> np.uint64(32)).astype(np.uint32) ^ words[1] ^ np.uint32(key_low),
            product2.astype(np.uint32),
            (product0 >> np.uint64(32)).astype(np.uint32) ^ words[3] ^ np.uint32(key_high),
            product0.astype(np.uint32),
        ]
    return np.stack(words)


def _box_muller_sine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The sine half of Box-Muller on two uint32 words, rounded to float32.

    The arithmetic runs in float64 (numpy promotes uint32 times float32 so) and is rounded at
    the end: A1111's NV source does exactly this, and the images depend on the last bit.
    """
    uniform = first.astype(np.float64) * np.float64(_TWO_POW32_INV) + np.float64(_TWO_POW32_INV / 2)
    angle = second.astype(np.float64) * np.float64(_TWO_POW32_INV_2PI) + np.float64(_TWO_POW32_INV_2PI / 2)
    radius = np.sqrt(-2.0 * np.log(uniform))
    return (radius * np.sin(angle)).astype(np.float32)


class PhiloxNormalGenerator:
    """A1111's "NV" generator: normal numbers as ``torch.randn`` draws them on CUDA.

    Element i of a draw is Philox 4x32-10 at counter (offset, 0, i, 0) under the 64-bit seed
    split into (low, high) words, turned normal by the sine half of Box-Muller. Each draw
    moves the offset by one whatever its size; that is A1111's rule (CUDA moves it further),
    so only a seed's first draw is CUDA's own, and every draw is A1111's.
    """

    def __init__(self, seed: int) -> None:
        # torch.manual_seed takes negative seeds modulo 2**64; so does this key.
        self.seed = int(seed) & _MASK64
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        """The next draw: float32 standard normal numbers of ``shape``."""
        count = math.prod(shape)
        counter = np.zeros((4, count), dtype=np.uint32)
        counter[0] = self.offset & _MASK32
        counter[2] = np.arange(count, dtype=np.uint32)
        self.offset += 1
        bits = philox4x32_10(counter, (self.seed & _MASK32, self.seed >> 32))
        return _box_muller_sine(bits[0], bits[1]).reshape(tuple(shape))


def check_rng_source(source: str) -> str:
    """``source`` if it is one of RNG_SOURCES, else a ValueError naming it."""
    if source not in RNG_SOURCES:
        raise ValueError(f"RNG source must be one of {', '.join(RNG_SOURCES)}, got {source!r}")
    return source


class SeededNoise:
    """One seed's stream of float32 standard normal noise from one source (A1111's
    ``create_generator`` with the ``randn`` that draws from it), delivered on ``device``."""

    def __init__(self, source: str, seed: int, device: torch.device | str = "cpu") -> None:
        self.source = check_rng_source(source)
        self.device = torch.device(device)
        if source == "NV":
            self._philox = PhiloxNormalGenerator(seed)
            return
        # A1111 draws the CPU source, and the GPU source on Apple's MPS, on the CPU.
        if source == "CPU" or self.device.type == "mps":
            self._draw_device = torch.device("cpu")
        else:
            self._draw_device = self.device
        self._torch = torch.Generator(self._draw_device).manual_seed(int(seed))

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """The stream's next ``shape`` of noise."""
        if self.source == "NV":
            return torch.from_numpy(self._philox.randn(shape)).to(self.device)
        noise = torch.randn(tuple(shape), device=self._draw_device, dtype=torch.float32, generator=self._torch)
        return noise.to(self.device)


def randn_local(source: str, seed: int, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """A seed's first ``shape`` of noise (A1111's ``randn_local``, which also feeds the
    Brownian tree of the DPM++ SDE samplers through torchsde's per-node seeds)."""
    return SeededNoise(source, seed, device).randn(shape)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation from ``low`` (strength 0) to ``high`` (strength 1).

    For one image's noise, shape (C, H, W): the norms run over dim 1, so each (channel,
    column) vector along the height is interpolated on its own, as in A1111. When the
    vectors are nearly parallel on average, A1111 interpolates linearly with the weights
    the other way round (``low`` gets ``strength``); that is kept, since variation seeds
    must give A1111's image in that case too. A1111's NaNs are kept as well: where the noise
    is one latent pixel high (a "Resize seed from" height of 8 to 15 pixels with a variation
    seed), each vector is one number, parallel to the other noise's wherever their signs
    agree, and 0 / sin(0) is NaN there.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > SLERP_PARALLEL_DOT:
        return low * strength + high * (1 - strength)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - strength) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(strength * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


def paste_centred(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``target`` (C, H, W) with ``source`` (C, h, w) copied onto its centre, in place.

    Where ``source`` is larger, its centre is what is copied (A1111's seed resize: odd
    differences put the extra row or column at the bottom and right).
    """
    offset_x = (target.shape[2] - source.shape[2]) // 2
    offset_y = (target.shape[1] - source.shape[1]) // 2
    width = source.shape[2] if offset_x >= 0 else source.shape[2] + 2 * offset_x
    height = source.shape[1] if offset_y >= 0 else source.shape[1] + 2 * offset_y
    to_x, to_y = max(offset_x, 0), max(offset_y, 0)
    from_x, from_y = max(-offset_x, 0), max(-offset_y, 0)
    target[:, to_y:to_y + height, to_x:to_x + width] = source[:, from_y:from_y + height, from_x:from_x + width]
    return target


class ImageNoise:
    """The noise of one batch, image by image, as A1111 1.10's ``ImageRNG`` makes it.

    ``shape`` is one image's latent shape (C, H, W); ``seeds`` one seed per image, and
    ``subseeds`` the variation seeds (a missing one counts as 0, as in A1111).
    ``seed_resize_from`` is A1111's "Resize seed from" (width, height) in pixels; (0, 0), or
    either side 0, leaves it off. ``eta_noise_seed_delta`` is A1111's ENSD: it changes the
    sampler's later noise only, never the initial noise.

    ``next()`` gives the initial noise on its first call and the sampler's noise after
    that, each (batch, C, H, W) float32 on ``device``; ``first()`` is the initial noise on
    its own. Like A1111, each image's generator has made the full-shape draw of its seed
    by the time the sampler draws, so its first sampler noise is that generator's second.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        source: str = "GPU",
        device: torch.device | str = "cpu",
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from: tuple[int, int] = (0, 0),
        eta_noise_seed_delta: int = 0,
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"shape must be one image's latent (C, H, W), got {tuple(shape)}")
        self.shape = tuple(int(side) for side in shape)
        self.seeds = [int(seed) for seed in seeds]
        self.source = check_rng_source(source)
        self.device = torch.device(device)
        self.subseeds = None if subseeds is None else [int(subseed) for subseed in subseeds]
        self.subseed_strength = subseed_strength
        self.seed_resize_from = seed_resize_from
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.generators = [self._stream(seed) for seed in self.seeds]
        self.is_first = True

    def _stream(self, seed: int) -> SeededNoise:
        return SeededNoise(self.source, seed, self.device)

    def _from_shape(self) -> tuple[int, int, int]:
        """The shape the seed's noise is drawn in: the "Resize seed from" size, if set."""
        width, height = self.seed_resize_from
        if width <= 0 or height <= 0:
            return self.shape
        return (self.shape[0], height // LATENT_SCALE, width // LATENT_SCALE)

    def first(self) -> torch.Tensor:
        """The initial noise of every image, stacked.

        Like A1111, this does not count as ``next()``'s first call; and once it has run,
        a set ENSD reseeds the generators with seed + ENSD for the sampler's noise.
        """
        from_shape = self._from_shape()
        resized = from_shape != self.shape
        images = []
        for index, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[index] if index < len(self.subseeds) else 0
                subnoise = self._stream(subseed).randn(from_shape)
            # Without a resize the seed's noise comes from the image's own generator, which
            # the sampler goes on drawing from; with one, from a fresh generator of the seed.
            noise = self._stream(seed).randn(from_shape) if resized else generator.randn(self.shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if resized:
                noise = paste_centred(generator.randn(self.shape), noise)
            images.append(noise)
        if self.eta_noise_seed_delta:
            self.generators = [self._stream(seed + self.eta_noise_seed_delta) for seed in self.seeds]
        return torch.stack(images).to(self.device)

    def next(self) -> torch.Tensor:
        """The initial noise on the first call, then the sampler's next noise."""
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([generator.randn(self.shape) for generator in self.generators]).to(self.device)
