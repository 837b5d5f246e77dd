"""Loading diffusers pipelines on the right device and keeping the recent ones in memory.

How a model is loaded is chosen from the pipeline class its model_index.json names, through
PIPELINE_LOADERS. Only Stable Diffusion 1.x/2.x (StableDiffusionPipeline) is there today.
Adding SDXL means one more entry (StableDiffusionXLPipeline, without the safety-checker
arguments) plus its class name in sources.SUPPORTED_PIPELINES; single-file checkpoints would
get their own loader calling ``from_single_file``. An explicit table is used rather than
AutoPipelineForText2Image because each family also needs its own latent preview and defaults,
and an unknown family should be refused at start-up instead of half-working.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)

from inference.conditioning import limit_prompt_chunks
from inference.protocol import ModelSpec
from inference.sources import (
    INPAINT_PIPELINES,
    MODEL_INDEX,
    SUPPORTED_PIPELINES,
    ModelSourceError,
    check_model_sources,
    model_file_hash,
)

__all__ = [
    "ModelSourceError",
    "PipelineCache",
    "UnknownModelError",
    "check_model_sources",
    "load_pipeline",
    "model_file_hash",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


class UnknownModelError(KeyError):
    """A job named a model this worker was not configured with."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = tuple(known)
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; available: {', '.join(self.known) or 'none'}"


def resolve_device(device: str) -> torch.device:
    """"auto" is the first CUDA GPU when there is one, else the CPU; other values are checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)"
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is float16 on GPUs (half the memory, same images) and float32 on the CPU."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    try:
        resolved = _DTYPES[dtype.lower()]
    except KeyError:
        known = ", ".join(["auto", *_DTYPES])
        raise ValueError(f"unknown dtype {dtype!r}; use one of: {known}") from None
    if device.type == "cpu" and resolved is torch.float16:
        log.warning("float16 on the CPU is slow and some operations lack kernels; prefer float32")
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class _Loader:
    pipeline_class: type[DiffusionPipeline]
    extra_kwargs: dict[str, Any]


# Moderation is the bot's business (channel rules), not a CLIP classifier's.
_NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}

# model_index.json "_class_name" -> how to load it (see the module docstring). Inpainting
# checkpoints are only loaded as a ModelSpec's inpaint_source (PipelineCache.get_inpaint).
PIPELINE_LOADERS: dict[str, _Loader] = {
    "StableDiffusionPipeline": _Loader(StableDiffusionPipeline, _NO_SAFETY_CHECKER),
    "StableDiffusionInpaintPipeline": _Loader(StableDiffusionInpaintPipeline, _NO_SAFETY_CHECKER),
}
assert set(PIPELINE_LOADERS) == {*SUPPORTED_PIPELINES, *INPAINT_PIPELINES}, "keep sources in step"


def load_pipeline(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """Load one model onto ``device``; a hub id not cached yet is downloaded, with progress."""
    class_name = DiffusionPipeline.load_config(spec.source).get("_class_name")
    loader = PIPELINE_LOADERS.get(class_name)
    if loader is None:
        raise ModelSourceError(
            f"model {spec.name!r} ({spec.source}): {MODEL_INDEX} names pipeline class "
            f"{class_name!r}, which is not supported (supported: {', '.join(PIPELINE_LOADERS)})"
        )
    log.info("loading model %r from %s on %s as %s", spec.name, spec.source, device, dtype)
    pipe = loader.pipeline_class.from_pretrained(
        spec.source, **{_dtype_keyword(): dtype}, **loader.extra_kwargs
    )
    pipe = pipe.to(device)
    # The worker reports progress through events; diffusers' own tqdm bar would only spam logs.
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dtype_keyword() -> str:
    # Recent diffusers renamed from_pretrained's torch_dtype to dtype and warn on the old name;
    # the versions pyproject allows that predate the rename only know torch_dtype.
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


Loader = Callable[[ModelSpec, torch.device, torch.dtype], DiffusionPipeline]


class PipelineCache:
    """The most recently used pipelines, at most ``max_loaded`` of them in memory at a time.

    A model is evicted before the next one loads, so that with the default of one, two models
    never share the GPU even briefly. A model's inpainting variant (its inpaint_source) is a
    pipeline of its own here, counted and evicted like any other.
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        device: torch.device,
        dtype: torch.dtype,
        max_loaded: int = 1,
        loader: Loader = load_pipeline,
    ):
        if not isinstance(max_loaded, int) or max_loaded < 1:
            raise ValueError(f"max_loaded must be an int >= 1, got {max_loaded!r}")
        self.specs: dict[str, ModelSpec] = {spec.name: spec for spec in specs}
        self.device = device
        self.dtype = dtype
        self.max_loaded = max_loaded
        self._load = loader
        # Keyed by (model name, is the inpainting variant).
        self._loaded: OrderedDict[tuple[str, bool], DiffusionPipeline] = OrderedDict()

    @property
    def loaded_names(self) -> tuple[str, ...]:
        """Loaded models, least recently used first; an inpainting variant as "name (inpaint)"."""
        return tuple(f"{name} (inpaint)" if inpaint else name for name, inpaint in self._loaded)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownModelError(name, self.specs) from None

    def get(self, name: str) -> DiffusionPipeline:
        return self._get((name, False), self.spec(name))

    def get_inpaint(self, name: str) -> DiffusionPipeline:
        """The model's inpainting checkpoint (its inpaint_source), loaded like a model."""
        spec = self.spec(name)
        if not spec.inpaint_source:
            raise ValueError(f"model {name!r} has no inpaint_source")
        return self._get((name, True), replace(spec, source=spec.inpaint_source, inpaint_source=""))

    def _get(self, key: tuple[str, bool], spec: ModelSpec) -> DiffusionPipeline:
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        while len(self._loaded) >= self.max_loaded:
            self._evict_oldest()
        pipe = self._load(spec, self.device, self.dtype)
        if not spec.long_prompts:
            limit_prompt_chunks(pipe, 1)
        self._loaded[key] = pipe
        return pipe

    def _evict_oldest(self) -> None:
        (name, inpaint), pipe = self._loaded.popitem(last=False)
        log.info("unloading model %r%s", name, " (inpaint)" if inpaint else "")
        del pipe
        free_accelerator_memory()


def free_accelerator_memory() -> None:
    """Give freed tensors back to the driver so the next model or job can use the memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
