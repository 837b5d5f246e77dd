"""VAE and clip skip through the bot: the /imagine options, inline --vae / --clipskip, /settings,
a model's defaults, "Automatic" picking the VAE named after the checkpoint, and bad input
refused privately before anything is queued."""

from __future__ import annotations

import dataclasses

import pytest
import safetensors.torch
import torch

from bot.config import ConfigError
from db.models import JobStatus
from tests.harness import private_answer
from tests.test_bot_settings import line, select
from tests.test_vae import ldm_vae_state

OTHER = "other-vae.safetensors"


@pytest.fixture
def settings(settings, tmp_path, tiny_model_dir, tiny_pipe):
    """The conftest settings with a VAE folder: one VAE file of other weights, and one named
    after the tiny model's folder (what "Automatic" picks)."""
    from diffusers import AutoencoderKL

    folder = tmp_path / "VAE"
    folder.mkdir()
    torch.manual_seed(7)
    state = ldm_vae_state(AutoencoderKL(**tiny_pipe.vae.config))
    safetensors.torch.save_file(state, folder / OTHER)
    safetensors.torch.save_file(state, folder / f"{tiny_model_dir.name}.vae.safetensors")
    return dataclasses.replace(settings, vae_dirs=(str(folder),))


async def _queued(harness, member, **options):
    await member.slash(harness.channel, "imagine", **{"prompt": "a fox", "count": 1, **options})
    return await harness.latest_job(member.id)


async def test_vae_and_clip_skip_by_option_inline_and_settings(harness, tiny_model_dir):
    alice = harness.member("alice")
    automatic = f"{tiny_model_dir.name}.vae.safetensors"
    names = [c["name"] for c in await alice.autocomplete(harness.channel, "imagine", "vae", "")]
    assert names == ["Automatic", "None", OTHER, automatic]

    # Automatic: the VAE named after the checkpoint; options and inline flags choose others.
    job = await _queued(harness, alice)
    assert (job.vae, job.clip_skip) == (automatic, 1)
    job = await _queued(harness, alice, vae="other-vae", clip_skip=2)
    assert (job.vae, job.clip_skip) == (OTHER, 2)
    job = await _queued(harness, alice, prompt="a fox --vae None --clipskip 3")
    assert (job.prompt, job.vae, job.clip_skip) == ("a fox", "", 3)

    # The member's defaults from /settings; an option still wins.
    message = (await alice.slash(harness.channel, "settings")).response
    assert line(message, "VAE") == "**VAE**: server default · server: Automatic"
    await select(alice, message, "vae", ["None"])
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    await alice.submit_modal(form, {"clip_skip": "2"})
    assert line(message, "VAE") == "**VAE**: **None** · server: Automatic"
    assert line(message, "Clip skip") == "**Clip skip**: **2** · server: the model's"
    job = await _queued(harness, alice)
    assert (job.vae, job.clip_skip) == ("", 2)
    job = await _queued(harness, alice, vae=OTHER.upper(), clip_skip=1)
    assert (job.vae, job.clip_skip) == (OTHER, 1)
    form = await alice.click(message, label="Steps, CFG, size, clip skip, negative prompt…")
    answer = await alice.submit_modal(form, {"clip_skip": "13"})
    assert "clip skip must be between 1 and 12 (1: no skip), got 13." in private_answer(answer)
    harness.expect_user_errors()

    # Bad input: refused privately, nothing queued.
    count = await harness.job_count()
    for options, expected in (
        ({"vae": "nope"}, f"Unknown VAE `nope`. Choose Automatic, None or one of: {OTHER}, {automatic}."),
        ({"prompt": "a fox --vae nope"}, "Unknown VAE `nope`"),
        ({"prompt": "a fox --clipskip two"}, "`--clipskip` takes a whole number, got `two`."),
        ({"prompt": "a fox --clipskip 0"}, "clip skip must be between 1 and 12 (1: no skip), got 0."),
        ({"prompt": "a fox --clipskip 2", "clip_skip": 3}, "give it one way only"),
    ):
        answer = await alice.slash(harness.channel, "imagine", **{"prompt": "a fox", **options})
        assert expected in private_answer(answer), private_answer(answer)
        harness.expect_user_errors()
    assert await harness.job_count() == count


async def test_a_job_runs_with_its_vae_and_the_infotext_says_so(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="a fox --seed 3", count=1, vae=OTHER, clip_skip=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    infotext = job.images[0].infotext
    assert f"VAE: {OTHER}, " in infotext and ", Clip skip: 2, " in infotext
    # A reroll keeps them.
    from bot.jobs.job_rows import reroll_of

    again = reroll_of(job)
    assert (again.vae, again.clip_skip) == (OTHER, 2)


def test_a_model_s_vae_and_clip_skip_are_its_jobs_defaults_and_checked_at_start(settings):
    from bot.jobs.params import GenerationOptions, resolve_parameters

    model = dataclasses.replace(settings.models[0], vae="None", clip_skip=2)
    configured = dataclasses.replace(settings, models=(model,))
    params = resolve_parameters(GenerationOptions(prompt="a fox"), configured)
    assert (params.vae, params.clip_skip) == ("", 2)
    with pytest.raises(ConfigError, match="model 'tiny': vae 'missing.pt' is not a file in vae_dirs"):
        dataclasses.replace(settings, models=(dataclasses.replace(model, vae="missing.pt"),))
    with pytest.raises(ConfigError, match="models 'tiny': clip_skip must be 1 to 12"):
        dataclasses.replace(settings, models=(dataclasses.replace(model, clip_skip=13),))


def test_the_xy_plot_has_vae_and_clip_skip_axes(settings, tiny_model_dir):
    from bot.errors import InvalidOption
    from bot.jobs.params import GenerationOptions
    from bot.jobs.job_rows import plot_options
    from bot.jobs.plot_params import xy_plot_parameters

    options = GenerationOptions(prompt="a fox")
    params = xy_plot_parameters(options, settings, None, "VAE", "None, other-vae, Automatic", "Clip skip", "1-2")
    plot = plot_options(params.plot_json or "")
    automatic = f"{tiny_model_dir.name}.vae.safetensors"
    assert plot.x_labels == ("None", OTHER, automatic) and plot.y_labels == ("1", "2")
    assert [(cell.vae, cell.clip_skip) for cell in plot.cells] == [
        ("", 1), (OTHER, 1), (automatic, 1), ("", 2), (OTHER, 2), (automatic, 2),
    ]
    with pytest.raises(InvalidOption, match="Unknown VAE `nope`"):
        xy_plot_parameters(options, settings, None, "VAE", "nope")
    with pytest.raises(InvalidOption, match="Clip skip values must be between 1 and 12, got 13"):
        xy_plot_parameters(options, settings, None, "Clip skip", "2, 13")


def test_pnginfo_rerun_takes_the_vae_and_clip_skip_of_the_infotext(settings):
    from bot.image_infotext import rerun_options

    params = {"Prompt": "a fox", "Negative prompt": "", "VAE": OTHER, "Clip skip": "2"}
    rerun = rerun_options(params, settings, [])
    assert (rerun.options.vae, rerun.options.clip_skip, rerun.notes) == (OTHER, 2, [])
    rerun = rerun_options({**params, "VAE": "kl-f8-anime2.ckpt"}, settings, [])
    assert (rerun.options.vae, rerun.notes) == ("None", ["VAE `kl-f8-anime2.ckpt` is not on this server; the model's own was used."])
