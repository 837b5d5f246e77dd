"""Tiny Stable Diffusion 1.5- and SDXL-shaped models with random weights, for tests and demos.

It has SD 1.5's structure (UNet with cross-attention, a VAE that downsamples by 8, a CLIP text
encoder, SD 1.5's scheduler) at a few megabytes, so the whole inference path runs on a laptop
CPU in seconds and offline: the CLIP tokenizer comes from ``inference/assets``. The images it
makes are noise, but they are deterministic noise, which is what tests need.

SDXL's tiny twin (``family="sdxl"``) has SDXL's structure: two text encoders (CLIP-L as
CLIPTextModel, CLIP-G as CLIPTextModelWithProjection whose tokenizer pads with "!"), a UNet
with ``addition_embed_type="text_time"`` reading both encoders' hidden states side by side and
the pooled CLIP-G vector beside six size numbers, SDXL's VAE scaling factor, SDXL's Euler
scheduler. ``family="sdxl-refiner"`` is the refiner: CLIP-G alone, aesthetic-score
conditioning (five numbers instead of six).

    python -m inference.tiny FOLDER [--seed N] [--inpainting] [--family sd1|sdxl|sdxl-refiner]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip_tokenizer"

# SD 1.5's text encoder ids; a real vocabulary so the bundled tokenizer's ids are all valid.
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
CONTEXT_LENGTH = 77
_CROSS_ATTENTION_DIM = 32

# stable-diffusion-v1-5/unet/config.json, the values that shape the network.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)
# stable-diffusion-v1-5/vae/config.json
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
# stable-diffusion-v1-5/text_encoder/config.json
SD15_TEXT_ENCODER = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=CONTEXT_LENGTH,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=BOS_TOKEN_ID,
    eos_token_id=EOS_TOKEN_ID,
    pad_token_id=1,
)

# SD 1.5's structure at a few megabytes: a two-level UNet (cross-attention at the high
# resolution, none at the lowest), a VAE with SD 1.5's four blocks (so the real
# vae_scale_factor of 8) at 32 channels, a two-layer text encoder.
TINY_UNET = dict(
    SD15_UNET,
    sample_size=8,  # latent side for the default 64 px image
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=_CROSS_ATTENTION_DIM,
)
TINY_VAE = dict(SD15_VAE, block_out_channels=(32, 32, 32, 32), layers_per_block=1, sample_size=64)
TINY_TEXT_ENCODER = dict(
    SD15_TEXT_ENCODER,
    hidden_size=_CROSS_ATTENTION_DIM,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    projection_dim=512,  # unused (CLIPTextModel has no projection): transformers' default, as ever
    pad_token_id=EOS_TOKEN_ID,
)

# SD 1.5's scheduler_config.json, so the default sampler behaves as it does on the real model.
SD15_SCHEDULER_CONFIG = {
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


def build_tiny_model(
    folder: str | Path, seed: int = 0, inpainting: bool = False, family: str = "sd1"
) -> Path:
    """Write a tiny random-weight SD-1.5-shaped diffusers folder and return its path.

    The same seed always gives the same weights. The folder is overwritten if it exists.
    ``inpainting`` makes the shape of SD 1.5's inpainting checkpoint instead: a
    StableDiffusionInpaintPipeline whose UNet takes 9 channels (latents, mask, masked image).
    ``family`` "sdxl" or "sdxl-refiner" builds SDXL's shapes instead (see the module doc).
    """
    if family in ("sdxl", "sdxl-refiner"):
        return build_tiny_sdxl(folder, seed, inpainting=inpainting, refiner=family == "sdxl-refiner")
    if family != "sd1":
        raise ValueError(f"family must be sd1, sdxl or sdxl-refiner, got {family!r}")
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    folder = Path(folder)

    # fork_rng keeps the caller's global RNG untouched while we seed the weight init.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**dict(TINY_UNET, in_channels=9 if inpainting else 4))
        vae = AutoencoderKL(**TINY_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER))
    return save_sd15_pipeline(folder, unet, vae, text_encoder, inpainting=inpainting)


def save_sd15_pipeline(
    folder: str | Path, unet, vae, text_encoder, *, inpainting: bool = False, half: bool = False
) -> Path:
    """Save the three networks as a diffusers SD 1.5 folder, with SD 1.5's scheduler and the
    bundled CLIP tokenizer, and return its path. ``half`` saves float16 weights (half the disk
    and load time; the loader casts to what it wants); ``inpainting`` an inpainting pipeline."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if half:
        pipe.to(torch.float16)
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; transformers 4's CLIPTokenizer (the slow one)
    # needs vocab.json and merges.txt, so ship both and the folder loads with either.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / name, folder / "tokenizer" / name)
    return folder


# SDXL's base (stable-diffusion-xl-base-1.0/unet/config.json) at tiny width. The UNet's added
# embedding reads six size numbers (original size, crop corner, target size) at
# addition_time_embed_dim each, plus CLIP-G's pooled vector; the refiner reads five (an
# aesthetic score instead of the target size) and CLIP-G's hidden states alone.
_TINY_CLIP_L_DIM = 32
_TINY_CLIP_G_DIM = 32
_TINY_TIME_EMBED_DIM = 8
TINY_SDXL_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    transformer_layers_per_block=(1, 1),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    norm_num_groups=32,
    cross_attention_dim=_TINY_CLIP_L_DIM + _TINY_CLIP_G_DIM,
    addition_embed_type="text_time",
    addition_time_embed_dim=_TINY_TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=6 * _TINY_TIME_EMBED_DIM + _TINY_CLIP_G_DIM,
)
TINY_SDXL_REFINER_UNET = dict(
    TINY_SDXL_UNET,
    cross_attention_dim=_TINY_CLIP_G_DIM,
    projection_class_embeddings_input_dim=5 * _TINY_TIME_EMBED_DIM + _TINY_CLIP_G_DIM,
)
# SDXL's VAE has SD's structure; its latents are scaled differently, and diffusers decodes in
# float32 unless the VAE says it need not (force_upcast).
TINY_SDXL_VAE = dict(TINY_VAE, scaling_factor=0.13025, force_upcast=True)
TINY_SDXL_CLIP_L = dict(TINY_TEXT_ENCODER, hidden_size=_TINY_CLIP_L_DIM)
# CLIP-G (OpenCLIP ViT-bigG): GELU, a projection of the pooled vector.
TINY_SDXL_CLIP_G = dict(
    TINY_TEXT_ENCODER, hidden_size=_TINY_CLIP_G_DIM, projection_dim=_TINY_CLIP_G_DIM, hidden_act="gelu"
)
# stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json
SDXL_SCHEDULER_CONFIG = dict(
    SD15_SCHEDULER_CONFIG,
    interpolation_type="linear",
    prediction_type="epsilon",
    timestep_spacing="leading",
    use_karras_sigmas=False,
)


def build_tiny_sdxl(folder: str | Path, seed: int = 0, *, inpainting: bool = False, refiner: bool = False) -> Path:
    """Write a tiny random-weight SDXL (or SDXL refiner) diffusers folder and return its path.

    ``inpainting``: StableDiffusionXLInpaintPipeline with a 9-channel UNet (SDXL's inpainting
    checkpoint). ``refiner``: StableDiffusionXLImg2ImgPipeline without CLIP-L, scored by
    aesthetics, as stable-diffusion-xl-refiner-1.0 is. The same seed gives the same weights.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if inpainting and refiner:
        raise ValueError("there is no SDXL refiner inpainting model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_config = TINY_SDXL_REFINER_UNET if refiner else TINY_SDXL_UNET
        unet = UNet2DConditionModel(**dict(unet_config, in_channels=9 if inpainting else 4))
        vae = AutoencoderKL(**TINY_SDXL_VAE)
        clip_l = None if refiner else CLIPTextModel(CLIPTextConfig(**TINY_SDXL_CLIP_L))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_SDXL_CLIP_G))
    components = dict(
        vae=vae,
        text_encoder=clip_l,
        text_encoder_2=clip_g,
        tokenizer=None if refiner else CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        # OpenCLIP pads with "!" (id 0), not with the end token.
        tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        add_watermarker=False,
    )
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(
            **components, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False
        )
    elif inpainting:
        pipe = StableDiffusionXLInpaintPipeline(**components)
    else:
        pipe = StableDiffusionXLPipeline(**components)
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    for tokenizer in ("tokenizer_2",) if refiner else ("tokenizer", "tokenizer_2"):
        for name in ("vocab.json", "merges.txt"):  # for transformers 4, as save_sd15_pipeline
            shutil.copyfile(TOKENIZER_DIR / name, folder / tokenizer / name)
    return folder


def build_tiny_safety_checker(folder: str | Path, flag_all: bool, seed: int = 0) -> Path:
    """Write a tiny random-weight StableDiffusionSafetyChecker folder and return its path.

    The checker's layout is the real one ("CompVis/stable-diffusion-safety-checker": config,
    weights and a CLIPImageProcessor at the top), so the real loader reads it. Random weights
    give random verdicts, so the thresholds decide them: a cosine similarity lies in [-1, 1],
    and a concept threshold of -2 flags every image, one of 2 flags none.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    side = 32
    config = CLIPConfig(
        text_config={
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": side,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    threshold = -2.0 if flag_all else 2.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        checker = StableDiffusionSafetyChecker(config)
        with torch.no_grad():
            checker.concept_embeds.normal_()
            checker.special_care_embeds.normal_()
            checker.concept_embeds_weights.fill_(threshold)
            # Never "special care": that only adds 0.01 to scores the threshold has decided.
            checker.special_care_embeds_weights.fill_(2.0)
    folder = Path(folder)
    checker.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def build_tiny_taesd(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight AutoencoderTiny (TAESD's layout: 4 latent channels, 8x
    upsampling) folder, for preview_method = "taesd" in tests; returns its path."""
    import torch
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        taesd = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=4,
        )
    taesd.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.tiny",
        description="Write a tiny random-weight SD 1.5- or SDXL-shaped diffusers model folder.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inpainting", action="store_true", help="an inpainting model (9-channel UNet)"
    )
    parser.add_argument(
        "--family", choices=("sd1", "sdxl", "sdxl-refiner"), default="sd1", help="the model's shape"
    )
    args = parser.parse_args(argv)
    path = build_tiny_model(args.folder, seed=args.seed, inpainting=args.inpainting, family=args.family)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
