"""/describe and the "Describe" message menu through the bot, on tiny random-weight describe
models the tests build (tests/describe_fixtures.py) and the real worker: the suggestions come
from the models, a suggestion's button queues it as /imagine for whoever presses it, /admin
describe picks the tagger, and every bad input is answered privately with nothing queued."""

from __future__ import annotations

import io
from dataclasses import asdict, replace

import pytest
from PIL import Image
from sqlalchemy import func, select

from bot.config import DescribeSettings
from bot.jobs.describe_params import suggestions_of
from db.models import Job, JobStatus
from inference.common.protocol import JobKind
from tests.describe_fixtures import tiny_describe_models
from tests.harness import button_labels, private_answer
from tests.test_bot_admin import admin_member
from tests.test_bot_inputs import bomb_png


@pytest.fixture(scope="module")
def describe_models(tmp_path_factory):
    return tiny_describe_models(tmp_path_factory.getbasetemp() / "describe-models", tag_threshold=0.5)


@pytest.fixture
def settings(settings, describe_models):
    return replace(settings, describe=DescribeSettings(**asdict(describe_models), interrogator="clip"))


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def job_count(harness) -> int:
    async with harness.db.session() as session:
        return await session.scalar(select(func.count()).select_from(Job))


async def finished(harness, answer) -> Job:
    assert answer.acknowledged and not answer.ephemeral, answer
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    return job


async def test_describe_suggests_prompts_and_each_button_imagines_one(harness):
    alice, bob = harness.member("alice"), harness.member("bob")

    # /describe on an upload: four captions with CLIP's picks, from the planted tiny captioner.
    job = await finished(harness, await alice.slash(harness.channel, "describe", image=("red.png", png((220, 30, 20)))))
    assert (job.kind, job.interrogator, job.user_id, job.images) == (JobKind.DESCRIBE, "clip", alice.id, [])
    suggestions = suggestions_of(job)
    assert len(suggestions) == 4 and len(set(suggestions)) == 4
    assert all(text.startswith("red") for text in suggestions)
    message = harness.message(job.message_id)
    embed = message.embeds[0]
    assert embed.title == "Describe: prompts for this image"
    for number, text in zip(("1️⃣", "2️⃣", "3️⃣", "4️⃣"), suggestions, strict=True):
        assert f"{number} {text}" in embed.description
    assert embed.thumbnail.url.startswith("attachment://") and message.attachments
    assert button_labels(message) == ["1", "2", "3", "4", "Imagine all", "Remove"]

    # Bob presses 3: his own /imagine of that prompt, with his defaults.
    pressed = await bob.click(message, label="3")
    imagined = await finished(harness, pressed)
    assert (imagined.kind, imagined.user_id, imagined.prompt) == (JobKind.TXT2IMG, bob.id, suggestions[2])
    assert imagined.count == harness.settings.limits.default_count and imagined.images

    # Imagine all: a job of Bob's per suggestion, in their order, with this server's noise
    # settings (/admin noise) as /imagine has them.
    admin = admin_member(harness, "mod")
    await admin.slash(harness.channel, "admin noise", rng="CPU", ensd=31337)
    last = imagined.id
    pressed = await bob.click(message, label="Imagine all")
    assert pressed.acknowledged and not [f for f in pressed.followups if f.ephemeral]
    async with harness.db.session() as session:
        all_four = (await session.scalars(select(Job).where(Job.id > last).order_by(Job.id))).all()
    expected = [(JobKind.TXT2IMG, bob.id, text, "CPU", 31337) for text in suggestions]
    queued = [(each.kind, each.user_id, each.prompt, each.rng, each.eta_noise_seed_delta) for each in all_four]
    assert queued == expected
    for queued_job in all_four:
        await harness.wait_for_job(queued_job.id)

    # The menu on the bot's own result, after an admin picked the tagger: booru tags. The
    # planted tagger is 73% sure of "1girl" on any image, and a rating is never suggested.
    answer = await admin.slash(harness.channel, "admin describe", interrogator="tagger")
    assert private_answer(answer) == "/describe now uses the tagger interrogator here."
    result = harness.message(imagined.message_id)
    tagged = await finished(harness, await alice.context_menu(harness.channel, "Describe", result))
    assert tagged.interrogator == "tagger"
    assert (tagged.parent_job_id, tagged.parent_image_index) == (imagined.id, None)  # a grid of bob's job
    from_field = {field.name: field.value for field in harness.message(tagged.message_id).embeds[0].fields}["From"]
    assert from_field == f"job #{imagined.id}"
    assert "1girl" in suggestions_of(tagged)[0] and not any("general" in text for text in suggestions_of(tagged))
    # A member's upload in a message: its first image.
    posted = await alice.send(
        harness.channel, "what is this?", attachments=[("notes.txt", b"hello"), ("red.png", png((255, 0, 0)))]
    )
    tagged = await finished(harness, await alice.context_menu(harness.channel, "Describe", posted))
    assert suggestions_of(tagged)[0] == r"red hair, hatsune miku \(cosplay\), ^_^, 1girl"

    # /show posts the suggestions again, with their buttons.
    shown = await alice.slash(harness.channel, "show", job=job.id)
    assert shown.acknowledged and not shown.ephemeral
    again = harness.message((shown.followups[0] if shown.followups else shown.response).id)
    assert f"Job #{job.id}" in again.content and again.embeds[0].description == embed.description
    assert button_labels(again) == button_labels(message) and again.attachments

    # A suggestion with a word this server blocks is refused as /imagine refuses it.
    await admin.slash(harness.channel, "admin terms add", scope="banned", kind="word", pattern="miku")
    before = await job_count(harness)
    refusal = private_answer(await bob.click(harness.message(tagged.message_id), label="1"))
    assert "miku" in refusal
    assert await job_count(harness) == before
    harness.expect_user_errors()


async def test_a_waiting_describe_job_is_canceled_and_bad_input_is_answered_privately(harness):
    alice = harness.member("alice")

    # Queued behind a long job, a describe job shows its place and its Cancel button.
    slow = await alice.slash(
        harness.channel, "imagine", prompt="a long night", steps=60, count=4, width=128, height=128
    )
    long_job = await harness.wait_for_job((await harness.latest_job()).id, statuses=(JobStatus.RUNNING,))
    waiting = await alice.slash(harness.channel, "describe", image=("red.png", png((255, 0, 0))))
    status = harness.message(waiting.response.id)
    assert status.embeds[0].title == "Queued" and "Describe (clip)" in status.embeds[0].footer.text
    assert private_answer(await alice.click(status, label="Cancel")).endswith("canceled.")
    described = await harness.wait_for_job((await harness.latest_job()).id)
    assert (described.kind, described.status, described.suggestions) == (JobKind.DESCRIBE, JobStatus.CANCELED, None)
    await alice.click(harness.message(slow.response.id), label="Cancel")
    await harness.wait_for_job(long_job.id)

    # Where costly features are reserved to a role, a large photo is still only read, not made.
    admin = admin_member(harness, "mod")
    await admin.slash(harness.channel, "admin roles add", list="costly", role=harness.guild.create_role("Patrons"))
    big = ("big.png", png((9, 9, 9), (900, 700)))
    large = await finished(harness, await alice.slash(harness.channel, "describe", image=big))
    assert (large.width, large.height, large.kind) == (900, 700, JobKind.DESCRIBE)

    before = await job_count(harness)

    answer = await alice.slash(harness.channel, "describe", image=("notes.png", b"a shopping list\n" * 10))
    assert "The image `notes.png` is not an image I can read" in private_answer(answer)
    answer = await alice.slash(harness.channel, "describe", image=("bomb.png", bomb_png(20000, 20000)))
    assert "The image `bomb.png` has far too many pixels" in private_answer(answer)
    text_only = await alice.send(harness.channel, "no pictures here")
    answer = await alice.context_menu(harness.channel, "Describe", text_only)
    assert private_answer(answer) == "This message has no image attached to describe."

    # A bot without describe models says so, and an admin cannot pick a missing interrogator.
    harness.bot.settings = replace(harness.bot.settings, describe=DescribeSettings())
    answer = await alice.slash(harness.channel, "describe", image=("red.png", png((255, 0, 0))))
    assert private_answer(answer).startswith("/describe is not set up on this bot")
    answer = await admin.slash(harness.channel, "admin describe", interrogator="tagger")
    assert "This bot has no models for the tagger interrogator; it has: none" in private_answer(answer)
    harness.expect_user_errors()  # each one answered privately, as a user error
    assert await job_count(harness) == before


def test_describe_settings_reach_the_worker(tmp_path, describe_models):
    from bot.config import load_settings

    (tmp_path / "config.toml").write_text(
        f'[describe]\ntagger = "{describe_models.tagger}"\ninterrogator = "tagger"\n'
        'caption_model = "Salesforce/blip-image-captioning-base"\nclip_model = "openai/clip-vit-large-patch14"\n',
        encoding="utf-8",
    )
    settings = load_settings(tmp_path / "config.toml", environ={})
    assert settings.describe.available == ("clip", "tagger")
    assert settings.worker_config().describe == settings.describe.models()
    assert settings.worker_config().describe.tagger == describe_models.tagger
