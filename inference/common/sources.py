"""Where a configured model's weights come from, checked cheaply and without torch.

A ModelSpec.source is a local diffusers folder (one holding model_index.json), a single-file
checkpoint (an A1111 ``.safetensors``, recognised from its header by inference.common.checkpoints)
or a Hugging Face hub id. The worker checks every source at start-up so that a typo in the config
fails the bot at once, naming the model, instead of failing the first user who picks it.
Nothing here imports torch or diffusers, so the bot may run the same check before it spawns
the worker.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from inference.common.checkpoints import CheckpointError, inspect_checkpoint
from inference.common.file_hashes import MODEL_HASH_LENGTH, file_hash
from inference.common.protocol import ModelSpec, WorkerConfig

MODEL_INDEX = "model_index.json"

# Pipeline classes (model_index.json "_class_name") the loader knows how to run: SD 1.x/2.x,
# SDXL, and SDXL's refiner (an img2img-only model, used as a job's refiner; see
# REFINER_PIPELINES). Each needs its loader in models.PIPELINE_LOADERS.
SUPPORTED_PIPELINES: tuple[str, ...] = (
    "StableDiffusionPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
)
# The classes a ModelSpec.inpaint_source may name: inpainting checkpoints (a 9-channel UNet),
# which only the inpaint pipeline can run, so they are refused as a model's main source.
INPAINT_PIPELINES: tuple[str, ...] = ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline")
# Models that only finish what another began (SDXL's refiner): a job's "Refiner", never a
# txt2img model of its own.
REFINER_PIPELINES: tuple[str, ...] = ("StableDiffusionXLImg2ImgPipeline",)

# Single-file checkpoints, A1111's usual format (inference.single_file loads them; their
# header, or a .ckpt's pickle read without running it, is checked here). They are also the
# only sources A1111 hashes.
SINGLE_FILE_SUFFIXES: tuple[str, ...] = (".safetensors", ".ckpt")
# The A1111 config that may sit beside a checkpoint, under the same stem.
A1111_CONFIG_SUFFIX = ".yaml"


class SourceKind(StrEnum):
    LOCAL_FOLDER = "local folder"
    HUB_ID = "hub id"


class ModelSourceError(ValueError):
    """One or more configured models cannot be loaded; the message names each of them."""


@dataclass(frozen=True, slots=True)
class SourceProblem:
    model: str
    source: str
    reason: str

    def __str__(self) -> str:
        return f"model {self.model!r} ({self.source}): {self.reason}"


def classify_source(source: str) -> SourceKind:
    """A folder when the path exists or clearly is a path; otherwise a hub id."""
    if Path(source).expanduser().exists() or looks_like_path(source):
        return SourceKind.LOCAL_FOLDER
    return SourceKind.HUB_ID


def is_single_file(source: str) -> bool:
    """A checkpoint file (by its suffix, or a file that exists) rather than a folder or hub id."""
    path = Path(source).expanduser()
    return path.suffix.lower() in SINGLE_FILE_SUFFIXES or path.is_file()


def looks_like_path(source: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else with a separator is a path the admin
    # meant, and reporting it as a missing folder is more helpful than as a bad hub id.
    return (
        source.startswith(("/", ".", "~"))
        or "\\" in source
        or source.count("/") > 1
        or source.endswith(SINGLE_FILE_SUFFIXES)
    )


def find_source_problem(
    spec: ModelSpec, *, offline: bool, cache_dir: str | None, inpaint: bool = False
) -> str | None:
    """Why this model (or, with ``inpaint``, its inpaint_source) cannot be loaded, or None."""
    source = (spec.inpaint_source if inpaint else spec.source).strip()
    classes = INPAINT_PIPELINES if inpaint else SUPPORTED_PIPELINES
    if not source:
        return "the source is empty"
    if classify_source(source) is SourceKind.LOCAL_FOLDER:
        path = Path(source).expanduser()
        if is_single_file(source):
            return _single_file_problem(path, inpaint=inpaint) or _original_config_problem(spec)
        return _local_folder_problem(path, classes)
    return _hub_id_problem(source, classes, offline=offline, cache_dir=cache_dir)


def _single_file_problem(path: Path, *, inpaint: bool) -> str | None:
    """Why a single-file checkpoint cannot be served (in this role), from its header alone."""
    if not path.exists():
        return f"file {str(path)!r} does not exist"
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        return f"{str(path)!r} is a file but not a checkpoint (.safetensors, .ckpt) nor a diffusers folder"
    try:
        info = inspect_checkpoint(path)
    except CheckpointError as exc:
        return str(exc)
    if inpaint and not info.inpainting:
        return f"{path.name} is not an inpainting checkpoint (its UNet takes 4 channels, not 9)"
    if not inpaint and info.inpainting:
        return (
            f"{path.name} is an inpainting checkpoint (a 9-channel UNet), which only inpaints: "
            "set it as a model's inpaint_source"
        )
    return None


def a1111_config_of(spec: ModelSpec) -> Path | None:
    """The A1111 .yaml a single file is loaded with: ModelSpec.original_config when it names one,
    else the .yaml beside the checkpoint (same stem), as A1111 reads it; None when neither."""
    if spec.original_config and not Path(spec.original_config).expanduser().is_dir():
        return Path(spec.original_config).expanduser()
    beside = Path(spec.source).expanduser().with_suffix(A1111_CONFIG_SUFFIX)
    return beside if beside.is_file() else None


def config_folder_of(spec: ModelSpec) -> Path | None:
    """The diffusers config folder ModelSpec.original_config names, if it names a folder: it
    replaces the shipped config of the file's family (a checkpoint of unusual shapes)."""
    if spec.original_config and Path(spec.original_config).expanduser().is_dir():
        return Path(spec.original_config).expanduser()
    return None


def _original_config_problem(spec: ModelSpec) -> str | None:
    if not spec.original_config:
        return None
    config = Path(spec.original_config).expanduser()
    if config.is_dir():
        if not (config / MODEL_INDEX).is_file():
            return f"original_config {str(config)!r} is a folder without {MODEL_INDEX}"
        return None
    if not config.is_file():
        return f"original_config {str(config)!r} does not exist"
    if config.suffix.lower() not in (".yaml", ".yml"):
        return f"original_config {str(config)!r} is neither an A1111 .yaml nor a diffusers config folder"
    return None


def _local_folder_problem(folder: Path, classes: tuple[str, ...]) -> str | None:
    if not folder.exists():
        return f"folder {str(folder)!r} does not exist"
    index = folder / MODEL_INDEX
    if not index.is_file():
        return f"folder {str(folder)!r} has no {MODEL_INDEX}: it is not a diffusers model folder"
    return _pipeline_class_problem(index, classes)


def _hub_id_problem(
    repo_id: str, classes: tuple[str, ...], *, offline: bool, cache_dir: str | None
) -> str | None:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, MODEL_INDEX, cache_dir=cache_dir)
    except HFValidationError as exc:
        return f"not an existing folder and not a valid Hugging Face hub id ({exc})"
    if isinstance(cached, str):
        return _pipeline_class_problem(Path(cached), classes)
    if offline:
        return (
            "not a local folder, and the Hugging Face hub id is not in the local cache "
            f"({cache_dir}) while HF_HUB_OFFLINE is set; download it once online or unset "
            "HF_HUB_OFFLINE"
        )
    return _hub_unreachable_problem()  # online: downloaded on first load


def _hub_unreachable_problem() -> str | None:
    """Why the hub cannot be reached, when its name does not even resolve; else None.

    Without this, a machine with no network spends half a minute in huggingface_hub's retries
    before the first download fails. Behind a proxy the name may only resolve there, so the
    download is left to try.
    """
    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return (
            f"not in the local cache, and the Hugging Face hub cannot be reached to download it ({host}: "
            f"{exc.strerror or exc}). Connect this machine to the internet (or set HTTPS_PROXY), or download "
            "the model where there is a network and give its folder as the source"
        )
    return None


# Exceptions, by class name, that mean the hub could not be reached at all: requests', httpx's
# and urllib3's connection errors and timeouts (named, so that none of them is imported here).
_UNREACHABLE_ERRORS = frozenset({
    "ConnectError", "ConnectTimeout", "ConnectionError", "ProxyError", "ReadTimeout", "Timeout",
    "NameResolutionError", "NewConnectionError", "MaxRetryError", "gaierror", "OfflineModeIsEnabled",
})


def explain_hub_failure(spec: ModelSpec, source: str, error: BaseException) -> str | None:
    """What to do when loading the hub id `source` failed with `error`; None when the failure is
    not about the hub (a corrupt file, a bug), whose own message is then the best one.

    diffusers words every failure to fetch model_index.json the same way ("does not appear to
    have a file named model_index.json"), the same when the network is down; the exceptions it
    was raised from say which it was.
    """
    if classify_source(source) is not SourceKind.HUB_ID:
        return None
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = f"model {spec.name!r} ({source})"
    chain = _exception_chain(error)
    unreachable = next((e for e in chain if type(e).__name__ in _UNREACHABLE_ERRORS), None)
    if unreachable is not None or any(isinstance(e, LocalEntryNotFoundError) for e in chain):
        reason = f" ({_innermost_reason(unreachable)})" if unreachable is not None else ""
        return (
            f"{where}: cannot reach the Hugging Face hub to download it{reason}, and it is not in the "
            "local cache. Connect this machine to the internet (or set HTTPS_PROXY) and start again, "
            "or download the model where there is a network and give its folder as the source."
        )
    if any(isinstance(e, GatedRepoError) for e in chain):
        return (
            f"{where}: this model is gated. Accept its conditions on https://huggingface.co/{source} and "
            "log in on this machine with `hf auth login`."
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return (
            f"{where}: the Hugging Face hub has no model by this id. Check the spelling against "
            f"https://huggingface.co/{source} (a private model needs `hf auth login`), or give a local "
            "folder's path."
        )
    if any(isinstance(e, EntryNotFoundError) for e in chain):
        return (
            f"{where}: the hub repository has no {MODEL_INDEX}, so it is not a diffusers model "
            "(a single-file checkpoint is given by its local path)."
        )
    return None


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _innermost_reason(error: BaseException) -> str:
    innermost = _exception_chain(error)[-1]
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror  # "Name or service not known", without "[Errno -2]"
    return str(innermost) or type(innermost).__name__


def _pipeline_class_problem(index: Path, classes: tuple[str, ...]) -> str | None:
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot read {index}: {exc}"
    if class_name not in classes:
        supported = ", ".join(classes)
        return f"pipeline class {class_name!r} is not supported (expected: {supported})"
    return None


def check_model_sources(
    specs: Iterable[ModelSpec], *, offline: bool | None = None, cache_dir: str | None = None
) -> None:
    """Raise ModelSourceError naming every model that cannot be loaded; cheap (no weights read).

    ``offline`` and ``cache_dir`` default to huggingface_hub's settings (HF_HUB_OFFLINE and
    HF_HUB_CACHE), read when called so that tests and the worker see the current values.
    """
    from huggingface_hub import constants

    if offline is None:
        offline = constants.HF_HUB_OFFLINE
    if cache_dir is None:
        cache_dir = constants.HF_HUB_CACHE
    specs = tuple(specs)
    problems = _duplicate_name_problems(specs)
    for spec in specs:
        reason = find_source_problem(spec, offline=offline, cache_dir=cache_dir)
        if reason is not None:
            problems.append(SourceProblem(spec.name, spec.source, reason))
        if spec.inpaint_source:
            # Checked now like the main source: otherwise a typo there fails the first inpaint.
            reason = find_source_problem(spec, offline=offline, cache_dir=cache_dir, inpaint=True)
            if reason is not None:
                problems.append(
                    SourceProblem(spec.name, spec.inpaint_source, f"inpaint_source: {reason}")
                )
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise ModelSourceError(f"{len(problems)} configured model(s) cannot be loaded:\n{lines}")


def check_worker_config(config: WorkerConfig) -> None:
    """Everything about a WorkerConfig that can be checked without torch; raises ValueError.

    The worker runs this before its heavy imports, so a bad config fails in a second.
    """
    names = [spec.name for spec in config.models]
    if not names:
        raise ValueError("no models are configured")
    for name in (config.default_model, *config.preload):
        if name not in names:
            raise ValueError(f"model {name!r} is not configured; configured: {', '.join(names)}")
    if config.preview_interval_s < 0:
        raise ValueError(f"preview_interval_s must be >= 0, got {config.preview_interval_s!r}")
    if config.preview_max_side < 8:
        raise ValueError(f"preview_max_side must be >= 8, got {config.preview_max_side!r}")
    if not 0 <= config.png_compress_level <= 9:
        raise ValueError(f"png_compress_level must be 0..9, got {config.png_compress_level!r}")
    segmentation = config.segmentation_model
    # Loaded on the first mask from words: a wrong folder is said at start-up, not to a member.
    if segmentation and looks_like_path(segmentation) and not (Path(segmentation).expanduser() / "config.json").is_file():
        raise ValueError(
            f"images.segmentation_model {segmentation!r} is not a folder holding a CLIPSeg model (its config.json "
            "and processor files); give such a folder or a hub id such as CIDAS/clipseg-rd64-refined"
        )
    check_model_sources(config.models)


def _duplicate_name_problems(specs: tuple[ModelSpec, ...]) -> list[SourceProblem]:
    seen: set[str] = set()
    problems = []
    for spec in specs:
        if spec.name in seen:
            problems.append(SourceProblem(spec.name, spec.source, "the name is used twice"))
        seen.add(spec.name)
    return problems


def model_file_hash(source: str) -> str | None:
    """A1111's "Model hash": the first 10 hex digits of the file's sha256, for single files only.

    A1111 only hashes single-file checkpoints; folders and hub ids have no such hash, and the
    infotext then omits the key.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        return None
    return file_hash(path)[:MODEL_HASH_LENGTH]


# The square side each family was trained at, what a job of the model gets when it asks for
# no size (A1111's defaults: 512 for SD 1.x and SD 2.x base, 768 for SD 2.x v-prediction,
# 1024 for SDXL), and the short side of its aspect-ratio sizes.
FAMILY_BASE_SIZES: dict[str, int] = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl-refiner": 1024}
V_PREDICTION_BASE_SIZE = 768  # SD 2.x 768-v
UNKNOWN_BASE_SIZE = 512


def folder_family(source: str) -> str:
    """A model's family ("sd1", "sd2", "sdxl", "sdxl-refiner"), read without torch: a
    diffusers folder's from its model_index.json and text encoder config, a single file's
    from its header (inference.common.checkpoints); "" when the source cannot tell (a hub id
    not downloaded, a file that cannot be served)."""
    folder = Path(source).expanduser()
    if is_single_file(source):
        try:
            return str(inspect_checkpoint(folder).family)
        except CheckpointError:
            return ""
    try:
        class_name = json.loads((folder / MODEL_INDEX).read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return ""
    if class_name.startswith("StableDiffusionXL"):
        config = folder / "text_encoder" / "config.json"
        return "sdxl" if config.is_file() else "sdxl-refiner"
    if class_name.startswith("StableDiffusion"):
        try:
            hidden = json.loads((folder / "text_encoder" / "config.json").read_text()).get("hidden_size")
        except (OSError, ValueError, AttributeError):
            return "sd1"
        return "sd2" if hidden == 1024 else "sd1"
    return ""


def family_base_size(source: str, family: str = "", prediction_type: str = "") -> int:
    """The default image side of a model (FAMILY_BASE_SIZES), its family given or read from
    its folder or file; a v-prediction SD 2.x (given, or its folder's scheduler) gets 768."""
    family = family or folder_family(source)
    if family == "sd2" and prediction_type == "v_prediction":
        return V_PREDICTION_BASE_SIZE
    if family == "sd2":
        try:
            scheduler = json.loads((Path(source).expanduser() / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, ValueError):
            scheduler = {}
        if isinstance(scheduler, dict) and scheduler.get("prediction_type") == "v_prediction":
            return V_PREDICTION_BASE_SIZE
    return FAMILY_BASE_SIZES.get(family, UNKNOWN_BASE_SIZE)
