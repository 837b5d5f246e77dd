"""A1111 infotext: the exact format, and reading it back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference.infotext import build_infotext, parse_infotext, quote, request_infotext
from tests.inference_fixtures import tiny_request

A1111_SAMPLE = (
    "masterpiece, best quality, 1girl, <lora:add_detail:1>\n"
    "Negative prompt: (worst quality, low quality:1.4)\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Latent, '
    'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.9.4'
)


def full_example(**overrides) -> str:
    arguments = dict(
        prompt="a photo of a cat",
        negative_prompt="blurry",
        steps=20,
        sampler="DPM++ 2M Karras",
        cfg_scale=7.0,
        seed=123,
        width=512,
        height=512,
        model="name",
        model_hash="abc123def0",
        subseed=5,
        subseed_strength=0.1,
        version="sdbot 0.1.0",
    )
    arguments.update(overrides)
    return build_infotext(arguments.pop("prompt"), arguments.pop("negative_prompt"), **arguments)


def test_exact_a1111_format():
    assert full_example() == (
        "a photo of a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, "
        "Size: 512x512, Model hash: abc123def0, Model: name, Variation seed: 5, "
        "Variation seed strength: 0.1, Version: sdbot 0.1.0"
    )


def test_absent_keys_are_omitted():
    text = full_example(
        negative_prompt="", sampler="Euler a", model_hash=None, subseed_strength=0.0, cfg_scale=7.5
    )
    assert text == (
        "a photo of a cat\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 123, Size: 512x512, Model: name, "
        "Version: sdbot 0.1.0"
    )


def test_values_with_commas_colons_or_newlines_are_json_quoted():
    assert quote("plain value") == "plain value"
    assert quote("a, b") == '"a, b"'
    assert quote("x: y") == '"x: y"'
    assert quote('say "hi"\nbye') == '"say \\"hi\\"\\nbye"'
    text = full_example(model="my model, v2: final")
    assert 'Model: "my model, v2: final"' in text


def test_extra_keys_go_before_version():
    text = full_example(extra={"Denoising strength": 0.75, "Clip skip": 2})
    assert text.endswith("Denoising strength: 0.75, Clip skip: 2, Version: sdbot 0.1.0")
    with pytest.raises(ValueError, match="'Seed'"):
        full_example(extra={"Seed": 1})


def test_round_trip_with_multiline_prompts_and_quoting():
    text = full_example(
        prompt="a cat,\nin a hat: big",
        negative_prompt="ugly,\nblurry",
        model="weird, name",
        cfg_scale=6.5,
    )
    parsed = parse_infotext(text)
    assert parsed == {
        "Prompt": "a cat,\nin a hat: big",
        "Negative prompt": "ugly,\nblurry",
        "Steps": "20",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "6.5",
        "Seed": "123",
        "Size": "512x512",
        "Model hash": "abc123def0",
        "Model": "weird, name",
        "Variation seed": "5",
        "Variation seed strength": "0.1",
        "Version": "sdbot 0.1.0",
    }


def test_parses_an_a1111_infotext():
    parsed = parse_infotext(A1111_SAMPLE)
    assert parsed["Prompt"] == "masterpiece, best quality, 1girl, <lora:add_detail:1>"
    assert parsed["Negative prompt"] == "(worst quality, low quality:1.4)"
    assert parsed["Steps"] == "25"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["Schedule type"] == "Karras"
    assert parsed["Size"] == "512x768"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert parsed["Version"] == "v1.9.4"


def test_text_without_parameters_is_all_prompt():
    assert parse_infotext("just a prompt\nstyle: anime") == {
        "Prompt": "just a prompt\nstyle: anime",
        "Negative prompt": "",
    }


def test_request_infotext_uses_each_images_seed():
    request = tiny_request(seeds=(7, 8), subseeds=(70, 80), subseed_strength=0.25)
    second = parse_infotext(request_infotext(request, 1))
    assert second["Seed"] == "8"
    assert second["Variation seed"] == "80"
    assert second["Variation seed strength"] == "0.25"
    assert second["Size"] == "64x64"
    assert second["Version"].startswith("sdbot ")


def test_bot_side_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import inference.protocol, inference.samplers, inference.infotext, inference.worker\n"
        "import inference.sources, inference.images\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'discord')\n"
        "heavy = [name for name in heavy if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
