"""SDXL's prompt conditioning against A1111's rules, on the tiny SDXL: both encoders'
penultimate states side by side, the pooled vector from the first chunk, emphasis per
encoder, BREAK and prompt editing, the zeroed empty negative, AND; and SDXL generation equal
to a plain diffusers call where A1111 and diffusers agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.common.protocol import GenerateRequest, JobKind
from inference.conditioning import encode_conditioning
from inference.conditioning_xl import is_sdxl, sdxl_size_kwargs
from inference.generate import generate

CLIP_L, CLIP_G = 32, 32  # the tiny SDXL's hidden sizes (768 and 1280 in SDXL)


def encode(pipe, prompt: str, negative: str = "", steps: int = 4):
    return encode_conditioning(pipe, prompt, negative, steps)


def diffusers_encoding(pipe, prompt: str, negative: str):
    embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=torch.device("cpu"), num_images_per_prompt=1,
        do_classifier_free_guidance=True, negative_prompt=negative,
    )
    return embeds, negative_embeds, pooled, negative_pooled


def test_a_plain_prompt_is_encoded_as_diffusers_encodes_it(tiny_sdxl_pipe):
    assert is_sdxl(tiny_sdxl_pipe)
    conditioning = encode(tiny_sdxl_pipe, "a photo of a cat", "blurry")
    cond, uncond = conditioning.at_step(0)
    pooled, negative_pooled = conditioning.pooled_at_step(0)
    assert cond.shape == (1, 77, CLIP_L + CLIP_G) and pooled.shape == (1, CLIP_G)
    expected = diffusers_encoding(tiny_sdxl_pipe, "a photo of a cat", "blurry")
    for ours, theirs in zip((cond, uncond, pooled, negative_pooled), expected):
        torch.testing.assert_close(ours, theirs)


def test_an_empty_negative_prompt_is_zeros_as_in_a1111(tiny_sdxl_pipe):
    conditioning = encode(tiny_sdxl_pipe, "a cat", "")
    _, uncond = conditioning.at_step(0)
    _, negative_pooled = conditioning.pooled_at_step(0)
    assert not uncond.any() and not negative_pooled.any()
    cond, _ = conditioning.at_step(0)
    assert cond.abs().sum() > 0


def test_weights_scale_each_encoder_and_restore_its_own_mean(tiny_sdxl_pipe):
    plain = encode(tiny_sdxl_pipe, "a cat", "x")
    weighted = encode(tiny_sdxl_pipe, "a (cat:1.5)", "x")
    z = plain.at_step(0)[0]
    got = weighted.at_step(0)[0]
    multipliers = torch.ones(77, 1)
    multipliers[2] = 1.5  # <start> a cat
    for features in (slice(0, CLIP_L), slice(CLIP_L, CLIP_L + CLIP_G)):
        part = z[..., features]
        scaled = part * multipliers
        expected = scaled * (part.mean() / scaled.mean())  # A1111's EmphasisOriginal, per encoder
        torch.testing.assert_close(got[..., features], expected)
    # The pooled vector is taken before any weighting.
    torch.testing.assert_close(weighted.pooled_at_step(0)[0], plain.pooled_at_step(0)[0])


def test_break_starts_a_chunk_and_the_pooled_vector_is_the_first_chunks(tiny_sdxl_pipe):
    both = encode(tiny_sdxl_pipe, "a red car BREAK a blue boat", "x")
    first, second = encode(tiny_sdxl_pipe, "a red car", "x"), encode(tiny_sdxl_pipe, "a blue boat", "x")
    cond = both.at_step(0)[0]
    assert cond.shape == (1, 154, CLIP_L + CLIP_G)
    torch.testing.assert_close(cond[:, :77], first.at_step(0)[0])
    torch.testing.assert_close(cond[:, 77:], second.at_step(0)[0])
    torch.testing.assert_close(both.pooled_at_step(0)[0], first.pooled_at_step(0)[0])
    assert not torch.allclose(first.pooled_at_step(0)[0], second.pooled_at_step(0)[0])
    # The shorter uncond is padded with the empty prompt's chunk (A1111's pad_cond).
    assert both.at_step(0)[1].shape == (1, 154, CLIP_L + CLIP_G)


def test_prompt_editing_swaps_the_pooled_vector_too(tiny_sdxl_pipe):
    conditioning = encode(tiny_sdxl_pipe, "[a red car:a blue boat:2]", "x", steps=4)
    car, boat = encode(tiny_sdxl_pipe, "a red car", "x"), encode(tiny_sdxl_pipe, "a blue boat", "x")
    torch.testing.assert_close(conditioning.pooled_at_step(1)[0], car.pooled_at_step(0)[0])
    torch.testing.assert_close(conditioning.pooled_at_step(3)[0], boat.pooled_at_step(0)[0])
    tensors = {"latents": torch.zeros(1, 4, 8, 8), "add_text_embeds": torch.zeros(2, CLIP_G)}
    # "a red car" through step 2, "a blue boat" from step 3 (A1111's schedule ends).
    assert conditioning.callback_pooled(2, tensors) is None
    swapped = conditioning.callback_pooled(3, tensors)
    torch.testing.assert_close(swapped, torch.cat([conditioning.pooled_at_step(3)[1], boat.pooled_at_step(0)[0]]))


def test_the_refiner_reads_clip_g_alone(tiny_sdxl_refiner_dir):
    from tests.inference_fixtures import _load_tiny_pipe

    refiner = _load_tiny_pipe(str(tiny_sdxl_refiner_dir))
    conditioning = encode(refiner, "a cat", "x")
    assert conditioning.at_step(0)[0].shape == (1, 77, CLIP_G)
    assert sdxl_size_kwargs(refiner, 64, 96)["aesthetic_score"] == 6.0
    assert sdxl_size_kwargs(refiner, 64, 96)["negative_aesthetic_score"] == 2.5


def request(**changes) -> GenerateRequest:
    values = dict(
        job_id=1, kind=JobKind.TXT2IMG, model="tiny-xl", prompt="a cat", negative_prompt="",
        width=64, height=64, steps=2, cfg_scale=7.0, sampler="Euler", seeds=(3,),
    )
    return GenerateRequest(**{**values, **changes})


def as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_a_plain_sdxl_prompt_encodes_as_diffusers_does(tiny_sdxl_pipe):
    # SDXL samples on A1111's k-diffusion path (tests/test_k_sdxl.py); what it is conditioned
    # on, for a plain prompt and an empty negative one, is diffusers' own encoding.
    conditioning = encode_conditioning(tiny_sdxl_pipe, "a cat", "", 2)
    theirs = tiny_sdxl_pipe.encode_prompt(
        "a cat", device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    ours = (*conditioning.at_step(0), *conditioning.pooled_at_step(0))
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("prompt", ["a cat :0.5 AND a cat :0.5", "a cat AND a cat :0"])
def test_and_parts_combine_with_their_pooled_vectors(tiny_sdxl_pipe, prompt):
    # uncond + 0.5 (cat - uncond) + 0.5 (cat - uncond) is the plain prompt's prediction; so is
    # a second part at weight 0: the parts' embeddings and pooled vectors reach the UNet apart.
    plain = generate(tiny_sdxl_pipe, request())[0]
    combined = generate(tiny_sdxl_pipe, request(prompt=prompt))[0]
    assert np.abs(as_array(plain) - as_array(combined)).max() <= 1
    other = generate(tiny_sdxl_pipe, request(prompt="a cat AND a dog"))[0]
    assert np.abs(as_array(plain) - as_array(other)).max() > 1


def test_a_cross_user_batch_on_sdxl_gives_each_job_its_own_images(tiny_sdxl_pipe):
    from inference.batching import generate_batch

    jobs = [
        request(job_id=1, prompt="[a red car:a blue boat:1]", seeds=(3, 4), steps=3),
        request(job_id=2, prompt="a lighthouse", negative_prompt="fog", seeds=(5,), steps=3),
    ]
    batched = generate_batch(tiny_sdxl_pipe, jobs)
    for job, images in zip(jobs, batched):
        for got, alone in zip(images, generate(tiny_sdxl_pipe, job)):
            assert np.abs(as_array(got) - as_array(alone)).max() <= 1
    assert np.abs(as_array(batched[0][0]) - as_array(batched[1][0])).max() > 1


def test_previews_of_sdxl_latents_use_sdxl_colours_and_taesd_xl(tmp_path):
    from inference import previews
    from inference.tiny import build_tiny_taesd

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sd_rgb, xl_rgb = previews.latents_to_rgb(latents, previews.SD1), previews.latents_to_rgb(latents, previews.SDXL)
    assert not torch.equal(sd_rgb, xl_rgb)  # A1111's cheap_approximation differs per family
    taesd = previews.load_taesd(str(build_tiny_taesd(tmp_path / "taesd", seed=0)), torch.device("cpu"), torch.float32)
    taesd_xl = previews.load_taesd(str(build_tiny_taesd(tmp_path / "taesdxl", seed=1)), torch.device("cpu"), torch.float32)
    family = previews.SDXL
    previewer = previews.Previewer("taesd", 64, taesd, family=lambda: family, taesd_xl=taesd_xl)
    xl_preview = previewer.make(latents)
    assert xl_preview == previews.jpeg_sheet(previews.taesd_to_rgb(taesd_xl, latents), 64, max_scale=1.0)
    family = previews.SD1
    assert previewer.make(latents) == previews.jpeg_sheet(previews.taesd_to_rgb(taesd, latents), 64, max_scale=1.0)
    # Without a TAESD-XL, SDXL latents get the approx map, never SD's TAESD.
    family = previews.SDXL
    assert previews.Previewer("taesd", 64, taesd, family=lambda: family).make(latents) == previews.make_preview(
        latents, 64, previews.SDXL
    )


def test_size_conditioning_is_the_images_size_in_each_pass(tiny_sdxl_pipe):
    # A1111: original size = target size = the pass's width x height, crop 0,0; the hires
    # fix's second pass is conditioned on its larger size.
    from inference import upscale
    from inference.common.protocol import HiresFix
    from inference.workflows import run_hires

    seen = []

    def record(module, args, kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(kwargs["added_cond_kwargs"]["time_ids"][0].tolist()))

    hook = tiny_sdxl_pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        hires = HiresFix(scale=2.0, steps=1, denoising_strength=0.6)
        upscalers = upscale.Upscalers((), torch.device("cpu"), torch.float32)
        run_hires(tiny_sdxl_pipe, upscalers, request(width=64, height=96, hires=hires), lambda *a: None, lambda: False)
    finally:
        hook.remove()
    assert seen[0] == (96.0, 64.0, 0.0, 0.0, 96.0, 64.0)  # (height, width) as SDXL reads them
    assert seen[-1] == (192.0, 128.0, 0.0, 0.0, 192.0, 128.0)
