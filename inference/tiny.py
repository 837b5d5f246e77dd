"""A tiny Stable-Diffusion-1.5-shaped model with random weights, for tests and demos.

It has SD 1.5's structure (UNet with cross-attention, a VAE that downsamples by 8, a CLIP text
encoder, SD 1.5's scheduler) at a few megabytes, so the whole inference path runs on a laptop
CPU in seconds and offline: the CLIP tokenizer comes from ``inference/assets``. The images it
makes are noise, but they are deterministic noise, which is what tests need.

    python -m inference.tiny FOLDER [--seed N] [--inpainting]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip_tokenizer"

# SD 1.5's text encoder ids; a real vocabulary so the bundled tokenizer's ids are all valid.
_CLIP_VOCAB_SIZE = 49408
_BOS_TOKEN_ID = 49406
_EOS_TOKEN_ID = 49407
_CONTEXT_LENGTH = 77
_CROSS_ATTENTION_DIM = 32

# SD 1.5's scheduler_config.json, so the default sampler behaves as it does on the real model.
_SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
}


def build_tiny_model(folder: str | Path, seed: int = 0, inpainting: bool = False) -> Path:
    """Write a tiny random-weight SD-1.5-shaped diffusers folder and return its path.

    The same seed always gives the same weights. The folder is overwritten if it exists.
    ``inpainting`` makes the shape of SD 1.5's inpainting checkpoint instead: a
    StableDiffusionInpaintPipeline whose UNet takes 9 channels (latents, mask, masked image).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    folder = Path(folder)

    # fork_rng keeps the caller's global RNG untouched while we seed the weight init.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,  # latent side for the default 64 px image
            in_channels=9 if inpainting else 4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            # SD 1.5 pattern: cross-attention at the high resolutions, none at the lowest.
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_CROSS_ATTENTION_DIM,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        # Four blocks give the real vae_scale_factor of 8 (2 ** (blocks - 1)).
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=64,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=_CLIP_VOCAB_SIZE,
                hidden_size=_CROSS_ATTENTION_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=_CONTEXT_LENGTH,
                hidden_act="quick_gelu",
                bos_token_id=_BOS_TOKEN_ID,
                eos_token_id=_EOS_TOKEN_ID,
                pad_token_id=_EOS_TOKEN_ID,
            )
        )
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    scheduler = PNDMScheduler.from_config(_SD15_SCHEDULER_CONFIG)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; transformers 4's CLIPTokenizer (the slow one)
    # needs vocab.json and merges.txt, so ship both and the folder loads with either.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / name, folder / "tokenizer" / name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.tiny",
        description="Write a tiny random-weight SD-1.5-shaped diffusers model folder.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inpainting", action="store_true", help="an inpainting model (9-channel UNet)"
    )
    args = parser.parse_args(argv)
    path = build_tiny_model(args.folder, seed=args.seed, inpainting=args.inpainting)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
