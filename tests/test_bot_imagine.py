"""/imagine end to end through the bot: simulated Discord, real queue, worker and files."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from bot.jobs.params import MAX_SEED
from db.models import JobStatus
from inference.common.infotext import parse_infotext
from tests.harness import DEFERRED_WITH_MESSAGE, SINGLE_IMAGE_BUTTONS, attachment_image, button_labels


async def test_imagine_to_a_finished_grid(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a lighthouse at dusk", seed=1234, count=4)

    # Answered at once, publicly, with a cancel button. The worker is idle, so the job (its
    # row exists) was claimed before the answer, which says so with its ETA rather than "Queued".
    assert result.acknowledged and not result.ephemeral
    answer = harness.first_response()
    assert answer["embeds"][0]["title"] == "Generating"
    assert [field["name"] for field in answer["embeds"][0]["fields"]] == ["ETA", "Tokens"]
    assert "a lighthouse at dusk" in answer["embeds"][0]["description"]
    assert [c["label"] for row in answer["components"] for c in row["components"]] == ["Cancel"]
    queued = result.response
    job = await harness.latest_job(alice.id)
    assert job.message_id == queued.id

    job = await harness.wait_for_job(job.id)
    assert job.status == JobStatus.COMPLETED
    assert [image.seed for image in job.images] == [1234, 1235, 1236, 1237]

    # The same message now holds the 2x2 grid, the parameters and the buttons.
    message = harness.message(queued.id)
    embed = message.embeds[0]
    fields = {field.name: field.value for field in embed.fields}
    assert embed.title == "a lighthouse at dusk"
    assert fields["Seeds"] == "1234, 1235, 1236, 1237"
    assert fields["Size"] == "64x64" and fields["Steps"] == "3"
    assert fields["Sampler"] == "Euler a" and fields["CFG"] == "7" and fields["Model"] == "tiny"
    assert button_labels(message) == ["U1", "U2", "U3", "U4", "Reroll", "V1", "V2", "V3", "V4", "Remix", "Remove"]
    grid = await attachment_image(message)
    assert grid.format == "PNG" and grid.size == (128, 128)

    # Every image is on disk with A1111's infotext in its PNG "parameters" chunk.
    for image in job.images:
        with Image.open(image.path) as saved:
            saved.load()
            info = parse_infotext(saved.info["parameters"])
        assert info["Prompt"] == "a lighthouse at dusk"
        assert info["Seed"] == str(image.seed) and info["Size"] == "64x64"
        assert info["Steps"] == "3" and info["Sampler"] == "Euler a" and info["Model"] == "tiny"


async def test_counts_one_to_three(harness):
    alice = harness.member("alice")
    for count in (1, 2, 3):
        result = await alice.slash(harness.channel, "imagine", prompt="a red fox", count=count, seed=7)
        job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
        assert job.status == JobStatus.COMPLETED and len(job.images) == count
        message = harness.message(result.response.id)
        shown = await attachment_image(message)
        if count == 1:
            assert shown.size == (64, 64)
            assert button_labels(message) == [*SINGLE_IMAGE_BUTTONS[:3], "Remix", "Reroll", *SINGLE_IMAGE_BUTTONS[3:]]
        else:
            assert shown.size[0] * shown.size[1] >= count * 64 * 64
            assert button_labels(message)[:count] == [f"U{i + 1}" for i in range(count)]


async def imagine_then_click(harness, member, label, **options):
    """/imagine of two images, then a click on its `label` button: the job, and the job the
    click queued once both have finished (the click is acknowledged with "Generating")."""
    result = await member.slash(harness.channel, "imagine", count=2, **options)
    first = await harness.wait_for_job((await harness.latest_job()).id)
    clicked = await member.click(harness.message(result.response.id), label=label)
    assert clicked.acknowledged and harness.first_response()["embeds"][0]["title"] == "Generating"
    return first, await harness.wait_for_job((await harness.latest_job()).id)


async def test_reroll_gives_new_seeds(harness):
    first, second = await imagine_then_click(harness, harness.member("alice"), "Reroll", prompt="a castle", seed=100)
    assert second.id != first.id and second.parent_job_id == first.id
    assert second.status == JobStatus.COMPLETED
    assert (second.prompt, second.steps, second.sampler, second.count) == (first.prompt, first.steps, first.sampler, 2)
    assert {image.seed for image in second.images}.isdisjoint({image.seed for image in first.images})


async def test_u2_posts_image_two_and_its_seed_reproduces_it(harness):
    alice = harness.member("alice")
    # At the top of A1111's range: image 2's seed is past it, and typing it must still work.
    result = await alice.slash(harness.channel, "imagine", prompt="a blue bird", count=4, seed=MAX_SEED)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    second = job.images[1]
    assert second.seed == MAX_SEED + 1

    upscale = await alice.click(harness.message(result.response.id), label="U2")
    posted = upscale.response
    assert not posted.ephemeral
    assert button_labels(posted.message) == SINGLE_IMAGE_BUTTONS
    assert {f.name: f.value for f in posted.embeds[0].fields}["Seed"] == str(MAX_SEED + 1)
    alone = np.asarray(await attachment_image(posted.message))
    assert np.array_equal(alone, np.asarray(Image.open(second.path)))

    # Running image 2's seed alone gives image 2 again.
    await alice.slash(harness.channel, "imagine", prompt="a blue bird", count=1, seed=second.seed)
    rerun = await harness.wait_for_job((await harness.latest_job()).id)
    again = np.asarray(Image.open(rerun.images[0].path), dtype=np.int16)
    assert np.abs(again - alone.astype(np.int16)).max() <= 2


async def test_variation_buttons_keep_the_seed_and_vary_the_image(harness):
    parent, job = await imagine_then_click(harness, harness.member("alice"), "V2", prompt="a lighthouse", seed=9)
    assert job.status == JobStatus.COMPLETED
    assert job.kind == "variation" and job.parent_job_id == parent.id and job.parent_image_index == 1
    assert job.count == 4 and job.subseed_strength == harness.settings.discord.variation_strong
    assert [image.seed for image in job.images] == [10] * 4
    assert len({image.subseed for image in job.images}) == 4
    original = np.asarray(Image.open(parent.images[1].path), dtype=np.int16)
    for image in job.images:
        with Image.open(image.path) as saved:
            info = parse_infotext(saved.info["parameters"])
            pixels = np.asarray(saved, dtype=np.int16)
        assert info["Seed"] == "10" and info["Variation seed"] == str(image.subseed)
        assert info["Variation seed strength"] == "0.6"
        assert np.abs(pixels - original).mean() > 0.5


async def test_autocomplete_offers_a1111_samplers_and_models(harness):
    alice = harness.member("alice")
    samplers = await alice.autocomplete(harness.channel, "imagine", "sampler", "dpm++ 2m")
    # A1111 1.10's names first, then the combined names A1111 wrote before 1.9.
    assert [choice["name"] for choice in samplers][:5] == [
        "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2M Uniform", "DPM++ 2M Karras"
    ]
    samplers = await alice.autocomplete(harness.channel, "imagine", "sampler", "dpm++ 2m k")
    assert [choice["name"] for choice in samplers] == ["DPM++ 2M Karras", "DPM++ 2M KL Optimal"]
    models = await alice.autocomplete(harness.channel, "imagine", "model", "")
    assert [choice["name"] for choice in models] == ["tiny"]


async def test_progress_is_shown_while_running(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a slow sunrise", steps=20, count=1)
    job = await harness.latest_job()
    await harness.wait_for_job(job.id)
    # The status message was edited with a step count and a preview image before the result.
    edits = [
        request for request in harness.env.http_requests
        if request.method == "PATCH" and request.json and "Generating · step" in str(request.json)
    ]
    assert edits, "no progress edit was made"
    assert any("attachment://preview.jpg" in str(request.json) for request in edits)
    assert harness.message(result.response.id).embeds[0].title == "a slow sunrise"


async def test_a_short_job_on_an_idle_bot_is_answered_generating_and_edited_once_to_its_result(settings):
    """The answer of a job the idle worker claimed says "Generating", so its start needs no
    edit; the worker's first preview comes an interval into sampling, and the last step's frame
    without a preview is not shown: a short job's message is edited once, to its result, and
    the bot uploads nothing while it runs."""
    from tests.harness import BotHarness

    async with BotHarness(dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, preview_interval_s=3600))) as harness:
        alice = harness.member("alice")
        result = await alice.slash(harness.channel, "imagine", prompt="a quick sketch", count=1)
        job = await harness.wait_for_job((await harness.latest_job()).id)
        assert job.status == JobStatus.COMPLETED
        await harness.settle()
        edits = [
            request.json["embeds"][0]["title"] for request in harness.env.http_requests
            if request.method == "PATCH" and request.json and request.json.get("embeds")
            and f"Job #{job.id} ·" in str(request.json)
        ]
        assert harness.first_response()["embeds"][0]["title"] == "Generating"
        assert edits == ["a quick sketch"]
        assert harness.message(result.response.id).attachments


async def test_what_queues_jobs_is_acknowledged_before_its_checks(harness, monkeypatch):
    """Discord's 3 seconds and the member's wait both count from the click: a command or a
    button that queues jobs answers "thinking…" before it reads the server's policy or touches
    the queue (bot.interactions.acknowledge); other commands answer with their content directly."""
    from bot.policy import gate

    answered_before_check: list[tuple[str, bool]] = []
    real_check = gate.check_access

    async def recording_check(interaction) -> None:  # type: ignore[no-untyped-def]
        name = interaction.command.name if interaction.command else (interaction.data or {}).get("custom_id", "")
        answered_before_check.append((name, interaction.response.is_done()))
        await real_check(interaction)

    monkeypatch.setattr(gate, "check_access", recording_check)
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a lighthouse", count=1, seed=3)
    assert answered_before_check[-1] == ("imagine", True)
    callback = next(r for r in reversed(harness.env.http_requests) if r.path.endswith("/callback"))
    assert callback.json["type"] == DEFERRED_WITH_MESSAGE and not result.ephemeral  # public, as its status
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.message_id == result.response.id  # the status message replaced "thinking…"

    await alice.click(harness.message(job.message_id), label="Vary (subtle)")
    assert answered_before_check[-1] == (f"sd:v:{job.id}:0:subtle", True)
    assert harness.first_response()["embeds"][0]["title"] == "Generating"

    await alice.slash(harness.channel, "queue")
    assert answered_before_check[-1] == ("queue", False)
