"""Loading diffusers pipelines on the right device and keeping the recent ones in memory.

How a folder or hub model is loaded is chosen from the pipeline class its model_index.json
names, through PIPELINE_LOADERS: Stable Diffusion 1.x/2.x, SDXL and SDXL's refiner, and their
inpainting variants; each class name also stands in sources.SUPPORTED_PIPELINES or
INPAINT_PIPELINES. Single-file checkpoints (A1111's ``.safetensors``) take their own path,
inference.single_file, which picks the pipeline class from the file's family. An explicit
table is used rather than AutoPipelineForText2Image because each family also needs its own
latent preview and defaults, and an unknown family should be refused at start-up instead of
half-working.

A model is read into CPU memory (``read_pipeline``), then placed on the device with the
worker's fast path or low-memory options (inference.acceleration.place_pipeline). The
PipelineCache keeps several loaded up to a memory budget, least recently used evicted.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import DiffusionPipeline

from inference import previews
from inference.acceleration import Acceleration, place_pipeline
from inference.conditioning import limit_prompt_chunks
from inference.load_progress import LoadListener, read_ahead, weight_files
from inference.single_file import PIPELINE_CLASSES, read_single_file
from inference.diffusers_versions import dtype_keyword
from inference.vae_precision import guard_vae_precision
from inference.common.protocol import ModelSpec
from inference.common.sources import (
    INPAINT_PIPELINES,
    MODEL_INDEX,
    SUPPORTED_PIPELINES,
    ModelSourceError,
    check_model_sources,
    explain_hub_failure,
    is_single_file,
    model_file_hash,
)

__all__ = [
    "LoadRecord",
    "ModelSourceError",
    "PipelineCache",
    "UnknownModelError",
    "check_model_sources",
    "load_pipeline",
    "model_file_hash",
    "pipeline_bytes",
    "read_pipeline",
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
        return (
            f"The model {self.name!r} is not on this server any more (its file was removed or renamed): "
            f"pick another one. Available: {', '.join(self.known) or 'none'}"
        )


def resolve_device(device: str) -> torch.device:
    """"auto" is the first CUDA GPU when there is one, else the CPU; other values are checked."""
    resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else _checked(device)
    if resolved.type == "cuda" and torch.cuda._is_in_bad_fork():
        # Forked (worker.start_method = "forkserver") from a process that had initialised CUDA.
        raise ValueError(
            "CUDA cannot start in this worker: the process it was forked from had initialised CUDA. "
            'Set worker.start_method = "spawn".'
        )
    return resolved


def _checked(device: str) -> torch.device:
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
# SDXL pipelines have no safety checker; they would stamp an invisible watermark on every
# image when the package for it is installed, which A1111 never does.
_NO_WATERMARK = {"add_watermarker": False}

# model_index.json "_class_name" -> how to load it (see the module docstring): the classes a
# single file can be, so that a folder and a file of one model load alike. Inpainting
# checkpoints are only loaded as a ModelSpec's inpaint_source (PipelineCache.get_inpaint).
PIPELINE_LOADERS: dict[str, _Loader] = {
    name: _Loader(cls, _NO_WATERMARK if name.startswith("StableDiffusionXL") else _NO_SAFETY_CHECKER)
    for name, cls in PIPELINE_CLASSES.items()
}
assert set(PIPELINE_LOADERS) == {*SUPPORTED_PIPELINES, *INPAINT_PIPELINES}, "keep sources in step"


def load_pipeline(
    spec: ModelSpec,
    device: torch.device,
    dtype: torch.dtype,
    acceleration: Acceleration = Acceleration(),
) -> DiffusionPipeline:
    """Load one model onto ``device``; a hub id not cached yet is downloaded, with progress."""
    return place_pipeline(read_pipeline(spec, dtype), device, acceleration)


def read_pipeline(spec: ModelSpec, dtype: torch.dtype) -> DiffusionPipeline:
    """One model in CPU memory, in ``dtype``, ready to be measured and placed."""
    if is_single_file(spec.source):
        pipe = read_single_file(spec, dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    try:
        class_name = DiffusionPipeline.load_config(spec.source).get("_class_name")
    except OSError as exc:  # diffusers words a network failure as a missing file: say which
        explanation = explain_hub_failure(spec, spec.source, exc)
        if explanation is None:
            raise
        raise ModelSourceError(explanation) from exc
    loader = PIPELINE_LOADERS.get(class_name)
    if loader is None:
        raise ModelSourceError(
            f"model {spec.name!r} ({spec.source}): {MODEL_INDEX} names pipeline class "
            f"{class_name!r}, which is not supported (supported: {', '.join(PIPELINE_LOADERS)})"
        )
    log.info("loading model %r from %s as %s", spec.name, spec.source, dtype)
    pipe = loader.pipeline_class.from_pretrained(
        spec.source, **{dtype_keyword(): dtype}, **loader.extra_kwargs
    )
    # The worker reports progress through events; diffusers' own tqdm bar would only spam logs.
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Reads a model into CPU memory (PipelineCache passes the CPU as the device); the cache
# measures it, makes room for it, then places it (inference.acceleration.place_pipeline).
Loader = Callable[[ModelSpec, torch.device, torch.dtype], DiffusionPipeline]

_CPU = torch.device("cpu")


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """One model load (a switch), for the logs and the benchmarks."""

    name: str  # "sd15", or "sd15 (inpaint)" for an inpainting variant
    seconds: float  # reading, making room, placing and accelerating: what a switch costs
    megabytes: float  # its parameters and buffers
    evicted: tuple[str, ...]  # the models unloaded to make room, least recently used first


class PipelineCache:
    """The loaded pipelines: the least recently used are unloaded to make room for another.

    With ``memory_budget_mb`` 0 (the default), at most ``max_loaded`` pipelines are loaded and
    a model is evicted before the next one is read, so that with the default of one, two
    models never share the GPU even briefly. With a budget, models stay loaded while the sum
    of their parameter bytes (``pipeline_bytes``) fits: a new model is read into CPU memory,
    measured, the least recently used are evicted until it fits, and only then is it placed on
    the device. A pipeline held with ``using`` is never evicted; one larger than the budget on
    its own is still loaded, alone, with a warning. A model's inpainting variant (its
    inpaint_source) is a pipeline of its own here, counted and evicted like any other.

    ``loads`` records every load and its time (what a model switch costs); ``acceleration``
    is applied to each pipeline placed (inference.acceleration). Inside ``reporting_loads``
    a load reports its progress to a listener (inference.load_progress: the bytes of its
    files read), for the member whose job waits on it.
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        device: torch.device,
        dtype: torch.dtype,
        max_loaded: int = 1,
        loader: Loader = load_pipeline,
        *,
        memory_budget_mb: int = 0,
        acceleration: Acceleration = Acceleration(),
    ):
        if not isinstance(max_loaded, int) or max_loaded < 1:
            raise ValueError(f"max_loaded must be an int >= 1, got {max_loaded!r}")
        if not isinstance(memory_budget_mb, int) or memory_budget_mb < 0:
            raise ValueError(f"memory_budget_mb must be an int >= 0, got {memory_budget_mb!r}")
        self.specs: dict[str, ModelSpec] = {spec.name: spec for spec in specs}
        self.device = device
        self.dtype = dtype
        self.max_loaded = max_loaded
        self.memory_budget_bytes = memory_budget_mb * 2**20
        self.acceleration = acceleration
        self._load = loader
        # Keyed by (model name, is the inpainting variant).
        self._loaded: OrderedDict[tuple[str, bool], DiffusionPipeline] = OrderedDict()
        self._in_use: Counter[tuple[str, bool]] = Counter()
        self._last_used: DiffusionPipeline | None = None
        self.loads: deque[LoadRecord] = deque(maxlen=100)
        self._load_listener: LoadListener | None = None

    @property
    def loaded_names(self) -> tuple[str, ...]:
        """Loaded models, least recently used first; an inpainting variant as "name (inpaint)"."""
        return tuple(_display_name(key) for key in self._loaded)

    @property
    def loaded_bytes(self) -> int:
        """Parameter and buffer bytes of the loaded pipelines (measured now: LoRAs add some)."""
        return sum(pipeline_bytes(pipe) for pipe in self._loaded.values())

    @property
    def latent_family(self) -> str:
        """The latent space of the pipeline handed out last: the one a job is running on."""
        return previews.latent_family(self._last_used)

    def replace_specs(self, specs: Iterable[ModelSpec]) -> list[str]:
        """Serve these models from now on; the loaded pipelines of models removed, or whose
        files changed, are unloaded (between jobs: none is in use). Returns those unloaded."""
        new = {spec.name: spec for spec in specs}
        stale = [key for key in self._loaded if key[0] not in new or _changed(self.specs[key[0]], new[key[0]])]
        self.specs = new
        for key in stale:
            pipe = self._loaded.pop(key)
            if pipe is self._last_used:
                self._last_used = None
            log.info("unloading model %r: it was removed or its files changed", _display_name(key))
            del pipe
        if stale:
            free_accelerator_memory()
        return [_display_name(key) for key in stale]

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownModelError(name, self.specs) from None

    def get(self, name: str) -> DiffusionPipeline:
        return self._get((name, False), self.spec(name))

    def get_inpaint(self, name: str) -> DiffusionPipeline:
        """The model's inpainting checkpoint (its inpaint_source), loaded like a model."""
        return self._get((name, True), self._inpaint_spec(name))

    @contextmanager
    def using(self, name: str, inpaint: bool = False) -> Iterator[DiffusionPipeline]:
        """The pipeline, kept loaded until the block ends whatever else is loaded meanwhile."""
        key = (name, inpaint)
        pipe = self.get_inpaint(name) if inpaint else self.get(name)
        self._in_use[key] += 1
        try:
            yield pipe
        finally:
            self._in_use[key] -= 1
            if not self._in_use[key]:
                del self._in_use[key]

    @contextmanager
    def reporting_loads(self, listener: LoadListener) -> Iterator[None]:
        """Loads inside the block report to ``listener`` (name, bytes done, bytes in all)."""
        previous, self._load_listener = self._load_listener, listener
        try:
            yield
        finally:
            self._load_listener = previous

    def _inpaint_spec(self, name: str) -> ModelSpec:
        spec = self.spec(name)
        if not spec.inpaint_source:
            raise ValueError(f"model {name!r} has no inpaint_source")
        # The base's family and config describe the base's file, not its inpainting partner's.
        return replace(spec, source=spec.inpaint_source, inpaint_source="", family="", original_config="")

    def _get(self, key: tuple[str, bool], spec: ModelSpec) -> DiffusionPipeline:
        if key in self._loaded:
            self._loaded.move_to_end(key)
            self._last_used = self._loaded[key]
            return self._last_used
        started = time.perf_counter()
        if self._load_listener is not None:  # someone waits: show the reading, warm the page cache
            read_ahead(_display_name(key), weight_files(spec.source), self._load_listener)
        evicted: list[str] = []
        if not self.memory_budget_bytes:
            evicted += self._make_room(lambda: len(self._loaded) >= self.max_loaded)
        pipe = self._load(spec, _CPU, self.dtype)
        size = pipeline_bytes(pipe)
        if self.memory_budget_bytes:
            evicted += self._make_room(lambda: self.loaded_bytes + size > self.memory_budget_bytes)
            if self.loaded_bytes + size > self.memory_budget_bytes:
                log.warning(
                    "model %r (%.0f MB) does not fit model_memory_budget_mb (%.0f MB) beside %s",
                    _display_name(key), size / 2**20, self.memory_budget_bytes / 2**20,
                    ", ".join(self.loaded_names) or "nothing",
                )
        if isinstance(pipe, DiffusionPipeline):
            pipe = place_pipeline(pipe, self.device, self.acceleration)
            guard_vae_precision(pipe)  # half-precision VAE: A1111's retry in float32 on NaNs
            if getattr(pipe, "watermark", None) is not None:
                # However an SDXL pipeline was made (a single file too): A1111 stamps no
                # invisible watermark, and neither does the bot.
                pipe.watermark = None
        if not spec.long_prompts:
            limit_prompt_chunks(pipe, 1)
        self._loaded[key] = self._last_used = pipe
        record = LoadRecord(_display_name(key), time.perf_counter() - started, size / 2**20, tuple(evicted))
        self.loads.append(record)
        log.info(
            "loaded model %r in %.1f s (%.0f MB%s); loaded now: %s",
            record.name, record.seconds, record.megabytes,
            f", unloaded {', '.join(evicted)}" if evicted else "", ", ".join(self.loaded_names),
        )
        return pipe

    def _make_room(self, needed: Callable[[], bool]) -> list[str]:
        """Evict the least recently used pipelines not in use while ``needed()``."""
        evicted = []
        for key in list(self._loaded):
            if not needed():
                break
            if self._in_use[key]:
                continue
            pipe = self._loaded.pop(key)
            if pipe is self._last_used:
                self._last_used = None
            log.info("unloading model %r", _display_name(key))
            evicted.append(_display_name(key))
            del pipe
        if evicted:
            free_accelerator_memory()
        return evicted


def _changed(old: ModelSpec, new: ModelSpec) -> bool:
    """Whether a loaded pipeline of ``old`` must be read again to serve ``new``: another file
    or way of reading it, or the same file with new contents (a file replaced in place gets a
    new hash; a hash only now known changes nothing)."""
    read_from = ("source", "inpaint_source", "family", "prediction_type", "original_config", "vae")
    if any(getattr(old, name) != getattr(new, name) for name in read_from):
        return True
    return bool(old.sha256 and new.sha256 and old.sha256 != new.sha256)


def pipeline_bytes(pipe: object) -> int:
    """Bytes of a pipeline's parameters and buffers, each tensor counted once (derived
    pipelines share them); 0 for anything that is not a pipeline."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        return 0
    seen: set[int] = set()
    total = 0
    for component in components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in itertools.chain(component.parameters(), component.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _display_name(key: tuple[str, bool]) -> str:
    name, inpaint = key
    return f"{name} (inpaint)" if inpaint else name


def free_accelerator_memory() -> None:
    """Give freed tensors back to the driver so the next model or job can use the memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
