"""The image workflows behind the buttons: upscale, remix, inpaint, zoom out, pan, vary, and
/imagine's hires fix, through the bot with the real worker on the tiny model."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from db.models import JobStatus
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobKind
from tests.harness import attachment_image, button_labels, private_answer


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def right_half_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 2, 0, size, size))
    return mask


async def single_image(harness, member, prompt: str = "a lighthouse", seed: int = 1234):
    """Run /imagine for one image; returns (job, its result message)."""
    result = await member.slash(harness.channel, "imagine", prompt=prompt, count=1, seed=seed)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED
    return job, harness.message(result.response.id)


async def click_and_finish(harness, member, message, label: str):
    clicked = await member.click(message, label=label)
    assert clicked.acknowledged and not clicked.ephemeral, label
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, (label, job.error)
    return job, harness.message(job.message_id)


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


async def test_upscale_buttons_make_2x_and_4x_images_of_the_parent(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)

    for label, size in (("Upscale 2x", 128), ("Upscale 4x", 256)):
        job, posted = await click_and_finish(harness, alice, message, label)
        assert job.kind == JobKind.UPSCALE and job.upscaler == "Lanczos"
        assert (job.parent_job_id, job.parent_image_index) == (parent.id, 0)
        assert job.init_image_path == parent.images[0].path
        assert (job.images[0].width, job.images[0].height) == (size, size)
        shown = await attachment_image(posted)
        assert shown.size == (size, size)
        # A plain Lanczos resize of the parent: the picture is the same one, larger.
        expected = Image.open(parent.images[0].path).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
        assert np.abs(np.asarray(shown.convert("RGB"), dtype=np.int16) - np.asarray(expected, dtype=np.int16)).max() <= 2
        # Nothing else sensible at this size (Restore faces where the server has face models:
        # tests/test_faces_bot.py).
        assert button_labels(posted) == ["Remove"]
        fields = {field.name: field.value for field in posted.embeds[0].fields}
        assert fields["Size"] == f"{size}x{size}" and fields["From"] == f"job #{parent.id}, image 1"
        info = parse_infotext(Image.open(job.images[0].path).info["parameters"])
        assert info["Prompt"] == "a lighthouse" and info["Seed"] == "1234"
        assert info["Postprocess upscaler"] == "Lanczos"


async def test_remix_reruns_with_the_edited_prompt_and_the_same_seed(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice, prompt="a red fox", seed=99)

    shown = await alice.click(message, label="Remix")
    form = shown.modal
    assert form is not None and form["title"] == f"Remix job #{parent.id}"
    defaults = {c["custom_id"]: c.get("value") for row in form["components"] for c in row.get("components", [])}
    assert defaults["prompt"] == "a red fox"

    submitted = await alice.submit_modal(shown, {"prompt": "a blue fox", "negative_prompt": "fog"})
    assert submitted.acknowledged and not submitted.ephemeral
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED and job.parent_job_id == parent.id
    assert (job.prompt, job.negative_prompt, job.seed) == ("a blue fox", "fog", 99)
    assert (job.kind, job.steps, job.sampler, job.width) == (parent.kind, parent.steps, parent.sampler, parent.width)
    assert not np.array_equal(pixels(job.images[0].path), pixels(parent.images[0].path))

    # An empty prompt is refused privately and queues nothing.
    count = await harness.job_count()
    again = await alice.click(message, label="Remix")
    refused = await alice.submit_modal(again, {"prompt": "   "})
    assert "The prompt is empty" in private_answer(refused)
    harness.expect_user_errors()
    assert await harness.job_count() == count


async def test_two_members_remixing_one_job_each_queue_theirs_and_a_form_outliving_a_restart_is_answered(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    _, message = await single_image(harness, alice, prompt="a red fox")
    # discord.py finds an open form by its custom_id: one per job made Bob's replace Alice's,
    # and after Alice's ran, Bob's submission found none and was dropped with his prompt.
    alices, bobs = await alice.click(message, label="Remix"), await bob.click(message, label="Remix")
    for member, shown, prompt in ((alice, alices, "a blue fox"), (bob, bobs, "a green fox")):
        submitted = await member.submit_modal(shown, {"prompt": prompt})
        assert submitted.acknowledged and not submitted.ephemeral, prompt
        job = await harness.wait_for_job((await harness.latest_job(member.id)).id)
        assert (job.prompt, job.status) == (prompt, JobStatus.COMPLETED)

    # A form open across a restart has no Modal behind it any more: the member is told, with
    # what they typed, instead of Discord's "This interaction failed".
    shown = await alice.click(message, label="Remix")
    await harness.restart()
    count = await harness.job_count()
    answer = private_answer(await alice.submit_modal(shown, {"prompt": "a fox\nin snow", "negative_prompt": "blur"}))
    assert answer.startswith("This form was open when the bot restarted") and "a fox\nin snow\n\nblur" in answer, answer
    assert await harness.job_count() == count


async def test_inpaint_button_repaints_only_under_the_mask(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)

    shown = await alice.click(message, label="Inpaint")
    assert shown.modal is not None
    submitted = await alice.submit_modal(
        shown,
        {
            "prompt": "a lighthouse with a red roof --steps 4",
            "mask": ("mask.png", png_bytes(right_half_mask())),
            "strength": "0.8",
        },
    )
    assert submitted.acknowledged and not submitted.ephemeral
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.kind == JobKind.INPAINT and (job.parent_job_id, job.parent_image_index) == (parent.id, 0)
    assert job.denoising_strength == 0.8 and job.masked_content == "original" and job.mask_blur == 4
    assert job.prompt == "a lighthouse with a red roof" and job.steps == 4  # inline parameters work here too

    before = pixels(parent.images[0].path)
    for image in job.images:
        after = pixels(image.path)
        # Left of the mask, beyond its blur (4 px, and a blur's reach is about 3 sigma), untouched.
        assert np.array_equal(after[:, :20], before[:, :20])
        assert not np.array_equal(after[:, 40:], before[:, 40:])


async def test_inpaint_form_refuses_bad_masks_and_strengths(harness):
    alice = harness.member("alice")
    _, message = await single_image(harness, alice)
    count = await harness.job_count()
    cases = [
        ({"mask": ("mask.txt", b"not an image at all")}, "not an image"),
        ({"mask": ("mask.png", png_bytes(Image.new("L", (64, 32), 255)))}, "same shape"),
        ({"mask": ("mask.png", png_bytes(Image.new("L", (64, 64), 0)))}, "all black"),
        ({"mask": ("mask.png", png_bytes(right_half_mask())), "strength": "1.5"}, "between 0 and 1"),
        ({"mask": ("mask.png", png_bytes(right_half_mask())), "strength": "lots"}, "must be a number"),
    ]
    for values, expected in cases:
        shown = await alice.click(message, label="Inpaint")
        answer = await alice.submit_modal(shown, {"prompt": "a cat", "strength": "0.75", **values})
        assert expected in private_answer(answer), values
    assert await harness.job_count() == count


async def test_zoom_out_keeps_the_original_in_the_centre(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)
    job, posted = await click_and_finish(harness, alice, message, "Zoom out 2x")
    assert job.kind == JobKind.OUTPAINT and (job.width, job.height) == (128, 128)
    assert (job.outpaint_left, job.outpaint_right, job.outpaint_top, job.outpaint_bottom) == (32, 32, 32, 32)
    original = pixels(parent.images[0].path)
    band = 16  # the seam is blended over this many pixels inside the original
    for image in job.images:
        extended = pixels(image.path)
        assert extended.shape == (128, 128, 3)
        inner = extended[32 + band : 96 - band, 32 + band : 96 - band]
        assert np.array_equal(inner, original[band:-band, band:-band])
        assert not np.array_equal(extended[:, :32], np.zeros_like(extended[:, :32]))
    assert (await attachment_image(posted)).size[0] >= 128


async def test_pan_right_extends_the_right_side(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)
    job, _ = await click_and_finish(harness, alice, message, "➡️")
    assert (job.width, job.height) == (96, 64)
    assert (job.outpaint_left, job.outpaint_right, job.outpaint_top, job.outpaint_bottom) == (0, 32, 0, 0)
    original = pixels(parent.images[0].path)
    for image in job.images:
        panned = pixels(image.path)
        assert panned.shape == (64, 96, 3)
        assert np.array_equal(panned[:, : 64 - 16], original[:, : 64 - 16])


async def test_vary_on_an_inpainted_image_is_img2img_of_it(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)
    shown = await alice.click(message, label="Inpaint")
    await alice.submit_modal(
        shown, {"prompt": "a lighthouse", "strength": "0.75", "mask": ("m.png", png_bytes(right_half_mask()))}
    )
    inpainted = await harness.wait_for_job((await harness.latest_job()).id)
    assert inpainted.status == JobStatus.COMPLETED
    grid = harness.message(inpainted.message_id)
    upscaled = await alice.click(grid, label="U1") if inpainted.count > 1 else None
    target = upscaled.response.message if upscaled is not None else grid
    job, _ = await click_and_finish(harness, alice, target, "Vary (subtle)")
    assert job.kind == JobKind.IMG2IMG and job.init_image_path == inpainted.images[0].path
    assert (job.parent_job_id, job.parent_image_index) == (inpainted.id, 0)


async def test_hires_fix_doubles_the_size_in_a_second_pass(harness):
    alice = harness.member("alice")
    result = await alice.slash(
        harness.channel, "imagine", prompt="a castle", count=1, seed=5, hires_scale=2.0, hires_steps=2
    )
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert (job.hires_scale, job.hires_steps, job.hires_upscaler, job.hires_denoising) == (2.0, 2, "Latent", 0.7)
    assert (job.images[0].width, job.images[0].height) == (128, 128)
    fields = {f.name: f.value for f in harness.message(result.response.id).embeds[0].fields}
    assert fields["Size"] == "128x128" and "Hires fix 2x" in fields["Workflow"]
    info = parse_infotext(Image.open(job.images[0].path).info["parameters"])
    assert info["Hires upscale"] == "2" and info["Hires steps"] == "2" and info["Hires upscaler"] == "Latent"

    count = await harness.job_count()
    for options, expected in (
        ({"hires_scale": 3.0}, "hires_scale must be above 1 and at most 2"),
        ({"hires_steps": 5}, "need a hires_scale above 1"),
        ({"hires_scale": 2.0, "hires_upscaler": "Nope"}, "Unknown upscaler `Nope`"),
        ({"hires_scale": 2.0, "hires_denoising": 1.5}, "hires_denoising must be between 0 and 1"),
    ):
        answer = await alice.slash(harness.channel, "imagine", prompt="a castle", **options)
        assert expected in private_answer(answer), (options, private_answer(answer))
        harness.expect_user_errors()
    assert await harness.job_count() == count


async def test_buttons_on_a_vanished_image_answer_privately(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)
    Image.open(parent.images[0].path).close()
    import os

    os.remove(parent.images[0].path)
    count = await harness.job_count()
    for label in ("Upscale 2x", "Zoom out 1.5x", "⬅️", "Inpaint"):
        answer = await alice.click(message, label=label)
        assert "no longer on disk" in private_answer(answer), label
        harness.expect_user_errors()
    assert await harness.job_count() == count


async def test_upscale_button_with_a_real_esrgan_model_as_the_server_default(settings, tmp_path):
    import dataclasses

    import torch

    from tests.harness import BotHarness
    from tests.test_inference_upscale import MODEL, official_rrdbnet

    folder = tmp_path / "RealESRGAN"
    folder.mkdir()
    # The file layout of xinntao's RealESRGAN_x4plus.pth, random weights.
    torch.save({"params_ema": official_rrdbnet()}, folder / f"{MODEL}.pth")
    images = dataclasses.replace(
        settings.images, upscaler_dirs=(str(folder),), default_upscaler=MODEL, upscale_tile=32, upscale_tile_overlap=16
    )
    async with BotHarness(dataclasses.replace(settings, images=images)) as harness:
        alice = harness.member("alice")
        parent, message = await single_image(harness, alice)
        job, posted = await click_and_finish(harness, alice, message, "Upscale 4x")
        assert job.upscaler == MODEL and (job.images[0].width, job.images[0].height) == (256, 256)
        assert (await attachment_image(posted)).size == (256, 256)
        lanczos = Image.open(parent.images[0].path).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
        assert not np.array_equal(pixels(job.images[0].path), np.asarray(lanczos, dtype=np.int16))
        info = parse_infotext(Image.open(job.images[0].path).info["parameters"])
        assert info["Postprocess upscaler"] == MODEL and info["Postprocess upscale by"] == "4"
