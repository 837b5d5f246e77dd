"""txt2img with A1111's samplers and seed semantics.

The k-diffusion samplers (Euler a, DPM++ 2M, ...) run as A1111 1.10 runs them on SD 1.x/2.x,
SDXL and its refiner, and the inpainting UNets:
sigmas of the request's schedule type (inference/schedules.py), each image's noise from its
own seed, RNG source, variation seed and ENSD (inference/noise.py ImageNoise), and the sampler
loop over A1111's CFG denoiser around the UNet (inference/k_sampling.py, k_denoiser.py), so a
seed gives A1111's image and image i of a batch is reproduced alone by its seed.

The timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) run A1111's loops over the same denoiser
(inference/timestep_sampling.py). The rest (a UNet or prediction type the k path does not
condition, the refiner's diffusers base pass) runs a stock diffusers pipeline
with the scheduler of inference.common.samplers: each image's initial noise is drawn from its
own CPU generator (the draw diffusers would make), slerped for variations, and the advanced
generators go to the pipeline for the ancestral and SDE samplers' later noise.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Sequence

import diffusers
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from inference.conditioning import Conditioning, and_prompts_unet, encode_for_pass
from inference.conditioning_xl import sdxl_size_kwargs, sdxl_time_ids
from inference.common.protocol import MAX_CLIP_SKIP, GenerateRequest
from inference.common.sampler_catalog import SAMPLERS as CATALOG
from inference.common.sampler_catalog import (
    ScheduleNotAcceptedError,
    UnknownNameError,
    checked_choice,
    sampler_named,
    split_combined_name,
)
from inference.common.samplers import SAMPLERS
from inference.k_denoiser import (
    SAMPLER_FUNCTIONS,
    DenoiserModel,
    KDenoiser,
    LatentMask,
    RefinerSwitch,
    model_alphas_cumprod,
    run_k_sampler,
    supports_k_sampling,
)
from inference.noise import ImageNoise, slerp
from inference.schedules import model_sigmas, sampler_sigmas
from inference.tiling import seamless_tiling

# The smallest size that means something for SD and the largest a single job may ask for;
# beyond 2048 px SD 1.x makes repeated subjects and the VRAM need explodes anyway.
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 500
MAX_IMAGES = 16

# (steps done, total steps, latents); latents are None for work without any (an upscale's tiles).
OnStep = Callable[[int, int, torch.Tensor | None], None]
IsCancelled = Callable[[], bool]


class JobCancelledError(Exception):
    """Raised between two denoising steps when the job was cancelled."""


class InvalidRequestError(ValueError):
    """A request parameter is out of range; the message names it and is fit for the user.

    ``detail``: what broke underneath (a library's exception), for the log and the server's
    moderators only: it may hold paths and class names members have no use for."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def resolve_sampler(request: GenerateRequest) -> tuple[str, str]:
    """(sampler, schedule type) in A1111's spelling, from a name such as "DPM++ 2M" or the
    combined "DPM++ 2M Karras"; InvalidRequestError (with the closest names) for one that
    A1111 does not have, one the schedule type does not suit, or one not run here yet."""
    try:
        name, schedule = checked_choice(request.sampler, request.schedule_type)
    except (UnknownNameError, ScheduleNotAcceptedError) as error:
        raise InvalidRequestError(str(error)) from error
    if CATALOG[name].function not in SAMPLER_FUNCTIONS and request.sampler not in SAMPLERS:
        raise InvalidRequestError(f"the sampler {name} is not available on this bot yet")
    return name, schedule


def validate_request(request: GenerateRequest) -> None:
    """Raise InvalidRequestError naming the first bad parameter, before any work starts."""
    for name in ("width", "height"):
        value = getattr(request, name)
        if not isinstance(value, int) or value % 8 or not MIN_SIDE <= value <= MAX_SIDE:
            raise InvalidRequestError(
                f"{name} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}, got {value!r}"
            )
    if not isinstance(request.steps, int) or not 1 <= request.steps <= MAX_STEPS:
        raise InvalidRequestError(
            f"steps must be an int between 1 and {MAX_STEPS}, got {request.steps!r}"
        )
    if not math.isfinite(request.cfg_scale) or request.cfg_scale < 0:
        raise InvalidRequestError(
            f"cfg_scale must be a finite number >= 0, got {request.cfg_scale!r}"
        )
    resolve_sampler(request)
    if not 1 <= len(request.seeds) <= MAX_IMAGES:
        raise InvalidRequestError(
            f"seeds must hold 1 to {MAX_IMAGES} seeds, got {len(request.seeds)}"
        )
    for name in ("seeds", "subseeds"):
        for seed in getattr(request, name):
            # torch.Generator.manual_seed accepts any 64-bit value; A1111 seeds are 32-bit.
            if not isinstance(seed, int) or not 0 <= seed < 2**64:
                raise InvalidRequestError(f"{name} must be ints in [0, 2**64), got {seed!r}")
    if len(request.subseeds) not in (0, len(request.seeds)):
        raise InvalidRequestError(
            f"subseeds must be empty or one per seed ({len(request.seeds)}), "
            f"got {len(request.subseeds)}"
        )
    strength = request.subseed_strength
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InvalidRequestError(f"subseed_strength must be between 0 and 1, got {strength!r}")
    if strength > 0 and not request.subseeds:
        raise InvalidRequestError(f"subseed_strength is {strength} but no subseeds were given")
    if not isinstance(request.clip_skip, int) or not 1 <= request.clip_skip <= MAX_CLIP_SKIP:
        raise InvalidRequestError(f"clip skip must be between 1 and {MAX_CLIP_SKIP}, got {request.clip_skip!r}")


# --- schedulers ----------------------------------------------------------------------------

# Per pipeline: the scheduler config it was loaded with, and the schedulers built from it.
# Building from the original config (not from the last swapped-in scheduler's) keeps options
# such as use_karras_sigmas from leaking from one sampler into the next.
_schedulers: weakref.WeakKeyDictionary[DiffusionPipeline, tuple[dict, dict[str, object]]] = (
    weakref.WeakKeyDictionary()
)


def diffusers_sampler(sampler: str, schedule_type: str) -> str:
    """The name in inference.common.samplers of what the workflows still on diffusers'
    schedulers run for a sampler and schedule type: "DPM++ 2M" whose schedule resolves to
    Karras (given, or its Automatic one, as in A1111) runs the "DPM++ 2M Karras" scheduler.
    Other schedule types have no diffusers counterpart there and run the sampler's own."""
    try:
        name, schedule_type = split_combined_name(sampler, schedule_type, convert_automatic=False)
        resolved = sampler_named(name).resolve_schedule(schedule_type)
    except ValueError:  # not in the catalog: scheduler_for names what it takes
        return sampler
    karras = f"{name} Karras"
    return karras if resolved == "Karras" and karras in SAMPLERS else name


def scheduler_for(pipe: DiffusionPipeline, sampler: str):
    """The scheduler implementing an A1111 sampler for this pipeline, built once and reused.

    Reuse is safe because ``set_timesteps``, which every pipeline call runs, resets a
    scheduler's per-run state.
    """
    spec = SAMPLERS.get(sampler)
    if spec is None:
        # A catalog sampler only the k-diffusion path runs (DPM++ 3M SDE...), asked of a
        # workflow that still runs diffusers' schedulers (SDXL, inpaint, outpaint, the refiner).
        raise InvalidRequestError(
            f"the sampler {sampler} is not available for this model or workflow yet; "
            f"it takes: {', '.join(SAMPLERS)}"
        )
    if pipe not in _schedulers:
        _schedulers[pipe] = (dict(pipe.scheduler.config), {})
    base_config, built = _schedulers[pipe]
    if sampler not in built:
        scheduler_class = getattr(diffusers, spec.scheduler_class)
        built[sampler] = scheduler_class.from_config(base_config, **spec.options)
    return built[sampler]


def use_sampler(
    pipe: DiffusionPipeline,
    sampler: str,
    seeds: Sequence[int],
    base: DiffusionPipeline | None = None,
    schedule_type: str = "Automatic",
) -> None:
    """Give ``pipe`` the scheduler of an A1111 sampler, seeded per image where it needs it.

    ``base`` is the loaded pipeline an img2img or inpaint pipeline was built from: schedulers
    come from its original config (see scheduler_for), whatever the derived one holds now.
    ``schedule_type`` picks the Karras variant where diffusers has one (diffusers_sampler).
    """
    sampler = diffusers_sampler(sampler, schedule_type)
    pipe.scheduler = scheduler_for(base or pipe, sampler)
    if SAMPLERS[sampler].scheduler_class == "DPMSolverSDEScheduler":
        # This scheduler ignores generators and draws from Brownian trees seeded by
        # noise_sampler_seed (random when unset). One tree per image seeded with the image's
        # seed is what A1111 does, and keeps batch images reproducible alone.
        pipe.scheduler.noise_sampler_seed = list(seeds)


# --- noise ---------------------------------------------------------------------------------


def initial_noise(
    request: GenerateRequest, shape: tuple[int, int, int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Each image's starting noise and its generator, advanced past that draw.

    ``shape`` is one image's latent shape (1, C, H/f, W/f). The draw is the one diffusers'
    prepare_latents makes for a single image with a CPU generator (same call, same dtype), so
    a one-image job equals a plain ``pipe(..., generator=Generator().manual_seed(seed))`` call.
    """
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
    noises = []
    for index, generator in enumerate(generators):
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=dtype)
        if request.subseeds and request.subseed_strength > 0:
            subgenerator = torch.Generator("cpu").manual_seed(request.subseeds[index])
            subnoise = randn_tensor(shape, generator=subgenerator, device=torch.device("cpu"))
            # Interpolate in float32, as A1111 does, whatever the model's dtype.
            mixed = slerp(request.subseed_strength, noise[0].float(), subnoise[0])
            noise = mixed.unsqueeze(0).to(dtype)
        noises.append(noise)
    return torch.cat(noises), generators


# --- the run -------------------------------------------------------------------------------


def model_dtype(pipe: DiffusionPipeline) -> torch.dtype:
    # prepare_latents draws in the prompt embeddings' dtype, which is the text encoder's.
    text_encoder = getattr(pipe, "text_encoder", None)
    return text_encoder.dtype if text_encoder is not None else pipe.unet.dtype


# What every pipeline call hands its callback: the latents for previews, the prompt
# embeddings for prompt editing to replace (and SDXL's pooled vectors, "add_text_embeds").
CALLBACK_TENSORS = ["latents", "prompt_embeds"]


def callback_tensors(pipe: DiffusionPipeline) -> list[str]:
    """CALLBACK_TENSORS, plus the pooled vectors where the pipeline has them (SDXL)."""
    extra = ["add_text_embeds"] if "add_text_embeds" in pipe._callback_tensor_inputs else []
    return CALLBACK_TENSORS + extra


def step_callback(
    total_steps: int,
    on_step: OnStep,
    is_cancelled: IsCancelled,
    conditioning: Conditioning | None = None,
):
    """The one callback_on_step_end: progress in the user's steps, cancellation, and the
    prompt schedule (prompt editing and alternation swap the embeddings between steps).

    Second-order samplers (Heun, DPM2, DPM++ SDE) call back about twice per step; progress is
    mapped onto the requested step count so users see "step 7/20" as in A1111, and on_step is
    only called when that number moves. Cancellation is checked on every call, and raising
    leaves the pipeline's loop at once (diffusers' own ``interrupt`` flag would still run the
    VAE decode). The call for evaluation i hands back the embeddings evaluation i + 1 uses
    (the pipeline's tensor inputs must be callback_tensors(pipe)).
    """
    reported = 0

    def callback(pipe: DiffusionPipeline, step_index: int, timestep, tensors: dict) -> dict:
        nonlocal reported
        if is_cancelled():
            raise JobCancelledError
        calls_total = pipe.num_timesteps
        done = min(total_steps, math.ceil((step_index + 1) * total_steps / calls_total))
        if step_index + 1 == calls_total:
            done = total_steps
        if done > reported:
            reported = done
            on_step(done, total_steps, tensors["latents"])
            # The step's progress was reported; a cancel that came in meanwhile stops here.
            if is_cancelled():
                raise JobCancelledError
        if conditioning is not None:
            embeds = conditioning.callback_embeds(step_index + 1, tensors)
            if embeds is not None:
                tensors["prompt_embeds"] = embeds
            if "add_text_embeds" in tensors:
                pooled = conditioning.callback_pooled(step_index + 1, tensors)
                if pooled is not None:
                    tensors["add_text_embeds"] = pooled
        return tensors

    return callback


def generate(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    on_step: OnStep = lambda step, total, latents: None,
    is_cancelled: IsCancelled = lambda: False,
) -> list[Image.Image]:
    """Run txt2img for ``len(request.seeds)`` images in one batch and return them.

    ``on_step(steps_done, total_steps, latents)`` is called after each step; when
    ``is_cancelled()`` turns true, JobCancelledError is raised before the next step.
    """
    return list(_run(pipe, request, on_step, is_cancelled, output_type="pil"))


def generate_latents(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    on_step: OnStep = lambda step, total, latents: None,
    is_cancelled: IsCancelled = lambda: False,
    denoising_end: float | None = None,
    progress_steps: int | None = None,
) -> torch.Tensor:
    """generate()'s batch as the final latents (scaled, as the UNet sees them), not decoded.

    The hires fix's first pass: the same noise and steps, so decoding these gives generate()'s
    images. ``denoising_end`` (SDXL, a fraction of the noise schedule) stops there, still
    noisy: the refiner's base pass, whose progress counts ``progress_steps`` (the steps it
    runs) instead of the request's.
    """
    return _run(
        pipe, request, on_step, is_cancelled, output_type="latent",
        denoising_end=denoising_end, progress_steps=progress_steps,
    )


def _run(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    on_step: OnStep,
    is_cancelled: IsCancelled,
    output_type: str,
    denoising_end: float | None = None,
    progress_steps: int | None = None,
):
    validate_request(request)
    scale = pipe.vae_scale_factor
    if request.width % scale or request.height % scale:
        raise InvalidRequestError(
            f"width and height must be multiples of {scale} for this model, "
            f"got {request.width}x{request.height}"
        )
    if is_cancelled():
        raise JobCancelledError
    if "width" not in inspect.signature(pipe.__call__).parameters:
        # An SDXL refiner loads as an img2img pipeline: it finishes images, it cannot start one.
        raise InvalidRequestError(
            f"`{request.model}` is a refiner: it cannot make an image from a prompt alone; "
            "pick it as the refiner of an SDXL model"
        )

    if denoising_end is None and uses_k_sampling(pipe, request):
        with seamless_tiling(pipe, request.tiling):
            latents = txt2img_latents(pipe, request, on_step, is_cancelled, progress_steps)
            return latents if output_type == "latent" else decode_latents(pipe, latents)
    if request.sampler not in SAMPLERS:
        raise InvalidRequestError(
            f"the sampler {resolve_sampler(request)[0]} is not available for `{request.model}` yet"
        )
    use_sampler(pipe, request.sampler, request.seeds, schedule_type=request.schedule_type)
    conditioning = encode_for_pass(pipe, request, request.steps)
    channels = pipe.unet.config.in_channels
    latent_shape = (1, channels, request.height // scale, request.width // scale)
    noise, generators = initial_noise(request, latent_shape, model_dtype(pipe))
    callback = step_callback(progress_steps or request.steps, on_step, is_cancelled, conditioning)
    return sample(
        pipe, request, conditioning, noise, generators, callback,
        images_per_prompt=len(request.seeds), output_type=output_type, denoising_end=denoising_end,
    )


# --- A1111's samplers over sigmas (k-diffusion) ---------------------------------------------


def uses_k_sampling(pipe: DiffusionPipeline, request: GenerateRequest) -> bool:
    """Whether the request's sampler runs as A1111's k-diffusion sampler on this pipeline
    (else through the diffusers scheduler of inference.common.samplers)."""
    return supports_k_sampling(pipe, resolve_sampler(request)[0])


def request_noise(request: GenerateRequest, shape: Sequence[int], device: torch.device) -> ImageNoise:
    """The request's per-image noise as A1111's ImageRNG makes it: seeds, variation seeds and
    strength, RNG source, "Resize seed from" and ENSD; ``shape`` is one image's latent."""
    return ImageNoise(
        shape,
        request.seeds,
        source=request.rng,
        device=device,
        subseeds=request.subseeds or None,
        subseed_strength=request.subseed_strength,
        seed_resize_from=request.seed_resize_from or (0, 0),
        eta_noise_seed_delta=request.eta_noise_seed_delta,
    )


def k_step_callback(total_steps: int, run_steps: int, on_step: OnStep, is_cancelled: IsCancelled):
    """k-diffusion's per-step callback: cancellation before each step's update, progress in
    ``total_steps`` (the user's) over the ``run_steps`` the sampler runs, and each step's
    denoised latents for previews."""
    reported = 0

    def callback(state: dict) -> None:
        nonlocal reported
        if is_cancelled():
            raise JobCancelledError
        done = min(total_steps, math.ceil((state["i"] + 1) * total_steps / run_steps))
        if done > reported:
            reported = done
            on_step(done, total_steps, state["denoised"])
            if is_cancelled():
                raise JobCancelledError

    return callback


def denoiser_model(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    jobs: Sequence[tuple[Conditioning, int]],
    size: tuple[int, int] | None = None,
) -> DenoiserModel:
    """The pipeline's side of the k-diffusion denoiser for the request's sampler: its UNet,
    sigma table and prediction type, the batch's conditioning, and SDXL's size conditioning
    for ``size`` (width, height; the request's when not given)."""
    sampler, _ = resolve_sampler(request)
    device = pipe.unet.device
    width, height = size or (request.width, request.height)
    return DenoiserModel(
        pipe.unet,
        model_sigmas(sampler, model_alphas_cumprod(pipe).to(device)),
        tuple(jobs),
        pipe.scheduler.config.get("prediction_type", "epsilon"),
        sdxl_time_ids(pipe, width, height),
    )


def refiner_switch(
    refiner: DiffusionPipeline,
    request: GenerateRequest,
    steps: int,
    hires_steps: int | None = None,
    size: tuple[int, int] | None = None,
) -> RefinerSwitch:
    """The request's refiner as the k-diffusion denoiser switches to it ("Refiner switch at"):
    its UNet, and the prompts encoded again for it as A1111's setup_conds does on the switch
    (its own encoder, the same prompt schedule: ``steps`` and ``hires_steps`` as
    k_conditioning takes them), with its size conditioning for ``size``."""
    conditioning = k_conditioning(refiner, request, steps, hires_steps)
    model = denoiser_model(refiner, request, [(conditioning, len(request.seeds))], size)
    return RefinerSwitch(request.refiner_switch_at, model)


def k_sample(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    jobs: Sequence[tuple[Conditioning, int]],
    start: torch.Tensor,
    sigmas: torch.Tensor,
    noises: Sequence[ImageNoise],
    callback,  # type: ignore[no-untyped-def]
    *,
    img2img: bool = False,
    image_cond: torch.Tensor | None = None,
    mask: LatentMask | None = None,
    refiner: RefinerSwitch | None = None,
) -> torch.Tensor:
    """One k-diffusion pass from ``start`` (already at ``sigmas[0]``) over the pipeline's UNet,
    with A1111's CFG, AND weights and prompt schedule: the final latents, as the UNet sees them
    (the caller sets seamless tiling around it and the decode). ``request`` gives sampler, CFG
    and eta; ``jobs`` each job's Conditioning and image count, and ``noises`` its ImageNoise,
    in the order of the batch's images. The pass's size (SDXL's size conditioning) is the
    latents'. ``img2img``: the sigmas are the end of a schedule, from noised source latents
    (run_k_sampler). ``image_cond``, ``mask`` and ``refiner``: see KDenoiser."""
    sampler, _ = resolve_sampler(request)
    scale = pipe.vae_scale_factor
    size = (start.shape[-1] * scale, start.shape[-2] * scale)
    model = denoiser_model(pipe, request, jobs, size)
    denoiser = KDenoiser(model, request.cfg_scale, image_cond=image_cond, mask=mask, refiner=refiner)
    device = pipe.unet.device
    latents = run_k_sampler(sampler, denoiser, start.to(device), sigmas, noises, callback, request.eta, img2img)
    if mask is not None:
        latents = mask.blend(latents)  # A1111's blend of the samples after sampling, too
    return latents.to(pipe.unet.dtype)


def request_sigmas(pipe: DiffusionPipeline, request: GenerateRequest, steps: int) -> torch.Tensor:
    """The sigmas of ``steps`` steps of the request's sampler and schedule type on this model."""
    sampler, schedule = resolve_sampler(request)
    return sampler_sigmas(sampler, schedule, steps, model_alphas_cumprod(pipe))


def k_conditioning(pipe: DiffusionPipeline, request: GenerateRequest, steps: int, hires_steps=None):
    """encode_for_pass with A1111's evaluation count: second-order samplers count two a step."""
    sampler, _ = resolve_sampler(request)
    evaluations = CATALOG[sampler].evaluations_per_step
    return encode_for_pass(pipe, request, steps, hires_steps, evaluations=evaluations)


def txt2img_latents(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    on_step: OnStep,
    is_cancelled: IsCancelled,
    progress_steps: int | None = None,
    refiner: RefinerSwitch | None = None,
) -> torch.Tensor:
    """A1111's txt2img with a k-diffusion sampler: the seed noise scaled to the first sigma,
    then the sampler over the request's schedule (switching to ``refiner`` part-way)."""
    scale = pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, request.height // scale, request.width // scale)
    conditioning = k_conditioning(pipe, request, request.steps)
    sigmas = request_sigmas(pipe, request, request.steps)
    noise = request_noise(request, shape, pipe.unet.device)
    start = noise.next() * sigmas[0]
    callback = k_step_callback(progress_steps or request.steps, len(sigmas) - 1, on_step, is_cancelled)
    jobs = [(conditioning, len(request.seeds))]
    return k_sample(pipe, request, jobs, start, sigmas, [noise], callback, refiner=refiner)


def decode_latents(pipe: DiffusionPipeline, latents: torch.Tensor) -> list[Image.Image]:
    """Images from final latents, with the pipeline's VAE and image processor."""
    with torch.no_grad():
        images = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")


# --- the diffusers scheduler path (UNets and prediction types the k path does not run) ------


def sample(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    conditioning: Conditioning,
    latents: torch.Tensor,
    generators: list[torch.Generator],
    callback,  # type: ignore[no-untyped-def]
    *,
    images_per_prompt: int,
    output_type: str,
    denoising_end: float | None = None,
):
    """The pipeline call of a txt2img pass, generate()'s and a cross-user batch's
    (inference.batching): the request gives size, steps, CFG and tiling; the starting noise,
    one generator per image and the step callback come ready; an AND prompt's parts combine
    in the UNet call (and_prompts_unet)."""
    with seamless_tiling(pipe, request.tiling), and_prompts_unet(pipe, conditioning):
        return pipe(
            **conditioning.pipeline_kwargs(),
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            num_images_per_prompt=images_per_prompt,
            generator=generators,
            latents=latents,
            output_type=output_type,
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=callback_tensors(pipe),
            **sdxl_size_kwargs(pipe, request.width, request.height),
            **({} if denoising_end is None else {"denoising_end": denoising_end}),
        ).images
