"""Inpainting on A1111's k-diffusion path, for an ordinary model and a 9-channel inpainting
model: each masked-content mode's pass equals A1111's algorithm (StableDiffusionProcessingImg2Img
init and sample, CFGDenoiser's latent blend, inpainting_image_conditioning; tests/k_reference.py)
over the same tiny UNets for the same seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from inference.common.protocol import ImageInput, InpaintOptions, JobKind, MaskedContent, ModelSpec
from inference.img2img import decode
from inference.inpaint import inpaint_pass
from inference.models import PipelineCache
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from tests.inference_fixtures import tiny_request
from tests.k_reference import A1111Denoiser, A1111Model, assert_same_images
from tests.test_samplers_reference import ReferenceNoise, ref_euler_a

SEEDS = (31, 32)
SIZE = 64


def cpu_cache(tiny_model_dir, tiny_inpaint_model_dir, *others: ModelSpec) -> PipelineCache:
    """The tiny SD 1.5 model with and without its inpainting variant, and ``others``, on the
    CPU in float32, all kept loaded: these tests and test_samplers_kpaths' go back and forth."""
    specs = (
        ModelSpec("plain", str(tiny_model_dir)),
        ModelSpec("with-inpaint", str(tiny_model_dir), inpaint_source=str(tiny_inpaint_model_dir)),
        *others,
    )
    return PipelineCache(specs, torch.device("cpu"), torch.float32, max_loaded=len(specs))


@pytest.fixture(scope="module")
def cache(tiny_model_dir, tiny_inpaint_model_dir, tiny_sdxl_dir, tiny_sdxl_inpaint_dir):
    return cpu_cache(
        tiny_model_dir, tiny_inpaint_model_dir, ModelSpec("xl", str(tiny_sdxl_dir)),
        ModelSpec("xl-with-inpaint", str(tiny_sdxl_dir), inpaint_source=str(tiny_sdxl_inpaint_dir)),
    )


@pytest.fixture(scope="module")
def source_and_mask():
    return make_source_and_mask()


def make_source_and_mask():
    """A gradient source image and a rectangular mask, SIZE square."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    source = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:44, 20:52] = 255
    return Image.fromarray(source), Image.fromarray(mask)


def inpaint_request(model: str, strength: float):
    return tiny_request(
        model=model, kind=JobKind.INPAINT, steps=6, seeds=SEEDS, sampler="Euler a",
        image=ImageInput("unused.png", strength), inpaint=InpaintOptions("unused-mask.png"),
    )


@torch.no_grad()
def reference_inpaint_inputs(pipe, source, mask, content):
    """StableDiffusionProcessingImg2Img.init for every seed: init_latent with the masked
    content written in, the rounded latent mask (nmask, 1 where repainted), and the
    inpainting UNet's image conditioning (None for a 4-channel UNet)."""
    n = len(SEEDS)
    vae, factor = pipe.vae, pipe.vae.config.scaling_factor
    image = torch.from_numpy(np.asarray(source, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    image = (2.0 * image - 1.0).repeat(n, 1, 1, 1)
    init_latent = vae.encode(image).latent_dist.mode() * factor
    latmask = np.asarray(mask.convert("RGB").resize((SIZE // 8, SIZE // 8)), dtype=np.float32)[..., 0] / 255
    nmask = torch.from_numpy(np.around(latmask))
    keep = 1.0 - nmask
    if content == MaskedContent.LATENT_NOISE:
        init_latent = init_latent * keep + ReferenceNoise(SEEDS, (4, 8, 8)).first * nmask
    elif content == MaskedContent.LATENT_NOTHING:
        init_latent = init_latent * keep
    image_cond = None
    if pipe.unet.config.in_channels == 9:
        cond_mask = torch.round(torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None])
        cond_image = torch.lerp(image, image * (1.0 - cond_mask), 1.0)
        cond_image = vae.encode(cond_image).latent_dist.mode() * factor
        cond_mask = torch.nn.functional.interpolate(cond_mask, size=init_latent.shape[-2:])
        image_cond = torch.cat([cond_mask.expand(n, -1, -1, -1), cond_image], dim=1)
    return init_latent, nmask, image_cond


@torch.no_grad()
def reference_inpaint(pipe, request, source, mask, content, strength):
    """A1111's img2img with a mask, over Euler a, for every image of the request."""
    steps = request.steps
    init_latent, nmask, image_cond = reference_inpaint_inputs(pipe, source, mask, content)
    model = A1111Model(pipe, request.prompt, request.negative_prompt, steps, SIZE, SIZE)
    denoiser = A1111Denoiser(model, request.cfg_scale, image_cond, init_latent, nmask)
    t_enc = int(min(strength, 0.999) * steps)
    sigmas = sampler_sigmas("Euler a", "Automatic", steps, sd_alphas_cumprod())[steps - t_enc - 1 :]
    noise = ReferenceNoise(SEEDS, (4, 8, 8))
    samples = ref_euler_a(denoiser, init_latent + noise.first * sigmas[0], sigmas, noise.randn_like)
    return decode(pipe, samples * nmask + init_latent * (1.0 - nmask)), t_enc + 1


@pytest.mark.parametrize(
    ("model", "content"),
    [(model, content) for model in ("plain", "with-inpaint") for content in MaskedContent]
    + [("xl", MaskedContent.LATENT_NOISE), ("xl-with-inpaint", MaskedContent.ORIGINAL)],
)
def test_inpaint_pass_equals_a1111s_algorithm(cache, source_and_mask, model, content):
    source, mask = source_and_mask
    strength = 0.6
    request = inpaint_request(model, strength)
    reports = []
    ours = inpaint_pass(
        cache, request, [source] * len(SEEDS), mask, content, strength,
        lambda step, total, latents: reports.append(step), lambda: False,
    )
    pipe = cache.get_inpaint(model) if model.endswith("with-inpaint") else cache.get(model)
    expected, run_steps = reference_inpaint(pipe, request, source, mask, content, strength)
    assert reports == list(range(1, run_steps + 1))  # A1111's int(6 * 0.6) + 1
    assert_same_images(ours, expected)


def test_and_parts_run_with_the_inpainting_conditioning(cache, source_and_mask):
    # Every AND part's UNet row gets the mask and masked latents too: two halves of one prompt
    # make the prompt's own images (uncond + 0.5 d + 0.5 d), another part other images.
    source, mask = source_and_mask
    request = inpaint_request("with-inpaint", 0.6)

    def run(prompt):
        return inpaint_pass(
            cache, replace(request, prompt=prompt), [source] * len(SEEDS), mask, MaskedContent.ORIGINAL,
            0.6, lambda *args: None, lambda: False,
        )

    plain = run("a cat")
    assert_same_images(run("a cat :0.5 AND a cat :0.5"), plain)
    other = run("a cat AND a dog")
    assert np.abs(np.asarray(other[0], dtype=int) - np.asarray(plain[0], dtype=int)).max() > 1
