"""Shared fixtures for the inference tests: a tiny random-weight SD model, built once.

tests/conftest.py registers this module as a plugin (``pytest_plugins``). Building and loading
are also cached per process, so a test module that imports the fixtures itself does not build
the model a second time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from inference.common.protocol import GenerateRequest, JobKind, ModelSpec, WorkerConfig

TINY_MODEL_NAME = "tiny"


@functools.cache
def _build_tiny_model(folder: str, inpainting: bool = False) -> Path:
    from inference.tiny import build_tiny_model

    return build_tiny_model(folder, seed=0, inpainting=inpainting)


@functools.cache
def _load_tiny_pipe(folder: str):
    import torch

    from inference.models import load_pipeline

    spec = ModelSpec(TINY_MODEL_NAME, folder)
    return load_pipeline(spec, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD-1.5-shaped diffusers folder (random weights, seed 0)."""
    return _build_tiny_model(str(tmp_path_factory.getbasetemp() / "tiny-sd-model"))


@pytest.fixture(scope="session")
def tiny_inpaint_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD-1.5-inpainting-shaped folder: StableDiffusionInpaintPipeline, 9-channel UNet."""
    folder = tmp_path_factory.getbasetemp() / "tiny-sd-inpaint-model"
    return _build_tiny_model(str(folder), inpainting=True)


@pytest.fixture(scope="session")
def tiny_model_spec(tiny_model_dir: Path) -> ModelSpec:
    return ModelSpec(TINY_MODEL_NAME, str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir: Path):
    """The tiny model loaded on the CPU in float32, shared by the whole session.

    generate() swaps its scheduler; a test calling the pipeline directly sets its own.
    """
    return _load_tiny_pipe(str(tiny_model_dir))


def tiny_worker_config(spec: ModelSpec, outputs_dir: Path | str, **options) -> WorkerConfig:  # type: ignore[no-untyped-def]
    """A worker's configuration that serves one model, ``spec`` (the tiny one, in the tests)."""
    return WorkerConfig(models=(spec,), default_model=spec.name, outputs_dir=str(outputs_dir), **options)


def runner_for(pipe, config: WorkerConfig, **runner_options):  # type: ignore[no-untyped-def]
    """A JobRunner on the CPU whose every model is ``pipe`` (nothing loaded), without
    upscaler models; ``runner_options`` go to JobRunner (a safety checker...)."""
    import torch

    from inference import upscale
    from inference.jobs import JobRunner
    from inference.models import PipelineCache

    cpu = torch.device("cpu")
    cache = PipelineCache(config.models, cpu, torch.float32, loader=lambda *args: pipe)
    return JobRunner(config, cache, upscale.Upscalers((), cpu, torch.float32), **runner_options)


def tiny_request(**overrides) -> GenerateRequest:
    """A small valid txt2img request for the tiny model; keyword arguments override fields."""
    fields = dict(
        job_id=1,
        kind=JobKind.TXT2IMG,
        model=TINY_MODEL_NAME,
        prompt="a photo of a cat",
        negative_prompt="blurry",
        width=64,
        height=64,
        steps=3,
        cfg_scale=7.0,
        sampler="Euler a",
        seeds=(1234,),
    )
    fields.update(overrides)
    return GenerateRequest(**fields)


@functools.cache
def _build_tiny_sdxl(folder: str, family: str = "sdxl", inpainting: bool = False) -> Path:
    from inference.tiny import build_tiny_model

    return build_tiny_model(folder, seed=0, inpainting=inpainting, family=family)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL-shaped diffusers folder (two text encoders, text_time UNet; seed 0)."""
    return _build_tiny_sdxl(str(tmp_path_factory.getbasetemp() / "tiny-sdxl-model"))


@pytest.fixture(scope="session")
def tiny_sdxl_inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL's inpainting shape: StableDiffusionXLInpaintPipeline, 9-channel UNet."""
    return _build_tiny_sdxl(str(tmp_path_factory.getbasetemp() / "tiny-sdxl-inpaint"), inpainting=True)


@pytest.fixture(scope="session")
def tiny_sdxl_refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL refiner: CLIP-G only, aesthetic-score conditioning."""
    return _build_tiny_sdxl(str(tmp_path_factory.getbasetemp() / "tiny-sdxl-refiner"), family="sdxl-refiner")


@pytest.fixture(scope="session")
def tiny_sdxl_pipe(tiny_sdxl_dir: Path):
    """The tiny SDXL loaded on the CPU in float32, shared by the whole session."""
    return _load_tiny_pipe(str(tiny_sdxl_dir))
