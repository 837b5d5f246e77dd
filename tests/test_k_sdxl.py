"""SDXL on A1111's k-diffusion path: txt2img, batches, the refiner switch inside one sampler
run, and the refiner in the hires fix's second pass, each equal to A1111's algorithm
(tests/k_reference.py) over the same tiny random-weight UNets for the same seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from inference.common.protocol import GenerateRequest, HiresFix, JobKind, ModelSpec
from inference.generate import generate_latents, uses_k_sampling
from inference.img2img import decode
from inference.models import PipelineCache
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from inference.workflows import LATENT, run_workflow, validate_workflow
from tests.k_reference import A1111Denoiser, A1111Model, assert_same_images
from tests.test_samplers_reference import ReferenceNoise, assert_same_latents, ref_dpmpp_2m, ref_euler, ref_euler_a

SEEDS = (5, 6)
SIZE = 64


@pytest.fixture(scope="module")
def cache(tiny_sdxl_dir, tiny_sdxl_refiner_dir):
    specs = (ModelSpec("tiny-xl", str(tiny_sdxl_dir)), ModelSpec("tiny-refiner", str(tiny_sdxl_refiner_dir)))
    return PipelineCache(specs, torch.device("cpu"), torch.float32, max_loaded=2)


def xl_request(**changes) -> GenerateRequest:
    values = dict(
        job_id=1, kind=JobKind.TXT2IMG, model="tiny-xl", prompt="a (red:1.2) cat", negative_prompt="blurry",
        width=SIZE, height=SIZE, steps=4, cfg_scale=6.0, sampler="Euler a", seeds=SEEDS,
    )
    return GenerateRequest(**{**values, **changes})


def model_of(pipe, request, width=SIZE, height=SIZE, aesthetic=False, hires_steps=None):
    return A1111Model(pipe, request.prompt, request.negative_prompt, request.steps, width, height, aesthetic, hires_steps)


@pytest.mark.parametrize(("sampler", "loop"), [("Euler a", ref_euler_a), ("DPM++ 2M", ref_dpmpp_2m)])
def test_sdxl_txt2img_equals_a1111s_algorithm(cache, sampler, loop):
    pipe = cache.get("tiny-xl")
    request = xl_request(sampler=sampler)
    assert uses_k_sampling(pipe, request)
    ours = generate_latents(pipe, request)
    with torch.no_grad():
        denoiser = A1111Denoiser(model_of(pipe, request), request.cfg_scale)
        sigmas = sampler_sigmas(sampler, "Automatic", request.steps, sd_alphas_cumprod())
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        expected = loop(denoiser, noise.first * sigmas[0], sigmas, noise.randn_like)
    assert_same_latents(ours, expected)


def test_sdxl_size_conditioning_is_the_images_size(cache):
    # A wider image is conditioned on its own size: the 64 px row of a 96 px image differs
    # from what a 64 px image conditioned on 96 px would give, which the reference checks.
    pipe = cache.get("tiny-xl")
    request = xl_request(width=96, seeds=(5,))
    ours = generate_latents(pipe, request)
    with torch.no_grad():
        denoiser = A1111Denoiser(model_of(pipe, request, width=96), request.cfg_scale)
        sigmas = sampler_sigmas("Euler a", "Automatic", request.steps, sd_alphas_cumprod())
        noise = ReferenceNoise((5,), (4, 8, 12))
        expected = ref_euler_a(denoiser, noise.first * sigmas[0], sigmas, noise.randn_like)
        wrong = A1111Denoiser(model_of(pipe, request, width=64), request.cfg_scale)
        noise = ReferenceNoise((5,), (4, 8, 12))
        unlike = ref_euler_a(wrong, noise.first * sigmas[0], sigmas, noise.randn_like)
    assert_same_latents(ours, expected)
    assert not torch.allclose(ours, unlike, atol=1e-3)


def test_sdxl_batch_image_equals_its_seed_alone(cache):
    pipe = cache.get("tiny-xl")
    batch = generate_latents(pipe, xl_request())
    alone = generate_latents(pipe, xl_request(seeds=SEEDS[1:]))
    assert_same_latents(batch[1:], alone.float())


def test_refiner_switches_inside_the_sampler_run_as_a1111(cache):
    request = xl_request(sampler="Euler", steps=6, refiner="tiny-refiner", refiner_switch_at=0.6)
    reports = []
    [*images] = run_workflow(cache, None, request, lambda step, total, latents: reports.append(step), lambda: False)
    assert reports == [1, 2, 3, 4, 5, 6]  # one run: the user's steps, across both models
    base, refiner = cache.get("tiny-xl"), cache.get("tiny-refiner")
    with torch.no_grad():
        denoiser = A1111Denoiser(
            model_of(base, request), request.cfg_scale,
            refiner=model_of(refiner, request, aesthetic=True), switch_at=0.6,
        )
        sigmas = sampler_sigmas("Euler", "Automatic", 6, sd_alphas_cumprod())
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        expected = decode(base, ref_euler(denoiser, noise.first * sigmas[0], sigmas, None))
    # The switch came part-way: some calls on each model.
    assert 0 < denoiser.switched_at_call < 6
    assert_same_images(images, expected)
    base_only = run_workflow(cache, None, replace(request, refiner=""), lambda *a: None, lambda: False)
    assert np.abs(np.asarray(base_only[0], dtype=int) - np.asarray(images[0], dtype=int)).max() > 1


def test_refiner_with_hires_switches_in_the_second_pass(cache):
    hires = HiresFix(scale=1.5, steps=4, denoising_strength=0.7, upscaler=LATENT)
    request = xl_request(sampler="Euler", steps=4, seeds=(9,), refiner="tiny-refiner", refiner_switch_at=0.5, hires=hires)
    validate_workflow(request)  # accepted now: A1111 runs the refiner in the hires pass
    [image] = run_workflow(cache, None, request, lambda *a: None, lambda: False)
    base, refiner = cache.get("tiny-xl"), cache.get("tiny-refiner")
    with torch.no_grad():
        first_model = A1111Denoiser(model_of(base, request), request.cfg_scale)
        sigmas = sampler_sigmas("Euler", "Automatic", 4, sd_alphas_cumprod())
        noise = ReferenceNoise((9,), (4, 8, 8))
        first = ref_euler(first_model, noise.first * sigmas[0], sigmas, None)
        upscaled = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear", antialias=False)
        # A1111: a schedule of int(4 / 0.7) = 5 steps, the last 4 run; conds for 96 px.
        second = sampler_sigmas("Euler", "Automatic", 5, sd_alphas_cumprod())[5 - 3 - 1 :]
        denoiser = A1111Denoiser(
            model_of(base, request, 96, 96, hires_steps=4), request.cfg_scale,
            refiner=model_of(refiner, request, 96, 96, aesthetic=True, hires_steps=4), switch_at=0.5,
        )
        start = upscaled + ReferenceNoise((9,), (4, 12, 12)).first * second[0]
        [expected] = decode(base, ref_euler(denoiser, start, second, None))
    assert denoiser.switched_at_call is not None
    assert image.size == (96, 96)
    assert_same_images([image], [expected])


def test_sdxl_img2img_runs_a1111s_count_from_the_noised_source(cache, tmp_path):
    from PIL import Image

    from inference.common.protocol import ImageInput
    from inference.img2img import encode, run_img2img

    source = Image.new("RGB", (SIZE, SIZE), (30, 140, 220))
    source.save(tmp_path / "source.png")
    request = xl_request(kind=JobKind.IMG2IMG, steps=6, image=ImageInput(str(tmp_path / "source.png"), 0.5))
    pipe = cache.get("tiny-xl")
    reports = []
    ours = run_img2img(pipe, request, lambda step, total, latents: reports.append(step), lambda: False)
    assert reports == [1, 2, 3, 4]  # A1111: int(0.5 * 6) + 1
    with torch.no_grad():
        denoiser = A1111Denoiser(model_of(pipe, request), request.cfg_scale)
        sigmas = sampler_sigmas("Euler a", "Automatic", 6, sd_alphas_cumprod())[6 - 3 - 1 :]
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        start = encode(pipe, [source] * len(SEEDS)) + noise.first * sigmas[0]
        expected = decode(pipe, ref_euler_a(denoiser, start, sigmas, noise.randn_like))
    assert_same_images(ours, expected)


def test_sdxl_v_prediction_with_zero_terminal_snr(tiny_sdxl_dir):
    """A v-prediction SDXL marked zero-terminal-SNR (as the single-file loader marks NoobAI
    v-pred and the like) samples over A1111's rescaled schedule with CompVisVDenoiser."""
    from tests.inference_fixtures import _load_tiny_pipe

    pipe = _load_tiny_pipe(str(tiny_sdxl_dir))
    pipe.scheduler = type(pipe.scheduler).from_config(
        pipe.scheduler.config, prediction_type="v_prediction", rescale_betas_zero_snr=True
    )
    request = xl_request(sampler="Euler", seeds=(5,))
    ours = generate_latents(pipe, request)
    with torch.no_grad():
        model = A1111Model(pipe, request.prompt, request.negative_prompt, request.steps, SIZE, SIZE,
                           v_prediction=True, zsnr=True)
        # The rescaled table ends in pure noise, up to A1111's constant: sigma_max about 4500.
        assert model.sigmas[-1] > 4000
        denoiser = A1111Denoiser(model, request.cfg_scale)
        sigmas = sampler_sigmas("Euler", "Automatic", request.steps, model.alphas_cumprod)
        noise = ReferenceNoise((5,), (4, 8, 8))
        expected = ref_euler(denoiser, noise.first * sigmas[0], sigmas, None)
    assert_same_latents(ours, expected)
