"""Tiny random-weight single-file checkpoints in A1111's key layout, one per family, built once.

Each is a tiny diffusers pipeline (inference.single_file_writer.build_tiny_pipeline) saved as one
``.safetensors`` in the original layout, beside the diffusers config folder that gives its tiny
shapes. Two ways to load one through the path a real A1111 file takes (inference.single_file):
a ModelSpec naming that folder as its original_config (``TinyCheckpoint.spec``), or, exactly as
a real file is configured, a bare ModelSpec while SDBOT_MODEL_CONFIGS_DIR points at
``tiny_model_configs``: the shipped configs' layout with every family at the tiny shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inference.common.checkpoints import Family
from inference.common.protocol import ModelSpec


@dataclass(frozen=True)
class TinyCheckpoint:
    path: Path  # the single .safetensors file
    config: Path  # the diffusers config folder of its shapes
    pipe: Any  # the pipeline it was written from: the weights the loaded one must have

    def spec(self, name: str = "tiny-file", **fields: Any) -> ModelSpec:
        return ModelSpec(name, str(self.path), original_config=str(self.config), **fields)


@functools.cache
def tiny_checkpoint(
    folder: str,
    family: Family,
    inpainting: bool = False,
    metadata: tuple[tuple[str, str], ...] = (),
    markers: tuple[str, ...] = (),
) -> TinyCheckpoint:
    """The tiny file of ``family`` under ``folder`` (seed 0); ``metadata`` goes in the file's
    header, ``markers`` are marker tensors some trainers add ("v_pred", "ztsnr")."""
    import torch

    from inference.single_file_writer import build_tiny_pipeline, write_diffusers_configs, write_single_file

    stem = f"{family}{'-inpainting' if inpainting else ''}{''.join('-' + m for m in markers)}"
    stem += "-meta" if metadata else ""
    pipe = build_tiny_pipeline(family, inpainting=inpainting)
    path = write_single_file(
        pipe, Path(folder) / f"{stem}.safetensors", family,
        metadata=dict(metadata) or None,
        extra_tensors={marker: torch.tensor([]) for marker in markers},
    )
    return TinyCheckpoint(path, write_diffusers_configs(pipe, Path(folder) / f"{stem}-config"), pipe)


@functools.cache
def tiny_model_configs(folder: str) -> Path:
    """A folder laid out as inference/assets/model_configs, every config at the tiny shapes."""
    from inference.common.sources import ModelSourceError
    from inference.single_file import config_folder_name
    from inference.single_file_writer import build_tiny_pipeline, write_diffusers_configs

    root = Path(folder)
    for family in Family:
        for inpainting in (False, True):
            for v_prediction in (False, True):
                try:
                    name = config_folder_name(family, inpainting, v_prediction)
                except ModelSourceError:
                    continue  # no such model (an inpainting refiner)
                if (root / name).is_dir():
                    continue
                pipe = build_tiny_pipeline(family, inpainting=inpainting)
                if v_prediction and name == config_folder_name(Family.SD2, False, True):
                    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
                    pipe.unet.register_to_config(sample_size=12)  # the 768-v model's larger default
                write_diffusers_configs(pipe, root / name)
    return root


@pytest.fixture(scope="session")
def tiny_configs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_configs(str(tmp_path_factory.getbasetemp() / "tiny-model-configs"))


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.getbasetemp() / "tiny-checkpoints")


@pytest.fixture(scope="session")
def tiny_sd15_file(checkpoints_dir: str) -> TinyCheckpoint:
    """A tiny SD 1.x single file with the tiny folder model's weights (the same seed and shapes)."""
    return tiny_checkpoint(checkpoints_dir, Family.SD1)
