"""A1111's refiner on the tiny SDXL: the base stops at the switch, the refiner finishes from its
latents, the infotext says so; bad combinations are refused with a message."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from inference.common.infotext import parse_infotext, request_infotext
from inference.common.protocol import GenerateRequest, HiresFix, ImageInput, JobKind, ModelSpec
from inference.generate import InvalidRequestError, generate
from inference.models import PipelineCache
from inference.refiner import base_steps, run_refined
from inference.workflows import validate_workflow


@pytest.fixture(scope="module")
def cache(tiny_sdxl_dir, tiny_sdxl_refiner_dir, tiny_model_dir):
    specs = (
        ModelSpec("tiny-xl", str(tiny_sdxl_dir)),
        ModelSpec("tiny-refiner", str(tiny_sdxl_refiner_dir)),
        ModelSpec("tiny", str(tiny_model_dir)),
    )
    return PipelineCache(specs, torch.device("cpu"), torch.float32)


def request(**changes) -> GenerateRequest:
    values = dict(
        job_id=1, kind=JobKind.TXT2IMG, model="tiny-xl", prompt="a cat", negative_prompt="blurry",
        width=64, height=64, steps=4, cfg_scale=7.0, sampler="Euler", seeds=(3, 4),
        refiner="tiny-refiner", refiner_switch_at=0.5,
    )
    return GenerateRequest(**{**values, **changes})


def test_the_refiner_finishes_what_the_base_began(cache):
    progress = []
    refined = run_refined(cache, request(), lambda done, total, latents: progress.append((done, total)), lambda: False)
    assert [image.size for image in refined] == [(64, 64), (64, 64)]
    # Progress counts the requested steps over both models, to the end.
    assert progress[-1] == (4, 4) and [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert base_steps(cache.get("tiny-xl"), 4, 0.5) == 2
    # Both models stay loaded for the job (the default is one model in memory).
    assert set(cache.loaded_names) >= {"tiny-xl", "tiny-refiner"}
    # The refiner changed the images: they are not the base's alone.
    base_only = generate(cache.get("tiny-xl"), replace(request(), refiner=""))
    assert np.abs(np.asarray(refined[0], dtype=np.int16) - np.asarray(base_only[0], dtype=np.int16)).max() > 1


def test_the_infotext_names_the_refiner_as_a1111_does():
    info = parse_infotext(request_infotext(request(refiner_switch_at=0.8), 0, refiner_hash="0123456789"))
    assert info["Refiner"] == "tiny-refiner [0123456789]" and info["Refiner switch at"] == "0.8"
    assert "Refiner" not in parse_infotext(request_infotext(request(refiner=""), 0))


def test_bad_refiner_requests_are_refused(cache):
    with pytest.raises(InvalidRequestError, match="not an SDXL model and cannot refine"):
        run_refined(cache, request(refiner="tiny"), lambda *args: None, lambda: False)
    with pytest.raises(InvalidRequestError, match="works with SDXL models"):
        run_refined(cache, request(model="tiny"), lambda *args: None, lambda: False)
    with pytest.raises(InvalidRequestError, match="above 0 and below 1"):
        run_refined(cache, request(refiner_switch_at=1.0), lambda *args: None, lambda: False)
    # With the hires fix the refiner runs (tests/test_k_sdxl.py); with an image workflow not.
    validate_workflow(request(hires=HiresFix(scale=2.0, steps=0, denoising_strength=0.5, upscaler="Latent")))
    with pytest.raises(InvalidRequestError, match="runs with txt2img and variations"):
        validate_workflow(request(kind=JobKind.IMG2IMG, image=ImageInput("missing.png", 0.5)))


def test_a_refiner_as_the_model_of_a_txt2img_job_is_refused(cache):
    with pytest.raises(InvalidRequestError, match="is a refiner: it cannot make an image from a prompt alone"):
        generate(cache.get("tiny-refiner"), request(model="tiny-refiner", refiner=""))


def test_the_memory_budget_counts_both_sdxl_encoders_and_derived_pipelines_once(tiny_sdxl_pipe):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    from inference.img2img import derived_pipeline
    from inference.models import pipeline_bytes

    modules = (tiny_sdxl_pipe.unet, tiny_sdxl_pipe.vae, tiny_sdxl_pipe.text_encoder, tiny_sdxl_pipe.text_encoder_2)
    expected = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    assert pipeline_bytes(tiny_sdxl_pipe) == expected
    # The SDXL inpaint and img2img pipelines a model runs its workflows with share its weights.
    inpaint = derived_pipeline(tiny_sdxl_pipe, StableDiffusionInpaintPipeline)
    assert isinstance(inpaint, StableDiffusionXLInpaintPipeline)
    assert inpaint.unet is tiny_sdxl_pipe.unet and inpaint.text_encoder_2 is tiny_sdxl_pipe.text_encoder_2
    assert derived_pipeline(tiny_sdxl_pipe, StableDiffusionImg2ImgPipeline).vae is tiny_sdxl_pipe.vae


@pytest.mark.parametrize(("sampler", "steps", "switch_at"), [("Euler", 20, 0.8), ("Euler a", 7, 0.65), ("DPM++ 2M", 30, 0.5)])
def test_the_switch_falls_where_a1111_switches(cache, sampler, steps, switch_at):
    # A1111 (apply_refiner): the refiner takes over at the first step whose timestep t has
    # (999 - t) / 1000 >= switch_at.
    from inference.generate import use_sampler

    base = cache.get("tiny-xl")
    use_sampler(base, sampler, [1])
    base.scheduler.set_timesteps(steps)
    timesteps = base.scheduler.timesteps.tolist()
    a1111_base_steps = next(i for i, t in enumerate(timesteps) if (999 - round(t)) / 1000 >= switch_at)
    assert base_steps(base, steps, switch_at) == a1111_base_steps
