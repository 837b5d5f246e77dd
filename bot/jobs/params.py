"""From what a user typed to a fully resolved job, with every bad value refused by name.

Resolution order for each parameter: the option the user gave, then the user's stored
default, then the server's default. Nothing is silently corrected: a width of 513 is an error
that says so, not a 512 the user did not ask for.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from bot.errors import InvalidOption, echo, listed
from bot.jobs.face_params import check_face_choice, check_fraction, face_restoration_columns
from bot.jobs.model_checks import check_clip_skip, check_model, check_vae, check_vae_choice, model_family
from bot.jobs.sampling import (
    AUTOMATIC_SCHEDULE,
    check_ensd,
    check_eta,
    check_rng,
    check_sampler,
    check_sampling,
    check_seed_resize,
)
from bot.prompts.cleaning import clean_prompt_text, shows
from inference.common.protocol import LANCZOS, RNG_SOURCES, JobKind
from inference.common.sampler_catalog import split_combined_name
from inference.common.upscaler_files import upscaler_files
from inference.common.vae_files import AUTOMATIC

if TYPE_CHECKING:
    from bot.config import LimitSettings, Settings
    from db.models import User

T = TypeVar("T")
MAX_SEED = 2**32 - 1  # A1111's range for a seed it picks: unsigned 32-bit integers
MOST_IMAGES = 10  # the most images one job makes (the count option's top)
# The highest seed a member can give: image i of a job uses seed + i, so the last image of a
# job seeded at MAX_SEED has MAX_SEED + 9, and that seed typed alone must make it again.
MAX_GIVEN_SEED = MAX_SEED + MOST_IMAGES - 1
DEFAULT_REFINER_SWITCH_AT = 0.8  # A1111's "Refiner switch at" default
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "3:4": (3, 4),
    "4:3": (4, 3),
    "9:16": (9, 16),
    "16:9": (16, 9),
}


@dataclass(frozen=True)
class GenerationOptions:
    """The options of /imagine as typed; None means "not given". Every command, form and
    /pnginfo's Re-run builds these: the prompts are cleaned here, once (bot.prompts.cleaning)."""

    prompt: str
    negative_prompt: str | None = None
    aspect: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    seed: int | None = None
    count: int | None = None
    model: str | None = None
    tiling: bool | None = None  # seamless tiling (--tile in the prompt)
    vae: str | None = None  # "Automatic", "None" or a VAE's name (--vae in the prompt)
    clip_skip: int | None = None  # A1111's 1-12 (--clipskip in the prompt)
    # A1111 1.10's schedule type ("Karras"...); the sampler may also be a combined name.
    schedule_type: str | None = None
    rng: str | None = None  # "GPU", "CPU" or "NV"
    ensd: int | None = None  # A1111's eta noise seed delta
    eta: float | None = None
    seed_resize_from: str | None = None  # "WIDTHxHEIGHT"; "0x0" or "": off
    restore_faces: bool | None = None  # A1111's "Restore faces"; None: the member's default

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", clean_prompt_text(self.prompt or ""))
        if self.negative_prompt is not None:
            object.__setattr__(self, "negative_prompt", clean_prompt_text(self.negative_prompt))


@dataclass(frozen=True)
class JobParameters:
    """Everything a job needs, resolved and validated; what the jobs table stores."""

    kind: JobKind
    prompt: str
    negative_prompt: str
    model: str
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str
    count: int
    seed: int
    subseed: int | None = None
    subseed_strength: float = 0.0
    parent_job_id: int | None = None
    parent_image_index: int | None = None
    # Image workflows, one column each; generate_request groups them into the protocol's
    # ImageInput, InpaintOptions, OutpaintOptions, HiresFix and UpscaleOptions.
    init_image_path: str | None = None
    denoising_strength: float | None = None
    resize_mode: str | None = None
    loopback_count: int | None = None
    loopback_final_strength: float | None = None
    mask_path: str | None = None
    mask_blur: int | None = None
    masked_content: str | None = None
    inpaint_only_masked: bool | None = None
    inpaint_padding: int | None = None
    outpaint_left: int | None = None
    outpaint_right: int | None = None
    outpaint_top: int | None = None
    outpaint_bottom: int | None = None
    hires_scale: float | None = None
    hires_steps: int | None = None
    hires_denoising: float | None = None
    hires_upscaler: str | None = None
    refiner: str | None = None
    refiner_switch_at: float | None = None
    upscale_factor: float | None = None
    upscaler: str | None = None
    # A1111's "Restore faces" (RestoreFacesOptions: restorer, visibility, CodeFormer weight).
    face_restorer: str | None = None
    face_visibility: float | None = None
    codeformer_weight: float | None = None
    tiling: bool = False
    # The VAE file's name ("": the model's own), "Automatic" already resolved, and clip skip.
    vae: str = ""
    clip_skip: int = 1
    # A1111's sampling and noise choices (the request's fields of the same names); the seed
    # resize is two columns, the request's (width, height) pair.
    schedule_type: str = AUTOMATIC_SCHEDULE
    rng: str = RNG_SOURCES[0]
    eta_noise_seed_delta: int = 0
    eta: float | None = None
    seed_resize_from_width: int | None = None
    seed_resize_from_height: int | None = None
    plot_json: str | None = None  # PlotOptions as JSON, for JobKind.PLOT (bot.jobs.plot_params)
    merge_json: str | None = None  # MergeOptions as JSON, for JobKind.MERGE (bot.jobs.job_rows)
    interrogator: str | None = None  # DescribeOptions.interrogator, for JobKind.DESCRIBE
    # JobKind.SEGMENT: the protocol's SegmentOptions (bot.jobs.workflow_params.segment_parameters).
    segment_words: str | None = None
    segment_threshold: float | None = None
    segment_dilation: int | None = None


@dataclass(frozen=True)
class ServerDefaults:
    """A server's own defaults (/admin noise), between a member's own and the bot's config:
    A1111's random number generator source and ENSD, which a server sets to match the A1111
    its members copy seeds from. None: the config's."""

    rng: str | None = None
    ensd: int | None = None


NO_SERVER_DEFAULTS = ServerDefaults()


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


def resolve_parameters(
    options: GenerationOptions, settings: Settings, user: User | None = None, server: ServerDefaults = NO_SERVER_DEFAULTS
) -> JobParameters:
    limits = settings.limits
    defaults = member_defaults(user, settings)
    prompt = " ".join(options.prompt.split()) if options.prompt else ""
    if not shows(prompt):
        raise InvalidOption("The prompt is empty: describe the image you want.")
    if len(prompt) > limits.max_prompt_length:
        raise InvalidOption(
            f"The prompt is {len(prompt)} characters long; the limit is {limits.max_prompt_length}."
        )
    negative = options.negative_prompt
    if negative is None:
        negative = defaults.negative_prompt or ""
    check_negative_prompt(negative, limits)

    model = check_model(settings, options.model or defaults.model or settings.default_model)
    if model_family(model) == "sdxl-refiner":
        raise InvalidOption(
            f"`{echo(model.name)}` is an SDXL refiner: it finishes images, it cannot start one. "
            "Pick an SDXL model, and this one as its refiner."
        )
    width, height = _resolve_size(options, settings, model.base_size, defaults)
    steps = check_steps(_pick(options.steps, defaults.steps, limits.default_steps), limits)
    cfg_scale = check_cfg(_pick(options.cfg_scale, defaults.cfg_scale, limits.default_cfg_scale), limits)
    sampler_name = options.sampler or defaults.sampler or limits.default_sampler
    if options.sampler is None and options.schedule_type is not None:
        # A schedule type given alone replaces the one a default's combined name carries.
        sampler_name = split_combined_name(sampler_name)[0]
    sampler, schedule_type = check_sampling(sampler_name, options.schedule_type)
    eta = check_eta(options.eta, sampler)
    rng = check_rng(options.rng or defaults.rng or server.rng or limits.default_rng)
    ensd = check_ensd(_pick(options.ensd, defaults.ensd, limits.default_ensd if server.ensd is None else server.ensd))
    seed_resize = check_seed_resize(options.seed_resize_from, limits)
    vae = check_vae(settings, model, options.vae or defaults.vae or AUTOMATIC)
    clip_skip = check_clip_skip(_pick(options.clip_skip, defaults.clip_skip, model.clip_skip or 1))

    count = options.count if options.count is not None else limits.default_count
    if not 1 <= count <= limits.max_count:
        raise InvalidOption(f"count must be between 1 and {limits.max_count}, got {count}.")
    seed = options.seed
    if seed is None or seed == -1:
        seed = random_seed()
    elif not 0 <= seed <= MAX_GIVEN_SEED:
        raise InvalidOption(f"seed must be -1 (random) or between 0 and {MAX_GIVEN_SEED}, got {seed}.")

    return JobParameters(
        kind=JobKind.TXT2IMG,
        prompt=prompt,
        negative_prompt=negative.strip(),
        model=model.name,
        width=width,
        height=height,
        steps=steps,
        cfg_scale=cfg_scale,
        sampler=sampler,
        count=count,
        seed=seed,
        tiling=bool(options.tiling),
        vae=vae,
        clip_skip=clip_skip,
        schedule_type=schedule_type,
        rng=rng,
        eta_noise_seed_delta=ensd,
        eta=eta,
        seed_resize_from_width=seed_resize[0] if seed_resize else None,
        seed_resize_from_height=seed_resize[1] if seed_resize else None,
        **face_restoration_columns(  # type: ignore[arg-type]
            settings, options.restore_faces, choice=defaults.face_restorer,
            codeformer_weight=defaults.codeformer_weight,
        ),
    )


# --- one check per option, shared by the commands and /settings (the same words) -------------


def with_refiner(
    params: JobParameters,
    settings: Settings,
    refiner: str | None,
    switch_at: float | None,
    default: str | None = None,
) -> JobParameters:
    """A txt2img job with A1111's refiner options checked and set: ``refiner`` a configured
    model's name ("None": no refiner), ``switch_at`` the fraction of the denoising after which
    it takes over (default 0.8). ``default`` (the member's /settings refiner) serves when
    ``refiner`` is None, on an SDXL model only, so that it never keeps another model's job
    from running. With the hires fix the refiner takes over inside the second pass, as in
    A1111."""
    if refiner is None and default:
        if model_family(check_model(settings, params.model)) == "sdxl":
            refiner = default
    if refiner is None or refiner.strip().casefold() == "none":
        if switch_at is not None:
            raise InvalidOption("refiner_switch_at needs a refiner.")
        return params
    model = check_model(settings, refiner.strip())
    base_family, refiner_family = (model_family(m) for m in (check_model(settings, params.model), model))
    # Families the folders tell (a hub id's or a file's is the worker's to check).
    if base_family and base_family != "sdxl":
        raise InvalidOption(f"The refiner works with SDXL models; `{echo(params.model)}` is not one.")
    if refiner_family and refiner_family not in ("sdxl", "sdxl-refiner"):
        raise InvalidOption(f"`{echo(model.name)}` is not an SDXL model and cannot refine.")
    switch = DEFAULT_REFINER_SWITCH_AT if switch_at is None else switch_at
    if not 0.0 < switch < 1.0:
        raise InvalidOption(f"refiner_switch_at must be above 0 and below 1, got {switch:g}.")
    return replace(params, refiner=model.name, refiner_switch_at=switch)


def check_steps(steps: int, limits: LimitSettings) -> int:
    if not 1 <= steps <= limits.max_steps:
        raise InvalidOption(f"steps must be between 1 and {limits.max_steps}, got {steps}.")
    return steps


def check_cfg(cfg_scale: float, limits: LimitSettings) -> float:
    cfg_scale = float(cfg_scale)
    if not 1.0 <= cfg_scale <= limits.max_cfg_scale:
        raise InvalidOption(f"cfg must be between 1 and {limits.max_cfg_scale:g}, got {cfg_scale:g}.")
    return cfg_scale


def check_negative_prompt(negative: str, limits: LimitSettings) -> str:
    negative = clean_prompt_text(negative)
    if len(negative) > limits.max_prompt_length:
        raise InvalidOption(
            f"The negative prompt is {len(negative)} characters long; the limit is {limits.max_prompt_length}."
        )
    return negative


def check_size(width: int, height: int, limits: LimitSettings) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise InvalidOption(f"{name} must be a multiple of 8, got {value}.")
        if not limits.min_size <= value <= limits.max_size:
            raise InvalidOption(
                f"{name} must be between {limits.min_size} and {limits.max_size}, got {value}."
            )
    if width * height > limits.max_pixels:
        raise InvalidOption(
            f"{width}x{height} is {width * height:,} pixels; this server allows at most "
            f"{limits.max_pixels:,} per image."
        )
    return width, height


def check_aspect(aspect: str, base_size: int, limits: LimitSettings) -> tuple[int, int]:
    """The size an aspect ratio makes for a model of this base size, within the limits."""
    width, height = size_for_aspect(aspect, base_size, limits.max_size)
    for name, value in (("width", width), ("height", height)):
        if not limits.min_size <= value <= limits.max_size:
            raise InvalidOption(
                f"Aspect ratio {aspect} makes {width}x{height} images here, and {name} must be "
                f"between {limits.min_size} and {limits.max_size}: choose a less extreme ratio."
            )
    return width, height


def check_upscaler_name(settings: Settings, name: str) -> str:
    """An upscaler of the Upscale buttons and /upscale (bot.jobs.workflow_params.check_upscaler
    says the same; this one is here so that params needs no workflows)."""
    known = [LANCZOS, *upscaler_files(settings.images.upscaler_dirs)]
    match = next((k for k in known if k.casefold() == name.casefold()), None)
    if match is None:
        raise InvalidOption(f"Unknown upscaler `{echo(name)}`. Available: {listed(known)}.")
    return match


# --- a member's stored defaults ----------------------------------------------------------------


@dataclass(frozen=True)
class MemberDefaults:
    """A member's stored defaults that are still valid on this server; None: unset, or no
    longer valid (a model or upscaler removed from the config, limits lowered), in which case
    the server's default applies and `unavailable` says which and why, for /settings.

    Styles are checked where they are read (bot.prompts.prepare): they live in the database."""

    model: str | None = None
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    aspect: str | None = None
    negative_prompt: str | None = None
    upscaler: str | None = None
    vae: str | None = None
    clip_skip: int | None = None
    refiner: str | None = None
    rng: str | None = None
    ensd: int | None = None
    face_restorer: str | None = None  # "Off" or a restorer (bot.jobs.face_params)
    face_visibility: float | None = None
    codeformer_weight: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # setting -> why


def member_defaults(user: User | None, settings: Settings) -> MemberDefaults:
    """Each stored default checked with the commands' own checks; a stale one never breaks a
    job: it is left out (the server's default applies) and reported."""
    if user is None:
        return MemberDefaults()
    limits = settings.limits
    values: dict[str, object] = {}
    unavailable: dict[str, str] = {}

    def keep(name: str, stored: object, check: Callable[[], object]) -> None:
        if stored is None:
            return
        try:
            values[name] = check()
        except InvalidOption as error:
            unavailable[name] = error.message

    keep("model", user.default_model, lambda: check_model(settings, user.default_model or "").name)
    keep("sampler", user.default_sampler, lambda: check_sampler(user.default_sampler or ""))
    keep("steps", user.default_steps, lambda: check_steps(user.default_steps or 0, limits))
    keep("cfg_scale", user.default_cfg_scale, lambda: check_cfg(user.default_cfg_scale or 0.0, limits))
    keep("negative_prompt", user.default_negative_prompt,
         lambda: check_negative_prompt(user.default_negative_prompt or "", limits))
    keep("upscaler", user.default_upscaler, lambda: check_upscaler_name(settings, user.default_upscaler or ""))
    keep("vae", user.default_vae, lambda: check_vae_choice(settings, user.default_vae or ""))
    keep("clip_skip", user.default_clip_skip, lambda: check_clip_skip(user.default_clip_skip or 0))
    keep("refiner", user.default_refiner, lambda: check_model(settings, user.default_refiner or "").name)
    keep("rng", user.default_rng, lambda: check_rng(user.default_rng or ""))
    keep("ensd", user.default_ensd, lambda: check_ensd(user.default_ensd or 0))
    keep("face_restorer", user.default_face_restorer, lambda: check_face_choice(user.default_face_restorer or ""))
    keep("face_visibility", user.default_face_visibility,
         lambda: check_fraction(user.default_face_visibility or 0.0, "face visibility"))
    keep("codeformer_weight", user.default_codeformer_weight,
         lambda: check_fraction(user.default_codeformer_weight or 0.0, "CodeFormer weight"))
    # Sizes follow the model: checked for the member's model (else the server's).
    base = check_model(settings, str(values.get("model", settings.default_model))).base_size
    if user.default_aspect is not None:
        keep("aspect", user.default_aspect, lambda: _aspect_kept(user.default_aspect or "", base, limits))
    elif user.default_width is not None or user.default_height is not None:
        # Stored as a pair by /settings; an old row with one of them has the model's size as the other.
        try:
            check_size(user.default_width or base, user.default_height or base, limits)
            values["width"], values["height"] = user.default_width, user.default_height
        except InvalidOption as error:
            unavailable["size"] = error.message
    return MemberDefaults(**values, unavailable=unavailable)  # type: ignore[arg-type]


def _aspect_kept(aspect: str, base_size: int, limits: LimitSettings) -> str:
    check_aspect(aspect, base_size, limits)
    return aspect


def _pick(given: T | None, user_default: T | None, server_default: T) -> T:
    if given is not None:
        return given
    return user_default if user_default is not None else server_default


def _resolve_size(
    options: GenerationOptions, settings: Settings, base_size: int, defaults: MemberDefaults
) -> tuple[int, int]:
    limits = settings.limits
    if options.aspect is not None and (options.width is not None or options.height is not None):
        raise InvalidOption("Give either an aspect ratio or a width/height, not both.")
    if options.aspect is not None:
        width, height = check_aspect(options.aspect, base_size, limits)
    elif options.width is None and options.height is None and defaults.aspect is not None:
        try:
            # The member's aspect follows each model's base size; one too extreme for this
            # model falls back to the model's own square size rather than failing the job.
            return check_size(*check_aspect(defaults.aspect, base_size, limits), limits)
        except InvalidOption:
            width, height = base_size, base_size
    else:
        width = options.width if options.width is not None else (defaults.width or base_size)
        height = options.height if options.height is not None else (defaults.height or base_size)
    return check_size(width, height, limits)


def parse_aspect(aspect: str) -> tuple[int, int]:
    """"W:H" (any whole numbers, as Midjourney's --ar) as a pair, or InvalidOption."""
    if aspect in ASPECT_RATIOS:
        return ASPECT_RATIOS[aspect]
    match = re.fullmatch(r"\s*(\d{1,5})\s*:\s*(\d{1,5})\s*", aspect)
    if match is None or 0 in (int(match[1]), int(match[2])):
        raise InvalidOption(
            f"Unknown aspect ratio `{echo(aspect)}`: give it as width:height, for example "
            f"{', '.join(ASPECT_RATIOS)}."
        )
    return int(match[1]), int(match[2])


# SDXL was trained on about one megapixel at these shapes (its paper's aspect buckets): a
# 1024 model (SDXL's base size) gets them for the ratios they cover, as SDXL front-ends do.
SDXL_BASE_SIZE = 1024
SDXL_ASPECT_SIZES: dict[tuple[int, int], tuple[int, int]] = {
    (1, 1): (1024, 1024),
    (3, 2): (1216, 832),
    (2, 3): (832, 1216),
    (4, 3): (1152, 896),
    (3, 4): (896, 1152),
    (16, 9): (1344, 768),
    (9, 16): (768, 1344),
}


def size_for_aspect(aspect: str, base_size: int, max_size: int) -> tuple[int, int]:
    """The short side is the model's native size and the long side follows the ratio, in
    multiples of 8; when the long side would pass max_size, both shrink to fit. A model of
    SDXL's base size gets SDXL's own sizes for the ratios it was trained at."""
    w_ratio, h_ratio = parse_aspect(aspect)
    divisor = math.gcd(w_ratio, h_ratio)
    reduced = (w_ratio // divisor, h_ratio // divisor)
    bucket = SDXL_ASPECT_SIZES.get(reduced) if base_size == SDXL_BASE_SIZE else None
    if bucket is not None and max(bucket) <= max_size:
        return bucket
    short_ratio, long_ratio = sorted((w_ratio, h_ratio))
    short_side, long_side = base_size, _multiple_of_8(base_size * long_ratio / short_ratio)
    if long_side > max_size:
        long_side, short_side = max_size, _multiple_of_8(max_size * short_ratio / long_ratio)
    return (long_side, short_side) if w_ratio > h_ratio else (short_side, long_side)


def _multiple_of_8(value: float) -> int:
    return max(8, round(value / 8) * 8)
