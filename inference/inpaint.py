"""Inpaint and outpaint: diffusion inside a mask, and the result pasted back over the original.

Follows A1111's img2img with a mask (modules/processing.py StableDiffusionProcessingImg2Img):
the mask is blurred, the source and mask are fitted to width x height (or, for "inpaint only
masked", a crop around the mask is), "masked content" sets what the masked area starts from,
and in the end the original is laid back over the result through the blurred mask, so every
pixel the mask does not touch comes back exactly as it was.

The model: a ModelSpec's inpaint_source when it has one (an inpainting checkpoint: its UNet
also sees the mask and the masked image, 9 input channels), else the model itself. With a
k-diffusion sampler the pass is A1111's own (_k_inpaint_pass: its step counts and noise,
the latent mask blend in the denoiser, the inpainting UNet's image conditioning in every
call); DDIM and UniPC run diffusers' inpaint pipeline, which keeps the unmasked latents on
the original's (re-noised) latents at every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionInpaintPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from inference.conditioning import and_prompts_unet, encode_for_pass
from inference.generate import (
    InvalidRequestError,
    IsCancelled,
    OnStep,
    decode_latents,
    k_conditioning,
    k_sample,
    k_step_callback,
    request_noise,
    request_sigmas,
    resolve_sampler,
    use_sampler,
    uses_k_sampling,
)
from inference.img2img import (
    Progress,
    Schedule,
    check_cancelled,
    derived_pipeline,
    encode,
    img2img_schedule,
    load_image,
    pipeline_arguments,
)
from inference.masks import (
    binary_mask,
    blur_mask,
    composite,
    crop_region,
    fill,
    outpaint_canvas,
    outpaint_layout,
    overlay_mask,
    paste_crop,
    resize_image,
)
from inference.k_denoiser import LatentMask
from inference.models import PipelineCache
from inference.noise import ImageNoise
from inference.schedules import img2img_sigmas
from inference.common.protocol import GenerateRequest, MaskedContent, ResizeMode
from inference.tiling import seamless_tiling

# The inpainting checkpoints' UNet input: 4 latent channels, 1 mask, 4 masked-image latents.
INPAINT_UNET_CHANNELS = 9
# A1111's "Inpainting conditioning mask strength" (opts.inpainting_mask_weight), at its
# default: the masked pixels are fully greyed in the inpainting UNet's image conditioning.
INPAINTING_MASK_WEIGHT = 1.0


def inpaint_pipeline(
    cache: PipelineCache, model: str
) -> tuple[DiffusionPipeline, DiffusionPipeline]:
    """(the pipeline to run, the loaded pipeline whose scheduler config it uses)."""
    if cache.spec(model).inpaint_source:
        pipe = cache.get_inpaint(model)
        return pipe, pipe
    base = cache.get(model)
    return derived_pipeline(base, StableDiffusionInpaintPipeline), base


def inpaint_pass(
    cache: PipelineCache,
    request: GenerateRequest,
    images: Sequence[Image.Image],
    mask: Image.Image,
    content: MaskedContent,
    strength: float,
    on_step: OnStep,
    is_cancelled: IsCancelled,
) -> list[Image.Image]:
    """Repaint the white of ``mask`` in each of ``images`` (one per seed, width x height).

    ``mask`` may be soft (blurred): like A1111, diffusion reads it rounded at half, and the
    caller composites with the soft one. The images come back as diffusion left them, before
    any compositing. Strength 0 returns them untouched.
    """
    pipe, base = inpaint_pipeline(cache, request.model)
    a1111 = uses_k_sampling(pipe, request)
    schedule = img2img_schedule(request.steps, strength, a1111)
    if not schedule.steps:
        return list(images)
    check_cancelled(is_cancelled)
    # --tile: the VAE's encoding wraps around too, as in A1111 (the whole model is switched).
    with seamless_tiling(pipe, request.tiling):
        if a1111:
            return _k_inpaint_pass(pipe, request, images, mask, content, schedule, on_step, is_cancelled)
        seeds = request.seeds
        latents = encode(pipe, images)
        latents = _apply_masked_content(latents, mask, content, seeds)
        if pipe.unet.config.in_channels == INPAINT_UNET_CHANNELS:
            # The checkpoint's own conditioning, computed as diffusers would from the pixels: the
            # image with the (rounded) mask blanked. diffusers cannot derive it from latents.
            keep = pipe.mask_processor.preprocess(mask, height=request.height, width=request.width)
            masked_latents = encode(pipe, images, keep=keep < 0.5)
        else:
            masked_latents = latents  # unused by a 4-channel UNet, but the pipeline needs a tensor
        use_sampler(pipe, request.sampler, seeds, base=base, schedule_type=request.schedule_type)
        conditioning = encode_for_pass(pipe, request, request.steps)
        progress = Progress(on_step, schedule.steps)
        with and_prompts_unet(pipe, conditioning):
            result = pipe(
                image=latents,  # 4 channels: taken as the starting latents, not encoded again
                mask_image=mask,
                masked_image_latents=masked_latents,
                height=request.height,
                width=request.width,
                output_type="pil",
                **pipeline_arguments(pipe, conditioning, request, seeds, schedule, progress, is_cancelled),
            )
        return list(result.images)


def latent_repaint_mask(mask: Image.Image, height: int, width: int) -> torch.Tensor:
    """A1111's latmask: the blurred mask resized to the latents' size (PIL's default
    resampling, bicubic) and rounded, (1, 1, height, width); 1 where the image is repainted."""
    small = np.asarray(mask.convert("L").resize((width, height)), dtype=np.float32) / 255.0
    return torch.from_numpy(np.round(small))[None, None]


def image_conditioning(
    pipe: DiffusionPipeline, images: Sequence[Image.Image], mask: Image.Image, latent_size: tuple[int, int]
) -> torch.Tensor:
    """An inpainting UNet's extra input as A1111 makes it (inpainting_image_conditioning):
    the mask rounded at full size, the images with the masked pixels blended to grey by
    ``INPAINTING_MASK_WEIGHT`` and encoded, and the mask resized (nearest) to the latents:
    cat([mask, masked-image latents]), one row per image."""
    full = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None].round()
    # lerp(image, image * (1 - mask), weight) as a factor on the pixels.
    latents = encode(pipe, images, keep=1 - INPAINTING_MASK_WEIGHT * full)
    small = torch.nn.functional.interpolate(full, size=latent_size).to(latents)
    return torch.cat([small.expand(latents.shape[0], -1, -1, -1), latents], dim=1)


def _k_inpaint_pass(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    images: Sequence[Image.Image],
    mask: Image.Image,
    content: MaskedContent,
    schedule: Schedule,
    on_step: OnStep,
    is_cancelled: IsCancelled,
) -> list[Image.Image]:
    """A1111's img2img with a mask over a k-diffusion sampler (StableDiffusionProcessingImg2Img
    init and sample): the source latents, the masked content written into them ("latent
    noise": a fresh draw of each image's seed; "latent nothing": zeros), the pass's noise
    at the first sigma of img2img's steps, every denoised kept on the source latents outside
    the rounded latent mask, and the inpainting UNet's image conditioning."""
    seeds = request.seeds
    device = pipe.unet.device
    init_latent = encode(pipe, images).float()
    repaint = latent_repaint_mask(mask, *init_latent.shape[-2:]).to(init_latent)
    keep = 1 - repaint
    if content == MaskedContent.LATENT_NOISE:
        fill_noise = ImageNoise(init_latent.shape[1:], seeds, source=request.rng, device=device).next()
        init_latent = init_latent * keep + fill_noise.to(init_latent) * repaint
    elif content == MaskedContent.LATENT_NOTHING:
        init_latent = init_latent * keep
    extra = None
    if pipe.unet.config.in_channels == INPAINT_UNET_CHANNELS:
        extra = image_conditioning(pipe, images, mask, tuple(init_latent.shape[-2:]))
    conditioning = k_conditioning(pipe, request, request.steps)
    sampler = resolve_sampler(request)[0]
    sigmas = img2img_sigmas(request_sigmas(pipe, request, schedule.num_inference_steps), schedule.a1111, sampler)
    noise = request_noise(request, init_latent.shape[1:], device)
    start = init_latent + noise.next() * sigmas[0]
    callback = k_step_callback(schedule.steps, len(sigmas) - 1, on_step, is_cancelled)
    latents = k_sample(
        pipe, request, [(conditioning, len(seeds))], start, sigmas, [noise], callback,
        img2img=True, image_cond=extra, mask=LatentMask(init_latent, keep),
    )
    return decode_latents(pipe, latents)


def _apply_masked_content(
    latents: torch.Tensor, mask: Image.Image, content: MaskedContent, seeds: Sequence[int]
) -> torch.Tensor:
    """The diffusers path's "latent noise" and "latent nothing": the masked latents replaced
    before the pass noises them to the starting strength.

    A1111 writes create_random_tensors(seeds) there: the very noise the sampler then adds.
    Each image's draw here comes from a fresh generator with its seed, which is the draw the
    pipeline's own fresh generator makes next, so this is the same noise, as in A1111.
    """
    if content not in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
        return latents
    _, channels, height, width = latents.shape
    inside = latent_repaint_mask(mask, height, width).to(latents)
    if content == MaskedContent.LATENT_NOTHING:
        return latents * (1 - inside)
    noise = torch.cat(
        [
            randn_tensor(
                (1, channels, height, width),
                generator=torch.Generator("cpu").manual_seed(seed),
                device=torch.device("cpu"),
                dtype=latents.dtype,
            )
            for seed in seeds
        ]
    ).to(latents.device)
    return latents * (1 - inside) + noise * inside


def load_mask(path: str, size: tuple[int, int]) -> Image.Image:
    """The mask as a grey image of ``size`` (white: repaint); an empty one is refused."""
    mask = load_image(path, "mask", convert=binary_mask)
    if mask.size != size:
        mask = resize_image(ResizeMode.JUST_RESIZE, mask, *size)
    if mask.getbbox() is None:
        raise InvalidRequestError("the mask is empty: paint the area to repaint in white")
    return mask


def run_inpaint(
    cache: PipelineCache, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled
) -> list[Image.Image]:
    """A1111's inpaint, whole image or "only masked".

    The whole image: source and blurred mask fitted to width x height by the resize mode, the
    result that size. Only masked: the mask's box plus padding, grown to width:height's shape,
    is cut out, inpainted at width x height, scaled back into its place; the result keeps the
    source's own size, as in A1111.
    """
    options = request.inpaint
    source = load_image(request.image.path, "source image")
    mask = blur_mask(load_mask(options.mask_path, source.size), options.mask_blur)
    width, height = request.width, request.height
    box = None
    if options.only_masked:
        box = crop_region(mask, options.only_masked_padding, width, height)
    if box is not None:
        image = resize_image(ResizeMode.RESIZE_AND_FILL, source.crop(box), width, height)
        work_mask = resize_image(ResizeMode.RESIZE_AND_FILL, mask.crop(box), width, height)
    else:
        image = resize_image(request.image.resize_mode, source, width, height)
        work_mask = resize_image(request.image.resize_mode, mask, width, height)
    start = fill(image, work_mask) if options.masked_content == MaskedContent.FILL else image
    generated = inpaint_pass(
        cache,
        request,
        [start] * len(request.seeds),
        work_mask,
        options.masked_content,
        request.image.denoising_strength,
        on_step,
        is_cancelled,
    )
    if box is not None:
        # A1111 overlays the crop with the blurred mask itself (not doubled as below).
        return [composite(paste_crop(source, out, box), source, mask) for out in generated]
    return [composite(out, image, overlay_mask(work_mask)) for out in generated]


def run_outpaint(
    cache: PipelineCache, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled
) -> list[Image.Image]:
    """Zoom out and pan: the source on a larger canvas (width x height), the rest painted.

    The new area starts from the source's stretched edge colours plus noise (each image's own,
    from its seed), diffusion repaints it and a ``blend`` band of the source along the seam,
    and the result fades into the untouched source across that band.
    """
    options = request.outpaint
    layout = outpaint_layout(request.width, request.height, options)
    x1, y1, x2, y2 = layout.box
    source = load_image(request.image.path, "source image")
    # The bot sizes the canvas from the source; a source that differs is fitted to its place.
    source = resize_image(ResizeMode.JUST_RESIZE, source, x2 - x1, y2 - y1)
    canvases = [
        outpaint_canvas(source, layout, np.random.default_rng(seed)) for seed in request.seeds
    ]
    generated = inpaint_pass(
        cache,
        request,
        canvases,
        layout.mask,
        MaskedContent.ORIGINAL,
        request.image.denoising_strength,
        on_step,
        is_cancelled,
    )
    return [composite(out, canvas, layout.alpha) for out, canvas in zip(generated, canvases)]
