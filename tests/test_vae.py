"""VAE choice in the worker and the infotext: a VAE file in A1111's (LDM) key layout loaded into
the tiny SD 1.5 model, the baked VAE put back, broken and unknown files refused by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.common.infotext import parse_infotext
from inference.common.protocol import JobCompleted, JobFailed, JobKind, ModelSpec
from inference.common.vae_files import (
    AUTOMATIC,
    NONE,
    UnknownVaeError,
    resolve_vae,
    vae_files,
    vae_near_checkpoint,
)
from tests.inference_fixtures import TINY_MODEL_NAME, runner_for, tiny_request, tiny_worker_config


def ldm_vae_state(vae) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL's weights under the original LDM key names, as A1111's VAE
    files hold them (diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py,
    written for any number of blocks): the attention's linear weights as 1x1 convolutions."""
    blocks = len(vae.config.block_out_channels)
    renames: list[tuple[str, str]] = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out")]
    for i in range(blocks):
        renames.append((f"encoder.down.{i}.block.", f"encoder.down_blocks.{i}.resnets."))
        renames.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
        renames.append((f"decoder.up.{blocks - 1 - i}.block.", f"decoder.up_blocks.{i}.resnets."))
        renames.append((f"decoder.up.{blocks - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    for j in range(2):
        renames.append((f"mid.block_{j + 1}.", f"mid_block.resnets.{j}."))
    renames.append(("mid.attn_1.", "mid_block.attentions.0."))
    attention = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]
    state = {}
    for key, value in vae.state_dict().items():
        ldm = key
        for old, new in renames:
            ldm = ldm.replace(new, old)
        if "mid.attn_1." in ldm:
            for old, new in attention:
                ldm = ldm.replace(f"mid.attn_1.{new}", f"mid.attn_1.{old}")
            if ldm.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]
        state[ldm] = value.detach().clone().contiguous()
    return state


@pytest.fixture(scope="module")
def own_pipe(tiny_model_dir):
    """A tiny pipeline of this module's own: the VAE tests change its VAE's weights, which the
    session's shared tiny_pipe must never see."""
    from inference.models import load_pipeline

    return load_pipeline(ModelSpec(TINY_MODEL_NAME, str(tiny_model_dir)), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def vae_dir(own_pipe, tmp_path_factory) -> Path:
    """A VAE folder with one LDM-layout VAE file of other (random) weights, and a broken one."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("VAE")
    torch.manual_seed(7)
    other = AutoencoderKL(**own_pipe.vae.config)
    import safetensors.torch

    safetensors.torch.save_file(ldm_vae_state(other), folder / "other-vae.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return folder


@pytest.fixture
def runner(own_pipe, tiny_model_dir, vae_dir, tmp_path):
    spec = ModelSpec(TINY_MODEL_NAME, str(tiny_model_dir))
    config = tiny_worker_config(spec, tmp_path, preview_interval_s=3600, vae_dirs=(str(vae_dir),))
    return runner_for(own_pipe, config)


def _run(runner, **overrides):
    sent = []
    runner.run(tiny_request(**overrides), lambda: False, sent.append)
    return sent[-1]


def _pixels(result: JobCompleted) -> np.ndarray:
    return np.asarray(Image.open(result.images[0].path), dtype=np.int16)


def test_a_vae_file_changes_the_image_and_the_baked_vae_comes_back(runner, vae_dir):
    baked = _run(runner, job_id=1)
    chosen = _run(runner, job_id=2, vae="other-vae.safetensors")
    again = _run(runner, job_id=3)
    assert isinstance(baked, JobCompleted) and isinstance(chosen, JobCompleted) and isinstance(again, JobCompleted)
    assert np.abs(_pixels(baked) - _pixels(chosen)).max() > 10
    assert np.array_equal(_pixels(baked), _pixels(again))

    # A1111's keys, in its order: the file name and its sha256's first 10 hex digits.
    text = chosen.images[0].infotext
    expected_hash = hashlib.sha256((vae_dir / "other-vae.safetensors").read_bytes()).hexdigest()[:10]
    params = parse_infotext(text)
    assert params["VAE"] == "other-vae.safetensors" and params["VAE hash"] == expected_hash
    assert f"Model: {TINY_MODEL_NAME}, VAE hash: {expected_hash}, VAE: other-vae.safetensors, " in text
    assert "VAE" not in parse_infotext(baked.images[0].infotext)


def test_img2img_encodes_and_decodes_with_the_chosen_vae(runner):
    source = _run(runner, job_id=4)
    kinds = dict(kind=JobKind.IMG2IMG, steps=2)
    from inference.common.protocol import ImageInput

    image = ImageInput(path=source.images[0].path, denoising_strength=0.5)
    baked = _run(runner, job_id=5, image=image, **kinds)
    chosen = _run(runner, job_id=6, image=image, vae="other-vae.safetensors", **kinds)
    assert isinstance(chosen, JobCompleted), chosen
    assert parse_infotext(chosen.images[0].infotext)["VAE"] == "other-vae.safetensors"
    assert np.abs(_pixels(baked) - _pixels(chosen)).max() > 10


def test_a_broken_or_unknown_vae_fails_the_job_by_name(runner):
    broken = _run(runner, job_id=7, vae="broken.safetensors")
    assert isinstance(broken, JobFailed)
    assert broken.message.startswith("VAE `broken.safetensors` cannot be read")
    unknown = _run(runner, job_id=8, vae="nope.pt")
    assert isinstance(unknown, JobFailed)
    assert "Unknown VAE `nope.pt`" in unknown.message and "other-vae.safetensors" in unknown.message
    # The pipeline is unharmed: the next job runs.
    assert isinstance(_run(runner, job_id=9), JobCompleted)


def test_a_vae_of_another_shape_is_refused_as_not_fitting(runner, own_pipe, vae_dir):
    from diffusers import AutoencoderKL

    import safetensors.torch

    wide = AutoencoderKL(**{**own_pipe.vae.config, "block_out_channels": (64, 64, 64, 64)})
    safetensors.torch.save_file(ldm_vae_state(wide), vae_dir / "sdxl-like.safetensors")
    try:
        failed = _run(runner, job_id=10, vae="sdxl-like.safetensors")
    finally:
        (vae_dir / "sdxl-like.safetensors").unlink()
    assert isinstance(failed, JobFailed)
    assert failed.message.startswith(f"VAE `sdxl-like.safetensors` does not fit model `{TINY_MODEL_NAME}`")


# --- choosing: torch-free ------------------------------------------------------------------


def test_automatic_picks_the_vae_named_after_the_checkpoint(tmp_path):
    models = tmp_path / "Stable-diffusion"
    models.mkdir()
    checkpoint = models / "dreamy.safetensors"
    checkpoint.write_bytes(b"")
    (models / "dreamy.vae.pt").write_bytes(b"")
    folder = tmp_path / "VAE"
    folder.mkdir()
    (folder / "kl-f8-anime.safetensors").write_bytes(b"")
    (folder / "plain.safetensors").write_bytes(b"")
    files = vae_files([folder], [str(checkpoint)])
    assert list(files) == ["dreamy.vae.pt", "kl-f8-anime.safetensors", "plain.safetensors"]

    assert resolve_vae(AUTOMATIC, str(checkpoint), "", files) == "dreamy.vae.pt"
    assert resolve_vae("", str(checkpoint), "", files) == "dreamy.vae.pt"
    assert resolve_vae(NONE, str(checkpoint), "", files) == ""
    # The model's configured VAE wins over the one named after it; "None" there means baked.
    assert resolve_vae(AUTOMATIC, str(checkpoint), "kl-f8-anime", files) == "kl-f8-anime.safetensors"
    assert resolve_vae(AUTOMATIC, str(checkpoint), "None", files) == ""
    # A member's choice wins over both; any case, with or without the suffix.
    assert resolve_vae("PLAIN", str(checkpoint), "kl-f8-anime", files) == "plain.safetensors"
    # A diffusers folder is named by its folder: a VAE of that name in the VAE folder.
    (folder / "sd15.vae.safetensors").write_bytes(b"")
    files = vae_files([folder])
    assert vae_near_checkpoint(str(tmp_path / "sd15"), files) == "sd15.vae.safetensors"
    assert resolve_vae(AUTOMATIC, "org/other-model", "", files) == ""


def test_an_unknown_vae_is_refused_with_the_list(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"")
    with pytest.raises(UnknownVaeError) as refused:
        resolve_vae("b", "model", "", vae_files([tmp_path]))
    assert str(refused.value) == "Unknown VAE `b`. Choose Automatic, None or one of: a.safetensors."
    with pytest.raises(UnknownVaeError, match="this server has no VAE files"):
        resolve_vae(AUTOMATIC, "model", "missing.pt", {})


def test_plot_cells_each_run_with_their_vae_and_clip_skip(runner):
    from inference.common.protocol import PlotCell, PlotOptions

    cells = (PlotCell(vae=""), PlotCell(vae="other-vae.safetensors"), PlotCell(clip_skip=2))
    plot = PlotOptions(cells=cells, columns=3, x_labels=("None", "other-vae.safetensors", "2"), x_title="VAE")
    done = _run(runner, job_id=11, kind=JobKind.PLOT, plot=plot, seeds=(5, 5, 5))
    assert isinstance(done, JobCompleted), done
    params = [parse_infotext(image.infotext) for image in done.images]
    assert [p.get("VAE") for p in params] == [None, "other-vae.safetensors", None]
    assert [p.get("Clip skip") for p in params] == [None, None, "2"]
    pixels = [np.asarray(Image.open(image.path), dtype=np.int16) for image in done.images]
    assert np.abs(pixels[0] - pixels[1]).max() > 10 and np.abs(pixels[0] - pixels[2]).max() > 0
