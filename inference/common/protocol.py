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

from inference.common.merge_options import MergeOptions


class JobKind(StrEnum):
    """What a job asks of the worker; the options it needs are the request's fields below."""

    TXT2IMG = "txt2img"  # may carry ``hires`` (A1111's two-pass hires fix)
    VARIATION = "variation"  # txt2img with subseeds
    IMG2IMG = "img2img"  # needs ``image``
    INPAINT = "inpaint"  # needs ``image`` and ``inpaint``
    OUTPAINT = "outpaint"  # needs ``image`` and ``outpaint`` (zoom out and pan)
    UPSCALE = "upscale"  # needs ``image`` and ``upscale``; no diffusion, no prompt needed
    PLOT = "plot"  # needs ``plot``: X/Y plot and prompt matrix, one labelled grid of cells
    RESTORE_FACES = "restore_faces"  # needs ``image`` and ``restore_faces``; no diffusion
    # needs ``image`` and ``upscale``: A1111's SD upscale, the upscaled image redrawn by tiles
    # with img2img at the image's denoising_strength (inference.sd_upscale)
    SD_UPSCALE = "sd_upscale"
    # needs ``merge``: A1111's checkpoint merger; writes a new checkpoint file, makes no image
    MERGE = "merge"
    # needs ``image`` and ``describe``: prompt suggestions for the image (JobCompleted.suggestions),
    # no images made; A1111's Interrogate CLIP / DeepBooru, Midjourney's /describe
    DESCRIBE = "describe"
    # Masks from words: needs ``image`` and ``segment``; makes the mask (SegmentOptions) and
    # one preview image of it over the source, no diffusion. Its other fields are the inpaint
    # job that the member's "Looks right" queues with that mask.
    SEGMENT = "segment"


class ResizeMode(StrEnum):
    """A1111's img2img resize modes: how the source image is fitted to width x height."""

    JUST_RESIZE = "just resize"  # stretch to the size, aspect not kept
    CROP_AND_RESIZE = "crop and resize"  # cover the size, crop the overflow (centred)
    RESIZE_AND_FILL = "resize and fill"  # fit inside, fill the rest with stretched edges


class MaskedContent(StrEnum):
    """A1111's "masked content": what the masked area starts from before denoising."""

    FILL = "fill"  # the masked area blurred into its surroundings' colours
    ORIGINAL = "original"  # the image as it is
    LATENT_NOISE = "latent noise"  # pure noise: ignores what was there
    LATENT_NOTHING = "latent nothing"  # zeroed latents


# The upscaler names that are not model files: a plain resize, always available, and (for the
# hires fix only) resizing the latents themselves, A1111's "Latent".
LANCZOS = "Lanczos"
LATENT = "Latent"


@dataclass(frozen=True, slots=True)
class ImageInput:
    """The source image of img2img, inpaint, outpaint and upscale jobs."""

    # A PNG on the worker's disk: an upload the bot checked and saved, or an image the bot made.
    path: str
    # How far the result may move from the source: 0 keeps it, 1 ignores it (A1111's default 0.75).
    denoising_strength: float = 0.75
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    # A1111's loopback script: run img2img this many times, each on the previous output, with
    # the strength moving linearly from denoising_strength to loopback_final_strength.
    loopback_count: int = 1
    loopback_final_strength: float | None = None


# The mask blur's one limit, in pixels: the range of A1111's slider. The command's option, the
# bot's checks and the worker's all use it.
MAX_MASK_BLUR = 64
# SD upscale's result, at most this on its longer side: each 1024 px more is four more SDXL
# tiles of diffusion. The bot's checks and the worker's (inference.sd_upscale) use it.
MAX_SD_UPSCALE_SIDE = 4096
# A1111's clip skip range (its "Clip skip" slider): 1 reads CLIP's last layer, 2 the one before.
MAX_CLIP_SKIP = 12


@dataclass(frozen=True, slots=True)
class InpaintOptions:
    mask_path: str  # a PNG of the image's size; white is repainted, black is kept
    mask_blur: int = 4  # pixels of Gaussian blur on the mask edge, as A1111
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    # A1111's "inpaint only masked": crop around the mask (plus padding), inpaint that crop at
    # the full width x height, and paste it back; small fixes get full resolution.
    only_masked: bool = False
    only_masked_padding: int = 32


@dataclass(frozen=True, slots=True)
class OutpaintOptions:
    """Pixels added on each side of the source; width x height is the extended canvas."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    # Width of the band over which the new area is blended into the original at the seam.
    blend: int = 16


@dataclass(frozen=True, slots=True)
class HiresFix:
    """A1111's hires fix: txt2img at width x height, upscale, then img2img at the larger size."""

    scale: float  # the second pass is (width*scale, height*scale), rounded to multiples of 8
    steps: int = 0  # steps of the second pass; 0 means the same as the first
    denoising_strength: float = 0.7  # A1111's default
    upscaler: str = LATENT  # LATENT, LANCZOS, or the name of an upscaler model file


@dataclass(frozen=True, slots=True)
class PlotCell:
    """One image of an X/Y plot or prompt matrix: what differs from the request; None keeps it."""

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    model: str | None = None
    denoising_strength: float | None = None  # for hires fix or img2img requests
    vae: str | None = None  # a VAE file's name; "": the model's own
    clip_skip: int | None = None
    # A1111's "Schedule type", "Eta" and "RNG source" axes (GenerateRequest's fields).
    schedule_type: str | None = None
    eta: float | None = None
    rng: str | None = None


@dataclass(frozen=True, slots=True)
class PlotOptions:
    """A labelled grid, A1111's X/Y plot and prompt matrix scripts: each cell is one image made
    with the request's parameters and the cell's overrides, the cells in row-major order."""

    cells: tuple[PlotCell, ...]
    columns: int
    x_labels: tuple[str, ...] = ()  # one per column, drawn above the grid
    y_labels: tuple[str, ...] = ()  # one per row, drawn left of the grid
    x_title: str = ""  # the X axis's name ("Steps", "CFG Scale", "Prompt S/R"...)
    y_title: str = ""


@dataclass(frozen=True, slots=True)
class UpscaleOptions:
    scale: float = 2.0  # the output is the source times this (2 or 4 from the buttons)
    upscaler: str = LANCZOS  # LANCZOS or the name of an upscaler model file (stem, no suffix)
    # SD upscale's tile overlap in pixels, as its infotext says it ("SD upscale overlap"); the
    # worker sets it from the tile size it picked (inference.sd_upscale.overlap_for).
    tile_overlap: int = 0


# A1111's face restorers (its "Face restoration model" setting), by the names it writes in
# the infotext's "Face restoration".
GFPGAN = "GFPGAN"
CODEFORMER = "CodeFormer"
FACE_RESTORERS = (GFPGAN, CODEFORMER)


@dataclass(frozen=True, slots=True)
class RestoreFacesOptions:
    """A1111's "Restore faces": every face found is aligned, restored and pasted back.

    On a generating job it runs on each image as A1111's generation does (fully visible); on
    an upscale it runs after the upscale, as A1111's Extras tab orders them; a RESTORE_FACES
    job runs it alone on its source image.
    """

    restorer: str = CODEFORMER  # one of FACE_RESTORERS
    # A1111 Extras' "visibility": the restored image blended over the original, 0 to 1.
    visibility: float = 1.0
    # CodeFormer's fidelity weight, 0 (most restoration) to 1 (closest to the input); A1111's
    # default 0.5. GFPGAN has none.
    codeformer_weight: float = 0.5


# --- /describe (inference.describe) ---------------------------------------------------------

# The interrogators a describe job may use: "clip" (a caption model, then CLIP ranks A1111's
# artists, flavors, mediums and movements lists) or "tagger" (a WD14-style ONNX tagger's
# booru tags, for anime models).
CLIP_INTERROGATOR = "clip"
TAGGER_INTERROGATOR = "tagger"
INTERROGATORS = (CLIP_INTERROGATOR, TAGGER_INTERROGATOR)
# A describe job's answer: this many prompt suggestions at most, as Midjourney's /describe.
DESCRIBE_SUGGESTIONS = 4


@dataclass(frozen=True, slots=True)
class DescribeOptions:
    interrogator: str = CLIP_INTERROGATOR  # one of INTERROGATORS


@dataclass(frozen=True)
class DescribeModels:
    """The interrogators' models ([describe] in config.toml), loaded by the worker when a
    describe job first needs them. "" leaves that interrogator unavailable. (No slots: the
    bot's settings read the defaults from the class, bot.config.DescribeSettings.)"""

    # A BLIP captioning model (transformers' BlipForConditionalGeneration): a hub id such as
    # "Salesforce/blip-image-captioning-base", or a local folder.
    caption_model: str = ""
    # The CLIP that ranks the lists (transformers' CLIPModel): "openai/clip-vit-large-patch14",
    # A1111's ViT-L/14, or a local folder.
    clip_model: str = ""
    # A folder holding a WD14-style tagger as A1111's tagger extension keeps it: model.onnx and
    # selected_tags.csv.
    tagger: str = ""
    # A tag is suggested when the tagger's confidence in it reaches this (A1111's extension: 0.35).
    tag_threshold: float = 0.35
    # A folder of category lists ("<name>.txt", one entry a line; "<name>.top3.txt" takes the
    # three best) replacing the shipped ones, as A1111's interrogate folder; "": the shipped lists.
    categories_dir: str = ""


# Masks from words (JobKind.SEGMENT): a text-prompted segmentation model (CLIPSeg) scores each
# pixel 0-1 for the words; the mask is the pixels above ``threshold``, grown by ``dilation``
# pixels so it covers the edges the model's coarse map (a 22x22 grid for CLIPSeg) misses.
DEFAULT_SEGMENT_THRESHOLD = 0.4
DEFAULT_SEGMENT_DILATION = 8
MAX_SEGMENT_DILATION = 128
MAX_SEGMENT_WORDS = 200


@dataclass(frozen=True, slots=True)
class SegmentOptions:
    words: str  # what to find: "the sky", "her hat"
    threshold: float = DEFAULT_SEGMENT_THRESHOLD
    dilation: int = DEFAULT_SEGMENT_DILATION


def segment_mask_path(outputs_dir: str, job_id: int) -> str:
    """Where a segment job's mask is written (the source image's size, white: repaint): the
    bot hands it to the inpaint job that its "Looks right" queues."""
    return f"{outputs_dir}/masks/segment-{job_id}.png"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What an admin says of a checkpoint: the fields that the bot's [[models]] settings
    (bot.config.ModelSettings) and the worker's ModelSpec share, declared once here."""

    name: str
    # A Hugging Face hub id ("stable-diffusion-v1-5/stable-diffusion-v1-5"), a local
    # diffusers folder (one holding model_index.json) or a single-file checkpoint (an A1111
    # .safetensors, loaded offline by inference.single_file).
    source: str
    description: str = ""
    # The same kind of source for this model's inpainting variant (a 9-channel UNet), used for
    # inpaint, zoom out and pan jobs; without one those jobs use the model itself.
    inpaint_source: str = ""
    # False: prompts are cut to one 75-token chunk (a model not trained on chunked prompts);
    # the bot warns the user what was cut.
    long_prompts: bool = True
    # What a single-file checkpoint is (inference.common.checkpoints.Family values: "sd1",
    # "sd2", "sdxl", "sdxl-refiner"); "" detects it from the file. Folders and hub ids say it
    # in their model_index.json.
    family: str = ""
    # "epsilon" or "v_prediction"; "" takes the file's metadata or the family's default.
    prediction_type: str = ""
    # An A1111 .yaml config for a single file (A1111 reads "<name>.yaml" beside it, and so do
    # we when this is ""), or a diffusers config folder replacing the shipped one of the
    # file's family (for a checkpoint of unusual shapes: the tests' tiny files).
    original_config: str = ""
    # The VAE used when a member picks "Automatic": "" is the baked-in one (or a VAE file
    # named after the checkpoint, as in A1111); else a VAE's name.
    vae: str = ""
    # A1111's clip skip (1-12) for this model's jobs that set none; 0 means the family's default.
    clip_skip: int = 0


@dataclass(frozen=True, slots=True)
class ModelSpec(ModelSource):
    """A checkpoint an admin configured, under the name users pick it by, as the worker gets it."""

    # The side a job of this model gets when it asks for no size (512 SD 1.x, 1024 SDXL); 0
    # is the family's.
    default_size: int = 0
    # The file's sha256 as hex when already known (hashed by the bot, cached in the database),
    # so the worker never hashes a 7 GB file on a job's path; "" when not known yet.
    sha256: str = ""


# The choices of WorkerOptions' torch_compile, preview_method and low_memory. "off" or a
# torch.compile mode; "max-autotune-no-cudagraphs" is the usual best for diffusion models.
# The environment variable with the log level of the bot and its worker, which inherits it
# ("DEBUG" shows the tracebacks behind start-up errors; `sdbot --debug` sets it).
LOG_LEVEL_VARIABLE = "SDBOT_LOG_LEVEL"

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
PREVIEW_METHODS = ("approx", "taesd")
LOW_MEMORY_MODES = ("off", "slicing", "offload")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """What an admin tunes about the worker: the bot's [worker] settings load into these
    fields (bot.config.WorkerSettings adds the bot's own), and WorkerConfig carries them."""

    device: str = "auto"  # "auto" picks cuda when present, else cpu; or "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" is float16 on cuda and float32 on cpu; or float16/bfloat16/float32
    # The worker sends at most one preview per interval, so previews cost little and the bot
    # never has more to show than Discord's edit rate allows.
    preview_interval_s: float = 1.5
    preview_max_side: int = 256
    # PNG zlib level for saved images: 1 is much faster than 9 for slightly bigger files.
    png_compress_level: int = 1
    # The most images of one RunBatch (the sum of its jobs' counts); the bot's queue batches
    # compatible jobs up to it (inference/batching.py). 1: every job runs alone.
    max_batch_images: int = 8
    # --- speed and memory (inference/acceleration.py; README "Performance") ---
    # On a CUDA GPU, the UNet and VAE in channels_last memory layout (faster convolutions).
    channels_last: bool = True
    # On a CUDA GPU, attention's query/key/value projections as one matmul; a LoRA that
    # changes them still applies (the processor falls back to the separate projections).
    fuse_qkv: bool = True
    # torch.compile of the UNet and the VAE decoder on a CUDA GPU: one of COMPILE_MODES. Each
    # new size compiles once (the warm-up pays the default one, and with max_batch_images
    # above 1 the batch sizes too).
    torch_compile: str = "off"
    # Where torch.compile keeps what it compiled, so that a restart does not compile again;
    # "": torch's own folder (TORCHINDUCTOR_CACHE_DIR, else one under /tmp).
    compile_cache_dir: str = ""
    # One generation per preloaded model at start-up on a GPU, at warmup_shape, so cuDNN
    # autotuning and compilation are paid before the first user.
    warmup: bool = True
    # One of PREVIEW_METHODS: "approx" (A1111's Approx cheap, a linear latent->RGB map) or
    # "taesd" (the tiny autoencoder at taesd_source: a hub id or a folder). Never the full VAE.
    preview_method: str = "approx"
    taesd_source: str = ""
    # TAESD-XL ("madebyollin/taesdxl" or a folder) for SDXL models' "taesd" previews; "":
    # SDXL models get "approx" previews (SD's TAESD cannot read SDXL latents).
    taesdxl_source: str = ""
    # One of LOW_MEMORY_MODES: "off"; "slicing" (attention slicing, VAE slicing, VAE tiling of
    # images over 1024 px); "offload" (slicing plus model CPU offload, CUDA only).
    low_memory: str = "off"
    # Models kept loaded, least recently used evicted, while the sum of their parameters' MB
    # stays within this; 0: one model at a time (each inpainting variant counts as a model).
    model_memory_budget_mb: int = 0


@dataclass(frozen=True, slots=True)
class WorkerConfig(WorkerOptions):
    """Everything the worker process needs to start; built by the bot from its settings."""

    models: tuple[ModelSpec, ...]
    default_model: str
    outputs_dir: str
    # Models loaded at start-up, so the first user does not pay the load.
    preload: tuple[str, ...] = ()
    # Folders searched for upscaler models (.pth / .safetensors, loaded through spandrel); a
    # model's name is its file name without the suffix. A1111 keeps them in models/ESRGAN and
    # models/RealESRGAN.
    upscaler_dirs: tuple[str, ...] = ()
    # Folders searched for the face restorers' weights (A1111: models/GFPGAN, models/Codeformer)
    # and the face detector's (detection_Resnet50_Final.pth, beside them); see
    # inference.common.face_restorer_files.
    face_restorer_dirs: tuple[str, ...] = ()
    # Upscalers run on tiles of this many pixels (0: whole image at once), overlapping by
    # tile_overlap, so a 4x of a large image fits a small GPU and the CPU's memory.
    upscale_tile: int = 256
    upscale_tile_overlap: int = 32
    # Textual-inversion embeddings (.safetensors, .pt, .bin; A1111: embeddings/), used by writing
    # their name (the file name without suffix) in a prompt, and LoRA files (A1111: models/Lora),
    # used as <lora:name:weight>.
    embedding_dirs: tuple[str, ...] = ()
    lora_dirs: tuple[str, ...] = ()
    # VAE files (.safetensors, .pt, .ckpt; A1111: models/VAE), used by their file name
    # (inference.common.vae_files); a "<checkpoint>.vae.*" beside a single-file checkpoint too.
    vae_dirs: tuple[str, ...] = ()
    # The text-prompted segmentation model of masks from words (JobKind.SEGMENT): a
    # CLIPSegForImageSegmentation hub id ("CIDAS/clipseg-rd64-refined") or a local folder with
    # its processor; "": none, and the bot refuses masks from words. Loaded on first use.
    segmentation_model: str = ""
    # A safety classifier (diffusers' StableDiffusionSafetyChecker layout: a hub id or a local
    # folder with its CLIP image processor), run on requests with ``safety_check``; "": none.
    safety_checker: str = ""
    # (width, height, images) of the warm-up: the bot fills in its default model's base size
    # and /imagine's default count.
    warmup_shape: tuple[int, int, int] = (512, 512, 1)
    # Write a job's PNGs on a thread while the next job generates (JobSaving says when the GPU
    # is free). False writes them before the next job starts: for side-by-side benchmarks.
    background_saving: bool = True
    # The models of describe jobs (inference.describe).
    describe: DescribeModels = field(default_factory=DescribeModels)


# A1111's "Random number generator source" values, its default first (GenerateRequest.rng).
RNG_SOURCES = ("GPU", "CPU", "NV")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One job, with every parameter resolved: the worker decides nothing about it.

    ``width`` x ``height`` is always the size of the images the job returns: the generation
    size for txt2img (the hires fix then scales it by ``hires.scale``, which the result's size
    shows), the size the source is fitted to for img2img and inpaint, the extended canvas
    for outpaint, and the source times ``upscale.scale`` for upscale.
    """

    job_id: int
    kind: JobKind
    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str  # an A1111 sampler name, a key of inference.common.samplers.SAMPLERS
    seeds: tuple[int, ...]  # one per image: image i is reproduced alone by seeds[i]
    # A1111 variations: each image's noise is slerped towards the noise of its subseed.
    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0
    # The workflow's options: which are set follows from ``kind`` (see JobKind).
    image: ImageInput | None = None
    inpaint: InpaintOptions | None = None
    outpaint: OutpaintOptions | None = None
    hires: HiresFix | None = None
    upscale: UpscaleOptions | None = None
    plot: PlotOptions | None = None
    # A1111's "Restore faces" on every image the job makes (any kind but PLOT); required by
    # RESTORE_FACES jobs.
    restore_faces: RestoreFacesOptions | None = None
    merge: MergeOptions | None = None
    describe: DescribeOptions | None = None
    segment: SegmentOptions | None = None
    # Seamless tiling (Midjourney's --tile, A1111's "Tiling"): convolutions wrap around.
    tiling: bool = False
    # Run the safety classifier on the images (the job was queued outside an age-restricted
    # channel); each ImageResult says whether it was flagged. Ignored without a classifier.
    safety_check: bool = False
    # The VAE file the images are decoded (and sources encoded) with, by its A1111 name (the
    # file name, inference.common.vae_files); "": the model's own (baked-in) VAE. The bot
    # resolves "Automatic" before queuing, so the worker decides nothing.
    vae: str = ""
    # A1111's clip skip, 1-12: the prompt is read from CLIP's hidden layer -clip_skip (1: the
    # last layer, no skip). SD 2.x and SDXL encode as A1111 does whatever it says
    # (inference.conditioning.effective_clip_skip); the infotext still records it.
    clip_skip: int = 1
    # A1111's schedule type (inference.common.sampler_catalog.SCHEDULE_TYPES: "Automatic",
    # "Karras", "Exponential"...): "Automatic" is the sampler's own default, as in A1111 1.10.
    schedule_type: str = "Automatic"
    # A1111's "Random number generator source": "GPU" (A1111's default: torch's CUDA
    # generator, or the CPU's where there is no GPU), "CPU", or "NV" (CUDA's Philox on the
    # CPU, the same noise on any machine); inference.noise.
    rng: str = "GPU"
    # ENSD: A1111's eta noise seed delta, added to the seed of the ancestral and SDE samplers'
    # step noise (0: none).
    eta_noise_seed_delta: int = 0
    # Eta of the ancestral samplers and DDIM; None: A1111's default for the sampler (1.0 for
    # the ancestral ones, 0.0 for DDIM).
    eta: float | None = None
    # A1111's "Resize seed from" (width, height): the noise is made at that size and pasted,
    # centred, into this one, so a seed keeps its composition at another size; None: off.
    seed_resize_from: tuple[int, int] | None = None
    # A1111's "Refiner" (txt2img and variations without the hires fix): the configured model
    # (an SDXL refiner) that finishes the images from the base's latents once
    # ``refiner_switch_at`` of the denoising is done (A1111's "Refiner switch at"); "" none.
    refiner: str = ""
    refiner_switch_at: float = 0.8


# --- bot -> worker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    request: GenerateRequest


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Several users' jobs run as one pass (inference.batching): they share its batch_key.

    Events stay per job: each gets JobStarted, JobProgress, and its own final event.
    """

    requests: tuple[GenerateRequest, ...]


@dataclass(frozen=True, slots=True)
class CancelJob:
    """Stop this job between two steps; ignored when the worker is not running it."""

    job_id: int


@dataclass(frozen=True, slots=True)
class UpdateModels:
    """The models the worker serves from now on (a rescan of the model folders found files
    added, changed or removed, or hashes became known): applied between two jobs, in order
    with them. Loaded models that were removed or whose files changed are unloaded."""

    models: tuple[ModelSpec, ...]


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = RunJob | RunBatch | CancelJob | UpdateModels | Shutdown


# --- worker -> bot -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerReady:
    device: str
    dtype: str
    models: tuple[str, ...]
    versions: dict[str, str] = field(default_factory=dict)
    # Start-up seconds, for the logs and the benchmarks: "load:<model>" (reading and placing
    # it), "warmup:<model>" (the first run) and "compile:<model>" (first run minus the second,
    # when torch_compile is on), "compile_batches:<model>" (the largest batch's run, which
    # compiles the graph every batch size shares, when batching is on too).
    timings: dict[str, float] = field(default_factory=dict)


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
class ModelLoading:
    """The job waits on a model that is not loaded yet: its weight files are being read
    (inference.load_progress). ``done`` bytes of ``total`` read; ``total`` 0 when unknown (a
    hub id). Once done == total the pipeline is being built from memory; JobProgress follows."""

    job_id: int
    model: str  # the model's name, "name (inpaint)" for its inpainting checkpoint
    done: int
    total: int

    @property
    def summary(self) -> str:
        """"Loading model X… 45% · 3.1 of 6.9 GB", as the job's status shows it."""
        line = f"Loading model {self.model}…"
        if not self.total:
            return line
        if self.done >= self.total:
            return f"{line} read {_gigabytes(self.total)} GB, preparing it"
        return f"{line} {100 * self.done // self.total}% · {_gigabytes(self.done)} of {_gigabytes(self.total)} GB"


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:.2f}" if size < 2**30 else f"{size / 2**30:.1f}"


@dataclass(frozen=True, slots=True)
class JobSaving:
    """The job's images are made and are being written (a thread of the worker's): the GPU is
    free, so the bot may send the next job, which then runs while these PNGs are compressed.
    Its final event (JobCompleted, or JobFailed when a write fails) follows."""

    job_id: int


@dataclass(frozen=True, slots=True)
class ImageResult:
    index: int
    seed: int
    subseed: int | None
    path: str  # the full-resolution PNG, with A1111 infotext in its "parameters" chunk
    infotext: str
    width: int
    height: int
    flagged: bool = False  # the safety classifier judged it NSFW (only when the request asked)
    # A line for the member about this image ("No faces found: the image is unchanged."), or "".
    note: str = ""


@dataclass(frozen=True, slots=True)
class JobCompleted:
    job_id: int
    images: tuple[ImageResult, ...]
    grid_path: str | None  # a 2x2 (or 1x2...) grid when the job made more than one image
    seconds: float  # time spent generating (saving overlaps the next job), for queue ETAs
    # A describe job's prompt suggestions (it makes no images), best first.
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobFailed:
    job_id: int
    message: str  # shown to the user as it is: say what went wrong and what to do
    # What broke (exception class and text, paths), for the log and moderators, never shown
    # in the channel: "" when the message says it all.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class JobCanceled:
    job_id: int


Event = (
    WorkerReady
    | WorkerStartupFailed
    | JobStarted
    | ModelLoading
    | JobProgress
    | JobSaving
    | JobCompleted
    | JobFailed
    | JobCanceled
)
