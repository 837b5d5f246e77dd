"""/admin merge through the bot and the real worker: a moderator merges two tiny checkpoints of
the [a1111] folder, the merge runs as a job with its progress, the new file holds A1111's
weighted sum, and the new model is listed at once; each bad merge is refused privately with
nothing queued."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bot.config import A1111Settings
from db.models import JobStatus
from inference.common.checkpoints import Family
from inference.common.protocol import JobKind
from inference.single_file_writer import build_tiny_pipeline, write_single_file
from tests.test_bot_admin import admin_member, audit_entries, private_text
from tests.webui_folders import write_checkpoint

CHECKPOINTS = Path("models") / "Stable-diffusion"


@pytest.fixture
def settings(settings, tmp_path):
    """The tiny model, and an A1111 folder with two tiny SD 1.x checkpoints of different
    weights and an SDXL one (headers only: it is refused before it is read)."""
    folder = tmp_path / "webui" / CHECKPOINTS
    for name, seed in (("sd1-a", 1), ("sd1-b", 2)):
        write_single_file(build_tiny_pipeline(Family.SD1, seed=seed), folder / f"{name}.safetensors", Family.SD1)
    write_checkpoint(folder / "XL" / "pony.safetensors", "sdxl")
    tiny = settings.models[0]
    return replace(
        settings, model_entries=(asdict(tiny),),
        a1111=A1111Settings(root=str(tmp_path / "webui"), rescan_minutes=0),
    )


async def test_a_moderator_merges_two_checkpoints_into_a_listed_model(harness, tmp_path):
    mod = admin_member(harness, "mod")
    channel = harness.channel
    await mod.slash(channel, "admin models refresh")
    folder = tmp_path / "webui" / CHECKPOINTS
    offered = await mod.autocomplete(channel, "admin merge", "model_b", "sd1")
    assert [choice["name"] for choice in offered] == ["sd1-a", "sd1-b"]

    answer = await mod.slash(
        channel, "admin merge", model_a="sd1-a", model_b="sd1-b", method="Weighted sum", multiplier=0.25, name="mix"
    )
    assert answer.ephemeral  # a moderator's merge is theirs alone
    job = await harness.latest_job()
    assert job.kind == JobKind.MERGE
    done = await harness.wait_for_job(job.id)
    assert done.status == JobStatus.COMPLETED, done.error

    merged = folder / "mix.safetensors"
    a, b, c = load_file(folder / "sd1-a.safetensors"), load_file(folder / "sd1-b.safetensors"), load_file(merged)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert torch.equal(c[key], (0.75 * a[key] + 0.25 * b[key]).half())
    with safe_open(str(merged), framework="pt") as file:
        recipe = json.loads(file.metadata()["sd_merge_recipe"])
    assert recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.25

    # Listed at once, for members too, and the worker serves it.
    assert harness.bot.settings.model("mix").source == str(merged)
    assert "mix" in [spec.name for spec in harness.dispatcher.worker_config.models]
    member = harness.member("alice")
    assert "mix" in [choice["name"] for choice in await member.autocomplete(channel, "imagine", "model", "mi")]
    await harness.settle()
    shown = answer.response.embeds[0]  # the private status message, edited into the outcome
    assert shown.title == "Merged" and "`mix` is saved and listed" in shown.description
    [queued] = [e for e in await audit_entries(harness) if e.details.startswith("merge queued")]
    assert queued.actor_id == mod.id and "sd1-a x 0.75 + sd1-b x 0.25" in queued.details
    assert harness.expect_user_errors() == []


async def test_bad_merges_are_refused_privately_and_nothing_is_queued(harness, tmp_path):
    mod = admin_member(harness, "mod")
    channel = harness.channel
    await mod.slash(channel, "admin models refresh")
    before = await harness.job_count()
    cases = [
        (dict(model_a="sd1-a", model_b="XL/pony"), "`sd1-a` is SD 1.x and `XL/pony` is SDXL"),
        (dict(model_a="sd1-a", model_b="sd1-b", multiplier=1.5), "between 0 and 1, got 1.5"),
        (dict(model_a="sd1-a", model_b="nope"), "There is no model `nope`"),
        (dict(model_a="sd1-a", model_b="sd1-b", name="sd1-b"), "A model named `sd1-b` exists already"),
        (dict(model_a="sd1-a", model_b="sd1-b", name="../escape"), "cannot be a model's name"),
        (dict(model_a="sd1-a", model_b="sd1-b", method="Add difference"), "needs a model C"),
        (dict(model_a="tiny", model_b="sd1-b"), "`tiny` is not a single .safetensors checkpoint"),
        (dict(model_a="sd1-a", model_b="sd1-b", vae="missing"), "Unknown VAE `missing`"),
    ]
    for options, expected in cases:
        answer = await mod.slash(channel, "admin merge", **options)
        assert expected in private_text(answer), (options, private_text(answer))
    assert len(harness.expect_user_errors()) == len(cases)
    assert await harness.job_count() == before
    assert sorted(p.name for p in (tmp_path / "webui" / CHECKPOINTS).glob("*.safetensors")) == [
        "sd1-a.safetensors", "sd1-b.safetensors",
    ]
