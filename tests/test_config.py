"""Settings: the example file documents every setting; files and environment override."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_the_example_file_is_the_defaults():
    assert load_settings(EXAMPLE, environ={}) == Settings()


def test_the_example_file_documents_every_setting():
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for field in dataclasses.fields(Settings):
        if field.metadata.get("internal"):
            continue  # not a setting: what load_settings derives from the others
        value = getattr(Settings(), field.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                assert f"{sub.name} =" in text, f"[{field.name}] {sub.name} is not documented"
        else:
            assert field.name in data, f"{field.name} is not documented"


def test_files_and_environment_override(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[limits]\nmax_steps = 30\n[discord]\ndev_guild_id = 7\n', encoding="utf-8")
    settings = load_settings(config, environ={"SDBOT__LIMITS__MAX_STEPS": "20", "DISCORD_TOKEN": "s3cret"})
    assert settings.limits.max_steps == 20 and settings.discord.dev_guild_id == 7
    assert settings.discord.token == "s3cret" and "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nmax_stepz = 3\n", "unknown setting(s) limits.max_stepz"),
        ("[limits]\nmax_steps = 'many'\n", "limits.max_steps must be int"),
        ('default_model = "nope"\n', "default_model 'nope' is not one of the models"),
        ("[limits]\nmin_size = 100\n", "limits.min_size must be a multiple of 8"),
        ("this is not toml", "is not valid TOML"),
        ('[worker]\nstart_method = "fork"\n', "worker.start_method must be one of spawn, forkserver, got 'fork'"),
        ("[images]\nkeep_days = -1\n", "images.keep_days must be a number of days from 0 (keep forever) to 36500, got -1"),
        ("[images]\nkeep_days = 100000\n", "images.keep_days must be a number of days from 0 (keep forever) to 36500"),
        ("[policy]\naudit_retention_days = -30\n", "policy.audit_retention_days must be a number of days from 0"),
        ("[worker]\nshutdown_grace_s = -1\n", "worker.shutdown_grace_s must be at least 0, got -1"),
        ('[worker]\ntorch_compile = "fast"\n', "worker.torch_compile must be one of off, default, reduce-overhead"),
        ('[worker]\npreview_method = "full"\n', "worker.preview_method must be one of approx, taesd"),
        ('[worker]\npreview_method = "taesd"\n', "needs worker.taesd_source"),
        ('[worker]\nlow_memory = "max"\n', "worker.low_memory must be one of off, slicing, offload"),
        ("[worker]\nmodel_memory_budget_mb = -1\n", "worker.model_memory_budget_mb must be at least 0"),
        ("[worker]\nmodel_memory_budget_mb = 1.5\n", "worker.model_memory_budget_mb must be int"),
        ('[worker]\nchannels_last = "yes"\n', "worker.channels_last must be bool"),
        ("[worker]\nfuse_qkv = 1\n", "worker.fuse_qkv must be bool"),
        ('[worker]\nwarmup = "no"\n', "worker.warmup must be bool"),
        ("[worker]\ntaesd_source = 3\n", "worker.taesd_source must be str"),
        # [describe] (tests/test_describe_bot.py runs /describe itself)
        ('[describe]\ninterrogator = "deepbooru"\n', "describe.interrogator must be one of clip, tagger, got 'deepbooru'"),
        ("[describe]\ntag_threshold = 1.5\n", "describe.tag_threshold must be between 0 and 1, got 1.5"),
        ('[describe]\ncaption_model = "Salesforce/blip-image-captioning-base"\n', "needs both caption_model and clip_model"),
        ('[describe]\ncaption_model = "./blip"\nclip_model = "openai/clip-vit-large-patch14"\n', "is neither a folder nor a hub id"),
        ('[describe]\ntagger = "wd14"\n', "model.onnx is missing"),
        ('[describe]\ncategories_dir = "lists"\n', "holds no .txt list"),
        ("[images]\nsegment_threshold = 1.0\n", "images.segment_threshold must be above 0 and below 1 (got 1.0)"),
        ("[images]\nsegment_dilation = -2\n", "images.segment_dilation from 0 to 128 pixels (got -2)"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, message):
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config, environ={})


def test_the_default_upscaler_must_exist(tmp_path):
    folder = tmp_path / "ESRGAN"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[images]\nupscaler_dirs = ["{folder.as_posix()}"]\ndefault_upscaler = "RealESRGAN_x4plus"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="images.default_upscaler 'RealESRGAN_x4plus' is neither 'Lanczos'"):
        load_settings(config, environ={})
    folder.mkdir()
    (folder / "RealESRGAN_x4plus.pth").write_bytes(b"weights")
    settings = load_settings(config, environ={})
    assert settings.images.default_upscaler == "RealESRGAN_x4plus"
    assert settings.images.upscaler_dirs == (folder.as_posix(),)


def test_list_settings_must_be_arrays_of_strings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[images]\nupscaler_dirs = "models/ESRGAN"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="images.upscaler_dirs must be an array of str"):
        load_settings(config, environ={})
