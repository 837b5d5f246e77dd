"""generate() on the real tiny model: seeds, batches, variations, samplers, progress, cancel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.generate import JobCancelledError, generate, scheduler_for
from inference.noise import slerp
from inference.common.protocol import JobKind
from inference.common.sampler_catalog import SAMPLERS as CATALOG
from inference.common.samplers import SAMPLERS
from inference.k_denoiser import SAMPLER_FUNCTIONS
from tests.inference_fixtures import tiny_request


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def max_difference(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def mean_difference(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ SDE"])
def test_batch_image_equals_single_run_with_its_seed(tiny_pipe, sampler):
    seeds = (500, 501, 502, 503)
    batch = generate(tiny_pipe, tiny_request(sampler=sampler, seeds=seeds))
    assert len(batch) == 4
    for index in (0, 3):
        [alone] = generate(tiny_pipe, tiny_request(sampler=sampler, seeds=(seeds[index],)))
        # Batched and single convolutions round differently in float32: a level or two.
        assert max_difference(batch[index], alone) <= 2
        assert mean_difference(batch[index], alone) < 0.1
    # Different seeds really give different images, so the comparisons above mean something.
    assert mean_difference(batch[0], batch[1]) > 5


def test_variation_strength_moves_away_from_parent_gradually(tiny_pipe):
    parent_request = tiny_request(sampler="Euler a", seeds=(10,))
    [parent] = generate(tiny_pipe, parent_request)

    def variation(strength):
        request = dataclasses.replace(
            parent_request, subseeds=(99,), subseed_strength=strength, kind=JobKind.VARIATION
        )
        return generate(tiny_pipe, request)[0]

    assert max_difference(variation(0.0), parent) == 0
    small = mean_difference(variation(0.1), parent)
    large = mean_difference(variation(0.8), parent)
    assert 0 < small < large
    assert max_difference(variation(0.8), variation(0.8)) == 0  # deterministic


def test_slerp_ends_and_norm():
    low = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    high = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(slerp(0.0, low, high), low, atol=1e-5)
    assert torch.allclose(slerp(1.0, low, high), high, atol=1e-5)
    middle = slerp(0.5, low, high)
    # Unlike a lerp, a slerp keeps the noise's scale, which is why A1111 uses it.
    assert abs(middle.std().item() - low.std().item()) < 0.15
    assert torch.allclose(slerp(0.3, low, low), low, atol=1e-5)


RUNNING_SAMPLERS = sorted(
    set(SAMPLERS) | {name for name, info in CATALOG.items() if info.function in SAMPLER_FUNCTIONS}
)


# A1111's DDIM and PLMS walk 2 timesteps in one step, DPM fast's 2 evaluations are one
# solver step, DPM adaptive sets its own: progress jumps to the end.
FEWER_STEPS_THAN_ASKED = {"DDIM", "DDIM CFG++", "PLMS", "DPM fast", "DPM adaptive"}


@pytest.mark.parametrize("sampler", RUNNING_SAMPLERS)
def test_every_sampler_runs(tiny_pipe, sampler):
    steps_seen = []
    images = generate(
        tiny_pipe,
        tiny_request(sampler=sampler, steps=2, seeds=(3, 4)),
        on_step=lambda step, total, latents: steps_seen.append((step, total)),
    )
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    if sampler in FEWER_STEPS_THAN_ASKED:
        assert steps_seen[-1] == (2, 2) and steps_seen == sorted(set(steps_seen))
    else:
        assert steps_seen == [(1, 2), (2, 2)]


def test_second_order_sampler_reports_requested_steps(tiny_pipe):
    reports = []
    generate(
        tiny_pipe,
        tiny_request(sampler="Heun", steps=5),
        on_step=lambda step, total, latents: reports.append((step, total, tuple(latents.shape))),
    )
    assert reports == [(step, 5, (1, 4, 8, 8)) for step in range(1, 6)]


def test_cancel_stops_the_loop_between_steps(tiny_pipe):
    unet_calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    reported = []

    def on_step(step, total, latents):
        reported.append((step, total))

    try:
        with pytest.raises(JobCancelledError):
            generate(
                tiny_pipe,
                tiny_request(sampler="Euler", steps=10),
                on_step=on_step,
                is_cancelled=lambda: len(reported) >= 2,
            )
    finally:
        hook.remove()
    assert reported == [(1, 10), (2, 10)]
    assert len(unet_calls) == 2  # no third step, no further UNet work


def test_cancelled_before_start_runs_nothing(tiny_pipe):
    unet_calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    try:
        with pytest.raises(JobCancelledError):
            generate(tiny_pipe, tiny_request(), is_cancelled=lambda: True)
    finally:
        hook.remove()
    assert unet_calls == []


def test_sampler_options_do_not_leak_between_samplers(tiny_pipe):
    karras = scheduler_for(tiny_pipe, "DPM++ 2M Karras")
    tiny_pipe.scheduler = karras
    plain = scheduler_for(tiny_pipe, "DPM++ 2M")
    assert karras.config.use_karras_sigmas is True
    assert plain.config.use_karras_sigmas is False
    assert scheduler_for(tiny_pipe, "DPM++ 2M") is plain  # built once per pipeline


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"width": 100}, "width"),
        ({"height": 0}, "height"),
        ({"steps": 0}, "steps"),
        ({"sampler": "Euler b"}, "Euler b"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (1, 2), "subseeds": (5,)}, "subseeds"),
        ({"subseeds": (5,), "subseed_strength": 1.5}, "1.5"),
        ({"subseed_strength": 0.5}, "subseed"),
        ({"seeds": (-1,)}, "-1"),
        ({"cfg_scale": float("nan")}, "cfg_scale"),
    ],
)
def test_bad_requests_are_rejected_naming_the_value(tiny_pipe, overrides, named):
    with pytest.raises(ValueError, match=named):
        generate(tiny_pipe, tiny_request(**overrides))


def test_the_diffusers_path_runs_the_karras_scheduler_when_the_schedule_resolves_to_karras():
    """Workflows still on diffusers' schedulers (SDXL, inpaint, the refiner) honour the schedule
    type where diffusers has the variant: DPM++ 2M's Automatic is Karras in A1111 1.10."""
    from inference.generate import diffusers_sampler

    assert diffusers_sampler("DPM++ 2M", "Automatic") == "DPM++ 2M Karras"
    assert diffusers_sampler("DPM++ 2M", "Karras") == "DPM++ 2M Karras"
    assert diffusers_sampler("DPM++ 2M Karras", "Automatic") == "DPM++ 2M Karras"
    assert diffusers_sampler("DPM++ 2M", "Uniform") == "DPM++ 2M"
    assert diffusers_sampler("Euler", "Karras") == "Euler"  # diffusers has no Euler Karras entry here
    assert diffusers_sampler("Euler a", "Automatic") == "Euler a"
