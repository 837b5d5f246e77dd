"""SD upscale through the bot and the real worker on the tiny model: the *Upscale (detailed)*
button under an image, `/upscale detailed:True` on an upload (its own parameters, or a prompt
given), and the bad inputs refused privately with nothing queued."""

from __future__ import annotations

from PIL import Image

from db.models import JobStatus
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobKind
from tests.harness import attachment_image, button_labels, private_answer
from tests.test_bot_image_commands import run_command
from tests.test_bot_inputs import noise_png
from tests.test_bot_workflows import click_and_finish, single_image


async def test_the_detailed_upscale_button_redraws_the_image_2x_with_its_prompt(harness):
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice, prompt="a lighthouse", seed=77)
    job, posted = await click_and_finish(harness, alice, message, "Upscale (detailed)")
    assert job.kind == JobKind.SD_UPSCALE and (job.parent_job_id, job.parent_image_index) == (parent.id, 0)
    assert (job.denoising_strength, job.upscale_factor, job.upscaler) == (0.3, 2.0, "Lanczos")
    assert (job.prompt, job.seed, job.model, job.steps) == (parent.prompt, 77, parent.model, parent.steps)
    shown = await attachment_image(posted)
    assert shown.size == (parent.width * 2, parent.height * 2)
    info = parse_infotext(Image.open(job.images[0].path).info["parameters"])
    assert info["Prompt"] == "a lighthouse" and info["Seed"] == "77" and info["Denoising strength"] == "0.3"
    assert info["SD upscale upscaler"] == "Lanczos" and "SD upscale overlap" in info
    fields = {field.name: field.value for field in posted.embeds[0].fields}
    assert fields["Workflow"] == "Upscale (detailed) 2x (Lanczos), strength 0.3"
    assert button_labels(posted) == ["Remove"]  # Restore faces only where the server has face models


async def test_upscale_detailed_of_an_upload_reads_its_parameters_or_takes_a_prompt(harness):
    alice = harness.member("alice")
    parent, _message = await single_image(harness, alice, prompt="a red barn", seed=5)
    with open(parent.images[0].path, "rb") as file:
        made_here = file.read()  # a PNG with its A1111 parameters
    _, job, _ = await run_command(
        harness, alice, "upscale", image=("barn.png", made_here), detailed=True, denoising=0.25
    )
    assert job.kind == JobKind.SD_UPSCALE and (job.prompt, job.seed, job.denoising_strength) == ("a red barn", 5, 0.25)
    assert (job.images[0].width, job.images[0].height) == (128, 128)

    _, job, _ = await run_command(
        harness, alice, "upscale", image=("noise.png", noise_png(64, 48)), detailed=True, prompt="static on a screen"
    )
    assert job.prompt == "static on a screen" and (job.width, job.height) == (128, 96)
    assert job.status == JobStatus.COMPLETED


async def test_bad_detailed_upscales_are_refused_and_nothing_is_queued(harness):
    alice = harness.member("alice")
    before = await harness.job_count()
    plain = ("plain.png", noise_png(64, 64))
    cases = [
        ({"image": plain, "detailed": True}, "give `prompt`, or upload a PNG"),
        ({"image": plain, "detailed": True, "prompt": "a cat", "denoising": 1.5}, "denoising must be between 0 and 1, got 1.5."),
        ({"image": plain, "prompt": "a cat"}, "add `detailed: True`"),
        ({"image": ("big.png", noise_png(600, 400)), "detailed": True, "prompt": "a cat", "scale": 8.0}, "at most 4096 px a side"),
        # Queued, it failed in the worker: 3 px by 2, rounded down to a multiple of 8, is none.
        ({"image": ("sliver.png", noise_png(3, 700)), "detailed": True, "prompt": "a cat"}, "would make 0x1400"),
    ]
    for options, expected in cases:
        answer = await alice.slash(harness.channel, "upscale", **options)
        assert expected in private_answer(answer), (options, private_answer(answer))
        [error] = harness.expect_user_errors()
        assert expected in error.message
    assert await harness.job_count() == before
