"""/settings: a member's defaults, changed with selects, a form and buttons, applied to every
new job (an option given still wins), checked as the commands check them, kept across restarts,
and falling back to the server's default once they are no longer valid."""

from __future__ import annotations

import dataclasses

import discord
import pytest
import torch

from bot.ui.settings_panel import SettingsButton
from db.models import JobStatus, User
from inference.common.protocol import JobKind
from tests.harness import BotHarness, private_answer
from tests.test_inference_upscale import MODEL, official_rrdbnet


def text_of(message) -> str:
    """The text of a Components V2 message (its TextDisplays)."""
    found = []

    def walk(components):
        for component in components:
            if component.get("type") == 10:
                found.append(component["content"])
            walk(component.get("components") or [])

    walk(message.components)
    return "\n".join(found)


def line(message, label: str) -> str:
    return next(row for row in text_of(message).splitlines() if row.startswith(f"**{label}**"))


def refused(result, expected: str) -> None:
    assert expected in (text := private_answer(result)), text


async def queued(harness, member, **options):
    """Run /imagine and return its job row as queued (its parameters are final there)."""
    await member.slash(harness.channel, "imagine", **options)
    return await harness.latest_job(member.id)


async def select(member, message, what: str, values: list[str]):
    chosen = await member.select(message, values, custom_id=f"sd:set:{member.id}:{what}")
    assert chosen.acknowledged and not chosen.ephemeral
    return chosen


@pytest.fixture
def settings_with_choices(settings, tmp_path, tiny_model_dir):
    """Two models (the second with a larger base size) and a real upscaler model file."""
    folder = tmp_path / "upscalers"
    folder.mkdir(exist_ok=True)
    torch.save({"params_ema": official_rrdbnet()}, folder / f"{MODEL}.pth")
    second = dataclasses.replace(settings.models[0], name="tiny-wide", base_size=96)
    images = dataclasses.replace(settings.images, upscale_tile=32, upscale_tile_overlap=16)
    return dataclasses.replace(settings, models=(*settings.models, second), images=images)


async def test_settings_apply_to_new_jobs_and_survive_a_restart(settings_with_choices, tmp_path):
    async with BotHarness(settings_with_choices) as harness:
        await _settings_flow(harness, tmp_path)


async def _settings_flow(harness, tmp_path):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "style add", name="Ink", prompt="{prompt}, ink drawing", negative_prompt="color")
    await alice.slash(harness.channel, "style add", name="Oil", prompt="{prompt}, oil painting")

    shown = await alice.slash(harness.channel, "settings")
    assert shown.ephemeral
    message = shown.response
    assert line(message, "Model") == "**Model**: server default · server: tiny"
    assert line(message, "Private results") == "**Private results**: **off** · server: off"

    await select(alice, message, "model", ["tiny-wide"])
    await select(alice, message, "sampler", ["DPM++ 2M Karras"])
    await select(alice, message, "size", ["3:2"])
    await select(alice, message, "upscaler", [MODEL])
    await select(alice, message, "style", ["Ink"])
    await select(alice, message, "rng", ["NV"])
    ensd_form = await alice.click(message, label="ENSD…")
    refused(await alice.submit_modal(ensd_form, {"ensd": "-5"}), "ENSD (eta noise seed delta) must be between 0 and 4294967295, got -5.")
    ensd_form = await alice.click(message, label="ENSD…")
    await alice.submit_modal(ensd_form, {"ensd": "31337"})
    assert line(message, "RNG source") == "**RNG source**: **NV** · server: GPU"
    assert line(message, "ENSD") == "**ENSD**: **31337** · server: 0"
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    assert form.modal is not None
    await alice.submit_modal(form, {"steps": "7", "cfg": "4,5", "size": "", "negative_prompt": "blurry"})
    assert line(message, "Model") == "**Model**: **tiny-wide** · server: tiny"
    assert line(message, "Size").startswith("**Size**: **3:2 (128x88)**")
    assert line(message, "Steps") == "**Steps**: **7** · server: 3"
    assert line(message, "CFG") == "**CFG**: **4.5** · server: 7"
    assert line(message, "Styles") == "**Styles**: **Ink** · server: none"

    # Values past the server's limits are refused in the commands' words; nothing is saved.
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    refused(await alice.submit_modal(form, {"steps": "99"}), "steps must be between 1 and 60, got 99.")
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    refused(await alice.submit_modal(form, {"cfg": "31"}), "cfg must be between 1 and 30, got 31.")
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    refused(await alice.submit_modal(form, {"size": "100x100"}), "width must be a multiple of 8, got 100.")
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    refused(await alice.submit_modal(form, {"steps": "many"}), "steps must be a whole number, got `many`.")
    assert line(message, "Steps") == "**Steps**: **7** · server: 3"
    harness.expect_user_errors()

    # The next job has every default; styles apply to both prompts.
    job = await queued(harness, alice, prompt="a cat", count=1)
    assert (job.model, job.sampler, job.schedule_type, job.steps, job.cfg_scale) == ("tiny-wide", "DPM++ 2M", "Karras", 7, 4.5)
    assert (job.rng, job.eta_noise_seed_delta) == ("NV", 31337)
    assert (job.width, job.height) == (128, 88)  # 3:2 on 96 px, within the 128 px limit
    assert job.prompt == "a cat, ink drawing" and job.negative_prompt == "blurry, color"
    # Options given still win, the style option included (it replaces the default style).
    explicit = await queued(
        harness, alice, prompt="a dog", count=1, model="tiny", sampler="Euler", steps=3, cfg=6.0, aspect="1:1",
        negative_prompt="dark", style="Oil",
    )
    assert (explicit.model, explicit.sampler, explicit.schedule_type, explicit.steps, explicit.cfg_scale) == (
        "tiny", "Euler", "Automatic", 3, 6.0
    )
    assert (explicit.width, explicit.height) == (64, 64)
    assert explicit.prompt == "a dog, oil painting" and explicit.negative_prompt == "dark"
    # An inline --ar wins over the default aspect.
    inline = await queued(harness, alice, prompt="a bird --ar 2:3", count=1)
    assert (inline.width, inline.height) == (88, 128)

    # The Upscale buttons use the member's upscaler.
    done = await harness.wait_for_job(job.id)
    assert done.status == JobStatus.COMPLETED, done.error
    await alice.click(harness.message(done.message_id), label="Upscale 2x")
    upscaled = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert upscaled.kind == JobKind.UPSCALE and upscaled.upscaler == MODEL
    assert upscaled.status == JobStatus.COMPLETED, upscaled.error
    await harness.wait_for_job(inline.id)

    # Someone else cannot change them (the message is private; a copy of its button stands in).
    bob = harness.member("bob")
    view = discord.ui.View(timeout=None)
    view.add_item(SettingsButton(alice.id, "reset"))
    posted = await harness.bot.get_channel(harness.channel.id).send("alice's settings", view=view)
    await harness.settle()
    refused(await bob.click(posted, label="Reset all"), "someone else's settings")
    harness.expect_user_errors()

    # A restart keeps them; a stale default (model, upscaler, style gone, limits lowered) falls
    # back to the server's default, and /settings says so.
    harness.settings = dataclasses.replace(
        harness.settings,
        models=harness.settings.models[:1],
        limits=dataclasses.replace(harness.settings.limits, max_steps=5),
    )
    await harness.restart()
    (tmp_path / "upscalers" / f"{MODEL}.pth").unlink()
    await alice.slash(harness.channel, "style delete", name="Ink")
    message = (await alice.slash(harness.channel, "settings")).response
    assert "~~tiny-wide~~ unavailable (Unknown model `tiny-wide`" in line(message, "Model")
    assert "~~7~~ unavailable (steps must be between 1 and 5, got 7.)" in line(message, "Steps")
    assert "~~Ink~~ unavailable" in line(message, "Styles")
    assert f"~~{MODEL}~~ unavailable" in line(message, "Upscaler")
    assert line(message, "Sampler") == "**Sampler**: **DPM++ 2M Karras** · server: Euler a"

    job = await queued(harness, alice, prompt="a fox", count=1)
    assert (job.model, job.sampler, job.schedule_type, job.steps, job.cfg_scale) == ("tiny", "DPM++ 2M", "Karras", 3, 4.5)
    assert (job.width, job.height) == (96, 64)  # 3:2 on the tiny model's 64 px
    assert job.prompt == "a fox" and job.negative_prompt == "blurry"
    done = await harness.wait_for_job(job.id)
    await alice.click(harness.message(done.message_id), label="Upscale 2x")
    upscaled = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert upscaled.upscaler == "Lanczos" and upscaled.status == JobStatus.COMPLETED

    # Reset all: the server's defaults again.
    await alice.click(message, label="Reset all")
    assert line(message, "Model") == "**Model**: server default · server: tiny"
    async with harness.db.session() as session:
        user = await session.get(User, alice.id)
        assert (user.default_model, user.default_steps, user.default_aspect, user.default_style) == (None,) * 4
    job = await queued(harness, alice, prompt="a hen", count=1)
    assert (job.sampler, job.steps, job.width, job.height, job.negative_prompt) == ("Euler a", 3, 64, 64, "")
    await harness.wait_for_job(job.id)
    assert harness.expect_user_errors() == []
