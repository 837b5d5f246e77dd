"""The bundled CLIP tokenizer and the tiny test model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from inference.tiny import TOKENIZER_DIR, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


def test_bundled_tokenizer_matches_clip():
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token == "<|endoftext|>"


def test_tiny_model_is_sd15_shaped(tiny_pipe):
    assert tiny_pipe.vae_scale_factor == 8
    assert tiny_pipe.unet.config.in_channels == 4
    assert tiny_pipe.unet.config.cross_attention_dim == tiny_pipe.text_encoder.config.hidden_size
    assert tiny_pipe.text_encoder.config.vocab_size == 49408
    assert tiny_pipe.tokenizer("a photo of a cat").input_ids[:3] == [49406, 320, 1125]
    assert tiny_pipe.safety_checker is None


def test_tiny_inpainting_model_is_sd15_inpainting_shaped(tiny_inpaint_model_dir):
    import json

    index = json.loads((tiny_inpaint_model_dir / "model_index.json").read_text())
    unet = json.loads((tiny_inpaint_model_dir / "unet" / "config.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert unet["in_channels"] == 9 and unet["out_channels"] == 4


def test_cli_build_is_deterministic_per_seed(tmp_path, tiny_model_dir):
    # The bot's CLI runs this module in a subprocess; the same seed gives the same weights.
    folder = tmp_path / "from-cli"
    subprocess.run(
        [sys.executable, "-m", "inference.tiny", str(folder)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    assert (folder / "model_index.json").is_file()
    for name in WEIGHT_FILES:
        assert (folder / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name

    other_seed = build_tiny_model(tmp_path / "seed-1", seed=1)
    unet_0 = load_file(tiny_model_dir / WEIGHT_FILES[0])
    unet_1 = load_file(other_seed / WEIGHT_FILES[0])
    assert any(not unet_0[key].equal(unet_1[key]) for key in unet_0)


def test_bad_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="-3"):
        build_tiny_model(tmp_path / "x", seed=-3)
