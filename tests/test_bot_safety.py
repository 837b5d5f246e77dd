"""The safety classifier from the worker to what is posted: a tiny checker that flags every
image, configured like a real one ([policy] safety_checker), and each server action."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from bot import flagged_results
from bot.policy import store
from db.models import AuditEntry, Image as ImageRow, Job, JobStatus
from inference.images import make_grid
from inference.tiny import build_tiny_safety_checker
from tests.harness import attachment_image, private_answer


@functools.cache
def _flag_all_checker(folder: str) -> str:
    return str(build_tiny_safety_checker(folder, flag_all=True))


@pytest.fixture
def settings(settings, tmp_path_factory):
    """The shared settings, with a checker that flags every image it sees."""
    checker = _flag_all_checker(str(tmp_path_factory.getbasetemp() / "bot-checker-flag-all"))
    return replace(settings, policy=replace(settings.policy, safety_checker=checker, flagged_action="blur"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def on_disk(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return pixels(image)


def roughness(array: np.ndarray) -> float:
    """Mean difference between neighbouring pixels: a blur makes it much smaller."""
    return float(np.abs(np.diff(array, axis=0)).mean() + np.abs(np.diff(array, axis=1)).mean())


def in_channel(channel, message_id: int):  # type: ignore[no-untyped-def]
    return next(message for message in channel.history() if message.id == message_id)


def posted_id(result) -> int:  # type: ignore[no-untyped-def]
    """The message a deferred command or button posted (its first followup is its response)."""
    return (result.followups[0] if result.followups else result.response).id


def fields(message) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {field.name: field.value for field in message.embeds[0].fields}


async def flag_entries(harness, job_id: int) -> list[AuditEntry]:
    async with harness.db.session() as session:
        query = select(AuditEntry).where(AuditEntry.action == "image.flagged", AuditEntry.job_id == job_id)
        return list(await session.scalars(query))


async def set_action(harness, action: str) -> None:
    # What /admin flagged writes; written through the store here: this test is about reading it.
    await store.update_policy(harness.db, harness.guild.id, flagged_action=action)


async def test_flagged_images_are_blurred_and_audited_outside_age_restricted_channels(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    result = await alice.slash(harness.channel, "imagine", prompt="a garden party", count=2, seed=11)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert job.status == JobStatus.COMPLETED and job.safety_check
    assert [image.flagged for image in job.images] == [True, True]

    # The grid is posted blurred; the file on disk is the real grid, untouched.
    message = harness.message(result.response.id)
    posted, original = pixels(await attachment_image(message)), on_disk(job.grid_path)
    assert posted.shape == original.shape and not np.array_equal(posted, original)
    assert roughness(posted) < roughness(original) / 3
    assert np.array_equal(original, pixels(make_grid([Image.open(image.path) for image in job.images])))
    assert message.embeds[0].image.url.endswith(message.attachments[0].filename)
    assert "Images 1 and 2 of this grid were flagged" in fields(message)["Safety filter"]
    [entry] = await flag_entries(harness, job.id)
    assert entry.target_user_id == alice.id and entry.channel_id == harness.channel.id
    assert entry.details == "Images 1 and 2 of 2 flagged by the safety classifier; posted blurred"

    # U2 posts that image alone, blurred too (and no second audit entry: it is the same job).
    single = await bob.click(message, label="U2")
    single_message = harness.message(posted_id(single))
    assert not np.array_equal(pixels(await attachment_image(single_message)), on_disk(job.images[1].path))
    assert "This image was flagged" in fields(single_message)["Safety filter"]
    assert len(await flag_entries(harness, job.id)) == 1

    # In an age-restricted channel nothing is checked and the result is posted as made.
    after_dark = await harness.age_restricted_channel("after-dark")
    there = await alice.slash(after_dark, "imagine", prompt="a garden party", count=2, seed=11)
    unchecked = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert not unchecked.safety_check and [image.flagged for image in unchecked.images] == [False, False]
    as_made = in_channel(after_dark, there.response.id)
    assert np.array_equal(pixels(await attachment_image(as_made)), on_disk(unchecked.grid_path))
    assert "Safety filter" not in fields(as_made)
    assert await flag_entries(harness, unchecked.id) == []

    # /show follows the channel it posts in: the flagged job as made in the age-restricted
    # channel; the unchecked one never in an ordinary channel.
    shown = await bob.slash(after_dark, "show", job=job.id)
    shown_message = in_channel(after_dark, posted_id(shown))
    assert np.array_equal(pixels(await attachment_image(shown_message)), original)
    refused = await bob.slash(harness.channel, "show", job=unchecked.id)
    assert "only in an age-restricted channel" in private_answer(refused)
    assert [type(error).__name__ for error in harness.expect_user_errors()] == ["NotAllowed"]


async def test_the_servers_action_spoiler_or_withhold(harness):
    alice = harness.member("alice")
    await set_action(harness, "spoiler")
    result = await alice.slash(harness.channel, "imagine", prompt="a masked ball", count=1, seed=5)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    message = harness.message(result.response.id)
    [attachment] = message.attachments
    assert attachment.filename.startswith("SPOILER_") and attachment.is_spoiler()
    # The attachment is the image as made; the embed does not show it (Discord would unveil it).
    assert np.array_equal(pixels(await attachment_image(message)), on_disk(job.images[0].path))
    assert message.embeds[0].image.url is None
    assert "behind a spoiler" in fields(message)["Safety filter"]
    [entry] = await flag_entries(harness, job.id)
    assert entry.details.endswith("posted behind a spoiler")

    await set_action(harness, "withhold")
    result = await alice.slash(harness.channel, "imagine", prompt="a masked ball", count=2, seed=5)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    message = harness.message(result.response.id)
    assert message.attachments == [] and message.embeds[0].image.url is None
    assert "withheld by this server's safety filter" in fields(message)["Safety filter"]
    assert (await flag_entries(harness, job.id))[0].details.endswith("; withheld")
    # Its U buttons answer privately and post nothing; /show posts no image either.
    pressed = await alice.click(message, label="U1")
    assert "withheld by this server's safety filter" in private_answer(pressed)
    shown = await alice.slash(harness.channel, "show", job=job.id)
    assert harness.message(posted_id(shown)).attachments == []
    assert all(Path(image.path).is_file() for image in job.images)  # kept for moderators
    assert harness.expect_user_errors() == []  # the button's refusal is answered by run_for_user


def a_grid_job(tmp_path: Path, flagged: list[bool], kind: str = "txt2img") -> Job:
    """A finished job of four 32 px images of sharp noise with their grid, as files on disk."""
    rng = np.random.default_rng(0)
    made = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in flagged]
    rows = []
    for index, (image, is_flagged) in enumerate(zip(made, flagged)):
        path = tmp_path / f"{index}.png"
        image.save(path)
        rows.append(ImageRow(index=index, seed=index, width=32, height=32, path=str(path), infotext="", flagged=is_flagged))
    make_grid(made).save(tmp_path / "grid.png")
    return Job(id=1, kind=kind, images=rows, grid_path=str(tmp_path / "grid.png"))


@pytest.mark.parametrize("action", ["blur", "withhold"])
async def test_only_the_flagged_cells_of_a_grid_are_censored(action, tmp_path):
    job = a_grid_job(tmp_path, [False, True, False, True])
    verdict = flagged_results.Verdict(job, None, (1, 3), action)
    posting = await verdict.posting(job.grid_path, None, "job1")
    posted = pixels(Image.open(posting.files[0].fp))
    original = on_disk(job.grid_path)
    cells = {index: (slice(index // 2 * 32, index // 2 * 32 + 32), slice(index % 2 * 32, index % 2 * 32 + 32)) for index in range(4)}
    for index in (0, 2):
        assert np.array_equal(posted[cells[index]], original[cells[index]])
    for index in (1, 3):
        censored = posted[cells[index]]
        if action == "withhold":
            assert (censored == flagged_results.WITHHELD_FILL).all()
        else:
            assert roughness(censored) < roughness(original[cells[index]]) / 3
    assert posting.in_embed and "Images 2 and 4 of this grid were flagged" in posting.note
    # A plot's labelled grid has no fixed cells: it is censored whole.
    plot = a_grid_job(tmp_path, [False, True, False, True], kind="plot")
    whole = await flagged_results.Verdict(plot, None, (1, 3), "blur").posting(plot.grid_path, None, "job1")
    assert roughness(pixels(Image.open(whole.files[0].fp))) < roughness(original) / 3
    assert "whole grid is blurred" in whole.note
