"""A fake AUTOMATIC1111 install for discovery tests: checkpoint files whose headers hold the
original key layouts of each family, with zero-filled weights of tiny shapes.

Discovery reads only a file's header (names, dtypes and shapes), so these files are a few
kilobytes; loading and generating through single files is tested with real tiny weights
elsewhere (Part A's fixtures).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

UNET = "model.diffusion_model."
FIRST_CONV = UNET + "input_blocks.0.0.weight"
CROSS_ATTENTION = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def family_tensors(family: str, inpainting: bool = False) -> dict[str, tuple[int, ...]]:
    """Tensor names and (tiny) shapes that mark a family as its real files do."""
    tensors: dict[str, tuple[int, ...]] = {FIRST_CONV: (4, 9 if inpainting else 4, 3, 3)}
    if family == "sd1":
        tensors[CROSS_ATTENTION] = (4, 768)
        tensors["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = (4,)
    elif family == "sd2":
        tensors[CROSS_ATTENTION] = (4, 1024)
        tensors["cond_stage_model.model.ln_final.weight"] = (4,)
    elif family == "sdxl":
        tensors["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = (4,)
        tensors["conditioner.embedders.1.model.ln_final.weight"] = (4,)
        tensors[UNET + "label_emb.0.0.weight"] = (4, 2816)  # size conditioning
    elif family == "sdxl-refiner":
        tensors["conditioner.embedders.0.model.ln_final.weight"] = (4,)
        tensors[UNET + "label_emb.0.0.weight"] = (4, 2560)  # size and aesthetic-score conditioning
    elif family == "flux":
        tensors = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (4, 4)}
    elif family == "lora":
        tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 4)}
    tensors["first_stage_model.decoder.conv_in.weight"] = (4, 4, 3, 3)
    return tensors


def write_safetensors(path: Path, tensors: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    """A whole safetensors file of zero-filled float16 tensors."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in tensors.items():
        count = 1
        for n in shape:
            count *= n
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + 2 * count]}
        offset += 2 * count
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def write_checkpoint(path: Path, family: str = "sd1", inpainting: bool = False, **metadata: str) -> Path:
    return write_safetensors(path, family_tensors(family, inpainting), metadata or None)


def write_truncated(path: Path, family: str = "sd1") -> Path:
    write_checkpoint(path, family)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    return path


def make_webui(root: Path) -> Path:
    """stable-diffusion-webui's layout, with a few models of each kind and some bad files."""
    models = root / "models" / "Stable-diffusion"
    write_checkpoint(models / "v1-5-pruned-emaonly.safetensors", "sd1")
    write_checkpoint(models / "v1-5-pruned-emaonly-inpainting.safetensors", "sd1", inpainting=True)
    write_checkpoint(models / "SDXL" / "ponyDiffusionV6XL.safetensors", "sdxl")
    write_checkpoint(models / "SDXL" / "sd_xl_refiner_1.0.safetensors", "sdxl-refiner")
    write_checkpoint(models / "sd2" / "v2-1_768-ema-pruned.safetensors", "sd2", **{"modelspec.prediction_type": "v"})
    write_truncated(models / "broken.safetensors")
    write_checkpoint(models / "flux1-dev.safetensors", "flux")
    write_checkpoint(models / "a-lora-in-the-wrong-place.safetensors", "lora")
    (root / "models" / "Lora").mkdir(parents=True)
    write_safetensors(root / "models" / "Lora" / "styles" / "detail.safetensors", family_tensors("lora"))
    (root / "embeddings").mkdir()
    write_safetensors(root / "embeddings" / "badhands.safetensors", {"emb_params": (2, 768)})
    return root
