"""The prompt tools through the bot: inline parameters, permutations (with a confirmation when
there are many), styles, token counts and the warning of a model that reads one chunk.

The bot tests share one harness each (starting one costs seconds), so each covers a group of
cases; the pure functions are tested directly first.
"""

from __future__ import annotations

import dataclasses

import discord
import pytest

from bot.errors import InvalidOption
from bot.jobs.params import GenerationOptions, size_for_aspect
from bot.prompts.inline import apply_inline, parse_inline
from bot.prompts.permutations import expand_permutations, permutation_count
from bot.prompts.style_store import clean_name, parse_styles_csv
from bot.prompts.styles import apply_styles
from bot.ui import confirm
from db.models import JobStatus
from tests.harness import private_answer
from tests.test_bot_inputs import noise_png


@pytest.fixture
def settings(settings):
    """One-chunk prompts for the tiny model; a small permutation budget."""
    return dataclasses.replace(
        settings,
        models=(dataclasses.replace(settings.models[0], long_prompts=False),),
        prompts=dataclasses.replace(settings.prompts, confirm_permutations_above=2, max_permutations=4),
    )


# --- the pure parts ------------------------------------------------------------------------


def test_permutations_follow_midjourney():
    assert expand_permutations("a {red, blue} {car, bike}", 16) == ["a red car", "a red bike", "a blue car", "a blue bike"]
    assert expand_permutations("a {bird, {red, blue} car}", 16) == ["a bird", "a red car", "a blue car"]
    assert expand_permutations("{, big} dog", 16) == [" dog", "big dog"]
    assert expand_permutations("x {a\\, b, c} \\{y\\} \\(z\\)", 16) == ["x a, b {y} \\(z\\)", "x c {y} \\(z\\)"]
    assert expand_permutations("cat --ar {1:1, 2:3}", 16) == ["cat --ar 1:1", "cat --ar 2:3"]
    assert permutation_count("{a,b,c} " * 30) == 3**30  # counted, never expanded
    assert expand_permutations("{" * 50 + "a, b" + "}" * 50, 16) == ["a", "b"]
    for text, message in (
        ("a {b", "never closed"), ("a } b", "with no `{`"), ("{a,b} {c,d,e}", "6 permutations"),
        ("{" * 700 + "a" + "}" * 700, "more than 50 deep"),  # a RecursionError once
    ):
        with pytest.raises(InvalidOption, match=message):
            expand_permutations(text, 4)


def test_inline_parameters_parse_and_merge():
    inline = parse_inline("a castle --ar 3:2 --no people, text --seed 5 --sampler DPM++ 2M Karras --tile")
    assert (inline.prompt, inline.aspect, inline.no, inline.seed) == ("a castle", "3:2", ("people, text",), 5)
    assert (inline.sampler, inline.tiling) == ("DPM++ 2M Karras", True)
    assert parse_inline("a dash —ar 2:1").aspect == "2:1"  # a phone's autocorrected "--"
    assert parse_inline("a -- b – c").prompt == "a -- b – c"
    merged = apply_inline(GenerationOptions(prompt="x", seed=5, sampler="dpm++ 2m karras"), inline)
    assert (merged.prompt, merged.seed, merged.aspect, merged.tiling) == ("a castle", 5, "3:2", True)
    remixed = apply_inline(GenerationOptions(prompt="x", width=64, height=64, seed=1), inline, override=True)
    assert (remixed.seed, remixed.aspect, remixed.width, remixed.height) == (5, "3:2", None, None)
    for text, message in (
        ("x --v 6", "Unknown parameter `--v`"),
        ("x --seed 5 on a mat", "`--seed` takes a whole number, got `5 on a mat`"),
        ("x --tile please", "`--tile` takes no value"),
        ("x --cfg high", "`--cfg` takes a number"),
        ("x --ar wide", "`--ar` takes a ratio"),
        ("x --steps", "`--steps` needs a value"),
        ("x --seed 1 --seed 2", "given twice"),
    ):
        with pytest.raises(InvalidOption, match=message):
            parse_inline(text)
    with pytest.raises(InvalidOption, match="the seed option is `7`"):
        apply_inline(GenerationOptions(prompt="x", seed=7), parse_inline("x --seed 5"))
    assert size_for_aspect("2:1", 512, 1024) == (1024, 512) and size_for_aspect("7:5", 512, 1024) == (720, 512)


def test_styles_and_csv_follow_a1111():
    class Style:
        def __init__(self, prompt: str, negative_prompt: str = "") -> None:
            self.prompt, self.negative_prompt = prompt, negative_prompt

    styles = [Style("cinematic shot of {prompt}, film grain", "blurry"), Style("by monet", "{prompt}, lowres")]
    assert apply_styles("a cat", "text", styles) == ("cinematic shot of a cat, film grain, by monet", "text, blurry, lowres")
    rows, skipped = parse_styles_csv(
        b'\xef\xbb\xbfname,prompt,negative_prompt\n"Film, old","grainy {prompt}",\n'
        b'Noir,"black and white, {prompt}","color"\n,,\n'
    )
    assert rows == [("Noir", "black and white, {prompt}", "color")]
    assert skipped == ["row 2: A style name cannot hold a comma (several styles are given comma-separated): `Film, old`."]
    with pytest.raises(InvalidOption, match="not an A1111 styles.csv"):
        parse_styles_csv(b"title,text\na,b\n")
    # A name of zero-width characters alone was saved, as "****" in the answer and the list.
    for invisible in ("\u200b", " \u2060\u200b "):
        with pytest.raises(InvalidOption, match="A style needs a name."):
            clean_name(invisible)


# --- through the bot -------------------------------------------------------------------------


async def refused(harness, result, expected: str) -> None:
    assert expected in (text := private_answer(result)), text
    harness.expect_user_errors()


def fields_of(embed: dict | discord.Embed) -> dict[str, str]:
    if isinstance(embed, discord.Embed):
        return {field.name: field.value for field in embed.fields}
    return {field["name"]: field["value"] for field in embed.get("fields", [])}


QUICK = {"count": 1, "steps": 1}


async def test_inline_parameters_fill_the_job_and_bad_ones_queue_nothing(harness):
    alice = harness.member("alice")
    # Refusals first: each is private, and nothing is queued.
    cases = [
        ({"prompt": "a cat --v 6"}, "Unknown parameter `--v`"),
        ({"prompt": "a cat --seed 5 on a mat"}, "`--seed` takes a whole number"),
        ({"prompt": "a cat --seed 5", "seed": 6}, "The prompt says `--seed 5` but the seed option is `6`"),
        ({"prompt": "a cat --ar 2:1", "width": 64}, "Give either an aspect ratio or a width/height, not both."),
        ({"prompt": "a cat --ar 16:1"}, "Aspect ratio 16:1 makes"),
        ({"prompt": "a cat --steps 99"}, "steps must be between 1 and 60, got 99."),
        ({"prompt": "a cat --model nope"}, "Unknown model `nope`"),
        ({"prompt": "a cat --sampler Euler z"}, "Unknown sampler `Euler z`"),
        ({"prompt": "--ar 2:1 --tile"}, "The prompt is empty"),
        ({"prompt": "a {red, blue car"}, "never closed"),
        ({"prompt": "a {red, blue, green} {car, bike}"}, "This prompt makes 6 permutations"),
        ({"prompt": "a cat <lora:nope:0.8>"}, "Unknown LoRA `nope`"),
        ({"prompt": "a cat", "style": "nope"}, "You have no style named `nope`"),
    ]
    for options, expected in cases:
        await refused(harness, await alice.slash(harness.channel, "imagine", **options), expected)
    assert await harness.job_count() == 0

    prompt = "a lighthouse --ar 2:1 --no text, watermark --seed 42 --steps 2 --cfg 5.5 --sampler DPM++ 2M Karras --tile --model tiny"
    result = await alice.slash(harness.channel, "imagine", prompt=prompt, negative_prompt="blurry", count=1, seed=42)
    assert result.acknowledged and not result.ephemeral
    job = await harness.latest_job(alice.id)
    assert (job.prompt, job.negative_prompt) == ("a lighthouse", "blurry, text, watermark")
    assert (job.width, job.height, job.seed, job.steps, job.cfg_scale) == (128, 64, 42, 2, 5.5)
    assert (job.sampler, job.schedule_type, job.tiling, job.model) == ("DPM++ 2M", "Karras", True, "tiny")
    assert fields_of(harness.first_response()["embeds"][0])["Tokens"] == "2 (1 chunk) · negative 6 (1 chunk)"

    # Remix applies inline parameters of the edited prompt: the rest stays the job's.
    parent = await harness.wait_for_job(job.id)
    assert parent.status == JobStatus.COMPLETED, parent.error
    shown = await alice.click(harness.message(result.response.id), label="Remix")
    await alice.submit_modal(shown, {"prompt": "a windmill --seed 7 --ar 1:2", "negative_prompt": "fog"})
    remix = await harness.latest_job(alice.id)
    assert (remix.prompt, remix.negative_prompt, remix.parent_job_id) == ("a windmill", "fog", parent.id)
    assert (remix.seed, remix.width, remix.height, remix.steps, remix.tiling) == (7, 64, 128, 2, True)
    await harness.wait_for_job(remix.id)


async def test_permutations_queue_one_job_each_and_ask_first_when_many(harness):
    alice = harness.member("alice")
    before = await harness.job_count()
    result = await alice.slash(harness.channel, "imagine", prompt="a {red, blue} car", **QUICK)
    assert not result.ephemeral and len(result.followups) == 1 and not result.followups[0].ephemeral
    assert await harness.job_count() == before + 2
    last = await harness.latest_job(alice.id)
    jobs = [await harness.queue.get(job_id) for job_id in (last.id - 1, last.id)]
    assert [j.prompt for j in jobs] == ["a red car", "a blue car"]
    assert jobs[0].seed == jobs[1].seed  # permutations share a seed: only the prompt differs
    assert {j.message_id for j in jobs} == {result.response.id, result.followups[0].id}
    for job in jobs:
        finished = await harness.wait_for_job(job.id)
        assert finished.status == JobStatus.COMPLETED, finished.error
        # Each result lands in its own status message (the followup's through the webhook).
        assert harness.message(finished.message_id).embeds[0].title == finished.prompt

    # More than confirm_permutations_above: a private question; Cancel queues nothing.
    count = await harness.job_count()
    asked = await alice.slash(harness.channel, "imagine", prompt="a {red, green, blue} bird", **QUICK)
    question = private_answer(asked)  # the "thinking…" that acknowledged the command is gone
    assert "This prompt makes **3 jobs**" in question and "1. a red bird" in question
    canceled = await alice.click(asked.followups[-1].message, label="Cancel")
    assert "Canceled: nothing was queued." in canceled.response.content
    assert await harness.job_count() == count

    # Confirm queues all three, each with its own public status message.
    asked = await alice.slash(harness.channel, "imagine", prompt="a {red, green, blue} bird", **QUICK)
    confirmed = await alice.click(asked.followups[-1].message, label="Confirm: queue 3 jobs")
    assert "Queuing 3 jobs." in confirmed.response.content
    assert len(confirmed.followups) == 3 and not any(f.ephemeral for f in confirmed.followups)
    assert await harness.job_count() == count + 3
    last = await harness.latest_job(alice.id)
    assert last.prompt == "a blue bird" and last.message_id == confirmed.followups[-1].id
    for job_id in range(last.id - 2, last.id + 1):
        assert (await harness.wait_for_job(job_id)).status == JobStatus.COMPLETED

    # An image command reads its upload under the same public "thinking…": the question still
    # comes privately, and Confirm queues an img2img job per prompt.
    asked = await alice.slash(
        harness.channel, "img2img", image=("photo.png", noise_png(64, 64)), prompt="{oil, ink, chalk} --no text",
        strength=0.5, **QUICK,
    )
    assert asked.response is None and asked.followups[-1].ephemeral
    confirmed = await alice.click(asked.followups[-1].message, label="Confirm: queue 3 jobs")
    assert len(confirmed.followups) == 3 and await harness.job_count() == count + 6
    last = await harness.latest_job(alice.id)
    assert (last.kind, last.prompt, last.negative_prompt, last.denoising_strength) == ("img2img", "chalk", "text", 0.5)
    for job_id in range(last.id - 2, last.id + 1):
        assert (await harness.wait_for_job(job_id)).status == JobStatus.COMPLETED

    # The jobs waiting for a yes live in memory: after a restart the question says it expired.
    asked = await alice.slash(harness.channel, "imagine", prompt="a {red, green, blue} boat", **QUICK)
    confirm._pending.clear()
    late = await alice.click(asked.followups[-1].message, label="Confirm: queue 3 jobs")
    assert "This question has expired" in late.response.content
    assert await harness.job_count() == count + 6

    # A model that reads one chunk: a longer prompt is queued with a private warning.
    long = ", ".join(["a very detailed castle on a hill"] * 12)
    result = await alice.slash(harness.channel, "imagine", prompt=long, **QUICK)
    assert fields_of(harness.first_response()["embeds"][0])["Tokens"] == "98 (2 chunks)"
    [warning] = result.followups
    assert warning.ephemeral and "reads only the first 75 tokens" in warning.content
    assert "has 98 tokens, so these words are cut: `a very detailed castle on a hill, a very" in warning.content
    await harness.wait_for_job((await harness.latest_job(alice.id)).id)

    # Confirm pressed twice at once (a double click): queued once, the second press told so
    # (it failed with a KeyError once the first had taken the jobs).
    count = await harness.job_count()
    asked = await alice.slash(harness.channel, "imagine", prompt="a {red, green, blue} kite", **QUICK)
    with harness.arriving_together():
        presses = [await alice.click(asked.followups[-1].message, label="Confirm: queue 3 jobs") for _ in range(2)]
    await harness.settle()
    assert await harness.job_count() == count + 3
    assert "This question was already answered." in [m.content for p in presses for m in [p.response, *p.followups] if m]
    for job_id in range(count + 1, count + 4):
        assert (await harness.wait_for_job(job_id)).status == JobStatus.COMPLETED


async def test_styles_personal_and_server(harness):
    alice = harness.member("alice")
    admins = harness.guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    root = harness.guild.add_member(harness.env.create_user("root"), roles=[admins])

    added = await alice.slash(
        harness.channel, "style add", name="Cinematic", prompt="cinematic shot of {prompt}, film grain",
        negative_prompt="cartoon",
    )
    assert "Saved personal style **Cinematic**" in private_answer(added)
    await refused(harness, await alice.slash(harness.channel, "style add", name="cinematic", prompt="x"), "already a personal style")
    await refused(harness, await alice.slash(harness.channel, "style add", name="a, b", prompt="x"), "cannot hold a comma")
    # Server styles need Manage Server, checked by the bot.
    await refused(
        harness, await alice.slash(harness.channel, "style add", name="House", prompt="x", server=True),
        "Only members with the Manage Server permission",
    )
    csv_file = ("styles.csv", b"name,prompt,negative_prompt\nHouse,by the house painter,lowres\nNoir,noir {prompt},color\n")
    await refused(harness, await alice.slash(harness.channel, "style import", file=csv_file), "Manage Server")
    imported = await root.slash(harness.channel, "style import", file=csv_file)
    assert "Imported 2 server styles" in private_answer(imported)
    await refused(harness, await root.slash(harness.channel, "style import", file=("x.csv", b"a,b\n1,2\n")), "not an A1111 styles.csv")
    again = await root.slash(harness.channel, "style add", name="Gold", prompt="golden hour", server=True)
    assert "Saved server style **Gold**" in again.response.content

    listed = await alice.slash(harness.channel, "style list")
    text = listed.response.embeds[0].description
    assert listed.ephemeral and "**Cinematic**" in text and "**House**" in text and "**Noir**" in text
    choices = await alice.autocomplete(harness.channel, "imagine", "style", "cinematic, ")
    assert [c["name"] for c in choices] == ["Cinematic, Gold", "Cinematic, House", "Cinematic, Noir"]

    # Applied in order: {prompt} replaced, else appended after a comma; the same for negatives.
    await alice.slash(harness.channel, "imagine", prompt="a cat --no text", style="cinematic, House", **QUICK)
    job = await harness.latest_job(alice.id)
    assert job.prompt == "cinematic shot of a cat, film grain, by the house painter"
    assert job.negative_prompt == "text, cartoon, lowres"

    await refused(harness, await alice.slash(harness.channel, "style delete", name="Noir", server=True), "Manage Server")
    deleted = await root.slash(harness.channel, "style delete", name="noir", server=True)
    assert "Deleted server style `Noir`" in deleted.response.content
    await alice.slash(harness.channel, "style delete", name="Cinematic")
    listed = await alice.slash(harness.channel, "style list")
    assert "Cinematic" not in listed.response.embeds[0].description and "Noir" not in listed.response.embeds[0].description
    await harness.wait_for_job(job.id)
