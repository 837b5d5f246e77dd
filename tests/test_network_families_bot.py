"""Through the bot (simcord): a LoRA or embedding made for another family than the job's model is
refused privately before queuing, naming both, from /imagine, its options, an X/Y plot's model
axis and a button re-running a prompt on another model; one of the model's own family is queued."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import ModelSettings
from db.models import JobStatus
from tests.harness import private_answer
from tests.network_family_files import SD1_LORA, SD2_EMBEDDING, SDXL_EMBEDDING, SDXL_LORA
from tests.test_bot_pnginfo import a1111_png, shown
from tests.webui_folders import write_safetensors


@pytest.fixture
def settings(settings):
    """The tiny model as "sd15" (SD 1.x), and two models only named SD 2.x and SDXL: every job
    on them here is refused before anything would load them. The LoRAs and embeddings have
    their families' real names and widths (zero-filled)."""
    source = settings.models[0].source
    models = tuple(
        ModelSettings(name=name, source=source, family=family, base_size=64)
        for name, family in (("sd15", "sd1"), ("v2", "sd2"), ("xl", "sdxl"))
    )
    prompts = settings.prompts
    write_safetensors(Path(prompts.lora_dirs[0]) / "detail.safetensors", SDXL_LORA)
    write_safetensors(Path(prompts.lora_dirs[0]) / "sd-style.safetensors", SD1_LORA)
    write_safetensors(Path(prompts.embedding_dirs[0]) / "xl-neg.safetensors", SDXL_EMBEDDING)
    write_safetensors(Path(prompts.embedding_dirs[0]) / "v2-neg.safetensors", SD2_EMBEDDING)
    return replace(settings, default_model="sd15", models=models)


async def test_networks_of_another_family_are_refused_privately_and_queue_nothing(harness):
    alice = harness.member("alice")
    cases = [
        ("imagine", {"prompt": "a cat <lora:detail:0.8>"}, "`detail` is an SDXL LoRA; `sd15` is an SD 1.x model."),
        ("imagine", {"prompt": "a cat", "lora": "detail"}, "`detail` is an SDXL LoRA; `sd15` is an SD 1.x model."),
        ("imagine", {"prompt": "a cat <lora:sd-style>", "model": "xl"}, "`sd-style` is an SD 1.x LoRA; `xl` is an SDXL model."),
        ("imagine", {"prompt": "a cat", "negative_prompt": "xl-neg, blurry"}, "`xl-neg` is an SDXL embedding; `sd15` is an SD 1.x model."),
        ("imagine", {"prompt": "a cat", "embedding": "v2-neg"}, "`v2-neg` is an SD 2.x embedding; `sd15` is an SD 1.x model."),
        ("imagine", {"prompt": "a cat, v2-neg", "model": "xl"}, "`v2-neg` is an SD 2.x embedding; `xl` is an SDXL model."),
        # Each cell is checked on its own model: the job's model (sd15) fits the LoRA, "xl" does not.
        (
            "xyplot",
            {"prompt": "a cat <lora:sd-style>", "x_type": "Model", "x_values": "sd15, xl"},
            "`sd-style` is an SD 1.x LoRA; `xl` is an SDXL model.",
        ),
    ]
    for command, options, expected in cases:
        result = await alice.slash(harness.channel, command, **options)
        assert expected in (text := private_answer(result)), (command, options, text)
        [error] = harness.expect_user_errors()
        assert expected in error.message

    # A button re-running a prompt on another model: /pnginfo's "Re-run here" on an SDXL image
    # whose prompt names an SD 1.x LoRA (the button answers its refusals itself).
    text = "a lighthouse <lora:sd-style:0.7>\nSteps: 2, Sampler: Euler, CFG scale: 6, Seed: 5, Size: 64x64, Model: xl"
    message = shown(await alice.slash(harness.channel, "pnginfo", image=("xl.png", a1111_png(text))))
    rerun = await alice.click(message.message, label="Re-run here")
    assert "`sd-style` is an SD 1.x LoRA; `xl` is an SDXL model." in private_answer(rerun)
    assert await harness.job_count() == 0


async def test_a_network_of_the_models_family_is_queued(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a cat <lora:sd-style:0.5>", count=1, steps=2)
    assert result.response is not None and not result.response.ephemeral, result
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.model == "sd15" and "<lora:sd-style:0.5>" in job.prompt
    # Queued and run: the worker then finds the LoRA's full-size shapes do not fit the tiny
    # model, and says so, not that its family is wrong.
    assert job.status in (JobStatus.COMPLETED, JobStatus.FAILED)
    assert "SD 1.x" not in (job.error or "")
    harness.expect_user_errors()

