"""A1111's "Restore faces" through the bot: the Restore faces button, the restore_faces option
of /imagine and /upscale, the member's defaults in /settings, and the answers when no face is
found or the server has no face models; the real worker runs GFPGAN (real architecture,
random weights) on the face the planted detector finds (tests/face_fixtures.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bot.image_infotext import rerun_options
from bot.ui.buttons import JobViews
from db.models import JobStatus
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobKind
from tests.face_fixtures import write_face_models
from tests.harness import BotHarness, button_labels, private_answer
from tests.test_bot_image_commands import run_command
from tests.test_bot_inputs import noise_png
from tests.test_bot_settings import line, select
from tests.test_bot_workflows import click_and_finish, pixels, single_image

NOT_SET_UP = (
    "Face restoration with CodeFormer is not set up on this server: an admin must add CodeFormer's weights "
    "(such as codeformer-v0.1.0.pth) and the face detector's weights (detection_Resnet50_Final.pth) to the face "
    "restorer folders ({folders}). Nothing was queued."
)


def with_faces(settings, folders, **images):
    return dataclasses.replace(
        settings, images=dataclasses.replace(settings.images, face_restorer_dirs=tuple(map(str, folders)), **images)
    )


def embed_fields(message) -> dict[str, str]:
    return {field.name: field.value for field in message.embeds[0].fields}


async def test_restore_faces_button_with_the_members_gfpgan_and_visibility(settings, tmp_path):
    # The 64 px images are seen by the detector at 640 px: 10 times larger.
    folders = write_face_models(tmp_path / "webui", restorers=("GFPGAN",), detection_scale=0.1)
    async with BotHarness(with_faces(settings, folders)) as harness:
        alice = harness.member("alice")
        # Made before Alice picks a restorer: the server's default is off (a restorer's 512 px
        # pass costs seconds on a CPU; test_no_face_found_gives_the_image_back_with_a_note covers a
        # generation restored by the member's default).
        parent, posted = await single_image(harness, alice)
        assert parent.face_restorer is None and "Face restoration" not in parse_infotext(parent.images[0].infotext)
        assert "Restore faces" in button_labels(posted)

        shown = await alice.slash(harness.channel, "settings")
        message = shown.response
        assert line(message, "Restore faces") == "**Restore faces**: server default · server: Off"
        await select(alice, message, "faces", ["GFPGAN"])
        form = await alice.click(message, label="Face visibility, CodeFormer weight…")
        answer = await alice.submit_modal(form, {"face_visibility": "1.5", "codeformer_weight": ""})
        assert "visibility must be between 0 and 1, got 1.5." in private_answer(answer)
        harness.expect_user_errors()
        form = await alice.click(message, label="Face visibility, CodeFormer weight…")
        await alice.submit_modal(form, {"face_visibility": "0.75", "codeformer_weight": "0.3"})
        assert line(message, "Restore faces") == "**Restore faces**: **GFPGAN** · server: Off"

        job, result = await click_and_finish(harness, alice, posted, "Restore faces")
        assert job.kind == JobKind.RESTORE_FACES and (job.parent_job_id, job.parent_image_index) == (parent.id, 0)
        assert (job.face_restorer, job.face_visibility) == ("GFPGAN", 0.75)
        assert job.images[0].note is None
        assert not np.array_equal(pixels(job.images[0].path), pixels(parent.images[0].path))
        info = parse_infotext(job.images[0].infotext)
        assert info["GFPGAN visibility"] == "0.75" and info["Seed"] == str(parent.seed)
        assert embed_fields(result)["Workflow"] == "Restore faces (GFPGAN, visibility 0.75)"
        assert "Restore faces" not in button_labels(result)


async def test_no_face_found_gives_the_image_back_with_a_note(settings, tmp_path):
    folders = write_face_models(tmp_path / "webui", restorers=("GFPGAN",), finds_a_face=False)
    async with BotHarness(with_faces(settings, folders, default_face_restorer="GFPGAN")) as harness:
        alice = harness.member("alice")
        result = await alice.slash(harness.channel, "imagine", prompt="a field", count=1, restore_faces=True)
        job = await harness.wait_for_job((await harness.latest_job()).id)
        assert job.status == JobStatus.COMPLETED and job.face_restorer == "GFPGAN"
        assert job.images[0].note == "No faces were found: the image is unchanged."
        assert embed_fields(harness.message(result.response.id))["Note"] == job.images[0].note
        assert parse_infotext(job.images[0].infotext)["Face restoration"] == "GFPGAN"

        # /upscale then restore, in A1111's Extras order and keys.
        _, job, message = await run_command(
            harness, alice, "upscale", image=("small.png", noise_png(64, 48)), restore_faces=True
        )
        assert (job.kind, job.width, job.height, job.face_restorer) == (JobKind.UPSCALE, 128, 96, "GFPGAN")
        assert job.images[0].note == "No faces were found: the image is unchanged."
        assert job.images[0].infotext.endswith(
            "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, GFPGAN visibility: 1"
        )
        assert embed_fields(message)["Workflow"] == "Upscale 2x (Lanczos), then restore faces (GFPGAN)"

        # A member's /settings restorer restores her generations, fully visible as in A1111,
        # with no restore_faces option.
        panel = (await alice.slash(harness.channel, "settings")).response
        await select(alice, panel, "faces", ["GFPGAN"])
        parent, _ = await single_image(harness, alice)
        assert (parent.face_restorer, parent.face_visibility, parent.codeformer_weight) == ("GFPGAN", 1.0, None)
        assert parse_infotext(parent.images[0].infotext)["Face restoration"] == "GFPGAN"
        assert parent.images[0].note == "No faces were found: the image is unchanged."


async def test_without_face_models_every_way_is_refused_privately(harness):
    """Each way to ask for face restoration, one after another on one bot (the button last: it
    swaps the bot's job views)."""
    alice = harness.member("alice")
    assert harness.settings.images.face_restorer_dirs == ("models/GFPGAN", "models/Codeformer")  # none there
    expected = NOT_SET_UP.format(folders="models/GFPGAN, models/Codeformer")
    for way in ("imagine", "upscale", "settings", "button"):
        if way == "button":
            _, posted = await single_image(harness, alice)
            assert "Restore faces" not in button_labels(posted)  # nothing to offer
            # A message posted while the server had its face models, which have gone since.
            harness.bot.job_views = JobViews(lambda: ("CodeFormer",))
            _, posted = await single_image(harness, alice)
            answer = await alice.click(posted, label="Restore faces")
        elif way == "imagine":
            answer = await alice.slash(harness.channel, "imagine", prompt="a face", restore_faces=True)
        elif way == "upscale":
            answer = await alice.slash(harness.channel, "upscale", image=("small.png", noise_png(64, 48)), restore_faces=True)
        else:
            message = (await alice.slash(harness.channel, "settings")).response
            answer = await alice.select(message, ["CodeFormer"], custom_id=f"sd:set:{alice.id}:faces")
        count = await harness.job_count()
        assert private_answer(answer) == expected, way
        harness.expect_user_errors()  # user errors only, if any (the settings panel answers without one)
        assert await harness.job_count() == count, way


def test_pnginfo_rerun_keeps_face_restoration_where_the_server_has_it(settings, tmp_path):
    params = parse_infotext("a face\nSteps: 3, Seed: 5, Face restoration: CodeFormer, Size: 64x64")
    rerun = rerun_options(params, settings, [])
    assert rerun.options.restore_faces is None
    assert "Face restoration is not set up on this server: the image is made without it." in rerun.notes
    folder = tmp_path / "Codeformer"
    folder.mkdir()
    for name in ("codeformer-v0.1.0.pth", "detection_Resnet50_Final.pth"):  # found by name; not loaded here
        (folder / name).write_bytes(b"weights")
    rerun = rerun_options(params, with_faces(settings, [folder]), [])
    assert rerun.options.restore_faces is True and not rerun.notes
