"""Discovery of an A1111 models folder: names, families, pairing, bad files, .ckpt safety, and
the [a1111] settings that serve it beside configured models."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from bot.config import ConfigError, discover, load_settings
from inference.common.model_folders import CheckpointInspector, scan_checkpoints
from inference.common.checkpoints import CheckpointError, inspect_checkpoint
from tests.webui_folders import family_tensors, make_webui, write_checkpoint

STABLE_DIFFUSION = Path("models") / "Stable-diffusion"


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    return make_webui(tmp_path / "stable-diffusion-webui")


def _skipped(scan_or_list) -> dict[str, str]:
    files = scan_or_list.skipped if hasattr(scan_or_list, "skipped") else scan_or_list
    return {file.path.name: file.reason for file in files}


def test_checkpoints_are_named_as_a1111_shows_them(webui):
    scan = scan_checkpoints([webui / STABLE_DIFFUSION])
    assert [(m.name, m.family) for m in scan.models] == [
        ("sd2/v2-1_768-ema-pruned", "sd2"),
        ("SDXL/ponyDiffusionV6XL", "sdxl"),
        ("SDXL/sd_xl_refiner_1.0", "sdxl-refiner"),
        ("v1-5-pruned-emaonly", "sd1"),
    ]
    by_name = {m.name: m for m in scan.models}
    assert by_name["sd2/v2-1_768-ema-pruned"].prediction_type == "v_prediction"
    assert by_name["SDXL/ponyDiffusionV6XL"].stem == "ponyDiffusionV6XL"
    # The inpainting variant pairs with its base and is not a model of its own.
    base = by_name["v1-5-pruned-emaonly"]
    assert base.inpaint_path.endswith("v1-5-pruned-emaonly-inpainting.safetensors")


def test_each_bad_file_is_skipped_with_its_reason(webui):
    skipped = _skipped(scan_checkpoints([webui / STABLE_DIFFUSION]))
    assert "truncated" in skipped["broken.safetensors"]
    assert "Flux" in skipped["flux1-dev.safetensors"]
    assert "a LoRA, not a checkpoint" in skipped["a-lora-in-the-wrong-place.safetensors"]
    assert len(skipped) == 3


def test_the_same_name_twice_keeps_the_first_folder_and_safetensors(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    write_checkpoint(first / "model.safetensors")
    write_checkpoint(second / "model.safetensors", "sdxl")
    torch.save({"state_dict": {}}, first / "model.ckpt")
    scan = scan_checkpoints([first, second])
    assert [(m.name, m.path) for m in scan.models] == [("model", first / "model.safetensors")]
    reasons = [(f.path, f.reason) for f in scan.skipped]
    assert reasons == [
        (first / "model.ckpt", f"the name 'model' is taken by {first / 'model.safetensors'}: rename one of them"),
        (second / "model.safetensors", f"the name 'model' is taken by {first / 'model.safetensors'}: rename one of them"),
    ]


def test_a_yaml_beside_a_checkpoint_is_its_config(tmp_path):
    write_checkpoint(tmp_path / "custom.safetensors", "sd2")
    (tmp_path / "custom.yaml").write_text("model: {}\n")
    (found,) = scan_checkpoints([tmp_path]).models
    assert found.original_config == str(tmp_path / "custom.yaml")


def _tensor_dict(family: str) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(shape, dtype=torch.float16) for name, shape in family_tensors(family).items()}


class _Callback:  # what old trainers pickled beside the weights: code torch's safe loader refuses
    pass


def test_a_ckpt_is_served_only_when_weights_only_would_load_it(tmp_path):
    safe = tmp_path / "safe.ckpt"
    torch.save({"state_dict": _tensor_dict("sdxl"), "global_step": 12}, safe)
    assert inspect_checkpoint(safe).family == "sdxl"
    torch.load(safe, weights_only=True)  # the worker's loader agrees

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": _tensor_dict("sd1"), "callbacks": _Callback()}, unsafe)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(unsafe, weights_only=True)
    with pytest.raises(CheckpointError, match=r"unsafe\.ckpt needs an unsafe pickle to load \(it names tests\.test_model_folders\._Callback"):
        inspect_checkpoint(unsafe)

    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(safe.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        inspect_checkpoint(truncated)

    scan = scan_checkpoints([tmp_path])
    assert [m.name for m in scan.models] == ["safe"]
    assert set(_skipped(scan)) == {"unsafe.ckpt", "cut.ckpt"}


def test_a_rescan_reads_only_changed_files(tmp_path):
    inspector = CheckpointInspector()
    path = write_checkpoint(tmp_path / "m.safetensors", "sd1")
    assert scan_checkpoints([tmp_path], inspector).models[0].family == "sd1"
    # Same size and time: the remembered answer, without reading the header again.
    stat = path.stat()
    path.write_bytes(bytes(stat.st_size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scan_checkpoints([tmp_path], inspector).models[0].family == "sd1"
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rescan = scan_checkpoints([tmp_path], inspector)
    assert not rescan.models and "not a safetensors file" in rescan.skipped[0].reason


def test_five_hundred_files_some_broken(tmp_path):
    for index in range(500):
        path = tmp_path / f"group{index % 7}" / f"model{index:03}.safetensors"
        if index % 50 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a model at all")
        else:
            write_checkpoint(path, "sd1")
    scan = scan_checkpoints([tmp_path])
    assert len(scan.models) == 490 and len(scan.skipped) == 10
    assert all("not a safetensors file" in file.reason or "empty" in file.reason for file in scan.skipped)


# --- [a1111] settings -----------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_a1111_root_serves_the_install_beside_configured_models(tmp_path, webui):
    config = _config(tmp_path, f"""
[a1111]
root = "{webui.as_posix()}"

[[models]]
name = "sd15"
source = "stable-diffusion-v1-5/stable-diffusion-v1-5"

[[models]]
name = "pony"
source = "SDXL/ponyDiffusionV6XL"
description = "Pony"
clip_skip = 2
""")
    settings = load_settings(config, environ={})
    by_name = {m.name: m for m in settings.models}
    assert list(by_name) == ["sd15", "pony", "sd2/v2-1_768-ema-pruned", "SDXL/sd_xl_refiner_1.0", "v1-5-pruned-emaonly"]
    pony = by_name["pony"]
    assert (pony.family, pony.base_size, pony.clip_skip, pony.description) == ("sdxl", 1024, 2, "Pony")
    assert pony.source == str(webui / STABLE_DIFFUSION / "SDXL" / "ponyDiffusionV6XL.safetensors")
    assert by_name["sd2/v2-1_768-ema-pruned"].base_size == 768
    assert by_name["v1-5-pruned-emaonly"].inpaint_source.endswith("-inpainting.safetensors")
    assert settings.default_model == "sd15"
    # A1111's other folders are searched first, then the configured ones.
    assert settings.prompts.lora_dirs[:2] == (str(webui / "models" / "Lora"), str(webui / "models" / "LyCORIS"))
    assert settings.prompts.embedding_dirs[0] == str(webui / "embeddings")
    spec = next(s for s in settings.worker_config({pony.source: "ab" * 32}).models if s.name == "pony")
    assert (spec.family, spec.clip_skip, spec.default_size, spec.sha256) == ("sdxl", 2, 1024, "ab" * 32)


def test_a1111_root_alone_needs_no_models_table(tmp_path, webui):
    settings = load_settings(_config(tmp_path, '[a1111]\nroot = "stable-diffusion-webui"\n'), environ={})
    assert settings.default_model == "sd2/v2-1_768-ema-pruned"  # the first listed, as in A1111
    assert "sd15" not in [m.name for m in settings.models]


def test_a1111_root_with_nothing_servable_says_why(tmp_path):
    root = tmp_path / "webui"
    write_checkpoint(root / STABLE_DIFFUSION / "flux.safetensors", "flux")
    with pytest.raises(ConfigError, match=r"found no checkpoint it can serve .*\n  - .*flux.safetensors: flux.safetensors is a Flux model"):
        load_settings(_config(tmp_path, f'[a1111]\nroot = "{root.as_posix()}"\n'), environ={})
    with pytest.raises(ConfigError, match="a1111.root .* is not a folder"):
        load_settings(_config(tmp_path, '[a1111]\nroot = "nowhere"\n'), environ={})


def test_a_name_too_long_for_discord_is_skipped_unless_renamed(tmp_path):
    root = tmp_path / "webui"
    deep = "/".join(["a-very-long-folder-name"] * 5)
    path = write_checkpoint(root / STABLE_DIFFUSION / deep / "model.safetensors")
    write_checkpoint(root / STABLE_DIFFUSION / "short.safetensors")
    config = _config(tmp_path, f'[a1111]\nroot = "{root.as_posix()}"\n')
    settings = load_settings(config, environ={})
    assert [m.name for m in settings.models] == ["short"]
    skipped = discover(settings.model_entries, settings.a1111)[2]
    assert [(f.path, f.reason[:40]) for f in skipped] == [(path, "its name is 125 characters long, over Di")]
    # A [[models]] entry gives it a short name.
    config.write_text(config.read_text() + f'[[models]]\nname = "deep"\nsource = "{deep}/model"\n')
    assert [m.name for m in load_settings(config, environ={}).models] == ["deep", "short"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('family = "sd3"', "models 'x': family must be one of sd1, sd2, sdxl, sdxl-refiner (or left out), got 'sd3'"),
        ('prediction_type = "v"', "models 'x': prediction_type must be epsilon or v_prediction, got 'v'"),
        ("clip_skip = 13", "models 'x': clip_skip must be 1 to 12 (0: the family's default), got 13"),
        ("base_size = 500", "models 'x': base_size must be a multiple of 8 of at least 64, got 500"),
    ],
)
def test_bad_model_settings_are_named(tmp_path, table, message):
    config = _config(tmp_path, f'default_model = "x"\n[[models]]\nname = "x"\nsource = "a/b"\n{table}\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config, environ={})
