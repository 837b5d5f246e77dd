"""/admin models through the bot: a moderator hides a model, keeps it to age-restricted
channels or to some roles, and refreshes the list after files were added or removed."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bot.config import A1111Settings, ModelSettings
from bot.image_infotext import rerun_options
from inference.common.infotext import PROMPT_KEY
from tests.test_bot_admin import admin_member, private_text
from tests.test_bot_policy import queued, refused
from tests.webui_folders import write_checkpoint

CHECKPOINTS = Path("models") / "Stable-diffusion"


@pytest.fixture
def settings(settings, tmp_path):
    """The tiny model twice ("night" is the one moderators restrict), and an A1111 folder
    that holds no checkpoint yet: the tests add files to it and refresh."""
    tiny = settings.models[0]
    night = replace(tiny, name="night", description="the same tiny model")
    (tmp_path / "webui" / CHECKPOINTS).mkdir(parents=True)
    entries = tuple(asdict(m) for m in (tiny, night))  # as the config file gives them
    return replace(
        settings, models=(tiny, night), model_entries=entries,
        a1111=A1111Settings(root=str(tmp_path / "webui"), rescan_minutes=0),
    )


async def offered(harness, member, channel) -> list[str]:
    return [choice["name"] for choice in await member.autocomplete(channel, "imagine", "model", "")]


async def test_moderators_hide_models_or_keep_them_to_channels_and_roles(harness):
    mod = admin_member(harness, "mod")
    alice = harness.member("alice")
    patrons = harness.guild.create_role("Patrons")
    patron = harness.guild.add_member(harness.env.create_user("pat"), roles=[patrons])
    channel = harness.channel
    after_dark = await harness.age_restricted_channel("after-dark")
    assert await offered(harness, alice, channel) == ["tiny", "night"]

    answer = await mod.slash(channel, "admin models rule", model="night", hidden=True)
    assert private_text(answer) == "`night` here: hidden."
    assert await offered(harness, alice, channel) == ["tiny"]
    assert await offered(harness, mod, channel) == ["tiny", "night"]  # moderators still see it
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", model="night", count=1),
            "The model `night` is not available on this server.")

    await mod.slash(channel, "admin models rule", model="night", hidden=False, age_restricted=True)
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", model="night", count=1),
            "may only be used in age-restricted channels here")
    assert await offered(harness, alice, after_dark) == ["tiny", "night"]
    await queued(harness, await alice.slash(after_dark, "imagine", prompt="a lighthouse", model="night", count=1))

    answer = await mod.slash(channel, "admin models rule", model="night", age_restricted=False, add_role=patrons)
    assert private_text(answer) == f"`night` here: roles <@&{patrons.id}>."
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", model="night", count=1),
            f"reserved to members with one of these roles here: <@&{patrons.id}>")
    await queued(harness, await patron.slash(channel, "imagine", prompt="a lighthouse", model="night", count=1))

    listing = private_text(await mod.slash(channel, "admin models list"))
    assert listing == f"`tiny` (default): everyone\n`night`: roles <@&{patrons.id}>"

    # Back to the defaults: the rule's row is gone, and everyone may use it again.
    answer = await mod.slash(channel, "admin models rule", model="night", remove_role=patrons)
    assert private_text(answer) == "`night` here: everyone."
    assert await offered(harness, alice, channel) == ["tiny", "night"]

    assert "Give hidden, age_restricted" in private_text(await mod.slash(channel, "admin models rule", model="night"))
    assert "There is no model `nope`" in private_text(await mod.slash(channel, "admin models rule", model="nope", hidden=True))
    assert len(harness.expect_user_errors()) == 5


async def test_refresh_serves_new_files_and_drops_removed_ones(harness, tmp_path):
    mod = admin_member(harness, "mod")
    alice = harness.member("alice")
    channel = harness.channel
    new_file = write_checkpoint(tmp_path / "webui" / CHECKPOINTS / "SDXL" / "fresh.safetensors", "sdxl")
    write_checkpoint(tmp_path / "webui" / CHECKPOINTS / "flux.safetensors", "flux")

    answer = await mod.slash(channel, "admin models refresh")
    assert private_text(answer) == "Models refreshed. added: SDXL/fresh. 1 file(s) skipped (`sdbot models` says why)."
    assert await offered(harness, alice, channel) == ["tiny", "night", "SDXL/fresh"]
    fresh = harness.bot.settings.model("SDXL/fresh")
    assert (fresh.family, fresh.base_size, fresh.source) == ("sdxl", 1024, str(new_file))
    # The worker is told (and a restarted worker starts with the new list).
    assert [spec.name for spec in harness.dispatcher.worker_config.models] == ["tiny", "night", "SDXL/fresh"]

    new_file.unlink()
    answer = await mod.slash(channel, "admin models refresh")
    assert private_text(answer).startswith("Models refreshed. removed: SDXL/fresh.")
    assert await offered(harness, alice, channel) == ["tiny", "night"]
    refused(await alice.slash(channel, "imagine", prompt="a lighthouse", model="SDXL/fresh", count=1), "SDXL/fresh")
    assert len(harness.expect_user_errors()) == 1


def test_pnginfo_finds_a_checkpoint_by_hash_or_file_name(settings):
    pony = ModelSettings(name="SDXL/pony", source="/webui/models/Stable-diffusion/SDXL/ponyV6.safetensors", base_size=1024)
    settings = replace(settings, models=(*settings.models, pony))
    by_hash = {"0123456789": "SDXL/pony"}.get
    params = {PROMPT_KEY: "a fox", "Model": "renamed-on-civitai", "Model hash": "0123456789"}
    found = rerun_options(params, settings, [], by_hash)
    assert found.options.model == "SDXL/pony" and not found.notes
    # A1111 writes the file's name without its subfolder: found by it when the hash is unknown.
    found = rerun_options({PROMPT_KEY: "a fox", "Model": "ponyV6", "Model hash": "ffffffffff"}, settings, [], by_hash)
    assert found.options.model == "SDXL/pony"
    missing = rerun_options({PROMPT_KEY: "a fox", "Model": "other", "Model hash": "ffffffffff"}, settings, [], by_hash)
    assert missing.options.model is None and "Model `other` is not on this server" in missing.notes[0]
