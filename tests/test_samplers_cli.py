"""`sdbot generate` with an A1111 timestep sampler: the PNG equals A1111's algorithm on the
tiny model for the seed (the references of tests/test_samplers_timesteps.py), and its
infotext names the sampler and the eta A1111 writes for it. One CLI run (a worker process
start, some 30 s): the path is the same for every sampler, whose loops the in-process tests
check one by one."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bot import cli
from inference.common.infotext import parse_infotext
from inference.img2img import decode
from tests.test_samplers_reference import ReferenceNoise
from tests.test_samplers_timesteps import ReferenceEps, a1111_timesteps, ref_ddim
from tests.test_startup_and_cli import write_config


def _generate(tmp_path, capsys, settings, *options: str) -> Image.Image:
    config = str(write_config(tmp_path / "config.toml", settings))
    code = cli.main(["--config", config, "generate", "a lighthouse", "--negative-prompt", "fog", "--width", "64",
                     "--height", "64", "--cfg", "6.5", "--count", "1", "--model", "tiny", *options])
    out = capsys.readouterr().out
    assert code == 0, out
    [path] = [line.split(" -> ")[1] for line in out.splitlines() if line.startswith("image ")]
    return Image.open(path)


def _assert_same_image(image, latents, pipe):
    [expected] = decode(pipe, latents)
    assert np.abs(np.asarray(image.convert("RGB"), dtype=int) - np.asarray(expected, dtype=int)).max() <= 1


def test_generate_with_ddim_and_eta_writes_a1111s_image(tmp_path, capsys, settings, tiny_pipe):
    image = _generate(tmp_path, capsys, settings, "--sampler", "DDIM", "--eta", "0.4", "--ensd", "31337",
                      "--steps", "4", "--seed", "11")
    written = parse_infotext(image.info["parameters"])
    assert (written["Sampler"], written["Eta DDIM"]) == ("DDIM", "0.4")
    # A1111 writes neither for DDIM (no schedule type; ENSD only for its k samplers), yet
    # ImageRNG seeds the noise after the first with seed + ENSD all the same.
    assert "Schedule type" not in written and "ENSD" not in written
    with torch.no_grad():
        model = ReferenceEps(tiny_pipe, "a lighthouse", "fog", 6.5, 4)
        noise = ReferenceNoise((11,), (4, 8, 8), ensd=31337)
        _assert_same_image(image, ref_ddim(model, noise.first, a1111_timesteps(4), noise.draw, eta=0.4), tiny_pipe)

