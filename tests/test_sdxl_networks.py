"""SDXL embeddings (A1111's clip_l + clip_g pair) on the tiny SDXL and its refiner: each half
goes into its own text encoder under one token, the prompt's conditioning changes with it,
and an SD 1.x embedding is refused naming the mismatch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from inference.common.protocol import GenerateRequest, JobKind, ModelSpec
from inference.conditioning import encode_conditioning
from inference.generate import InvalidRequestError
from inference.models import PipelineCache
from inference.networks import ExtraNetworks
from tests.test_inference_networks import write_kohya_lora


def request(prompt: str, model: str = "tiny-xl") -> GenerateRequest:
    return GenerateRequest(
        job_id=1, kind=JobKind.TXT2IMG, model=model, prompt=prompt, negative_prompt="",
        width=64, height=64, steps=2, cfg_scale=7.0, sampler="Euler", seeds=(1,),
    )


@pytest.fixture
def embeddings(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    clip_l, clip_g = torch.randn(2, 32, generator=generator), torch.randn(2, 32, generator=generator)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, folder / "xl-style.safetensors")
    save_file({"emb_params": torch.randn(1, 32, generator=generator)}, folder / "sd-style.safetensors")
    return folder, clip_l, clip_g


def test_an_sdxl_embedding_fills_both_encoders(embeddings, tiny_sdxl_dir, tiny_sdxl_refiner_dir):
    folder, clip_l, clip_g = embeddings
    specs = (ModelSpec("tiny-xl", str(tiny_sdxl_dir)), ModelSpec("tiny-refiner", str(tiny_sdxl_refiner_dir)))
    cache = PipelineCache(specs, torch.device("cpu"), torch.float32, max_loaded=2)
    extra = ExtraNetworks((str(folder),))
    with extra.applied(cache, request("a cat, xl-style")) as run:
        pipe = cache.get("tiny-xl")
        token = run.prompt.removeprefix("a cat, ")
        for tokenizer, encoder, vectors in (
            (pipe.tokenizer, pipe.text_encoder, clip_l), (pipe.tokenizer_2, pipe.text_encoder_2, clip_g)
        ):
            ids = tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
            torch.testing.assert_close(encoder.get_input_embeddings().weight[ids], vectors)
        with_embedding = encode_conditioning(pipe, run.prompt, "", 2).at_step(0)[0]
    without = encode_conditioning(pipe, "a cat, xl-style", "", 2).at_step(0)[0]
    assert not torch.allclose(with_embedding, without)

    # The refiner has OpenCLIP-G alone: it takes the clip_g half.
    with extra.applied(cache, request("a cat, xl-style", model="tiny-refiner")) as run:
        refiner = cache.get("tiny-refiner")
        token = run.prompt.removeprefix("a cat, ")
        ids = refiner.tokenizer_2.convert_tokens_to_ids([token, f"{token}_1"])
        torch.testing.assert_close(refiner.text_encoder_2.get_input_embeddings().weight[ids], clip_g)

    with pytest.raises(InvalidRequestError, match="made for SD 1.x/2.x .* this model is SDXL"):
        with extra.applied(cache, request("a cat, sd-style")):
            pass


def test_an_sdxl_kohya_lora_changes_the_image_and_goes_away(tmp_path, tiny_sdxl_dir):
    import numpy as np

    from inference.generate import generate

    cache = PipelineCache((ModelSpec("tiny-xl", str(tiny_sdxl_dir)),), torch.device("cpu"), torch.float32)
    pipe = cache.get("tiny-xl")
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    # kohya's SDXL layout: lora_unet_*, lora_te1_* (CLIP-L) and lora_te2_* (OpenCLIP-G).
    encoders = (("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"))
    write_kohya_lora(pipe, lora_dir / "XLStyle.safetensors", seed=1, encoders=encoders)
    extra = ExtraNetworks((), (str(lora_dir),))

    def image(prompt: str) -> np.ndarray:
        with extra.applied(cache, request(prompt)) as run:
            return np.asarray(generate(pipe, run)[0], dtype=np.int16)

    base = image("a cat")
    styled = image("a cat <lora:XLStyle:1>")
    assert np.abs(styled - base).max() > 1
    assert {"text_encoder", "text_encoder_2", "unet"} <= set(pipe.get_list_adapters())
    assert np.array_equal(image("a cat"), base)  # off again for a job without it
