"""`sdbot generate` takes every option of /imagine and /img2img (issue 28): run on the tiny
model for txt2img and img2img, each result's infotext saying what was asked, and every bad
value refused as the bot refuses it, before anything is queued."""

from __future__ import annotations

from PIL import Image

from bot import cli
from inference.common.infotext import parse_infotext
from tests.test_startup_and_cli import write_config


def _images(out: str) -> list[str]:
    return [line.split(" -> ")[1] for line in out.splitlines() if line.startswith("image ")]


def test_generate_takes_every_txt2img_option_then_img2img_from_its_image(tmp_path, capsys, settings):
    config = str(write_config(tmp_path / "config.toml", settings))
    code = cli.main([
        "--config", config, "generate", "a lighthouse", "--negative-prompt", "fog", "--width", "64", "--height", "64",
        "--steps", "2", "--cfg", "6.5", "--sampler", "Euler a", "--schedule-type", "Karras", "--eta", "0.5",
        "--rng", "CPU", "--ensd", "31337", "--seed-resize-from", "128x64", "--seed", "5", "--count", "1",
        "--variation-seed", "9", "--variation-strength", "0.25", "--clip-skip", "2", "--vae", "Automatic",
        "--model", "tiny", "--hires-scale", "1.5", "--hires-steps", "1", "--hires-denoising", "0.5",
        "--hires-upscaler", "Latent",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    [path] = _images(out)
    with Image.open(path) as image:
        written = parse_infotext(image.info["parameters"])
        assert image.size == (96, 96)  # the hires fix's 1.5x
    assert {key: written[key] for key in (
        "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Variation seed",
        "Variation seed strength", "Seed resize from", "Denoising strength", "Clip skip", "ENSD", "RNG", "Hires upscale",
        "Hires steps", "Hires upscaler", "Eta",
    )} == {
        "Negative prompt": "fog", "Steps": "2", "Sampler": "Euler a", "Schedule type": "Karras", "CFG scale": "6.5",
        "Seed": "5", "Size": "64x64", "Variation seed": "9", "Variation seed strength": "0.25",
        "Seed resize from": "128x64", "Denoising strength": "0.5", "Clip skip": "2", "ENSD": "31337", "RNG": "CPU",
        "Hires upscale": "1.5", "Hires steps": "1", "Hires upscaler": "Latent", "Eta": "0.5",
    }

    code = cli.main([
        "--config", config, "generate", "a lighthouse at night", "--image", path, "--strength", "0.5",
        "--resize-mode", "crop and resize", "--width", "64", "--height", "128", "--steps", "2",
        "--sampler", "DPM++ 2M Karras", "--seed", "7", "--count", "1", "--rng", "NV",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    [path] = _images(out)
    with Image.open(path) as image:
        written = parse_infotext(image.info["parameters"])
        assert image.size == (64, 128)
    assert (written["Sampler"], written["Schedule type"], written["Denoising strength"], written["RNG"]) == (
        "DPM++ 2M", "Karras", "0.5", "NV",
    )
    assert written["Resize mode"] == "Crop and resize"


def test_generate_refuses_each_bad_option_before_queuing(tmp_path, capsys, settings):
    config = str(write_config(tmp_path / "config.toml", settings))
    cases = [
        (["--sampler", "Eulr a"], "Unknown sampler `Eulr a`. Did you mean `Euler a`"),
        (["--schedule-type", "Karras", "--sampler", "PLMS"], "PLMS cannot use the schedule type Karras: it takes Automatic."),
        (["--seed-resize-from", "2048x64"], "seed_resize_from's width must be a multiple of 8 between 64 and 128, got 2048."),
        (["--eta", "-0.1", "--sampler", "DDIM"], "eta must be between 0 and 1, got -0.1."),
        (["--rng", "TPU"], "Unknown random number generator source `TPU`. Sources: GPU, CPU, NV."),
        (["--ensd", "-1"], "ENSD (eta noise seed delta) must be between 0 and 4294967295, got -1."),
        (["--strength", "0.5"], "--strength is for img2img: give --image with it."),
        (["--image", str(tmp_path / "missing.png")], "could not be read"),
        (["--image", config], "config.toml"),  # not an image: bot.inputs' own refusal names it
        (["--variation-strength", "0.5"], "--variation-strength needs --variation-seed."),
        (["--variation-seed", "3", "--variation-strength", "2"], "--variation-strength must be between 0 and 1, got 2."),
        (["--hires-steps", "2"], "hires_steps, hires_denoising and hires_upscaler need a hires_scale above 1."),
    ]
    for options, expected in cases:
        assert cli.main(["--config", config, "generate", "x", *options]) == 2, options
        assert expected in (err := capsys.readouterr().err), err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.png"))
