"""/sketch: A1111's Inpaint sketch (the painted area becomes the mask, its colours the start)
and Sketch (a drawing as img2img's source), through the bot with the real worker on the tiny
model, and the painted-area detection on a phone editor's JPEG copy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from simcord import OptionError

from bot.sketch import painted_area
from inference.common.protocol import JobKind
from tests.harness import private_answer
from tests.test_bot_admin import admin_member
from tests.test_bot_image_commands import decoded, run_command
from tests.test_bot_inputs import bomb_png, encoded
from tests.test_bot_workflows import pixels

RED = (230, 20, 20)
PAINTED = (16, 16, 40, 40)  # left, top, right, bottom (excluded)


def scenery(width: int = 64, height: int = 64) -> Image.Image:
    """A smooth picture with an edge, as photos are: JPEG keeps it within a few levels."""
    columns = np.linspace(40, 200, width)[None, :, None]
    rows = np.linspace(30, 180, height)[:, None, None]
    pixels_ = np.concatenate([columns + 0 * rows, rows + 0 * columns, (columns + rows) / 2], axis=-1)
    image = Image.fromarray(pixels_.astype(np.uint8), mode="RGB")
    ImageDraw.Draw(image).rectangle((44, 4, 60, 60), fill=(20, 120, 60))
    return image


def painted(original: Image.Image, box=PAINTED, colour=RED) -> Image.Image:
    copy = original.copy()
    ImageDraw.Draw(copy).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    return copy


async def server_noise(harness) -> None:
    """/admin noise: a /sketch job takes the server's RNG source and ENSD as /img2img's do."""
    await admin_member(harness, "mod").slash(harness.channel, "admin noise", rng="CPU", ensd=31337)


def box_mask(size: tuple[int, int], box=PAINTED) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def test_the_painted_area_of_a_recompressed_jpeg_copy_is_the_stroke():
    original = scenery(128, 96)
    stroke = (30, 20, 70, 50)
    # The editor saved its copy as a JPEG: every pixel moved a little, the stroke a lot.
    copy = Image.open(io.BytesIO(encoded(painted(original, stroke), "JPEG", quality=85))).convert("RGB")
    assert np.abs(np.asarray(copy, dtype=int) - np.asarray(original, dtype=int)).max(axis=-1)[~box_mask((128, 96), stroke)].max() > 0
    found = np.asarray(painted_area(original, copy)) > 0
    expected = box_mask((128, 96), stroke)
    # The stroke, and at most the pixel or two its colour bleeds into (JPEG's halved chroma).
    assert found[expected].all()
    assert not found[~box_mask((128, 96), (28, 18, 72, 52))].any()
    assert not found[:, 80:].any() and not found[60:].any()  # no specks away from the stroke

    # An exact copy (A1111's own canvas) finds exactly the stroke, up to the image's edge.
    edge = (0, 0, 20, 96)
    found = np.asarray(painted_area(original, painted(original, edge))) > 0
    assert np.array_equal(found, box_mask((128, 96), edge))
    assert painted_area(original, original.copy()).getbbox() is None


async def test_inpaint_sketch_repaints_the_painted_area_starting_from_its_colours(harness):
    alice = harness.member("alice")
    await server_noise(harness)
    original = scenery()
    sketch = painted(original)
    _, job, _ = await run_command(
        harness, alice, "sketch", sketch=("painted.png", encoded(sketch)), original=("photo.png", encoded(original)),
        prompt="a red balloon", count=1, steps=2, seed=4, mask_blur=2,
    )
    assert job.kind == JobKind.INPAINT and (job.width, job.height) == (64, 64)
    assert (job.mask_blur, job.masked_content, job.denoising_strength) == (2, "original", 0.75)
    assert (job.rng, job.eta_noise_seed_delta) == ("CPU", 31337)
    mask = np.asarray(Image.open(job.mask_path))
    assert np.array_equal(mask > 127, box_mask((64, 64)))
    start = pixels(job.init_image_path)
    inside, outside = box_mask((64, 64)), ~box_mask((64, 64), (12, 12, 44, 44))
    # The start is the stroke's colour where it was painted and the original away from it.
    assert np.abs(start[inside] - np.array(RED)).mean() < 20
    assert np.array_equal(start[outside], decoded(encoded(original))[outside])
    result = pixels(job.images[0].path)
    assert np.array_equal(result[:, 56:], start[:, 56:])  # beyond the mask and its blur: kept
    assert not np.array_equal(result[inside], start[inside])

    # Mask transparency darkens the mask, as A1111's: half of it is half a repaint.
    _, job, _ = await run_command(
        harness, alice, "sketch", sketch=("painted.png", encoded(sketch)), original=("photo.png", encoded(original)),
        prompt="a red balloon", count=1, steps=2, mask_transparency=50,
    )
    assert set(np.unique(np.asarray(Image.open(job.mask_path)))) == {0, 127}


async def test_sketch_without_the_original_is_img2img_of_the_drawing(harness):
    alice = harness.member("alice")
    await server_noise(harness)
    drawing = encoded(painted(Image.new("RGB", (96, 64), "white"), (10, 10, 50, 40), (20, 20, 200)))
    _, job, _ = await run_command(
        harness, alice, "sketch", sketch=("drawing.png", drawing), prompt="a blue house", count=1, steps=2,
        strength=0.6,
    )
    assert job.kind == JobKind.IMG2IMG and (job.width, job.height) == (96, 64) and job.mask_path is None
    assert (job.denoising_strength, job.rng, job.eta_noise_seed_delta) == (0.6, "CPU", 31337)
    assert np.array_equal(pixels(job.init_image_path), decoded(drawing))
    assert job.images[0].width == 96


async def test_bad_sketches_are_refused_privately_and_queue_nothing(harness):
    alice = harness.member("alice")
    original = scenery()
    photo = ("photo.png", encoded(original))
    sketch = ("painted.png", encoded(painted(original)))
    cases = [
        (
            {"original": ("photo.png", encoded(scenery(64, 48)))},
            "The sketch `painted.png` is 64x64 but the original `photo.png` is 64x48: upload the painted copy at "
            "the original's size",
        ),
        (
            {"sketch": ("copy.jpg", encoded(original, "JPEG", quality=95))},
            "The sketch `copy.jpg` does not differ from the original `photo.png`: paint over the part to change",
        ),
        ({"sketch": ("painted.png", b"not a picture at all")}, "The sketch `painted.png` is not an image"),
        ({"original": ("photo.txt", b"not a picture at all")}, "The original `photo.txt` is not an image"),
        ({"original": None, "mask_blur": 8}, "mask_blur work on an Inpaint sketch: upload the unpainted original too."),
        ({"sketch": ("big.png", bomb_png(5000, 5000))}, "The sketch `big.png` is 5000x5000 (25,000,000 pixels)"),
    ]
    for options, expected in cases:
        given = {"sketch": sketch, "original": photo, "prompt": "a balloon", **options}
        answer = await alice.slash(harness.channel, "sketch", **{k: v for k, v in given.items() if v is not None})
        assert expected in private_answer(answer), (options, private_answer(answer))
        [error] = harness.expect_user_errors()
        assert expected in error.message
    # A1111's transparency 100 would repaint nothing: Discord's range stops at 99.
    with pytest.raises(OptionError, match="mask_transparency"):
        await alice.slash(harness.channel, "sketch", sketch=sketch, original=photo, prompt="a balloon", mask_transparency=100)
    assert await harness.job_count() == 0
