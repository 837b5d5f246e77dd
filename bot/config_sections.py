"""The plain sections of bot.config's Settings ([limits], [images], [prompts], [queue],
[policy]): their defaults, documented one for one in config.example.toml. Settings checks them
as a whole (bot.config); they are kept apart to keep that module short, and bot.config exports
them."""

from __future__ import annotations

from dataclasses import dataclass

from inference.common.protocol import DEFAULT_SEGMENT_DILATION, DEFAULT_SEGMENT_THRESHOLD


@dataclass(frozen=True)
class LimitSettings:
    min_size: int = 256
    max_size: int = 1024
    # Width x height beyond which a job is refused: protects the GPU from 1024x1024 x4.
    max_pixels: int = 1024 * 1024
    default_steps: int = 25
    max_steps: int = 60
    default_cfg_scale: float = 7.0
    max_cfg_scale: float = 30.0
    default_sampler: str = "Euler a"
    # A1111's "Random number generator source" (GPU, CPU or NV) and ENSD (eta noise seed
    # delta, e.g. 31337 for NovelAI's images): this server's, until a member sets their own.
    default_rng: str = "GPU"
    default_ensd: int = 0
    default_count: int = 4
    max_count: int = 4
    max_prompt_length: int = 1500


@dataclass(frozen=True)
class ImageSettings:
    """Uploads, upscalers and the image workflows (img2img, inpaint, outpaint, upscale)."""

    # Folders searched for upscaler models (.pth / .safetensors: Real-ESRGAN, ESRGAN, SwinIR...,
    # loaded through spandrel). A model's name is its file name without the suffix.
    upscaler_dirs: tuple[str, ...] = ("models/ESRGAN", "models/RealESRGAN")
    # "Lanczos" (a plain resize, always there) or an upscaler model's name.
    default_upscaler: str = "Lanczos"
    # Folders holding the face restorers' weights (GFPGANv1.4.pth, codeformer-v0.1.0.pth) and
    # the face detector's (detection_Resnet50_Final.pth), as A1111 keeps them.
    face_restorer_dirs: tuple[str, ...] = ("models/GFPGAN", "models/Codeformer")
    # The restorer of "Restore faces" for members who chose none (A1111's default: CodeFormer).
    default_face_restorer: str = "CodeFormer"
    # Upscalers run on overlapping tiles of this many pixels (0: the whole image at once).
    upscale_tile: int = 256
    upscale_tile_overlap: int = 32
    # The longest side an upscale may produce.
    max_upscaled_side: int = 4096
    # Uploads larger than this many bytes are refused before download; uploads with more
    # pixels than this are refused from their header, before decoding (decompression bombs).
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    default_denoising_strength: float = 0.75
    # A1111's hires fix defaults, used when /imagine gives a hires scale without them.
    default_hires_denoising: float = 0.7
    max_hires_scale: float = 2.0
    # The longest side a hires fix may produce.
    max_hires_side: int = 2048
    # Zoom out and pan: the most pixels a pan adds, as a fraction of the image's side.
    pan_fraction: float = 0.5
    max_loopback: int = 8
    # Image files of jobs finished more than this many days ago are deleted, once a day (their
    # uploads too, where no newer job uses them); the rows stay. 0: kept forever.
    keep_days: int = 0
    # Masks from words (/inpaint's mask_words): a CLIPSeg model, as a hub id already in the cache
    # ("CIDAS/clipseg-rd64-refined") or a folder with its processor; "": masks are uploaded only.
    segmentation_model: str = ""
    # The mask is the pixels scoring above this (0-1; lower finds more), grown by this many
    # pixels; members may give their own (mask_threshold, mask_dilation, the Adjust form).
    segment_threshold: float = DEFAULT_SEGMENT_THRESHOLD
    segment_dilation: int = DEFAULT_SEGMENT_DILATION


@dataclass(frozen=True)
class PromptSettings:
    """The A1111 prompt tools: embeddings, LoRA, permutations, prompt matrix and X/Y plot."""

    # Textual-inversion embeddings (.safetensors, .pt, .bin), used by writing the file's name
    # (without suffix) in a prompt. A1111 keeps them in embeddings/.
    embedding_dirs: tuple[str, ...] = ("embeddings",)
    # LoRA files (.safetensors; .pt/.ckpt read as weights only), used as <lora:name:weight>.
    # A1111 keeps them in models/Lora.
    lora_dirs: tuple[str, ...] = ("models/Lora",)
    # Permutations ({red, blue} car) queue one job each: more than this many asks first, and
    # more than max_permutations is refused.
    confirm_permutations_above: int = 4
    max_permutations: int = 16
    # Cells of one X/Y plot or prompt matrix (each is one image).
    max_plot_cells: int = 16


@dataclass(frozen=True)
class QueueSettings:
    # Jobs a user may have waiting at once; the rest are refused until some finish.
    max_pending_per_user: int = 5
    # A job is given to a worker this many times at most: a job that was running when the bot
    # or worker died is re-queued once, then failed with a message.
    max_attempts: int = 2
    # Seconds per "unit" (20 steps of one 512x512 image) assumed before any job has finished.
    initial_seconds_per_unit: float = 5.0
    # What one job may cost, and what one member's waiting jobs may cost together, in units of
    # GPU time (bot.jobs.cost: 1 unit = 20 steps of one 512x512 image; a default job is 5);
    # more is refused with the cost and the cap. 0: no cap.
    max_job_cost: float = 200.0
    max_waiting_cost_per_member: float = 400.0
    # Turns go to the member who used the least GPU time (the cost of their jobs started) in
    # this many hours, so a member with huge jobs gets their share of the GPU, not everyone's.
    usage_window_hours: float = 6.0


FLAGGED_ACTIONS = ("blur", "spoiler", "withhold")


@dataclass(frozen=True)
class PolicySettings:
    """Community operations: the defaults of every server's policy (moderators change theirs
    with /admin; see bot.policy), direct messages, and the safety classifier."""

    # Members may use the bot in direct messages, with these defaults as their limits. A member
    # banned from the bot in any server is refused in DMs too.
    allow_dms: bool = True
    # Images one member may make per day (rolling 24 hours) and seconds between two of their
    # jobs; 0: no limit. Waiting jobs per member: [queue] max_pending_per_user.
    images_per_day: int = 0
    cooldown_s: int = 0
    # An image of more pixels than this counts as a "large size": a costly feature, as are
    # upscale 4x, the hires fix and count 4, which servers may reserve to some roles.
    large_pixels: int = 512 * 768
    # A safety classifier (diffusers' StableDiffusionSafetyChecker: a hub id or a local folder),
    # run on every image made outside an age-restricted channel; "" runs none.
    safety_checker: str = ""
    # What happens to an image it flags, unless a server chose otherwise: "blur" (posted
    # blurred), "spoiler" (posted behind a spoiler) or "withhold" (not posted). Flagged images
    # are logged for moderators in every case.
    flagged_action: str = "blur"
    # Audit log entries older than this many days are deleted, once a day; 0: kept forever.
    audit_retention_days: int = 365


# The longest retention a setting accepts (100 years): more is a typo, not a policy.
MAX_RETENTION_DAYS = 36500
