"""What a single-file checkpoint is, told from its tensor names and shapes, without torch.

A1111's models are single files (``.safetensors``, sometimes ``.ckpt``) in the original
Stable Diffusion key layout: ``model.diffusion_model.*`` for the UNet, ``first_stage_model.*``
for the VAE, and the text encoders under ``cond_stage_model.*`` (SD 1.x/2.x) or
``conditioner.embedders.N.*`` (SDXL). The family decides which shipped diffusers config the
file is loaded with (inference.single_file), so it is read here from the header alone: a
safetensors file starts with an 8-byte length and a JSON table of every tensor's dtype,
shape and byte range, so a 7 GB checkpoint is inspected by reading a few hundred kilobytes.
Both the bot (listing, ``sdbot models``) and the worker use this, so nothing here imports
torch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Family",
    "TensorHeader",
    "inspect_checkpoint",
    "read_safetensors_header",
    "read_tensor_headers",
]

# A header is a JSON table of names and shapes; real ones are well under 10 MB. A bigger
# length is a corrupt (or not a safetensors) file, refused before allocating it.
MAX_HEADER_BYTES = 100 * 2**20


class Family(StrEnum):
    """The model families the bot can load, by the name ModelSpec.family uses."""

    SD1 = "sd1"  # SD 1.x: CLIP ViT-L text encoder (768), 512 px
    SD2 = "sd2"  # SD 2.x: OpenCLIP ViT-H (1024); 512 epsilon or 768 v-prediction
    SDXL = "sdxl"  # SDXL base and its finetunes (Pony, Illustrious, NoobAI...): CLIP-L + OpenCLIP-G
    SDXL_REFINER = "sdxl-refiner"  # OpenCLIP-G alone, 2560-wide size conditioning


class CheckpointError(ValueError):
    """The file cannot be served as a checkpoint; the message says why, for the admin."""


@dataclass(frozen=True, slots=True)
class TensorHeader:
    dtype: str  # safetensors' names: "F16", "F32", "BF16"...
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    family: Family
    # A 9-channel UNet (4 latent + 4 masked-image latent + 1 mask): only the inpaint
    # pipelines run it, so it serves a base model's inpaint and outpaint jobs.
    inpainting: bool = False
    # "epsilon" or "v_prediction" when the file says so (SAI model-spec metadata, or the
    # ``v_pred`` marker key some trainers write); "" when only running the model can tell.
    prediction_type: str = ""
    # safetensors' own "__metadata__" (trainer settings, model-spec), as strings.
    metadata: dict[str, str] = field(default_factory=dict)
    # The ``ztsnr`` marker key: trained with zero terminal SNR, so its scheduler's betas are
    # rescaled to it (as Forge and ComfyUI do for such v-prediction SDXL finetunes).
    zero_terminal_snr: bool = False


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorHeader], dict[str, str]]:
    """Every tensor's dtype and shape, and the file's metadata; CheckpointError when the file
    is not a whole safetensors file (a truncated download is the usual case)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path.name} is empty or truncated ({size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path.name} is not a safetensors file, or it is corrupt (bad header length)")
            raw = file.read(length)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    try:
        table = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: its safetensors header is not valid JSON") from exc
    if not isinstance(table, dict):
        raise CheckpointError(f"{path.name} is corrupt: its safetensors header is not a table")
    metadata = table.pop("__metadata__", None) or {}
    tensors: dict[str, TensorHeader] = {}
    end = 0
    try:
        for name, entry in table.items():
            tensors[name] = TensorHeader(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]))
            end = max(end, int(entry["data_offsets"][1]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: a tensor entry of its header is malformed") from exc
    if 8 + length + end > size:
        missing = 8 + length + end - size
        raise CheckpointError(
            f"{path.name} is truncated: {missing:,} bytes of its tensors are missing "
            "(an interrupted download? download it again)"
        )
    return tensors, {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


# Tensor names (or prefixes) that mark other kinds of files and families this bot does not
# run, checked in order, so that the admin reads what the file is instead of "unknown".
_OTHER_FAMILIES: tuple[tuple[str, str], ...] = (
    ("model.diffusion_model.joint_blocks.", "an SD3 / SD3.5 model, which is not supported yet"),
    ("joint_blocks.", "an SD3 / SD3.5 model, which is not supported yet"),
    ("model.diffusion_model.double_blocks.", "a Flux model, which is not supported yet"),
    ("double_blocks.", "a Flux model, which is not supported yet"),
    ("model.diffusion_model.input_blocks.1.0.time_stack.", "a video model (Stable Video Diffusion), which is not supported"),
    ("model.diffusion_model.time_embed_video.", "a video model, which is not supported"),
    ("down_blocks.0.0.channelwise.", "a Stable Cascade model, which is not supported"),
)
_OTHER_KINDS: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "a LoRA, not a checkpoint: put it in the LoRA folder (models/Lora)"),
    ("lora_te", "a LoRA, not a checkpoint: put it in the LoRA folder (models/Lora)"),
    ("emb_params", "a textual-inversion embedding, not a checkpoint: put it in embeddings/"),
    ("clip_l", "a textual-inversion embedding, not a checkpoint: put it in embeddings/"),
    ("string_to_param.", "a textual-inversion embedding, not a checkpoint: put it in embeddings/"),
    ("encoder.down.0.", "a VAE, not a checkpoint: put it in models/VAE"),
    ("decoder.up.0.", "a VAE, not a checkpoint: put it in models/VAE"),
    ("down_blocks.0.resnets.", "one diffusers component (a bare UNet or VAE), not a whole checkpoint"),
)

_UNET = "model.diffusion_model."
_FIRST_CONV = _UNET + "input_blocks.0.0.weight"
_CROSS_ATTENTION_KEY = _UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_SDXL_CLIP_G = "conditioner.embedders.1.model.ln_final.weight"
_REFINER_CLIP_G = "conditioner.embedders.0.model.ln_final.weight"
_SD2_OPENCLIP = "cond_stage_model.model.ln_final.weight"
# OpenAI's CLIP, with or without the "text_model." level (older converters dropped it).
_SD1_CLIP = (
    "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    "cond_stage_model.transformer.final_layer_norm.weight",
)


def family_of(tensors: dict[str, TensorHeader], name: str) -> CheckpointInfo:
    """The family of a checkpoint from its tensors; CheckpointError naming what the file is
    when it is not one the bot runs."""
    first_conv = tensors.get(_FIRST_CONV)
    if first_conv is None:
        for marker, what in (*_OTHER_FAMILIES, *_OTHER_KINDS):
            if any(key.startswith(marker) for key in tensors):
                raise CheckpointError(f"{name} is {what}")
        raise CheckpointError(f"{name} is not a Stable Diffusion checkpoint (it has no {_FIRST_CONV})")
    for marker, what in _OTHER_FAMILIES:
        if any(key.startswith(marker) for key in tensors):
            raise CheckpointError(f"{name} is {what}")
    inpainting = len(first_conv.shape) == 4 and first_conv.shape[1] == 9
    if _SDXL_CLIP_G in tensors:
        family = Family.SDXL
    elif _REFINER_CLIP_G in tensors:
        if _UNET + "label_emb.0.0.weight" not in tensors:  # no size conditioning: SD 2.1 Turbo
            raise CheckpointError(
                f"{name} is an SD 2.x model in the newer (SD-Turbo) layout, which is not supported yet"
            )
        family = Family.SDXL_REFINER
    elif _SD2_OPENCLIP in tensors:
        family = Family.SD2
    elif any(key in tensors for key in _SD1_CLIP):  # OpenAI's CLIP there: SD 1.x whatever its width
        family = Family.SD1
    else:  # no text encoder in the file: the UNet's cross-attention width tells
        context = tensors.get(_CROSS_ATTENTION_KEY)
        width = context.shape[-1] if context is not None and context.shape else 0
        if width == 1024:
            family = Family.SD2
        elif width in (768, 0):
            family = Family.SD1
        else:
            raise CheckpointError(f"{name} has a {width}-wide cross-attention, which no supported family has")
    return CheckpointInfo(family, inpainting)


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """The family of a single-file checkpoint (``.safetensors``, or a ``.ckpt`` whose pickle
    holds nothing but weights); CheckpointError saying why it cannot be served."""
    path = Path(path)
    tensors, metadata = read_tensor_headers(path)
    info = family_of(tensors, path.name)
    return CheckpointInfo(
        info.family, info.inpainting, _prediction_type(tensors, metadata), metadata, "ztsnr" in tensors
    )


def read_tensor_headers(path: Path) -> tuple[dict[str, TensorHeader], dict[str, str]]:
    """Every tensor's dtype and shape, and the metadata, of a ``.safetensors`` or ``.ckpt``."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors_header(path)
    if suffix == ".ckpt":
        from inference.common.ckpt_header import read_ckpt_header  # it imports this module

        return read_ckpt_header(path), {}
    raise CheckpointError(f"{path.name}: a checkpoint is a .safetensors or .ckpt file")


def _prediction_type(tensors: dict[str, TensorHeader], metadata: dict[str, str]) -> str:
    declared = metadata.get("modelspec.prediction_type", "").lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if declared in ("epsilon", "eps"):
        return "epsilon"
    if "v_pred" in tensors:  # the marker key NoobAI-style v-prediction SDXL finetunes carry
        return "v_prediction"
    return ""
