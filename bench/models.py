"""Random-weight models for the benchmarks, built from configs: nothing is downloaded.

Speed does not depend on the weights, only on the architecture, so three sizes of the same
SD 1.5 structure are enough:

- ``tiny``: inference/tiny.py's model (a few MB), for smoke tests and the bot benchmarks, where
  the model must cost as little as possible.
- ``small``: SD 1.5's block layout at about a tenth of its widths (~40 MB), so that CPU runs
  spend their time in the same kinds of layers a real model does.
- ``sd15``: the full SD 1.5 architecture, with the values of the published
  stable-diffusion-v1-5 configs (unet, vae, text_encoder, scheduler), in random weights. It is
  about 1.07 B parameters: meant for ``--device cuda``.
- ``sdxl``: SDXL base's full architecture (the shipped stable-diffusion-xl-base-1.0 configs),
  random weights, float16 (2.6 B parameters, 6.5 GB; 16 GB of RAM to build): ``--device cuda``.
  ``tiny-sdxl`` is the tests' tiny SDXL, to rehearse an SDXL run on a CPU.

Built folders are kept under the system's temp directory and reused (building sd15 takes a
while); ``python -m bench.models KIND FOLDER`` writes one where you want it. The preview
benchmark also builds TAESD (``cached_taesd``), and the model-switch one a second folder of a
model (``cached_second_model``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# SD 1.5's published configs and folder layout (scheduler, bundled tokenizer), which the tiny
# model shrinks too.
from inference.tiny import SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, save_sd15_pipeline

MODEL_KINDS = ("tiny", "small", "sd15", "tiny-sdxl", "sdxl")
# Bump when a builder changes, so an old cached folder is not reused.
_BUILD_VERSION = 1

# SD 1.5's layout (three cross-attention levels, one plain, the same VAE depth) at small widths.
SMALL_UNET = dict(
    SD15_UNET,
    sample_size=32,
    block_out_channels=(64, 128, 256, 256),
    layers_per_block=1,
    cross_attention_dim=256,
)
SMALL_VAE = dict(SD15_VAE, block_out_channels=(32, 64, 64, 64), layers_per_block=1, sample_size=256)
SMALL_TEXT_ENCODER = dict(
    SD15_TEXT_ENCODER,
    hidden_size=256,
    intermediate_size=1024,
    projection_dim=256,
    num_hidden_layers=4,
    num_attention_heads=4,
)

# The size and steps each model is benchmarked at unless told otherwise.
DEFAULT_SIZE = {"tiny": 64, "small": 128, "sd15": 512, "tiny-sdxl": 64, "sdxl": 1024}
DEFAULT_STEPS = {"tiny": 4, "small": 8, "sd15": 20, "tiny-sdxl": 4, "sdxl": 30}


def build_full_sd15(folder: str | Path, seed: int = 0) -> Path:
    """The full SD 1.5 architecture in random weights, saved in float16 as a diffusers folder."""
    return _build(folder, SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, seed, half=True)


def build_full_sdxl(folder: str | Path) -> Path:
    """SDXL base's full architecture in random weights (seed 0), saved in float16 as a
    diffusers folder, with the bundled CLIP tokenizer for both encoders (OpenCLIP pads with "!")."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from bench.single_file_load import FULL_CONFIG, random_full_sdxl
    from inference.single_file import MODEL_CONFIGS_DIR
    from inference.tiny import TOKENIZER_DIR

    parts = random_full_sdxl()
    pipe = StableDiffusionXLPipeline(
        unet=parts.unet, vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        scheduler=EulerDiscreteScheduler.from_pretrained(MODEL_CONFIGS_DIR / FULL_CONFIG / "scheduler"),
        add_watermarker=False,
    )
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_small(folder: str | Path, seed: int = 0) -> Path:
    return _build(folder, SMALL_UNET, SMALL_VAE, SMALL_TEXT_ENCODER, seed, half=False)


def _build(folder, unet_config: dict, vae_config: dict, text_config: dict, seed: int, half: bool) -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return save_sd15_pipeline(folder, unet, vae, text_encoder, half=half)


def build_model(kind: str, folder: str | Path) -> Path:
    if kind == "tiny":
        from inference.tiny import build_tiny_model

        return build_tiny_model(folder, seed=0)
    if kind == "small":
        return build_small(folder)
    if kind == "sd15":
        return build_full_sd15(folder)
    if kind == "tiny-sdxl":
        from inference.tiny import build_tiny_model

        return build_tiny_model(folder, seed=0, family="sdxl")
    if kind == "sdxl":
        return build_full_sdxl(folder)
    raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")


def build_taesd(kind: str, folder: str | Path) -> Path:
    """TAESD in random weights for previews of ``kind``'s latents: the real architecture
    (AutoencoderTiny's defaults are madebyollin/taesd's config: 2.4 M parameters, half of
    them the decoder previews run), or inference/tiny.py's few-channel one for the tiny model."""
    if kind == "tiny":
        from inference.tiny import build_tiny_taesd

        return build_tiny_taesd(folder)
    import torch
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        taesd = AutoencoderTiny()
    taesd.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def cached_model(kind: str, cache_dir: str | Path | None = None) -> Path:
    """The model's folder, built on first use and reused afterwards."""
    return _cached(f"{kind}-v{_BUILD_VERSION}", lambda folder: build_model(kind, folder), cache_dir)


def cached_second_model(kind: str, cache_dir: str | Path | None = None) -> Path:
    """Another folder of the same model, for switching between two: a copy of its files (a
    model switch reads, places and accelerates a folder whatever its weights hold)."""
    first = cached_model(kind, cache_dir)
    return _cached(f"{first.name}-second", lambda folder: shutil.copytree(first, folder), cache_dir)


def cached_taesd(kind: str, cache_dir: str | Path | None = None) -> Path:
    """A TAESD folder (``build_taesd``) for the previews of ``kind``, built once and reused."""
    name = "taesd-tiny" if kind == "tiny" else "taesd"
    return _cached(f"{name}-v{_BUILD_VERSION}", lambda folder: build_taesd(kind, folder), cache_dir)


def _cached(name: str, build, cache_dir: str | Path | None) -> Path:  # type: ignore[no-untyped-def]
    """The folder ``name`` in the cache, made by ``build(folder)`` where missing: built under
    a temporary name and renamed, so an interrupted build is never taken for a finished one."""
    root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sdbot-bench-models"
    folder = root / name
    if not (folder / "config.json").is_file() and not (folder / "model_index.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        build(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=MODEL_KINDS)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    print(build_model(args.kind, args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
