"""SDXL's sizes on the bot's side, torch-free: a model's base size from its family (1024 for
SDXL, read from its folder) and SDXL's trained aspect sizes."""

from __future__ import annotations

import json

from bot.config import LimitSettings, ModelSettings
from bot.jobs.params import check_aspect, size_for_aspect
from inference.common.sources import family_base_size, folder_family


def test_a_models_base_size_comes_from_its_family(tiny_sdxl_dir, tiny_sdxl_refiner_dir, tiny_model_dir, tmp_path):
    assert (folder_family(str(tiny_sdxl_dir)), folder_family(str(tiny_sdxl_refiner_dir))) == ("sdxl", "sdxl-refiner")
    assert folder_family(str(tiny_model_dir)) == "sd1"
    assert ModelSettings(name="xl", source=str(tiny_sdxl_dir)).base_size == 1024
    assert ModelSettings(name="sd", source=str(tiny_model_dir)).base_size == 512
    assert ModelSettings(name="xl", source=str(tiny_sdxl_dir), base_size=768).base_size == 768  # set: kept
    assert ModelSettings(name="hub", source="stable-diffusion-v1-5/stable-diffusion-v1-5").base_size == 512
    # SD 2.x 768-v: OpenCLIP-H's 1024 hidden size and v-prediction.
    folder = tmp_path / "sd2"
    for part, config in (
        ("", {"_class_name": "StableDiffusionPipeline"}),
        ("text_encoder", {"hidden_size": 1024}),
        ("scheduler", {"prediction_type": "v_prediction"}),
    ):
        (folder / part).mkdir(parents=True, exist_ok=True)
        name = {"": "model_index.json", "scheduler": "scheduler_config.json"}.get(part, "config.json")
        (folder / part / name).write_text(json.dumps(config))
    assert folder_family(str(folder)) == "sd2" and family_base_size(str(folder)) == 768


def test_sdxl_gets_its_trained_aspect_sizes():
    assert size_for_aspect("16:9", 1024, 2048) == (1344, 768)
    assert size_for_aspect("2:3", 1024, 2048) == (832, 1216)
    assert size_for_aspect("6:4", 1024, 2048) == (1216, 832)  # the ratio, however written
    assert size_for_aspect("1:1", 1024, 2048) == (1024, 1024)
    # Other ratios, and other models, keep the short side at the base size.
    assert size_for_aspect("21:9", 1024, 4096) == (2392, 1024)
    assert size_for_aspect("16:9", 512, 2048) == (912, 512)
    limits = LimitSettings(max_size=1344, max_pixels=1344 * 1344)
    assert check_aspect("9:16", 1024, limits) == (768, 1344)


def test_the_refiner_is_checked_against_the_families_before_queuing(tiny_sdxl_dir, tiny_sdxl_refiner_dir, tiny_model_dir):
    import pytest

    from bot.config import Settings
    from bot.errors import InvalidOption
    from bot.jobs.params import GenerationOptions, resolve_parameters, with_refiner

    models = tuple(
        ModelSettings(name=name, source=str(source), base_size=64)
        for name, source in (("xl", tiny_sdxl_dir), ("refiner", tiny_sdxl_refiner_dir), ("sd", tiny_model_dir))
    )
    settings = Settings(default_model="xl", models=models, limits=LimitSettings(min_size=64, max_size=128))
    xl = resolve_parameters(GenerationOptions(prompt="a cat"), settings)
    assert with_refiner(xl, settings, "refiner", None).refiner_switch_at == 0.8
    assert with_refiner(xl, settings, "xl", 0.6).refiner == "xl"  # an SDXL base may refine too
    sd = resolve_parameters(GenerationOptions(prompt="a cat", model="sd"), settings)
    with pytest.raises(InvalidOption, match="works with SDXL models; `sd` is not one"):
        with_refiner(sd, settings, "refiner", None)
    with pytest.raises(InvalidOption, match="`sd` is not an SDXL model and cannot refine"):
        with_refiner(xl, settings, "sd", None)
    with pytest.raises(InvalidOption, match="is an SDXL refiner"):
        resolve_parameters(GenerationOptions(prompt="a cat", model="refiner"), settings)


def test_a_rerun_takes_the_refiner_from_a1111s_infotext(tiny_sdxl_dir, tiny_sdxl_refiner_dir):
    from bot.config import Settings
    from bot.image_infotext import rerun_options
    from inference.common.infotext import parse_infotext

    models = (
        ModelSettings(name="xl", source=str(tiny_sdxl_dir), base_size=64),
        ModelSettings(name="Refiner-1.0", source=str(tiny_sdxl_refiner_dir), base_size=64),
    )
    settings = Settings(default_model="xl", models=models)
    text = "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: xl, " \
        "Refiner: refiner-1.0 [7440042bbd], Refiner switch at: 0.6, Version: v1.10.1"
    plan = rerun_options(parse_infotext(text), settings, [])
    assert (plan.refiner, plan.refiner_switch_at, plan.notes) == ("Refiner-1.0", 0.6, [])
    plan = rerun_options(parse_infotext(text.replace("refiner-1.0", "elsewhere")), settings, [])
    assert plan.refiner is None and plan.notes == ["Refiner `elsewhere` is not on this server; the job runs without one."]
    # With the hires fix the refiner is kept: it runs in the second pass, as in A1111.
    plan = rerun_options(parse_infotext(text.replace("Version", "Hires upscale: 2, Version")), settings, [])
    assert (plan.refiner, plan.refiner_switch_at, plan.notes) == ("Refiner-1.0", 0.6, [])
