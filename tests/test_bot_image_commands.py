"""/img2img, /inpaint, /outpaint and /upscale on uploads, through the bot with the real worker
on the tiny model: the job each queues, the images it makes, and every bad upload refused."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from simcord import OptionError

from bot.errors import InvalidOption
from bot.jobs.params import GenerationOptions
from bot.jobs.workflow_params import SourceImage, inpaint_parameters
from db.models import JobStatus
from inference.common.protocol import JobKind
from tests.harness import attachment_image, private_answer
from tests.test_bot_inputs import animated, bomb_png, mask_png, noise_png
from tests.test_bot_workflows import pixels


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def inputs_folder(harness) -> Path:
    return (Path(harness.settings.outputs_dir) / "inputs").resolve()


async def run_command(harness, member, command: str, **options):
    """Run a command that must queue a job; returns the finished job and its message."""
    answer = await member.slash(harness.channel, command, **options)
    assert answer.acknowledged and not answer.ephemeral, (command, answer)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, (command, job.error)
    # The "thinking…" answer (an upload was being read) became the job's status message.
    assert answer.response is not None and answer.response.id == job.message_id
    return answer, job, harness.message(job.message_id)


async def test_img2img_and_upscale_of_uploads(harness):
    alice = harness.member("alice")
    upload = noise_png(96, 64)
    _, job, message = await run_command(
        harness, alice, "img2img", image=("photo.png", upload), prompt="a watercolour", strength=0.5,
        seed=5, count=1, steps=2, resize_mode="crop and resize",
    )
    # The upload keeps its shape (96x64 is within the tiny model's 64..128 px) and is the source.
    assert job.kind == JobKind.IMG2IMG and (job.width, job.height) == (96, 64)
    assert Path(job.init_image_path).parent == inputs_folder(harness) and job.mask_path is None
    assert np.array_equal(pixels(job.init_image_path), decoded(upload))
    assert (job.denoising_strength, job.resize_mode, job.loopback_count) == (0.5, "crop and resize", 1)
    assert (job.parent_job_id, job.parent_image_index, job.count, job.steps) == (None, None, 1, 2)
    assert [image.seed for image in job.images] == [5]
    assert (await attachment_image(message)).size == (96, 64)

    # A size given for one side keeps the upload's shape for the other.
    _, job, _ = await run_command(
        harness, alice, "img2img", image=("photo.png", upload), prompt="an oil painting", width=120,
        count=1, steps=2, loopback=2, loopback_final_strength=0.3,
    )
    assert (job.width, job.height) == (120, 80)
    assert (job.denoising_strength, job.loopback_count, job.loopback_final_strength) == (0.75, 2, 0.3)
    assert Image.open(job.images[0].path).size == (120, 80)

    small = noise_png(64, 48)
    _, job, message = await run_command(harness, alice, "upscale", image=("small.png", small))
    assert job.kind == JobKind.UPSCALE and (job.width, job.height) == (128, 96)
    assert (job.upscale_factor, job.upscaler, job.parent_job_id) == (2.0, "Lanczos", None)
    assert Path(job.init_image_path).parent == inputs_folder(harness)
    shown = await attachment_image(message)
    assert shown.size == (128, 96)
    expected = np.asarray(Image.open(io.BytesIO(small)).resize((128, 96), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(pixels(job.images[0].path) - expected).mean() < 2

    _, job, _ = await run_command(harness, alice, "upscale", image=("small.png", small), scale=4.0, upscaler="lanczos")
    assert (job.width, job.height, job.upscaler) == (256, 192, "Lanczos")
    assert Image.open(job.images[0].path).size == (256, 192)
    assert len(list(inputs_folder(harness).iterdir())) == 2  # each upload saved once

    choices = await alice.autocomplete(harness.channel, "upscale", "upscaler", "")
    assert [choice["name"] for choice in choices] == ["Lanczos"]
    samplers = await alice.autocomplete(harness.channel, "img2img", "sampler", "dpm++ 2m ka")
    assert [choice["name"] for choice in samplers] == ["DPM++ 2M Karras"]


async def test_inpaint_and_outpaint_of_uploads(harness):
    alice = harness.member("alice")
    upload = noise_png(64, 64)
    # The mask is twice the image's size: it is resized, and its author is told privately.
    answer, job, _ = await run_command(
        harness, alice, "inpaint", image=("photo.png", upload),
        mask=("mask.png", mask_png(128, 128, (64, 0, 128, 128))), prompt="a red door",
        count=1, steps=2, seed=3, masked_content="latent noise", mask_blur=2,
    )
    notes = [followup for followup in answer.followups if followup.ephemeral]
    assert [note.content for note in notes] == ["The mask was 128x128 and was resized to the image's 64x64."]
    assert job.kind == JobKind.INPAINT and (job.width, job.height) == (64, 64)
    assert Path(job.mask_path).parent == Path(job.init_image_path).parent == inputs_folder(harness)
    assert (job.denoising_strength, job.masked_content, job.mask_blur, job.inpaint_only_masked) == (
        0.75, "latent noise", 2, False,
    )
    with Image.open(job.mask_path) as mask:
        assert mask.mode == "L" and mask.size == (64, 64)
    before, after = pixels(job.init_image_path), pixels(job.images[0].path)
    assert np.array_equal(after[:, :24], before[:, :24])  # left of the mask and its blur: kept
    assert not np.array_equal(after[:, 40:], before[:, 40:])

    # A mask of the image's own size needs no note.
    answer, job, _ = await run_command(
        harness, alice, "inpaint", image=("photo.png", upload), mask=("mask.png", mask_png(64, 64, (0, 0, 32, 32))),
        prompt="a window", count=1, steps=2, only_masked=True, padding=8, strength=0.9,
    )
    assert not [f for f in answer.followups if f.ephemeral]
    assert (job.inpaint_only_masked, job.inpaint_padding, job.denoising_strength) == (True, 8, 0.9)

    _, job, message = await run_command(
        harness, alice, "outpaint", image=("photo.png", upload), direction="right", pixels=32, prompt="a wide field",
        steps=2,
    )
    assert job.kind == JobKind.OUTPAINT and (job.width, job.height) == (96, 64)
    assert (job.outpaint_left, job.outpaint_right, job.outpaint_top, job.outpaint_bottom) == (0, 32, 0, 0)
    assert job.count == harness.settings.limits.default_count and job.parent_job_id is None
    assert all(Image.open(image.path).size == (96, 64) for image in job.images)

    _, job, _ = await run_command(
        harness, alice, "outpaint", image=("photo.png", upload), direction="all", pixels=16, prompt="a frame",
        steps=2, strength=1.0,
    )
    assert (job.width, job.height, job.denoising_strength) == (96, 96, 1.0)
    assert (job.outpaint_left, job.outpaint_right, job.outpaint_top, job.outpaint_bottom) == (16, 16, 16, 16)


async def test_bad_uploads_and_options_are_refused_privately(harness):
    alice = harness.member("alice")
    photo = ("photo.png", noise_png(64, 64))
    mask = ("mask.png", mask_png(64, 64, (0, 0, 32, 32)))
    cases = [
        ("img2img", {"image": ("notes.png", b"a shopping list\n" * 10)}, "The image `notes.png` is not an image"),
        ("img2img", {"image": ("dance.gif", animated("GIF"))}, "The image `dance.gif` is animated or has 3 frames"),
        ("img2img", {"image": ("bomb.png", bomb_png(20000, 20000))}, "The image `bomb.png` has far too many pixels"),
        ("img2img", {"image": ("huge.png", bomb_png(5000, 5000))}, "is 5000x5000 (25,000,000 pixels)"),
        ("img2img", {"image": ("cut.png", noise_png(96, 96)[:9000])}, "is damaged or incomplete"),
        ("img2img", {"strength": 1.5}, "strength must be between 0 and 1, got 1.5."),
        ("inpaint", {"strength": -0.1}, "strength must be between 0 and 1, got -0.1."),
        ("outpaint", {"strength": 1.01}, "strength must be between 0 and 1, got 1.01."),
        ("img2img", {"loopback": 2, "loopback_final_strength": 1.2}, "loopback_final_strength must be between 0 and 1"),
        ("img2img", {"width": 100}, "width must be a multiple of 8, got 100."),
        ("img2img", {"sampler": "Euler z"}, "Unknown sampler `Euler z`."),
        ("img2img", {"loopback_final_strength": 0.2}, "loopback_final_strength needs loopback of 2 or more."),
        ("img2img", {"loopback": 9}, "loopback must be between 1 and 8, got 9."),
        ("inpaint", {"mask": ("mask.png", mask_png(64, 32, (0, 0, 8, 8)))}, "is 64x32 but the image is 64x64"),
        ("inpaint", {"mask": ("mask.png", mask_png(64, 64))}, "The mask `mask.png` is all black"),
        ("inpaint", {"mask": ("mask.txt", b"white on the left")}, "The mask `mask.txt` is not an image"),
        ("outpaint", {"direction": "left", "pixels": 1, "image": ("tiny.png", noise_png(16, 16))}, "at least 64 px"),
        ("upscale", {"upscaler": "4x-UltraSharp"}, "Unknown upscaler `4x-UltraSharp`. Available: Lanczos."),
        ("upscale", {"scale": 1.0}, "scale must be above 1 and at most 8, got 1."),
        ("upscale", {"scale": 8.0, "image": ("big.png", noise_png(600, 400))}, "at most 4096 px a side"),
    ]
    required = {
        "img2img": {"image": photo, "prompt": "a cat"},
        "inpaint": {"image": photo, "mask": mask, "prompt": "a cat"},
        "outpaint": {"image": photo, "direction": "up", "pixels": 32, "prompt": "a cat"},
        "upscale": {"image": photo},
    }
    for command, options, expected in cases:
        answer = await alice.slash(harness.channel, command, **{**required[command], **options})
        assert expected in private_answer(answer), (command, options, private_answer(answer))
        [error] = harness.expect_user_errors()
        assert expected in error.message

    # The mask blur's range is Discord's too (A1111's 0-64, protocol.MAX_MASK_BLUR); a client
    # that sends more anyway gets the bot's own refusal.
    with pytest.raises(OptionError, match="mask_blur"):
        await alice.slash(harness.channel, "inpaint", **required["inpaint"], mask_blur=65)
    source = SourceImage(path="photo.png", width=64, height=64)
    with pytest.raises(InvalidOption, match=r"^mask_blur must be between 0 and 64, got 100\.$"):
        inpaint_parameters(GenerationOptions(prompt="a cat"), harness.settings, None, source, "mask.png", mask_blur=100)

    # A server with a small upload limit refuses from the size Discord states.
    harness.bot.settings = replace(harness.settings, images=replace(harness.settings.images, max_upload_bytes=4096))
    answer = await alice.slash(harness.channel, "upscale", image=photo)
    assert "The image `photo.png` is 12 KB; this server accepts uploads of up to 4 KB." in private_answer(answer)
    harness.expect_user_errors()
    harness.bot.settings = harness.settings

    assert await harness.job_count() == 0


async def test_reroll_of_an_img2img_result_works_on_the_same_source(harness):
    """Reroll is the same parameters with new seeds: under an img2img result that is img2img of
    the same upload (it was txt2img, the source left unused in its row); with the source gone it
    is refused privately, nothing queued."""
    alice = harness.member("alice")
    answer, job, message = await run_command(
        harness, alice, "img2img", image=("photo.png", noise_png(64, 64)), prompt="a watercolour", strength=0.5,
        seed=5, count=1, steps=2,
    )
    await alice.click(message, label="Reroll")
    rerolled = await harness.wait_for_job((await harness.latest_job()).id)
    assert rerolled.id != job.id and rerolled.status == JobStatus.COMPLETED, rerolled.error
    assert (rerolled.kind, rerolled.init_image_path, rerolled.denoising_strength) == (
        JobKind.IMG2IMG, job.init_image_path, 0.5
    )
    assert rerolled.seed != job.seed and rerolled.parent_job_id == job.id

    Path(job.init_image_path).unlink()
    refused = await alice.click(message, label="Reroll")
    assert "The source image of job #1 is no longer on disk" in private_answer(refused)
    harness.expect_user_errors()
    assert await harness.job_count() == 2
