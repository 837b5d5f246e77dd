"""Every workflow of the bot on SDXL: the tiny random-weight SDXL model served through the
bot with the real worker (simcord for Discord), each workflow once, at 64 px and 2 steps."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from bot.config import ModelSettings
from db.models import JobStatus
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobKind
from tests.harness import attachment_image
from tests.test_bot_image_commands import run_command
from tests.test_bot_inputs import mask_png, noise_png
from tests.test_bot_workflows import click_and_finish, pixels, png_bytes, right_half_mask, single_image


@pytest.fixture
def settings(settings, tiny_sdxl_dir, tiny_sdxl_inpaint_dir):
    """The conftest's settings with the tiny SDXL (and its inpainting variant) as the one model."""
    model = ModelSettings(
        name="tiny-xl", source=str(tiny_sdxl_dir), description="tiny SDXL", base_size=64,
        inpaint_source=str(tiny_sdxl_inpaint_dir),
    )
    return replace(settings, default_model="tiny-xl", models=(model,))


def infotext(path: str) -> dict[str, str]:
    with Image.open(path) as image:
        return parse_infotext(image.info["parameters"])


async def test_txt2img_and_its_buttons_on_sdxl(harness):
    alice = harness.member("alice")
    result = await alice.slash(
        harness.channel, "imagine", prompt="a (red:1.2) lighthouse BREAK [stormy:calm:0.5] sea AND fog:0.5",
        count=2, seed=1234, steps=2,
    )
    grid = await harness.wait_for_job((await harness.latest_job()).id)
    assert grid.status == JobStatus.COMPLETED, grid.error
    assert (grid.model, grid.count) == ("tiny-xl", 2)
    info = infotext(grid.images[0].path)
    assert info["Model"] == "tiny-xl" and info["Seed"] == "1234" and info["Size"] == "64x64"
    # Two different seeds, two different images.
    assert not np.array_equal(pixels(grid.images[0].path), pixels(grid.images[1].path))
    message = harness.message(result.response.id)

    varied, _ = await click_and_finish(harness, alice, message, "V2")
    assert varied.subseed_strength > 0 and varied.model == "tiny-xl"
    rerolled, _ = await click_and_finish(harness, alice, message, "Reroll")
    assert rerolled.seed != grid.seed and rerolled.prompt == grid.prompt

    # The single image's workflows: zoom out and pan run the SDXL inpainting variant.
    parent, single = await single_image(harness, alice)
    zoomed, _ = await click_and_finish(harness, alice, single, "Zoom out 2x")
    assert zoomed.kind == JobKind.OUTPAINT and (zoomed.width, zoomed.height) == (128, 128)
    panned, _ = await click_and_finish(harness, alice, single, "➡️")
    assert panned.kind == JobKind.OUTPAINT and panned.width > 64
    subtle, _ = await click_and_finish(harness, alice, single, "Vary (subtle)")
    assert subtle.kind == JobKind.VARIATION and subtle.parent_job_id == parent.id

    shown = await alice.click(single, label="Inpaint")
    await alice.submit_modal(
        shown, {"prompt": "a lighthouse, red roof", "mask": ("mask.png", png_bytes(right_half_mask())), "strength": "0.8"}
    )
    inpainted = await harness.wait_for_job((await harness.latest_job()).id)
    assert inpainted.status == JobStatus.COMPLETED and inpainted.kind == JobKind.INPAINT, inpainted.error
    before = pixels(parent.images[0].path)
    after = pixels(inpainted.images[0].path)
    assert np.array_equal(after[:, :20], before[:, :20]) and not np.array_equal(after[:, 40:], before[:, 40:])


async def test_image_commands_hires_fix_and_plots_on_sdxl(harness):
    alice = harness.member("alice")
    _, job, message = await run_command(
        harness, alice, "img2img", image=("photo.png", noise_png(96, 64)), prompt="a watercolour",
        strength=0.5, seed=5, count=1, steps=2,
    )
    assert job.kind == JobKind.IMG2IMG and Image.open(job.images[0].path).size == (96, 64)

    _, job, _ = await run_command(
        harness, alice, "inpaint", image=("photo.png", noise_png(64, 64)),
        mask=("mask.png", mask_png(64, 64, (0, 0, 32, 32))), prompt="a cat", count=1, steps=2,
    )
    assert job.kind == JobKind.INPAINT

    result = await alice.slash(
        harness.channel, "imagine", prompt="a castle", count=1, seed=5, steps=2, hires_scale=2.0, hires_steps=2
    )
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert Image.open(job.images[0].path).size == (128, 128)
    assert (await attachment_image(harness.message(result.response.id))).size == (128, 128)

    # A saved style, applied as A1111 applies it ({prompt} replaced), then run on SDXL.
    await alice.slash(harness.channel, "style add", name="Noir", prompt="noir {prompt}, film grain", negative_prompt="color")
    await alice.slash(harness.channel, "imagine", prompt="a street", style="Noir", count=1, steps=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert (job.prompt, job.negative_prompt) == ("noir a street, film grain", "color")

    await alice.slash(harness.channel, "promptmatrix", prompt="a cat|red", seed=42, steps=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED and job.kind == JobKind.PLOT and job.count == 2, job.error

    await alice.slash(
        harness.channel, "xyplot", prompt="a lighthouse --seed 7", x_type="Sampler", x_values="Euler, DPM++ 2M",
    )
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED and job.count == 2, job.error
    samplers = {infotext(image.path)["Sampler"] for image in job.images}
    assert samplers == {"Euler", "DPM++ 2M"}
    assert all(re.fullmatch(r"\d+x\d+", infotext(image.path)["Size"]) for image in job.images)


@pytest.fixture
def refiner_settings(settings, tiny_sdxl_refiner_dir):
    refiner = ModelSettings(name="tiny-refiner", source=str(tiny_sdxl_refiner_dir), base_size=64)
    return replace(settings, models=(*settings.models, refiner))


async def test_imagine_with_the_refiner(refiner_settings, tmp_path, migrated_database_file):
    from tests.conftest import copy_migrated_database
    from tests.harness import BotHarness, private_answer

    copy_migrated_database(migrated_database_file, tmp_path)
    async with BotHarness(refiner_settings) as harness:
        alice = harness.member("alice")
        await alice.slash(
            harness.channel, "imagine", prompt="a castle", count=1, seed=5, steps=4,
            refiner="tiny-refiner", refiner_switch_at=0.5,
        )
        job = await harness.wait_for_job((await harness.latest_job()).id)
        assert job.status == JobStatus.COMPLETED, job.error
        assert (job.refiner, job.refiner_switch_at) == ("tiny-refiner", 0.5)
        info = infotext(job.images[0].path)
        assert info["Refiner"] == "tiny-refiner" and info["Refiner switch at"] == "0.5"

        # Bad combinations are refused privately, and nothing is queued.
        count = await harness.job_count()
        for options, expected in (
            ({"refiner": "nope"}, "Unknown model `nope`"),
            ({"refiner": "tiny-refiner", "refiner_switch_at": 1.0}, "above 0 and below 1"),
            ({"refiner_switch_at": 0.5}, "refiner_switch_at needs a refiner"),
            ({"model": "tiny-refiner"}, "is an SDXL refiner: it finishes images, it cannot start one"),
        ):
            answer = await alice.slash(harness.channel, "imagine", prompt="a castle", **options)
            assert expected in private_answer(answer), options
        harness.expect_user_errors()
        assert await harness.job_count() == count

        # The refiner with the hires fix runs, as in A1111: it takes over in the second pass.
        await alice.slash(
            harness.channel, "imagine", prompt="a castle", count=1, seed=5, steps=4,
            refiner="tiny-refiner", refiner_switch_at=0.5, hires_scale=1.5,
        )
        job = await harness.wait_for_job((await harness.latest_job()).id)
        assert job.status == JobStatus.COMPLETED, job.error
        info = infotext(job.images[0].path)
        assert info["Refiner"] == "tiny-refiner" and info["Hires upscale"] == "1.5"

        # A member's default refiner (/settings) serves their SDXL jobs that name none;
        # refiner "None" turns it off for one job.
        shown = await alice.slash(harness.channel, "settings")
        chosen = await alice.select(shown.response, ["tiny-refiner"], custom_id=f"sd:set:{alice.id}:refiner")
        assert chosen.acknowledged and not chosen.ephemeral
        await alice.slash(harness.channel, "imagine", prompt="a tower", count=1, steps=2)
        assert (await harness.latest_job(alice.id)).refiner == "tiny-refiner"
        await alice.slash(harness.channel, "imagine", prompt="a tower", count=1, steps=2, refiner="None")
        assert (await harness.latest_job(alice.id)).refiner is None
        await harness.wait_for_job((await harness.latest_job()).id)
