"""Face restoration models for the tests: GFPGAN, CodeFormer and RetinaFace in their real
architectures with random weights, written as A1111 keeps them (models/GFPGAN, models/Codeformer,
the detector beside GFPGAN), and a detector whose heads are set so that a known face decodes.

The restorers' sizes are fixed by their architectures (about 90 M parameters each, 512 px faces):
each is made once per session and written in fp16 safetensors (half the bytes; spandrel loads
them into fp32 modules), later copies hard-linked to the first. The detector's backbone keeps
its random weights; only its heads are planted.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

# Where the planted face's landmarks lie around its centre, in pixels of the image: the FFHQ
# template shrunk to a face with eyes 38 px apart.
PLANTED_FACE_SCALE = 0.3
DETECTION_ANCHOR = 512  # the level-3 anchor that the planted heads select
PLANTED_BOX_LOG_SIZE = 10.0  # boxes exp(10 * 0.2) = 7.4 anchors wide: every two overlap, NMS keeps one


def planted_offsets() -> np.ndarray:
    from inference.faces.alignment import FFHQ_TEMPLATE

    return (FFHQ_TEMPLATE - 256.0) * PLANTED_FACE_SCALE


def detector_state(finds_a_face: bool, detection_scale: float) -> dict:
    """facexlib's RetinaFace state dict ("module."-prefixed, as the released file's keys may
    be) with random backbone weights and planted heads: every head's weights are 0, so every
    position scores and regresses alike; the class biases make faces of the 512 anchor only
    (or no faces at all), with the landmark offsets of planted_offsets(). ``detection_scale``
    is the image's size over the detector's input size (shorter side / 640)."""
    import torch

    from inference.faces.retinaface import VARIANCES, RetinaFace

    torch.manual_seed(0)
    model = RetinaFace()
    state = model.state_dict()
    for name in state:
        if name.split(".")[0] in ("ClassHead", "BboxHead", "LandmarkHead"):
            state[name] = torch.zeros_like(state[name])
    for level in range(3):
        state[f"ClassHead.{level}.conv1x1.bias"] = torch.tensor([10.0, 0.0, 10.0, 0.0])  # background
    if finds_a_face:
        state["ClassHead.2.conv1x1.bias"] = torch.tensor([10.0, 0.0, 0.0, 10.0])  # anchor 1: 512 px
        state["BboxHead.2.conv1x1.bias"][6:8] = PLANTED_BOX_LOG_SIZE
        offsets = planted_offsets() / detection_scale / (VARIANCES[0] * DETECTION_ANCHOR)
        state["LandmarkHead.2.conv1x1.bias"][10:] = torch.tensor(offsets.flatten(), dtype=torch.float32)
    return {f"module.{name}": value for name, value in state.items()}


@functools.cache
def restorer_state(name: str) -> dict:
    """A random-weight state dict of the architecture spandrel detects as ``name``."""
    import torch

    torch.manual_seed(0)
    if name == "GFPGAN":
        from spandrel.architectures.GFPGAN import GFPGAN

        model = GFPGAN(
            out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
            num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True,
        )
    else:
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        model = CodeFormer(
            dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, connect_list=["32", "64", "128", "256"],
            fix_modules=["quantize", "generator"],
        )
    return {k: v.half().contiguous() for k, v in model.state_dict().items()}


# name -> the first file written for it this session; later copies are hard links to it
# (180 MB each: writing them again costs seconds).
_written: dict[str, Path] = {}


def _write_restorer(name: str, path: Path) -> None:
    from safetensors.torch import save_file

    first = _written.get(name)
    if first is not None and first.exists():
        try:
            os.link(first, path)
            return
        except OSError:  # another file system
            pass
    save_file(restorer_state(name), path)
    _written[name] = path


def write_face_models(
    root: Path, *, restorers: tuple[str, ...] = ("GFPGAN", "CodeFormer"), finds_a_face: bool = True,
    detection_scale: float = 1.0,
) -> tuple[Path, Path]:
    """(models/GFPGAN, models/Codeformer) under ``root``, holding the restorers asked for and
    the detector (beside GFPGAN, where A1111 puts it)."""
    import torch

    gfpgan_dir, codeformer_dir = root / "models" / "GFPGAN", root / "models" / "Codeformer"
    gfpgan_dir.mkdir(parents=True, exist_ok=True)
    codeformer_dir.mkdir(parents=True, exist_ok=True)
    if "GFPGAN" in restorers:
        _write_restorer("GFPGAN", gfpgan_dir / "GFPGANv1.4.safetensors")
    if "CodeFormer" in restorers:
        _write_restorer("CodeFormer", codeformer_dir / "codeformer-v0.1.0.safetensors")
    torch.save(detector_state(finds_a_face, detection_scale), gfpgan_dir / "detection_Resnet50_Final.pth")
    return gfpgan_dir, codeformer_dir
