"""Inpaint and outpaint: diffusion inside a mask, and the result pasted back over the original.

Follows A1111's img2img with a mask (modules/processing.py StableDiffusionProcessingImg2Img):
the mask is blurred, the source and mask are fitted to width x height (or, for "inpaint only
masked", a crop around the mask is), "masked content" sets what the masked area starts from,
and in the end the original is laid back over the result through the blurred mask, so every
pixel the mask does not touch comes back exactly as it was.

The model: a ModelSpec's inpaint_source when it has one (an inpainting checkpoint: its UNet
also sees the mask and the masked image, 9 input channels), else the model itself through
diffusers' inpaint pipeline, which keeps the unmasked latents on the original's (re-noised)
latents at every step, as A1111 does for ordinary models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionInpaintPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from inference.conditioning import and_prompts_unet, encode_for_pass
from inference.generate import InvalidRequestError, IsCancelled, OnStep, use_sampler
from inference.img2img import (
    Progress,
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
from inference.models import PipelineCache
from inference.common.protocol import GenerateRequest, MaskedContent, ResizeMode
from inference.tiling import seamless_tiling

# The inpainting checkpoints' UNet input: 4 latent channels, 1 mask, 4 masked-image latents.
INPAINT_UNET_CHANNELS = 9


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
    schedule = img2img_schedule(request.steps, strength)
    if not schedule.steps:
        return list(images)
    check_cancelled(is_cancelled)
    pipe, base = inpaint_pipeline(cache, request.model)
    # --tile: the VAE's encoding wraps around too, as in A1111 (the whole model is switched).
    with seamless_tiling(pipe, request.tiling):
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


def _apply_masked_content(
    latents: torch.Tensor, mask: Image.Image, content: MaskedContent, seeds: Sequence[int]
) -> torch.Tensor:
    """A1111's "latent noise" and "latent nothing": the masked latents replaced before the
    pass noises them to the starting strength.

    A1111 writes create_random_tensors(seeds) there: the very noise the sampler then adds.
    Each image's draw here comes from a fresh generator with its seed, which is the draw the
    pipeline's own fresh generator makes next, so this is the same noise, as in A1111.
    """
    if content not in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
        return latents
    _, channels, height, width = latents.shape
    # A1111 resizes the blurred mask to the latents' size (PIL's default, bicubic) and rounds.
    small = np.asarray(mask.convert("L").resize((width, height)), dtype=np.float32) / 255.0
    inside = torch.from_numpy(np.round(small)).to(latents)[None, None]
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
