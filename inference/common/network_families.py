"""Which model family a LoRA or an embedding was made for, from its tensor names and shapes.

A LoRA or embedding made for another family fails in the worker, or worse does nothing at all
(a LoRA whose keys match no module is skipped), so the bot refuses it before queuing
(bot.prompts.networks). Like inference.common.checkpoints, only the header is read: a
safetensors file's JSON table, or a torch-saved file's small pickle (ckpt_header), never the
weights and never torch.

What tells the family:
- LoRA (kohya/A1111, LyCORIS, diffusers/PEFT names): SDXL's two text encoders (``lora_te1_``,
  ``lora_te2_``, ``text_encoder_2``), or a UNet transformer block past the first (SDXL has up
  to ten per attention, SD 1.x/2.x one); else the width a cross-attention key projection
  reads (768 SD 1.x, 1024 SD 2.x, 2048 SDXL) or the text encoder's (768, 1024).
- Embedding: ``clip_l`` + ``clip_g`` is SDXL; otherwise its vectors' width (768 SD 1.x,
  1024 SD 2.x).
"" is "the file cannot tell" (a tiny test model's width, an unreadable file): never refused
here; the worker still reports what does not load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from inference.common.checkpoints import CheckpointError, Family, TensorHeader, read_safetensors_header

__all__ = ["FAMILY_NAMES", "embedding_family", "family_mismatch", "lora_family", "network_file_family"]

# How a family is named to members: "`sd15` is an SD 1.x model".
FAMILY_NAMES = {
    Family.SD1: "SD 1.x",
    Family.SD2: "SD 2.x",
    Family.SDXL: "SDXL",
    Family.SDXL_REFINER: "SDXL refiner",
}
# Text width (CLIP ViT-L, OpenCLIP ViT-H, SDXL's two concatenated) -> family.
_CONTEXT_WIDTHS = {768: Family.SD1, 1024: Family.SD2, 2048: Family.SDXL}
_TEXT_WIDTHS = {768: Family.SD1, 1024: Family.SD2}

_SDXL_TEXT_ENCODERS = re.compile(r"^(?:lora_te[12]_|lycoris_te[12]_|te[12]\.|text_encoder_2\.)|\.text_encoder_2\.")
# transformer_blocks_1 ... _9 (kohya names) or transformer_blocks.1 (diffusers): only SDXL has them.
_SDXL_DEEP_TRANSFORMER = re.compile(r"transformer_blocks[._][1-9]")
# The low-rank factor that reads a layer's input: its last dimension is the input width.
_INPUT_FACTOR = re.compile(r"(?:lora_down|lora\.down|lora_A|hada_w1_b|hada_w2_b)(?:\.weight)?$")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k[._]")
_TEXT_ENCODER_PROJECTION = re.compile(r"^(?:lora_te_|text_encoder\.|te\.).*(?:q_proj|k_proj|v_proj)[._]")

# Each file's family by (path, size, mtime): a folder is read once, and again when a file changes.
_cache: dict[tuple[str, int, int], str] = {}
_CACHE_LIMIT = 4096


def lora_family(tensors: Mapping[str, TensorHeader]) -> str:
    """The family a LoRA's tensors were made for (a Family value), or "" when they cannot tell."""
    names = list(tensors)
    if any(_SDXL_TEXT_ENCODERS.search(name) or _SDXL_DEEP_TRANSFORMER.search(name) for name in names):
        return Family.SDXL.value
    for pattern, widths in ((_CROSS_ATTENTION_KEY, _CONTEXT_WIDTHS), (_TEXT_ENCODER_PROJECTION, _TEXT_WIDTHS)):
        family = _width_family(
            (tensors[name] for name in names if pattern.search(name) and _INPUT_FACTOR.search(name)), widths
        )
        if family:
            return family
    return ""


def embedding_family(content: Any) -> str:
    """The family an embedding was made for, from what its file holds (tensor headers, nested
    as saved), or "" when it cannot tell."""
    if not isinstance(content, Mapping):
        return _width_family([content], _TEXT_WIDTHS)
    if "clip_l" in content and "clip_g" in content:
        return Family.SDXL.value
    if "string_to_param" in content:  # A1111's .pt: {"string_to_param": {"*": vectors}}
        params = content["string_to_param"]
        return _width_family(params.values() if isinstance(params, Mapping) else [params], _TEXT_WIDTHS)
    if "emb_params" in content:  # A1111's .safetensors
        return _width_family([content["emb_params"]], _TEXT_WIDTHS)
    return _width_family(content.values(), _TEXT_WIDTHS)  # diffusers' {"<token>": vectors}


def network_file_family(path: Path, kind: str) -> str:
    """The family of a LoRA (``kind`` "lora") or embedding ("embedding") file, cached by its
    path, size and modification time; "" when the file cannot tell or cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return ""
    key = (f"{kind}:{path}", stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = _read_family(path, kind)
    return _cache[key]


def family_mismatch(kind: str, name: str, network: str, model_name: str, model: str) -> str | None:
    """The refusal of a network of family ``network`` in a job on a model of family ``model``,
    naming both; None when they match or either family is unknown."""
    if not network or not model or network == model:
        return None
    what = "LoRA" if kind == "lora" else "embedding"
    # "an SD 1.x", "an SDXL": every family's name starts with "S", said with a vowel sound.
    return (
        f"`{name}` is an {FAMILY_NAMES.get(network, network)} {what}; `{model_name}` is an "
        f"{FAMILY_NAMES.get(model, model)} model. Pick a model of the {what}'s family, or leave the {what} out."
    )


def _read_family(path: Path, kind: str) -> str:
    try:
        if path.suffix.lower() == ".safetensors":
            tensors, _ = read_safetensors_header(path)
            content: Any = tensors
        else:
            from inference.common.ckpt_header import read_ckpt_pickle  # it imports checkpoints

            content = read_ckpt_pickle(path)
    except CheckpointError:
        return ""  # the worker says what is wrong with the file when a job uses it
    if kind == "lora":
        while isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
            content = content["state_dict"]
        if not isinstance(content, Mapping):
            return ""
        return lora_family({str(k): v for k, v in content.items() if isinstance(v, TensorHeader)})
    return embedding_family(content)


def _width_family(tensors: Iterable[Any], widths: Mapping[int, Family]) -> str:
    """The family the first tensor's last dimension names; "" when no tensor or another width."""
    for tensor in tensors:
        if isinstance(tensor, TensorHeader) and tensor.shape:
            family = widths.get(tensor.shape[-1])
            return family.value if family else ""
    return ""
