"""The samplers A1111 runs apart from k-diffusion's loops (the timestep samplers DDIM, DDIM
CFG++, PLMS and UniPC, and DPM fast) on the k path's other passes: SDXL, inpainting (a plain
and a 9-channel UNet) and the refiner switch, each equal to A1111's algorithm over the same
tiny UNets for the same seeds. The references: tests/k_reference.py's CFG denoisers
(A1111TimestepEps blends the source into the model's input, as CFGDenoiserTimesteps does,
and switches to the refiner at int(t)), and the sampler loops of test_samplers_timesteps.py
and test_samplers_extra.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from inference.common.protocol import GenerateRequest, JobKind, MaskedContent, ModelSpec
from inference.generate import generate_latents
from inference.img2img import decode
from inference.inpaint import inpaint_pass
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from inference.workflows import run_workflow
from tests.k_reference import A1111Denoiser, A1111Model, A1111TimestepEps, assert_same_images
from tests.test_k_inpaint import SEEDS, SIZE, cpu_cache, inpaint_request, make_source_and_mask, reference_inpaint_inputs
from tests.test_samplers_extra import ref_dpm_fast
from tests.test_samplers_reference import ReferenceNoise, assert_same_latents
from tests.test_samplers_timesteps import REFERENCES, a1111_timesteps, ref_unipc


@pytest.fixture(scope="module")
def cache(tiny_model_dir, tiny_inpaint_model_dir, tiny_sdxl_dir, tiny_sdxl_refiner_dir):
    return cpu_cache(
        tiny_model_dir, tiny_inpaint_model_dir, ModelSpec("xl", str(tiny_sdxl_dir)),
        ModelSpec("refiner", str(tiny_sdxl_refiner_dir)),
    )


@pytest.fixture(scope="module")
def source_and_mask():
    return make_source_and_mask()


def xl_request(**changes) -> GenerateRequest:
    values = dict(
        job_id=1, kind=JobKind.TXT2IMG, model="xl", prompt="a (red:1.2) cat", negative_prompt="blurry",
        width=SIZE, height=SIZE, steps=4, cfg_scale=6.0, sampler="DDIM", seeds=SEEDS,
    )
    return GenerateRequest(**{**values, **changes})


def model_of(pipe, request, aesthetic=False):
    return A1111Model(pipe, request.prompt, request.negative_prompt, request.steps, SIZE, SIZE, aesthetic)


def run_timesteps(sampler, eps, x, timesteps, noise, is_img2img=False):
    if sampler == "UniPC":
        return ref_unipc(eps, x, timesteps, noise, is_img2img=is_img2img)
    return REFERENCES[sampler](eps, x, timesteps, noise)


@pytest.mark.parametrize("sampler", ["DDIM CFG++", "UniPC"])
def test_sdxl_timestep_sampler_equals_a1111s_algorithm(cache, sampler):
    pipe = cache.get("xl")
    request = xl_request(sampler=sampler)
    ours = generate_latents(pipe, request)
    with torch.no_grad():
        eps = A1111TimestepEps(model_of(pipe, request), request.cfg_scale)
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        expected = run_timesteps(sampler, eps, noise.first, a1111_timesteps(request.steps), noise.draw)
    assert_same_latents(ours, expected)


@pytest.mark.parametrize(
    ("model", "sampler", "content"),
    [
        ("plain", "DDIM", MaskedContent.ORIGINAL),
        ("with-inpaint", "UniPC", MaskedContent.FILL),
        ("xl", "PLMS", MaskedContent.LATENT_NOISE),
    ],
)
def test_timestep_sampler_inpaints_with_the_source_blended_into_the_models_input(
    cache, source_and_mask, model, sampler, content
):
    source, mask = source_and_mask
    strength = 0.6
    request = replace(inpaint_request(model, strength), sampler=sampler)
    reports = []
    ours = inpaint_pass(
        cache, request, [source] * len(SEEDS), mask, content, strength,
        lambda step, total, latents: reports.append(step), lambda: False,
    )
    pipe = cache.get_inpaint(model) if model == "with-inpaint" else cache.get(model)
    t_enc = int(strength * request.steps)
    assert reports[-1] == t_enc + 1 and reports == sorted(set(reports))
    with torch.no_grad():
        init_latent, nmask, image_cond = reference_inpaint_inputs(pipe, source, mask, content)
        eps = A1111TimestepEps(model_of(pipe, request), request.cfg_scale, image_cond, init_latent, nmask)
        # CompVisSampler.sample_img2img: the source at timesteps[t_enc], then timesteps[:t_enc].
        timesteps = a1111_timesteps(request.steps)
        a = sd_alphas_cumprod()[timesteps[t_enc]]
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        x = init_latent * a.sqrt() + noise.first * (1 - a).sqrt()
        samples = run_timesteps(sampler, eps, x, timesteps[:t_enc], noise.draw, is_img2img=True)
        expected = decode(pipe, samples * nmask + init_latent * (1 - nmask))
    assert_same_images(ours, expected)


def test_dpm_fast_inpaints_between_the_walked_ends(cache, source_and_mask):
    source, mask = source_and_mask
    strength, content = 0.6, MaskedContent.ORIGINAL
    request = replace(inpaint_request("with-inpaint", strength), sampler="DPM fast")
    ours = inpaint_pass(cache, request, [source] * len(SEEDS), mask, content, strength, lambda *a: None, lambda: False)
    pipe = cache.get_inpaint("with-inpaint")
    steps, t_enc = request.steps, int(strength * request.steps)
    with torch.no_grad():
        init_latent, nmask, image_cond = reference_inpaint_inputs(pipe, source, mask, content)
        denoiser = A1111Denoiser(model_of(pipe, request), request.cfg_scale, image_cond, init_latent, nmask)
        sigmas = sampler_sigmas("DPM fast", "Automatic", steps, sd_alphas_cumprod())[steps - t_enc - 1 :]
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        x = init_latent + noise.first * sigmas[0]
        samples = ref_dpm_fast(denoiser, x, sigmas[-2], sigmas[0], len(sigmas) - 1, 1.0, noise.randn_like)
        expected = decode(pipe, samples * nmask + init_latent * (1 - nmask))
    assert_same_images(ours, expected)


@pytest.mark.parametrize("sampler", ["DDIM", "UniPC"])
def test_refiner_switches_a_timestep_sampler_at_its_timestep(cache, sampler):
    # UniPC's 5 steps evaluate at t = 399.6: A1111 switches there (int(t) = 399, (999 - 399) /
    # 1000 = 0.6), though the sigma table's nearest timestep, 400, would not yet.
    request = xl_request(sampler=sampler, steps=5, refiner="refiner", refiner_switch_at=0.6)
    reports = []
    images = run_workflow(cache, None, request, lambda step, total, latents: reports.append(step), lambda: False)
    assert reports[-1] == 5
    base, refiner = cache.get("xl"), cache.get("refiner")
    with torch.no_grad():
        eps = A1111TimestepEps(
            model_of(base, request), request.cfg_scale, refiner=model_of(refiner, request, aesthetic=True), switch_at=0.6
        )
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        expected = decode(base, run_timesteps(sampler, eps, noise.first, a1111_timesteps(5), noise.draw))
    assert eps.switched_at_call is not None and eps.switched_at_call > 0
    assert_same_images(images, expected)
