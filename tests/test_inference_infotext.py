"""A1111 infotext: the exact format, and reading it back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference.common import infotext
from inference.common.infotext import build_infotext, parse_infotext, quote, request_infotext
from inference.common.protocol import (
    LANCZOS,
    HiresFix,
    ImageInput,
    InpaintOptions,
    JobKind,
    MaskedContent,
    OutpaintOptions,
    ResizeMode,
)
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


def workflow_keys(request) -> dict[str, str]:
    """The infotext's keys after the variation keys, without Version, as parsed back."""
    text = request_infotext(request, 0, version=None)
    parsed = parse_infotext(text)
    assert parsed["Size"] == f"{request.width}x{request.height}"
    keys = list(parsed)
    return {key: parsed[key] for key in keys[keys.index("Model") + 1 :]}


def test_plain_txt2img_has_no_workflow_keys():
    assert workflow_keys(tiny_request()) == {}


def test_hires_fix_keys_as_a1111_writes_them():
    request = tiny_request(hires=HiresFix(scale=2.0, steps=10, denoising_strength=0.7))
    assert workflow_keys(request) == {
        "Denoising strength": "0.7",
        "Hires upscale": "2",
        "Hires steps": "10",
        "Hires upscaler": "Latent",
    }
    # Size stays the first pass's (64x64, checked above), as in A1111, where the result is
    # Size times Hires upscale; Hires steps 0 means "same as Steps" and is left out.
    same_steps = tiny_request(hires=HiresFix(1.5, 0, denoising_strength=0.5, upscaler=LANCZOS))
    assert workflow_keys(same_steps) == {
        "Denoising strength": "0.5",
        "Hires upscale": "1.5",
        "Hires upscaler": "Lanczos",
    }


def test_img2img_keys():
    image = ImageInput("/tmp/x.png", 0.55, ResizeMode.CROP_AND_RESIZE, loopback_count=3)
    request = tiny_request(kind=JobKind.IMG2IMG, image=image)
    expected = {"Denoising strength": "0.55", "Resize mode": "Crop and resize"}
    assert workflow_keys(request) == expected


def test_inpaint_keys_whole_image_and_only_masked():
    image = ImageInput("/tmp/x.png", 0.75)
    whole = tiny_request(
        kind=JobKind.INPAINT,
        image=image,
        inpaint=InpaintOptions("/tmp/m.png", mask_blur=4, masked_content=MaskedContent.FILL),
    )
    assert workflow_keys(whole) == {
        "Denoising strength": "0.75",
        "Resize mode": "Just resize",
        "Mask blur": "4",
        "Masked content": "fill",
    }
    only_masked = tiny_request(
        kind=JobKind.INPAINT,
        image=image,
        inpaint=InpaintOptions(
            "/tmp/m.png",
            mask_blur=0,
            masked_content=MaskedContent.LATENT_NOISE,
            only_masked=True,
            only_masked_padding=48,
        ),
    )
    # No blur, no key; the source is not resized as a whole, so no resize mode.
    assert workflow_keys(only_masked) == {
        "Denoising strength": "0.75",
        "Masked content": "latent noise",
        "Inpaint area": "Only masked",
        "Masked area padding": "48",
    }


def test_outpaint_keys():
    request = tiny_request(
        kind=JobKind.OUTPAINT,
        image=ImageInput("/tmp/x.png", 0.9),
        outpaint=OutpaintOptions(left=64),
    )
    assert workflow_keys(request) == {"Denoising strength": "0.9"}


def test_workflow_infotext_round_trips():
    request = tiny_request(
        kind=JobKind.INPAINT,
        prompt="a cat, on a mat: sitting",
        image=ImageInput("/tmp/x.png", 0.35),
        inpaint=InpaintOptions("/tmp/m.png", only_masked=True),
    )
    text = request_infotext(request, 0, version="sdbot 0.1.0")
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a cat, on a mat: sitting"
    assert parsed["Inpaint area"] == "Only masked"
    rebuilt = build_infotext(
        parsed["Prompt"],
        parsed["Negative prompt"],
        steps=int(parsed["Steps"]),
        sampler=parsed["Sampler"],
        cfg_scale=float(parsed["CFG scale"]),
        seed=int(parsed["Seed"]),
        width=64,
        height=64,
        model=parsed["Model"],
        extra={key: parsed[key] for key in list(parsed)[list(parsed).index("Model") + 1 : -1]},
        version=parsed["Version"],
    )
    assert rebuilt == text


def test_bot_side_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import inference.common.protocol, inference.common.samplers, inference.common.infotext, inference.worker\n"
        "import inference.common.sources, inference.images\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'discord')\n"
        "heavy = [name for name in heavy if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_last_line_too_long_for_parameters_stays_prompt_text():
    """A1111's parameter regex backtracks over long runs (30,000 "a"s took 5 s on the bot's
    event loop): past MAX_PARAMETERS_LINE the last line is prompt text, unread. A real line,
    three ControlNet units and all, is well within it."""
    flood = "a" * (infotext.MAX_PARAMETERS_LINE + 1)
    assert parse_infotext("a cat\n" + flood) == {"Prompt": "a cat\n" + flood, "Negative prompt": ""}
    units = ", ".join(
        f'ControlNet {i}: "Module: canny, Model: control_v11p_sd15_canny, Weight: 1, Resize Mode: Crop and Resize, '
        'Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1"'
        for i in range(3)
    )
    read = parse_infotext(f"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, {units}")
    assert read["Steps"] == "20" and read["ControlNet 2"].startswith("Module: canny")
