"""The job protocol between the bot process and the inference worker process.

Everything that crosses the process boundary is one of the frozen dataclasses below, pickled
over a pair of one-way ``multiprocessing`` pipes: commands go bot -> worker, events go
worker -> bot. This module imports neither torch nor discord, so both sides can use it.

The database row stays the truth about a job; these messages only carry what the worker needs
to run it and what the bot needs to record and show the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class JobKind(StrEnum):
    """What a job asks of the worker. Later workflows (img2img, inpaint, upscale...) add kinds."""

    TXT2IMG = "txt2img"
    VARIATION = "variation"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A checkpoint an admin configured, under the name users pick it by."""

    name: str
    # A Hugging Face hub id ("stable-diffusion-v1-5/stable-diffusion-v1-5") or a local
    # diffusers folder (one holding model_index.json).
    source: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything the worker process needs to start; built by the bot from its settings."""

    models: tuple[ModelSpec, ...]
    default_model: str
    outputs_dir: str
    device: str = "auto"  # "auto" picks cuda when present, else cpu; or "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" is float16 on cuda and float32 on cpu; or float16/bfloat16/float32
    # The worker sends at most one preview per interval, so previews cost little and the bot
    # never has more to show than Discord's edit rate allows.
    preview_interval_s: float = 1.5
    preview_max_side: int = 256
    # Models loaded at start-up, so the first user does not pay the load.
    preload: tuple[str, ...] = ()
    # PNG zlib level for saved images: 1 is several times faster than 9 for ~10% more bytes.
    png_compress_level: int = 1


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One job, with every parameter resolved: the worker decides nothing about it."""

    job_id: int
    kind: JobKind
    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str  # an A1111 sampler name, a key of inference.samplers.SAMPLERS
    seeds: tuple[int, ...]  # one per image: image i is reproduced alone by seeds[i]
    # A1111 variations: each image's noise is slerped towards the noise of its subseed.
    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0


# --- bot -> worker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    request: GenerateRequest


@dataclass(frozen=True, slots=True)
class CancelJob:
    """Stop this job between two steps; ignored when the worker is not running it."""

    job_id: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = RunJob | CancelJob | Shutdown


# --- worker -> bot -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerReady:
    device: str
    dtype: str
    models: tuple[str, ...]
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerStartupFailed:
    """A configured model cannot be loaded, or the device is unusable: the bot exits with this."""

    message: str


@dataclass(frozen=True, slots=True)
class JobStarted:
    job_id: int


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: int
    step: int  # steps done, 1..total_steps
    total_steps: int
    preview_jpeg: bytes | None = None  # a small JPEG of the image forming, when one was made


@dataclass(frozen=True, slots=True)
class ImageResult:
    index: int
    seed: int
    subseed: int | None
    path: str  # the full-resolution PNG, with A1111 infotext in its "parameters" chunk
    infotext: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class JobCompleted:
    job_id: int
    images: tuple[ImageResult, ...]
    grid_path: str | None  # a 2x2 (or 1x2...) grid when the job made more than one image
    seconds: float  # time spent generating, for queue ETAs


@dataclass(frozen=True, slots=True)
class JobFailed:
    job_id: int
    message: str  # shown to the user as it is: say what went wrong and what to do


@dataclass(frozen=True, slots=True)
class JobCanceled:
    job_id: int


Event = (
    WorkerReady
    | WorkerStartupFailed
    | JobStarted
    | JobProgress
    | JobCompleted
    | JobFailed
    | JobCanceled
)
