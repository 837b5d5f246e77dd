"""Writing a diffusers pipeline as an A1111-style single-file checkpoint, and tiny ones to test with.

A1111, Forge and Civitai files keep Stable Diffusion's original key layout (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.*`` or ``conditioner.embedders.N.*``). Tests and the
benchmark need such files of every family without downloading gigabytes, so this module renames
a diffusers pipeline's state dicts back into that layout: the inverse of what diffusers'
``from_single_file`` conversion (diffusers/loaders/single_file_utils.py) does on load. The key
correspondences are the ones of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
and convert_diffusers_to_original_sdxl.py (Apache-2.0), computed here from each network's config
instead of being hard-coded for the full-size block counts, so that tiny networks convert too.

``build_tiny_pipeline`` makes a random-weight pipeline of each family at a few megabytes (the
structure of the real one: SDXL's two text encoders, its size-conditioning embedding, the
refiner's aesthetic score, 9-channel inpainting UNets). ``write_single_file`` saves any of them
as one ``.safetensors``, and ``write_diffusers_configs`` the config folder that describes its
shapes (what ModelSpec.original_config takes for a checkpoint of unusual dimensions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from inference.common.checkpoints import Family
from inference.tiny import TINY_TEXT_ENCODER, TINY_UNET, TINY_VAE, TOKENIZER_DIR

__all__ = [
    "build_tiny_pipeline",
    "original_layout",
    "write_diffusers_configs",
    "write_single_file",
]

_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
# Where each family keeps its text encoders: (prefix, OpenCLIP layout) per pipeline component.
_TEXT_ENCODER_LAYOUT: dict[Family, dict[str, tuple[str, bool]]] = {
    Family.SD1: {"text_encoder": ("cond_stage_model.transformer.", False)},
    Family.SD2: {"text_encoder": ("cond_stage_model.model.", True)},
    Family.SDXL: {
        "text_encoder": ("conditioner.embedders.0.transformer.", False),
        "text_encoder_2": ("conditioner.embedders.1.model.", True),
    },
    Family.SDXL_REFINER: {"text_encoder_2": ("conditioner.embedders.0.model.", True)},
}

_RESNET_NAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size (and aesthetic score) conditioning
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_part(rest: str) -> str:
    for diffusers_name, original_name in _RESNET_NAMES:
        if rest.startswith(diffusers_name + "."):
            return original_name + rest[len(diffusers_name):]
    return rest


def unet_key(key: str, config: Any) -> str:
    """The original name of one diffusers UNet parameter. The original UNet numbers its blocks
    flat: per resolution level, ``layers_per_block`` resnets (each followed by its attention
    when the level has one) then the downsampler, so index = 1 + level * (layers + 1) + layer;
    the up path has one more resnet per level, and its upsampler follows the last one."""
    layers = config.layers_per_block
    if (match := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)):
        level, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = 1 + level * (layers + 1) + layer
        return f"input_blocks.{index}.0.{_resnet_part(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if (match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)):
        return f"input_blocks.{(int(match[1]) + 1) * (layers + 1)}.0.op.{match[2]}"
    if (match := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)):
        level, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = level * (layers + 1) + layer
        return f"output_blocks.{index}.0.{_resnet_part(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if (match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key)):
        level = int(match[1])
        # After the level's last resnet, and after its attention when the level has one.
        has_attention = "CrossAttn" in config.up_block_types[level]
        return f"output_blocks.{level * (layers + 1) + layers}.{2 if has_attention else 1}.{match[2]}"
    if (match := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key)):
        return f"middle_block.{2 * int(match[1])}.{_resnet_part(match[2])}"
    if key.startswith("mid_block.attentions.0."):
        return "middle_block.1." + key.removeprefix("mid_block.attentions.0.")
    module, _, parameter = key.rpartition(".")
    if module in _UNET_TOP_LEVEL:
        return f"{_UNET_TOP_LEVEL[module]}.{parameter}"
    raise ValueError(f"no original name for UNet parameter {key!r}")


_VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key(key: str, levels: int) -> str:
    """The original name of one diffusers VAE parameter (the decoder's levels count down)."""
    key = key.replace("conv_norm_out", "norm_out")
    if (match := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", key)):
        coder, direction, level, kind, index, rest = match.groups()
        level_index = int(level) if direction == "down" else levels - 1 - int(level)
        if kind == "resnets":
            return f"{coder}.{direction}.{level_index}.block.{index}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{coder}.{direction}.{level_index}.{'downsample' if direction == 'down' else 'upsample'}.{rest}"
    if (match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)):
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
    if (match := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key)):
        return f"{match[1]}.mid.attn_1.{_VAE_ATTENTION_NAMES[match[2]]}.{match[3]}"
    return key


def _vae_state_dict(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    levels = len(vae.config.down_block_types)
    converted = {}
    for key, tensor in vae.state_dict().items():
        name = vae_key(key, levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original attention uses 1x1 convolutions
        converted[_VAE_PREFIX + name] = tensor
    return converted


_OPENCLIP_LAYER_NAMES = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
)


def _openclip_state_dict(text_encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's layout: one fused in_proj for q, k and v, a bare positional_embedding, and the
    text projection stored transposed (SD 2.x files carry one too, unused by diffusers)."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    hidden = text_encoder.config.hidden_size
    converted = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": (
            state.pop("text_projection.weight").T.contiguous() if "text_projection.weight" in state else torch.eye(hidden)
        ),
    }
    for layer in range(text_encoder.config.num_hidden_layers):
        source = f"encoder.layers.{layer}."
        target = f"transformer.resblocks.{layer}."
        for part in ("weight", "bias"):
            converted[target + f"attn.in_proj_{part}"] = torch.cat(
                [state.pop(source + f"self_attn.{name}_proj.{part}") for name in "qkv"]
            )
        for diffusers_name, original_name in _OPENCLIP_LAYER_NAMES:
            for part in ("weight", "bias"):
                converted[target + f"{original_name}.{part}"] = state.pop(source + f"{diffusers_name}.{part}")
    if state:
        raise ValueError(f"text encoder parameters left without an original name: {sorted(state)}")
    return {prefix + key: tensor for key, tensor in converted.items()}


def original_layout(pipe: Any, family: Family) -> dict[str, torch.Tensor]:
    """Every weight of ``pipe`` (a diffusers SD 1.x/2.x/SDXL/refiner pipeline) under the name an
    A1111 single file gives it."""
    unet = pipe.unet
    tensors = {_UNET_PREFIX + unet_key(key, unet.config): value for key, value in unet.state_dict().items()}
    tensors.update(_vae_state_dict(pipe.vae))
    for component, (prefix, openclip) in _TEXT_ENCODER_LAYOUT[family].items():
        encoder = getattr(pipe, component)
        if openclip:
            tensors.update(_openclip_state_dict(encoder, prefix))
        else:
            # transformers 5 flattened CLIPTextModel's keys; the file keeps the "text_model." level.
            tensors.update(
                {prefix + "text_model." + k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
            )
    return tensors


def write_single_file(
    pipe: Any,
    path: str | Path,
    family: Family,
    *,
    metadata: dict[str, str] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    half: bool = False,
) -> Path:
    """Save ``pipe`` as one A1111-style ``.safetensors`` file. ``extra_tensors`` adds marker keys
    some trainers write (``v_pred``, ``ztsnr``); ``half`` stores float16, as most files are."""
    from safetensors.torch import save_file

    tensors = original_layout(pipe, family)
    if half:
        tensors = {key: value.half() for key, value in tensors.items()}
    tensors.update(extra_tensors or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata=metadata)
    return path


def write_diffusers_configs(pipe: Any, folder: str | Path) -> Path:
    """The diffusers config folder of ``pipe`` (model_index.json and each network's and the
    scheduler's config, no weights): what from_single_file needs to know the shapes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)
    for name, component in pipe.components.items():
        if component is None or name.startswith("tokenizer"):
            continue
        if hasattr(component, "save_config"):  # diffusers networks and schedulers
            component.save_config(folder / name)
        elif hasattr(component, "config"):  # transformers text encoders
            component.config.save_pretrained(folder / name)
    return folder


# --- tiny random-weight pipelines of every family ---------------------------------------------

_TINY_SD2_UNET = dict(TINY_UNET, attention_head_dim=(2, 4), use_linear_projection=True)
_TINY_TEXT_ENCODER_2 = dict(TINY_TEXT_ENCODER, hidden_size=64, intermediate_size=128, projection_dim=64, hidden_act="gelu")
# SDXL's layout at a few megabytes: no attention at the first level, more transformer layers at
# the second, cross-attention over both encoders' features (32 + 64), and the "text_time"
# embedding of the pooled prompt (64) plus six (refiner: five) size numbers of 8 features each.
_TINY_SDXL_UNET = dict(
    TINY_UNET,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    transformer_layers_per_block=(1, 2),
    use_linear_projection=True,
    cross_attention_dim=32 + 64,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 64,
)
_TINY_REFINER_UNET = dict(_TINY_SDXL_UNET, cross_attention_dim=64, projection_class_embeddings_input_dim=5 * 8 + 64)


def build_tiny_pipeline(family: Family, *, inpainting: bool = False, seed: int = 0) -> Any:
    """A random-weight pipeline of ``family`` at a few megabytes (the same seed, the same
    weights); ``inpainting`` gives the 9-channel UNet of the family's inpainting model."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from inference.tiny import SD15_SCHEDULER_CONFIG

    if inpainting and family is Family.SDXL_REFINER:
        raise ValueError("the SDXL refiner has no inpainting variant")
    unet_config = {
        Family.SD1: TINY_UNET, Family.SD2: _TINY_SD2_UNET,
        Family.SDXL: _TINY_SDXL_UNET, Family.SDXL_REFINER: _TINY_REFINER_UNET,
    }[family]
    xl = family in (Family.SDXL, Family.SDXL_REFINER)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DConditionModel(**dict(unet_config, in_channels=9 if inpainting else 4))
        vae = diffusers.AutoencoderKL(**dict(TINY_VAE, scaling_factor=0.13025 if xl else 0.18215))
        first = CLIPTextModel(CLIPTextConfig(**dict(TINY_TEXT_ENCODER, hidden_act="gelu" if family is Family.SD2 else "quick_gelu")))
        second = CLIPTextModelWithProjection(CLIPTextConfig(**_TINY_TEXT_ENCODER_2)) if xl else None
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    if not xl:
        scheduler = diffusers.PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
        pipeline_class = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
        return pipeline_class(
            vae=vae, text_encoder=first, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    scheduler = diffusers.EulerDiscreteScheduler.from_config(dict(SD15_SCHEDULER_CONFIG, timestep_spacing="leading"))
    tokenizer_2 = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")
    if family is Family.SDXL_REFINER:
        return diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=second, tokenizer=None, tokenizer_2=tokenizer_2,
            unet=unet, scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        )
    pipeline_class = diffusers.StableDiffusionXLInpaintPipeline if inpainting else diffusers.StableDiffusionXLPipeline
    return pipeline_class(
        vae=vae, text_encoder=first, text_encoder_2=second, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        unet=unet, scheduler=scheduler,
    )


def a1111_yaml(unet_config: Any, vae_config: Any, *, parameterization: str = "eps") -> str:
    """An A1111/ldm ``.yaml`` describing an SD 1.x-style UNet and VAE of these diffusers
    configs: what an admin puts beside a checkpoint of unusual shape (A1111 reads it)."""
    base = unet_config.block_out_channels[0]
    attention_levels = [2**i for i, kind in enumerate(unet_config.down_block_types) if "CrossAttn" in kind]
    heads = unet_config.attention_head_dim
    config = {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "parameterization": parameterization,
                "scale_factor": vae_config.scaling_factor,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "in_channels": unet_config.in_channels,
                        "out_channels": unet_config.out_channels,
                        "model_channels": base,
                        "attention_resolutions": attention_levels,
                        "num_res_blocks": unet_config.layers_per_block,
                        "channel_mult": [c // base for c in unet_config.block_out_channels],
                        "num_heads": heads if isinstance(heads, int) else heads[0],
                        "use_linear_in_transformer": unet_config.use_linear_projection,
                        "transformer_depth": 1,
                        "context_dim": unet_config.cross_attention_dim,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": vae_config.latent_channels,
                        "ddconfig": {
                            "z_channels": vae_config.latent_channels,
                            "resolution": vae_config.sample_size,
                            "in_channels": vae_config.in_channels,
                            "out_ch": vae_config.out_channels,
                            "ch": vae_config.block_out_channels[0],
                            "ch_mult": [c // vae_config.block_out_channels[0] for c in vae_config.block_out_channels],
                            "num_res_blocks": vae_config.layers_per_block,
                            "attn_resolutions": [],
                        },
                    },
                },
            },
        }
    }
    return json.dumps(config, indent=2)  # JSON is YAML, and needs no YAML writer
