"""img2img, loopback, inpaint, outpaint and the hires fix on the tiny random-weight models.

The tiny models paint noise, so these tests check what the workflows promise whatever the
weights: sizes, seeds, step counts, which pixels may change and which must not, which model
ran, cancellation and refusals. masks.py's pixel work is checked against A1111's arithmetic.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from inference import img2img, masks, workflows
from inference.generate import InvalidRequestError, JobCancelledError, generate
from inference.img2img import decode, encode, exact_steps_schedule, img2img_schedule
from inference.models import PipelineCache
from inference.common.samplers import SAMPLERS
from inference.common.protocol import (
    LANCZOS,
    LATENT,
    HiresFix,
    ImageInput,
    InpaintOptions,
    JobKind,
    MaskedContent,
    ModelSpec,
    OutpaintOptions,
    ResizeMode,
)
from inference.upscale import Upscalers
from tests.inference_fixtures import TINY_MODEL_NAME, tiny_request

WITH_INPAINT_MODEL = "tiny-with-inpainting"
SOURCE_SIZE = (96, 64)


@pytest.fixture(scope="module")
def cache(tiny_model_dir, tiny_inpaint_model_dir):
    specs = (
        ModelSpec(TINY_MODEL_NAME, str(tiny_model_dir)),
        ModelSpec(
            WITH_INPAINT_MODEL, str(tiny_model_dir), inpaint_source=str(tiny_inpaint_model_dir)
        ),
    )
    return PipelineCache(specs, torch.device("cpu"), torch.float32, max_loaded=3)


@pytest.fixture(scope="module")
def upscalers():
    return Upscalers((), torch.device("cpu"), torch.float32, 0, 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 96x64 source (smooth colours and a square) and masks for it."""
    folder = tmp_path_factory.mktemp("workflow-images")
    width, height = SOURCE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    source = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    source[20:40, 30:60] = (250, 30, 30)
    paths = {"source": folder / "source.png", "mask": folder / "mask.png"}
    Image.fromarray(source.astype(np.uint8)).save(paths["source"])
    mask = np.zeros((height, width), np.uint8)
    mask[16:44, 24:64] = 255
    Image.fromarray(mask).save(paths["mask"])
    small = np.zeros((height, width), np.uint8)
    small[24:32, 40:48] = 255
    Image.fromarray(small).save(folder / "small-mask.png")
    Image.fromarray(np.zeros((height, width), np.uint8)).save(folder / "empty-mask.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def source_image(files) -> Image.Image:
    return Image.open(files / "source.png").convert("RGB")


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def run(cache, upscalers, request, is_cancelled=lambda: False):
    """The images, and every (step, total) progress report."""
    reports = []
    images = workflows.run_workflow(
        cache, upscalers, request, lambda step, total, latents: reports.append((step, total)),
        is_cancelled,
    )
    return images, reports


def img2img_request(files, strength=0.75, **image_options):
    options = ImageInput(str(files / "source.png"), strength, **image_options)
    return tiny_request(kind=JobKind.IMG2IMG, image=options, steps=4)


def inpaint_request(files, mask="mask.png", strength=0.75, model=TINY_MODEL_NAME, **options):
    return tiny_request(
        kind=JobKind.INPAINT,
        model=model,
        width=96,
        height=64,
        steps=4,
        image=ImageInput(str(files / "source.png"), strength),
        inpaint=InpaintOptions(str(files / mask), **options),
    )


# --- img2img -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_img2img_size_per_resize_mode(cache, upscalers, files, mode):
    request = dataclasses.replace(img2img_request(files, resize_mode=mode), width=64, height=96)
    images, reports = run(cache, upscalers, request)
    assert [image.size for image in images] == [(64, 96)]
    assert reports[-1] == (4, 4)  # A1111's int(4 * 0.75) + 1 steps really run


def test_resize_modes_follow_a1111():
    # A 4x2 source: red left half, blue right half, into a square.
    source = np.zeros((2, 4, 3), np.uint8)
    source[:, :2] = (255, 0, 0)
    source[:, 2:] = (0, 0, 255)
    image = Image.fromarray(source).resize((40, 20), Image.Resampling.NEAREST)
    cropped = pixels(masks.resize_image(ResizeMode.CROP_AND_RESIZE, image, 20, 20))
    # Cover: scaled to 40x20, the centre 20 px kept: half red, half blue.
    assert cropped.shape == (20, 20, 3)
    assert (cropped[:, :8, 0] > 200).all() and (cropped[:, 12:, 2] > 200).all()
    filled = pixels(masks.resize_image(ResizeMode.RESIZE_AND_FILL, image, 20, 20))
    # Fit inside: 20x10 in the middle, the bands above and below its stretched edge rows.
    assert (filled[:5] == filled[5]).all() and (filled[15:] == filled[14]).all()
    stretched = masks.resize_image(ResizeMode.JUST_RESIZE, image, 20, 20)
    assert stretched.size == (20, 20)


def test_resize_modes_take_slivers_of_uploads_without_failing_or_filling_memory(monkeypatch):
    # Uploads within the pixel limit: covering 128x64, the 1,000,000x1 one was first scaled to
    # 64,000,000x64 (MemoryError in the worker); fitted inside, 3x700 became 0 px wide.
    real_resize = Image.Image.resize

    def bounded(self, size, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert size[0] * size[1] <= 1_000_000, f"scaled to {size}"
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded)
    for width, height in ((1_000_000, 1), (1, 4096), (3, 700), (1, 1)):
        sliver = Image.new("RGB", (width, height), (200, 10, 10))
        for mode in ResizeMode:
            fitted = masks.resize_image(mode, sliver, 128, 64)
            assert fitted.size == (128, 64) and fitted.getpixel((64, 32)) == (200, 10, 10), (width, height, mode)

    # Covering scales the whole, as A1111 does, up to MAX_CROP_OVERSCAN times the output's
    # pixels; a sliver past that scales only the part kept, with the pixels of scaling the
    # whole (within rounding).
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 37, 3), dtype=np.uint8))
    whole = real_resize(noise, (96, 259), Image.Resampling.LANCZOS).crop((0, 89, 96, 169))
    assert np.array_equal(pixels(masks.resize_image(ResizeMode.CROP_AND_RESIZE, noise, 96, 80)), pixels(whole))
    assert np.abs(pixels(masks._scaled_crop(noise, (96, 259), (0, 89, 96, 169))) - pixels(whole)).max() <= 1


def test_img2img_image_is_reproduced_by_its_seed_alone(cache, upscalers, files):
    request = img2img_request(files)
    batch, _ = run(cache, upscalers, dataclasses.replace(request, seeds=(5, 6)))
    [alone], _ = run(cache, upscalers, dataclasses.replace(request, seeds=(6,)))
    assert np.abs(pixels(batch[1]) - pixels(alone)).max() <= 2
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 1


def test_img2img_strength_sets_how_far_it_moves(cache, upscalers, files):
    [kept], reports = run(cache, upscalers, img2img_request(files, strength=0.0))
    assert reports == []  # strength 0 runs nothing and returns the fitted source
    fitted = masks.resize_image(ResizeMode.JUST_RESIZE, source_image(files), 64, 64)
    assert (pixels(kept) == pixels(fitted)).all()

    # What the model makes of the source without denoising (the tiny VAE is random too).
    pipe = cache.get(TINY_MODEL_NAME)
    reference = pixels(decode(pipe, encode(pipe, [fitted]))[0])

    def distance(strength):
        request = dataclasses.replace(img2img_request(files, strength=strength), steps=10)
        [image], _ = run(cache, upscalers, request)
        return np.abs(pixels(image) - reference).mean()

    assert distance(0.1) < distance(1.0)


def test_step_counts_match_diffusers_and_a1111():
    assert img2img_schedule(20, 0.75).steps == 15
    assert img2img_schedule(20, 0.0).steps == 0
    tiny = img2img_schedule(20, 0.01)  # less than a step: A1111 still runs the last one
    assert tiny.steps == 1 and int(tiny.num_inference_steps * tiny.strength) == 1
    for steps, strength in ((3, 0.7), (10, 0.3), (20, 0.55), (7, 1.0)):
        schedule = exact_steps_schedule(steps, strength)
        assert int(schedule.num_inference_steps * schedule.strength) == steps == schedule.steps


def test_loopback_runs_every_pass_with_moving_strength(cache, upscalers, files, monkeypatch):
    strengths = []
    original = img2img.img2img_pass

    def spy(base, request, latents, seeds, schedule, progress, is_cancelled):
        strengths.append((schedule.strength, tuple(seeds)))
        return original(base, request, latents, seeds, schedule, progress, is_cancelled)

    monkeypatch.setattr(img2img, "img2img_pass", spy)
    request = img2img_request(files, strength=0.75, loopback_count=3, loopback_final_strength=0.25)
    request = dataclasses.replace(request, seeds=(10, 11))
    images, reports = run(cache, upscalers, request)
    assert len(images) == 2
    assert strengths == [(0.75, (10, 11)), (0.5, (11, 12)), (0.25, (12, 13))]
    # A1111's int(4 * s) + 1 for s = 0.75, 0.5, 0.25, counted over all passes.
    assert reports == [(step, 9) for step in range(1, 10)]


# --- inpaint -------------------------------------------------------------------------------


def whole_image_overlay(files, blur) -> np.ndarray:
    mask = masks.binary_mask(Image.open(files / "mask.png"))
    return np.asarray(masks.overlay_mask(masks.blur_mask(mask, blur)))


def test_inpaint_keeps_every_pixel_outside_the_blurred_mask(cache, upscalers, files):
    [image], reports = run(cache, upscalers, inpaint_request(files, mask_blur=4))
    assert image.size == SOURCE_SIZE and reports[-1] == (4, 4)  # A1111's int(4 * 0.75) + 1
    overlay = whole_image_overlay(files, 4)
    outside, inside = overlay == 0, overlay == 255
    source = pixels(source_image(files))
    assert outside.sum() > 1000 and inside.sum() > 500
    assert (pixels(image)[outside] == source[outside]).all()
    assert np.abs(pixels(image)[inside] - source[inside]).mean() > 10


@pytest.mark.parametrize("content", list(MaskedContent))
def test_every_masked_content_runs(cache, upscalers, files, content):
    [image], _ = run(cache, upscalers, inpaint_request(files, masked_content=content))
    overlay = whole_image_overlay(files, 4)
    outside = overlay == 0
    assert (pixels(image)[outside] == pixels(source_image(files))[outside]).all()


def test_latent_noise_and_nothing_change_the_start(cache, upscalers, files):
    # At 0.75 of 4 steps A1111 starts from the top sigma, where the start hardly shows; at
    # 0.5 it starts one sigma lower.
    def inside(content):
        [image], _ = run(cache, upscalers, inpaint_request(files, strength=0.5, masked_content=content))
        return pixels(image)[whole_image_overlay(files, 4) == 255]

    original = inside(MaskedContent.ORIGINAL)
    for content in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
        assert np.abs(inside(content) - original).mean() > 1, content


def test_fill_takes_the_colours_around_the_hole():
    image = Image.new("RGB", (32, 32), (0, 200, 0))
    image.paste((255, 0, 255), (8, 8, 24, 24))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    filled = pixels(masks.fill(image, mask))
    # Premultiplied 8-bit blurs round a little; the magenta is gone.
    assert np.abs(filled[8:24, 8:24] - (0, 200, 0)).max() <= 8
    assert (filled[:8] == (0, 200, 0)).all()


def test_only_masked_inpaints_a_crop_and_keeps_the_rest(cache, upscalers, files):
    request = inpaint_request(files, mask="small-mask.png", only_masked=True, mask_blur=2)
    request = dataclasses.replace(request, width=64, height=64)
    [image], _ = run(cache, upscalers, request)
    assert image.size == SOURCE_SIZE  # pasted back into the source, as A1111
    mask = masks.blur_mask(masks.binary_mask(Image.open(files / "small-mask.png")), 2)
    alpha = np.asarray(mask)
    source = pixels(source_image(files))
    assert (pixels(image)[alpha == 0] == source[alpha == 0]).all()
    inside = alpha > 200
    assert inside.sum() >= 16
    assert np.abs(pixels(image)[inside] - source[inside]).mean() > 10


def test_crop_region_grows_to_the_target_shape():
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (40, 45, 50, 55))  # a 10x10 box
    assert masks.crop_region(mask, 5, 64, 64) == (35, 40, 55, 60)
    # A wide target: the height stays, the width grows around the centre...
    assert masks.crop_region(mask, 0, 128, 64) == (35, 45, 55, 55)
    # ...and is shifted back inside the image at its edge.
    corner = Image.new("L", (100, 100), 0)
    corner.paste(255, (0, 0, 10, 10))
    assert masks.crop_region(corner, 0, 128, 64) == (0, 0, 20, 10)


def test_mask_blur_is_a1111s_gaussian():
    mask = Image.new("L", (41, 41), 0)
    mask.putpixel((20, 20), 255)
    blurred = np.asarray(masks.blur_mask(mask, 2))
    # cv2.GaussianBlur's kernel for sigma 2: 2 * int(2.5 * 2 + 0.5) + 1 = 11 taps.
    taps = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 2.0**2))
    taps /= taps.sum()
    expected = np.zeros((41, 41))
    expected[15:26, 15:26] = 255 * np.outer(taps, taps)
    assert (blurred == np.rint(expected)).all()
    assert masks.blur_mask(mask, 0).tobytes() == mask.tobytes()


def _blur_tap_by_tap(mask: Image.Image, radius: int) -> np.ndarray:
    """The mask blur as first written, one shifted copy per kernel tap: slow, plainly right."""
    half = int(2.5 * radius + 0.5)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2.0 * radius * radius))
    kernel /= kernel.sum()
    pixels = np.asarray(mask, dtype=np.float64)
    for axis in (1, 0):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (half, half)
        padded = np.pad(pixels, padding, mode="reflect")
        length = pixels.shape[axis]
        pixels = sum(
            weight * padded.take(range(index, index + length), axis=axis)
            for index, weight in enumerate(kernel)
        )
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("radius", [1, 2, 4, 7, 16, 64])
def test_mask_blur_matches_the_tap_by_tap_blur(radius):
    rng = np.random.default_rng(radius)
    hard = np.where(rng.random((150, 200)) > 0.7, 255, 0).astype(np.uint8)  # scattered pixels
    soft = rng.integers(0, 256, (61, 37), dtype=np.uint8)  # grey levels, taller than wide
    tiny = rng.integers(0, 256, (3, 5), dtype=np.uint8)  # the border reflects more than once
    for pixels in (hard, soft, tiny):
        mask = Image.fromarray(pixels, mode="L")
        assert (np.asarray(masks.blur_mask(mask, radius)) == _blur_tap_by_tap(mask, radius)).all()


def test_inpainting_model_runs_when_the_model_has_one(cache, upscalers, files):
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen[name] = args[0].shape[1]

        return hook

    inpainting = cache.get_inpaint(WITH_INPAINT_MODEL)
    plain = cache.get(TINY_MODEL_NAME)
    assert type(inpainting).__name__ == "StableDiffusionInpaintPipeline"
    hooks = [
        inpainting.unet.register_forward_pre_hook(record("inpainting"), with_kwargs=True),
        plain.unet.register_forward_pre_hook(record("plain"), with_kwargs=True),
    ]
    try:
        [image], _ = run(cache, upscalers, inpaint_request(files, model=WITH_INPAINT_MODEL))
        assert seen == {"inpainting": 9}  # latents + mask + masked image
        seen.clear()
        run(cache, upscalers, inpaint_request(files))
        assert seen == {"plain": 4}
    finally:
        for hook in hooks:
            hook.remove()
    outside = whole_image_overlay(files, 4) == 0
    assert (pixels(image)[outside] == pixels(source_image(files))[outside]).all()


# --- outpaint ------------------------------------------------------------------------------


def outpaint_request(files, width, height, **sides):
    return tiny_request(
        kind=JobKind.OUTPAINT,
        width=width,
        height=height,
        steps=4,
        image=ImageInput(str(files / "source.png"), 0.9),
        outpaint=OutpaintOptions(**sides),
    )


def test_zoom_out_keeps_the_source_in_the_centre(cache, upscalers, files):
    request = outpaint_request(files, 128, 96, left=16, right=16, top=16, bottom=16, blend=8)
    [image], reports = run(cache, upscalers, request)
    assert image.size == (128, 96) and reports[-1] == (4, 4)  # A1111's int(4 * 0.9) + 1
    result, source = pixels(image), pixels(source_image(files))
    # Beyond the 8 px band the source is exact; the new border was painted.
    assert (result[24:72, 24:104] == source[8:56, 8:88]).all()
    assert np.abs(result[16:80, 16:112] - source).max() > 0  # the band was blended
    border = np.ones((96, 128), bool)
    border[16:80, 16:112] = False
    assert result[border].std() > 5


def test_pan_right_extends_the_right_side_only(cache, upscalers, files):
    request = outpaint_request(files, 128, 64, right=32, blend=16)
    [image], _ = run(cache, upscalers, request)
    assert image.size == (128, 64)
    result, source = pixels(image), pixels(source_image(files))
    assert (result[:, :80] == source[:, :80]).all()  # left of the 16 px band: untouched
    assert np.abs(result[:, 80:96] - source[:, 80:96]).max() > 0


def test_outpaint_layout_masks():
    layout = masks.outpaint_layout(64, 32, OutpaintOptions(right=16, blend=8))
    alpha, mask = np.asarray(layout.alpha), np.asarray(layout.mask)
    assert layout.box == (0, 0, 48, 32)
    assert (alpha[:, 48:] == 255).all() and (alpha[:, :40] == 0).all()
    assert (np.diff(alpha[0, 38:50].astype(int)) >= 0).all()  # a ramp up to the new area
    assert (mask[:, 40:] == 255).all() and (mask[:, :40] == 0).all()


# --- hires fix -----------------------------------------------------------------------------


@pytest.mark.parametrize("upscaler", [LATENT, LANCZOS])
def test_hires_fix_doubles_the_size(cache, upscalers, upscaler):
    request = tiny_request(steps=3, seeds=(3, 4), hires=HiresFix(2.0, 2, 0.5, upscaler))
    images, reports = run(cache, upscalers, request)
    assert [image.size for image in images] == [(128, 128)] * 2
    assert reports == [(step, 5) for step in range(1, 6)]  # 3 + exactly 2 hires steps


def test_hires_first_pass_is_the_plain_image(cache, upscalers):
    plain = tiny_request(steps=3)
    [expected] = generate(cache.get(TINY_MODEL_NAME), plain)
    # Strength 0: no second pass, so the result is the first pass upscaled.
    request = dataclasses.replace(plain, hires=HiresFix(1.5, 0, 0.0, LANCZOS))
    [image], reports = run(cache, upscalers, request)
    assert image.size == (96, 96) and reports[-1] == (3, 3)
    upscaled = upscalers.upscale_to(expected, 96, 96, LANCZOS)
    assert np.abs(pixels(image) - pixels(upscaled)).max() <= 1


# --- cancel and refusals -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["loopback", "inpaint", "hires"])
def test_cancel_mid_run(cache, upscalers, files, which):
    request = {
        "loopback": img2img_request(files, loopback_count=3),
        "inpaint": inpaint_request(files),
        "hires": tiny_request(steps=2, hires=HiresFix(2.0, 3, 0.5, LATENT)),
    }[which]
    reports = []
    with pytest.raises(JobCancelledError):
        workflows.run_workflow(
            cache, upscalers, request, lambda step, total, latents: reports.append(step),
            lambda: len(reports) >= 2,
        )
    assert reports == [1, 2]


def _image(files, name="source.png", **options) -> ImageInput:
    return ImageInput(str(files / name), **options)


def _inpaint(files, mask="mask.png", **options) -> dict:
    return dict(image=_image(files), inpaint=InpaintOptions(str(files / mask), **options))


# name -> (the request, given the test images' folder; what the message must name)
BAD_REQUESTS = {
    "no image": (lambda f: tiny_request(kind=JobKind.IMG2IMG), "image"),
    "no mask": (lambda f: tiny_request(kind=JobKind.INPAINT, image=_image(f)), "inpaint"),
    "no sides": (lambda f: tiny_request(kind=JobKind.OUTPAINT, image=_image(f)), "outpaint"),
    "strength": (
        lambda f: tiny_request(kind=JobKind.IMG2IMG, image=_image(f, denoising_strength=1.5)),
        "1.5",
    ),
    "loopback": (
        lambda f: tiny_request(kind=JobKind.IMG2IMG, image=_image(f, loopback_count=0)),
        "loopback",
    ),
    "missing file": (
        lambda f: tiny_request(kind=JobKind.IMG2IMG, image=_image(f, "gone.png")),
        "missing",
    ),
    "broken file": (
        lambda f: tiny_request(kind=JobKind.IMG2IMG, image=_image(f, "broken.png")),
        "not an image",
    ),
    "broken mask": (
        lambda f: tiny_request(kind=JobKind.INPAINT, **_inpaint(f, "broken.png")),
        "mask",
    ),
    "empty mask": (
        lambda f: tiny_request(kind=JobKind.INPAINT, **_inpaint(f, "empty-mask.png")),
        "empty",
    ),
    "masked content": (
        lambda f: tiny_request(kind=JobKind.INPAINT, **_inpaint(f, masked_content="blur")),
        "blur",
    ),
    "nothing to add": (
        lambda f: tiny_request(
            kind=JobKind.OUTPAINT, image=_image(f), outpaint=OutpaintOptions()
        ),
        "at least one side",
    ),
    "too much to add": (
        lambda f: tiny_request(
            kind=JobKind.OUTPAINT, image=_image(f), outpaint=OutpaintOptions(left=60)
        ),
        "leaves",
    ),
    "hires on img2img": (
        lambda f: tiny_request(
            kind=JobKind.IMG2IMG, image=_image(f), hires=HiresFix(2.0, 0, 0.5)
        ),
        "hires",
    ),
    "mask on img2img": (lambda f: tiny_request(kind=JobKind.IMG2IMG, **_inpaint(f)), "inpaint"),
    "hires upscaler": (lambda f: tiny_request(hires=HiresFix(2.0, 0, 0.5, "Nope")), "Nope"),
    "hires strength": (lambda f: tiny_request(hires=HiresFix(2.0, 0, -0.1)), "-0.1"),
    "hires too large": (lambda f: tiny_request(hires=HiresFix(100.0, 0, 0.5)), "too large"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_are_refused_before_any_step(cache, upscalers, files, case):
    build, named = BAD_REQUESTS[case]
    reports = []
    with pytest.raises(InvalidRequestError, match=named):
        workflows.run_workflow(
            cache, upscalers, build(files), lambda *report: reports.append(report), lambda: False
        )
    assert reports == []


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_img2img_and_inpaint(cache, upscalers, files, sampler):
    for request in (img2img_request(files, strength=0.6), inpaint_request(files, strength=0.6)):
        request = dataclasses.replace(request, sampler=sampler, steps=5)
        _, reports = run(cache, upscalers, request)
        # A1111's int(5 * 0.6) + 1 steps with every sampler (img2img and inpaint alike).
        if sampler in ("DDIM", "UniPC"):
            # A1111's timestep samplers walk the t_enc timesteps below the noised one: fewer
            # steps than it counts, so progress moves by more than one.
            assert reports[-1] == (4, 4) and reports == sorted(set(reports)), request.kind
            continue
        assert reports == [(step, 4) for step in range(1, 5)], request.kind


def test_a_sampler_only_k_diffusion_runs_inpaints(cache, upscalers, files):
    # Inpainting runs A1111's k-diffusion path: DPM++ 3M SDE, which diffusers has no
    # scheduler for, inpaints with A1111's int(4 * 0.6) + 1 steps.
    request = dataclasses.replace(inpaint_request(files, strength=0.6), sampler="DPM++ 3M SDE")
    [image], reports = run(cache, upscalers, request)
    assert image.size == SOURCE_SIZE and reports == [(1, 3), (2, 3), (3, 3)]
