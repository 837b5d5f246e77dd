"""The pixel work of the image workflows, done as AUTOMATIC1111 does it, without OpenCV.

Fitting a source to the job's size (A1111's modules/images.py resize_image), the inpainting
mask's blur, crop region and "fill" (modules/processing.py and modules/masking.py), pasting the
result back over the original, and the outpainting canvas. Only PIL and numpy: every function
here is plain image arithmetic, testable without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter, ImageOps

from inference.common.protocol import OutpaintOptions, ResizeMode

# Where a source image has transparency, A1111 flattens it onto this colour
# (opts.img2img_background_color).
BACKGROUND = (255, 255, 255)
# Crop and resize scales the whole image as A1111 does while that is at most this many times
# the output's pixels; past it (a sliver of an upload), only the part kept.
MAX_CROP_OVERSCAN = 4

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom excluded


def flatten(image: Image.Image) -> Image.Image:
    """The image as RGB, transparent parts over BACKGROUND (A1111's images.flatten)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def binary_mask(mask: Image.Image) -> Image.Image:
    """A1111's create_binary_mask: a mask with real transparency is its alpha, thresholded;
    otherwise its grey levels (so a soft mask painted in grey stays soft)."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.getchannel("A").point(lambda value: 255 if value > 128 else 0)
    return mask.convert("L")


# --- fitting a source to width x height (A1111's resize_image) -----------------------------


def resize_image(mode: ResizeMode, image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` fitted to exactly width x height, by A1111's img2img resize mode.

    Just resize stretches; crop and resize covers the size and crops the overflow, centred;
    resize and fill fits inside and fills the bands left over by stretching the resized
    image's edge rows (or columns) outwards, as A1111 does.
    """
    if mode == ResizeMode.JUST_RESIZE:
        return _lanczos(image, width, height)
    ratio, source_ratio = width / height, image.width / image.height
    cover = mode == ResizeMode.CROP_AND_RESIZE
    # A1111's comparisons and integer arithmetic, so crops and bands fall on the same pixels;
    # at least a pixel, where a sliver of an upload (3x700 into 128x64) would round to none.
    if (ratio > source_ratio) if cover else (ratio < source_ratio):
        inner_width, inner_height = width, max(1, image.height * width // image.width)
    else:
        inner_width, inner_height = max(1, image.width * height // image.height), height
    left, top = width // 2 - inner_width // 2, height // 2 - inner_height // 2
    crop = (-left, -top, width - left, height - top)
    if cover and inner_width * inner_height > MAX_CROP_OVERSCAN * width * height:
        return _scaled_crop(image, (inner_width, inner_height), crop)
    resized = _lanczos(image, inner_width, inner_height)
    if cover:
        return resized.crop(crop)
    pixels = np.asarray(resized)
    # Pad by repeating the edge rows/columns: A1111 stretches a one-pixel strip over the band.
    pad = ((top, height - inner_height - top), (left, width - inner_width - left))
    pad += ((0, 0),) * (pixels.ndim - 2)
    return Image.fromarray(np.pad(pixels, pad, mode="edge"), mode=resized.mode)


def _scaled_crop(image: Image.Image, scaled: tuple[int, int], crop: Box) -> Image.Image:
    """``image`` scaled to ``scaled``, then cropped to ``crop``, without making the whole scaled
    image (a 1,000,000x1 upload covering 128x64 would be 64,000,000x64 first): only the part
    kept is scaled, across then down, the order of Pillow's own two passes, so the pixels are
    those of scaling the whole (within rounding)."""
    left, top, right, bottom = crop
    x_scale, y_scale = image.width / scaled[0], image.height / scaled[1]
    across = image.resize(
        (right - left, image.height), resample=Image.Resampling.LANCZOS, box=(left * x_scale, 0, right * x_scale, image.height)
    )
    return across.resize(
        (right - left, bottom - top), resample=Image.Resampling.LANCZOS, box=(0, top * y_scale, across.width, bottom * y_scale)
    )


def _lanczos(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image.copy()
    return image.resize((width, height), resample=Image.Resampling.LANCZOS)


# --- inpainting masks ----------------------------------------------------------------------


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """A1111's mask blur: cv2.GaussianBlur with sigma ``radius``, once across, once down.

    Same kernel size (2 * int(2.5 * sigma + 0.5) + 1) and border (reflected without repeating
    the edge, cv2's default) as A1111's OpenCV calls, computed in float and rounded. Each pass
    is one product of the kernel with every window of the padded rows (or columns): a view,
    so nothing the size of image x kernel is copied.
    """
    if radius <= 0:
        return mask.copy()
    half = int(2.5 * radius + 0.5)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2.0 * radius * radius))
    kernel /= kernel.sum()
    pixels = np.asarray(mask.convert("L"), dtype=np.float64)
    for axis in (1, 0):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (half, half)
        padded = np.pad(pixels, padding, mode="reflect")
        pixels = sliding_window_view(padded, kernel.size, axis=axis) @ kernel
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def overlay_mask(blurred: Image.Image) -> Image.Image:
    """How much of the result shows over the original, for a whole-image inpaint.

    A1111 doubles the blurred mask for the overlay (mask_for_overlay), so the repainted area
    reaches the mask's edge at full strength and the blur fades only outside it.
    """
    doubled = np.clip(np.asarray(blurred, dtype=np.float32) * 2, 0, 255)
    return Image.fromarray(doubled.astype(np.uint8), mode="L")


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content (modules/masking.py fill), verbatim.

    The unmasked image is blurred with shrinking radii and layered over the masked area, so
    the hole takes the colours around it; premultiplied alpha ("RGBa") makes each blur an
    average of the known pixels only.
    """
    result = Image.new("RGBA", image.size)
    known = Image.new("RGBa", image.size)
    known.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> Box | None:
    """The area "inpaint only masked" works on: the mask's box plus ``padding``, then grown to
    width:height's shape within the image (A1111's get_crop_region_v2 + expand_crop_region).

    None when the mask is empty.
    """
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    image_width, image_height = mask.size
    if padding:
        x1, y1 = max(x1 - padding, 0), max(y1 - padding, 0)
        x2, y2 = min(x2 + padding, image_width), min(y2 + padding, image_height)
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grow((x2 - x1) * height / width, y1, y2, image_height)
    else:
        x1, x2 = _grow((y2 - y1) * width / height, x1, x2, image_width)
    return x1, y1, x2, y2


def _grow(desired: float, low: int, high: int, limit: int) -> tuple[int, int]:
    # A1111's expand_crop_region on one axis: grow around the centre, then shift back inside.
    diff = int(desired - (high - low))
    low -= diff // 2
    high += diff - diff // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    return low, min(high, limit)


def paste_crop(original: Image.Image, generated: Image.Image, box: Box) -> Image.Image:
    """The original with ``generated`` scaled into ``box`` (A1111's uncrop: crop and resize)."""
    x1, y1, x2, y2 = box
    result = original.copy()
    result.paste(resize_image(ResizeMode.CROP_AND_RESIZE, generated, x2 - x1, y2 - y1), (x1, y1))
    return result


def composite(generated: Image.Image, original: Image.Image, alpha: Image.Image) -> Image.Image:
    """``generated`` over ``original`` by ``alpha`` (255: generated), A1111's apply_overlay.

    Where alpha is 0 the original's pixels come back exactly: what the mask keeps is kept.
    """
    weight = np.asarray(alpha.convert("L"), dtype=np.float32)[..., None] / 255.0
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    old = np.asarray(original.convert("RGB"), dtype=np.float32)
    mixed = np.rint(old + (new - old) * weight)
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), mode="RGB")


# --- outpainting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutpaintLayout:
    """Where the source sits on the extended canvas, and the masks that go with it."""

    canvas_size: tuple[int, int]
    box: Box  # the source's place on the canvas
    # White over the new area and a ``blend`` band into the source: what diffusion repaints.
    mask: Image.Image
    # How much of the result shows in the end: 255 on the new area, falling to 0 across the
    # band; the source beyond the band is kept exactly.
    alpha: Image.Image


def outpaint_layout(width: int, height: int, options: OutpaintOptions) -> OutpaintLayout:
    box = (options.left, options.top, width - options.right, height - options.bottom)
    x1, y1, x2, y2 = box
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    # Distance (in pixels, 0.5 at the first source pixel) into the source from each side that
    # grows; a side that does not grow has no seam to blend.
    distances = [
        np.broadcast_to(inside, (height, width))
        for inside, grows in (
            (columns - x1 + 0.5, options.left),
            (x2 - columns - 0.5, options.right),
            (rows - y1 + 0.5, options.top),
            (y2 - rows - 0.5, options.bottom),
        )
        if grows
    ]
    nearest = np.minimum.reduce(distances)  # negative outside the source
    blend = max(options.blend, 0)
    if blend:
        generated = np.clip(1.0 - nearest / blend, 0.0, 1.0)
    else:
        generated = (nearest < 0).astype(np.float32)
    alpha = Image.fromarray(np.rint(generated * 255).astype(np.uint8), mode="L")
    mask = Image.fromarray(np.where(generated > 0, 255, 0).astype(np.uint8), mode="L")
    return OutpaintLayout((width, height), box, mask, alpha)


def outpaint_canvas(
    source: Image.Image, layout: OutpaintLayout, rng: np.random.Generator
) -> Image.Image:
    """The source on the extended canvas, the new area a starting point for diffusion.

    In the spirit of A1111's outpainting mk2: the source's edge colours are stretched
    outwards, blurred into smooth fields and given noise matched to the source's contrast, so
    the repaint continues the image's colours rather than starting from grey.
    """
    x1, y1, x2, y2 = layout.box
    width, height = layout.canvas_size
    pixels = np.asarray(source.convert("RGB"), dtype=np.float32)
    stretched = np.pad(pixels, ((y1, height - y2), (x1, width - x2), (0, 0)), mode="edge")
    radius = max(x1, y1, width - x2, height - y2) / 4
    smooth = np.asarray(
        Image.fromarray(stretched.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
        dtype=np.float32,
    )
    spread = pixels.reshape(-1, 3).std(axis=0)
    noisy = smooth + rng.normal(0.0, 1.0, smooth.shape).astype(np.float32) * spread * 0.5
    canvas = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")
    canvas.paste(source.convert("RGB"), (x1, y1))
    return canvas
