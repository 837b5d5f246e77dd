"""`sdbot generate`'s options: every option of /imagine and /img2img, checked by the bot's own
builders (bot.jobs.params, workflow_params), so that an admin can check a result without
Discord and get the refusal a member would get. Each option's help says its default and limits
(the built-in ones; [limits] and [images] in config.toml may change them)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ImageSettings, LimitSettings
from bot.errors import InvalidOption
from bot.inputs import read_image_file
from bot.jobs.params import ASPECT_RATIOS, MAX_GIVEN_SEED, GenerationOptions, JobParameters, random_seed, resolve_parameters
from bot.jobs.sampling import MAX_ENSD, MAX_ETA
from bot.jobs.workflow_params import RESIZE_MODES, hires_parameters, img2img_parameters
from inference.common.protocol import LATENT, MAX_CLIP_SKIP, RNG_SOURCES, JobKind
from inference.common.sampler_catalog import SAMPLER_NAMES, SCHEDULE_TYPE_LABELS

if TYPE_CHECKING:
    from bot.config import Settings


def add_generate_options(generate: argparse.ArgumentParser) -> None:
    limits, images = LimitSettings(), ImageSettings()  # the built-in defaults
    add = generate.add_argument
    add("prompt", help=f"what to draw (A1111 prompt syntax; at most [limits] max_prompt_length, {limits.max_prompt_length} characters)")
    add("--negative-prompt", metavar="TEXT", help="what to keep out of the image (default: none)")
    add("--aspect", choices=list(ASPECT_RATIOS),
        help="aspect ratio, its short side the model's base_size; not with --width/--height or --image (default: a base_size square)")
    for side in ("width", "height"):
        add(f"--{side}", type=int, metavar="PX",
            help=f"{side} in pixels, a multiple of 8 from [limits] min_size to max_size ({limits.min_size} to "
            f"{limits.max_size} by default; width x height at most max_pixels, {limits.max_pixels:,}); "
            "default: the model's base_size, or with --image the image's shape within the limits")
    add("--steps", type=int, metavar="N",
        help=f"sampling steps, 1 to [limits] max_steps ({limits.max_steps}); default: [limits] default_steps ({limits.default_steps})")
    add("--cfg", type=float, metavar="SCALE",
        help=f"CFG scale, 1 to [limits] max_cfg_scale ({limits.max_cfg_scale:g}); default: [limits] default_cfg_scale ({limits.default_cfg_scale:g})")
    add("--sampler", metavar="NAME",
        help=f"an A1111 1.10 sampler ({', '.join(SAMPLER_NAMES)}), or an old combined name such as "
        f'"DPM++ 2M Karras"; default: [limits] default_sampler ("{limits.default_sampler}")')
    add("--schedule-type", metavar="TYPE",
        help=f"A1111's schedule type ({', '.join(SCHEDULE_TYPE_LABELS)}); default: Automatic, the sampler's own")
    add("--eta", type=float, metavar="ETA",
        help=f"eta of the ancestral, SDE and DDIM samplers, 0 to {MAX_ETA:g}; default: the sampler's (1, DDIM's 0)")
    add("--rng", metavar="SOURCE", help=f"random number source: {', '.join(RNG_SOURCES)}; default: [limits] default_rng ({limits.default_rng})")
    add("--ensd", type=int, metavar="N",
        help=f"ENSD, eta noise seed delta, 0 to {MAX_ENSD}; default: [limits] default_ensd ({limits.default_ensd})")
    add("--seed-resize-from", metavar="WxH",
        help="A1111's resize seed from: the noise is made at this size, such as 512x512, each side a multiple of 8 "
        "within [limits] min_size to max_size; default: off")
    add("--seed", type=int, metavar="N", help=f"0 to {MAX_GIVEN_SEED}, or -1 for a random one (the default); image i uses seed + i")
    add("--variation-seed", type=int, metavar="N",
        help=f"A1111's variation seed, 0 to {MAX_GIVEN_SEED} or -1 for a random one; image i uses it + i (txt2img only; default: none)")
    add("--variation-strength", type=float, metavar="S",
        help="how far each image moves towards its variation seed's noise, 0 to 1 (needs --variation-seed; default 0)")
    add("--count", type=int, metavar="N",
        help=f"images, 1 to [limits] max_count ({limits.max_count}); default: [limits] default_count ({limits.default_count})")
    add("--model", metavar="NAME", help="one of the [[models]] names; default: default_model")
    add("--vae", metavar="NAME", help='"Automatic" (the default), "None" (the model\'s own) or a VAE file in vae_dirs')
    add("--clip-skip", type=int, metavar="N", help=f"A1111's clip skip, 1 (none) to {MAX_CLIP_SKIP}; default: the model's")
    add("--image", metavar="PATH", help="img2img: the image to start from (PNG, JPEG, WebP...; default: none, txt2img)")
    add("--strength", type=float, metavar="S",
        help=f"img2img denoising strength, 0 to 1; default: [images] default_denoising_strength ({images.default_denoising_strength:g})")
    add("--resize-mode", choices=list(RESIZE_MODES), help=f"img2img: how the image is fitted to the size (default: {RESIZE_MODES[0]})")
    add("--hires-scale", type=float, metavar="X",
        help=f"hires fix (txt2img): upscale by X in a second pass, above 1 to [images] max_hires_scale ({images.max_hires_scale:g}); default: off")
    add("--hires-steps", type=int, metavar="N", help="hires fix: steps of the second pass, 0 (the default: as --steps) to [limits] max_steps")
    add("--hires-denoising", type=float, metavar="S",
        help=f"hires fix: denoising of the second pass, 0 to 1; default: [images] default_hires_denoising ({images.default_hires_denoising:g})")
    add("--hires-upscaler", metavar="NAME", help=f"hires fix: {LATENT}, Lanczos or an upscaler model's name; default: {LATENT}")


def generate_parameters(settings: Settings, args: argparse.Namespace) -> JobParameters:
    """The job `sdbot generate` queues, checked as the bot checks /imagine's and /img2img's."""
    options = GenerationOptions(
        prompt=args.prompt, negative_prompt=args.negative_prompt, aspect=args.aspect, width=args.width,
        height=args.height, steps=args.steps, cfg_scale=args.cfg, sampler=args.sampler, seed=args.seed,
        count=args.count, model=args.model, vae=args.vae, clip_skip=args.clip_skip, schedule_type=args.schedule_type,
        eta=args.eta, rng=args.rng, ensd=args.ensd, seed_resize_from=args.seed_resize_from,
    )
    hires = dict(scale=args.hires_scale, steps=args.hires_steps, denoising=args.hires_denoising, upscaler=args.hires_upscaler)
    if args.image is None:
        for given, name in ((args.strength, "--strength"), (args.resize_mode, "--resize-mode")):
            if given is not None:
                raise InvalidOption(f"{name} is for img2img: give --image with it.")
        params = hires_parameters(resolve_parameters(options, settings), settings, **hires)
    else:
        if any(value is not None for value in hires.values()):
            raise InvalidOption("The hires fix is for txt2img: leave out --hires-* with --image.")
        if args.variation_seed is not None:
            raise InvalidOption("Variation seeds are for txt2img here: leave out --variation-seed with --image.")
        source = read_image_file(Path(args.image), settings)
        params = img2img_parameters(options, settings, None, source, strength=args.strength, resize_mode=args.resize_mode)
    return _with_variation(params, args.variation_seed, args.variation_strength)


def _with_variation(params: JobParameters, seed: int | None, strength: float | None) -> JobParameters:
    """A1111's variation seed and strength: the job becomes a variation job (bot.jobs.job_rows.image_seeds)."""
    if seed is None:
        if strength is not None:
            raise InvalidOption("--variation-strength needs --variation-seed.")
        return params
    if seed == -1:
        seed = random_seed()
    if not 0 <= seed <= MAX_GIVEN_SEED:
        raise InvalidOption(f"--variation-seed must be -1 (random) or between 0 and {MAX_GIVEN_SEED}, got {seed}.")
    strength = 0.0 if strength is None else strength
    if not 0.0 <= strength <= 1.0:
        raise InvalidOption(f"--variation-strength must be between 0 and 1, got {strength:g}.")
    return replace(params, kind=JobKind.VARIATION, subseed=seed, subseed_strength=strength)
