"""Cheap progress previews: A1111's "Approx cheap" and TAESD, never the full VAE.

The jobs run through the real JobRunner on the tiny model; TAESD is a tiny random-weight
AutoencoderTiny written by inference.tiny, loaded from its folder as a configured one would be.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from inference import previews
from inference.generate import generate_latents
from inference.jobs import JobRunner
from inference.progress import ProgressReporter
from inference.common.protocol import JobCompleted, JobProgress, ModelSpec, WorkerConfig
from inference.tiny import build_tiny_taesd
from tests.inference_fixtures import runner_for, tiny_request

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory) -> str:
    return str(build_tiny_taesd(tmp_path_factory.mktemp("taesd") / "tiny-taesd"))


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def make_runner(pipe, tmp_path, **config) -> JobRunner:
    config = WorkerConfig(
        models=(ModelSpec("tiny", "unused"),),
        default_model="tiny",
        outputs_dir=str(tmp_path / "outputs"),
        preview_interval_s=0.0,  # a preview at every step
        **config,
    )
    return runner_for(pipe, config)


def run_counting_vae(runner, pipe, monkeypatch, **overrides):
    """Run a job; return its events and how many times the full VAE decoded."""
    calls = []
    decode = pipe.vae.decode

    def counting_decode(*args, **kwargs):
        calls.append(args[0].shape[0])
        return decode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", counting_decode)
    sent = []
    runner.run(tiny_request(**overrides), lambda: False, sent.append)
    return sent, calls


def test_approx_preview_of_real_latents(tiny_pipe):
    latents = generate_latents(tiny_pipe, tiny_request(seeds=(1, 2, 3, 4), steps=3))
    assert latents.shape == (4, 4, 8, 8)
    # A 2x2 sheet of 8x8 latents, scaled 8x: the images' own 128x128, under max_side.
    assert jpeg_size(previews.make_preview(latents, max_side=256)) == (128, 128)
    assert jpeg_size(previews.make_preview(latents, max_side=64)) == (64, 64)
    rgb = previews.latents_to_rgb(latents).float()
    assert rgb.shape == (4, 8, 8, 3)
    # The latents of a run are about unit-sized, which A1111's map turns into mid-range
    # colours: neither black nor saturated, and not one flat grey.
    assert 40 < rgb.mean() < 215 and rgb.std() > 5


def test_approx_colours_follow_a1111s_maps():
    # Latent channel 3 pulls towards blue when negative (A1111's row -0.184, -0.271, -0.473).
    latents = torch.zeros(1, 4, 2, 2)
    latents[:, 3] = -1.5
    red, green, blue = previews.latents_to_rgb(latents)[0, 0, 0].tolist()
    assert blue > green > red
    assert previews.latents_to_rgb(torch.zeros(1, 4, 2, 2))[0, 0, 0].tolist() == [128, 128, 128]
    # SDXL latents have the same 4 channels but their own map.
    sd1 = previews.latents_to_rgb(latents, previews.SD1)
    sdxl = previews.latents_to_rgb(latents, previews.SDXL)
    assert not torch.equal(sd1, sdxl)
    assert previews.latents_to_rgb(torch.randn(1, 16, 2, 2)) is None
    assert previews.latent_family(object()) == previews.SD1


def test_approx_previews_never_call_the_full_vae(tiny_pipe, tmp_path, monkeypatch):
    runner = make_runner(tiny_pipe, tmp_path)
    sent, vae_calls = run_counting_vae(runner, tiny_pipe, monkeypatch, steps=4, seeds=(1, 2))
    progress = [event for event in sent if isinstance(event, JobProgress)]
    assert [event.step for event in progress] == [1, 2, 3, 4]
    assert all(jpeg_size(event.preview_jpeg) == (128, 64) for event in progress)
    assert vae_calls == [2]  # the final images' decode, once, for the batch
    assert isinstance(sent[-1], JobCompleted)


def test_taesd_previews_use_the_tiny_autoencoder_not_the_vae(tiny_pipe, tmp_path, monkeypatch, taesd_dir):
    runner = make_runner(tiny_pipe, tmp_path, preview_method="taesd", taesd_source=taesd_dir)
    assert runner.previewer.method == "taesd"
    taesd_calls = []
    taesd_decode = runner.previewer.taesd.decode
    monkeypatch.setattr(
        runner.previewer.taesd, "decode", lambda x: taesd_calls.append(x.shape) or taesd_decode(x)
    )
    sent, vae_calls = run_counting_vae(runner, tiny_pipe, monkeypatch, steps=3)
    progress = [event for event in sent if isinstance(event, JobProgress)]
    # TAESD decodes to the image's own 64x64 (never scaled up past it).
    assert [jpeg_size(event.preview_jpeg) for event in progress] == [(64, 64)] * 3
    assert taesd_calls == [(1, 4, 8, 8)] * 3
    assert vae_calls == [1]
    assert isinstance(sent[-1], JobCompleted)


def test_taesd_and_approx_previews_differ_but_both_show_the_image(tiny_pipe, taesd_dir):
    latents = generate_latents(tiny_pipe, tiny_request(steps=2))
    taesd = previews.load_taesd(taesd_dir, CPU, torch.float32)
    approx = previews.Previewer("approx", 256).make(latents)
    tiny = previews.Previewer("taesd", 256, taesd).make(latents)
    assert jpeg_size(approx) == jpeg_size(tiny) == (64, 64)
    as_array = [np.asarray(Image.open(io.BytesIO(data))) for data in (approx, tiny)]
    assert not np.array_equal(*as_array)


def test_preview_settings_are_checked(taesd_dir, tmp_path):
    with pytest.raises(ValueError, match="preview_method must be 'approx' or 'taesd'"):
        previews.Previewer("full")
    with pytest.raises(ValueError, match="needs a loaded TAESD"):
        previews.Previewer("taesd")
    with pytest.raises(ValueError, match="holds no config.json"):
        previews.load_taesd(str(tmp_path), CPU, torch.float32)
    with pytest.raises(ValueError, match="needs taesd_source"):
        previews.load_taesd("", CPU, torch.float32)


@pytest.mark.allow_error_logs
def test_a_failing_preview_never_fails_the_job_and_its_cost_is_measured(caplog):
    class Broken(previews.Previewer):
        def make(self, latents):
            raise RuntimeError("no preview today")

    sent = []
    reporter = ProgressReporter(5, sent.append, 0.0, 256, previewer=Broken())
    reporter(1, 2, torch.zeros(1, 4, 8, 8))
    reporter(2, 2, torch.zeros(1, 4, 8, 8))
    assert [(event.step, event.preview_jpeg) for event in sent] == [(1, None), (2, None)]
    assert reporter.previews_made == 2 and reporter.preview_seconds > 0
    assert "job 5: preview failed" in caplog.text
    # A reporter without a previewer makes approx previews, as before.
    plain = []
    ProgressReporter(6, plain.append, 0.0, 256)(1, 1, torch.zeros(1, 4, 8, 8))
    assert jpeg_size(plain[0].preview_jpeg) == (64, 64)
