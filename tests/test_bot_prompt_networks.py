"""The bot's checks of <lora:...> tags and its embedding and LoRA names (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import PromptSettings
from bot.errors import InvalidOption
from bot.prompts.networks import check_networks, embedding_names, lora_names
from tests.harness import private_answer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prompt_settings(tmp_path) -> PromptSettings:
    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    for path in (
        loras / "Watercolor.safetensors",
        loras / "characters" / "alice.pt",
        loras / "readme.txt",
        embeddings / "EasyNegative.safetensors",
        embeddings / "hands" / "bad-hands-5.pt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return PromptSettings(embedding_dirs=(str(embeddings),), lora_dirs=(str(loras), str(tmp_path / "none")))


def test_names_for_autocomplete(prompt_settings):
    assert lora_names(prompt_settings) == ["alice", "Watercolor"]
    assert embedding_names(prompt_settings) == ["bad-hands-5", "EasyNegative"]


def test_known_loras_and_plain_prompts_pass(prompt_settings):
    check_networks(prompt_settings, "a cat <lora:Watercolor:0.7>", "blurry <lora:alice>", None, "")
    check_networks(prompt_settings, "a cat <lora:watercolor:0.5:1>")  # case, te/unet weights
    check_networks(prompt_settings, "EasyNegative, a <b:c> tag that is not ours")


def test_an_unknown_lora_is_refused_with_the_names_there_are(prompt_settings):
    with pytest.raises(InvalidOption) as caught:
        check_networks(prompt_settings, "a cat", "<lora:Oil:1>")
    assert caught.value.message == "Unknown LoRA `Oil`. Available: alice, Watercolor."


def test_no_loras_installed(tmp_path):
    settings = PromptSettings(lora_dirs=(str(tmp_path / "missing"),))
    with pytest.raises(InvalidOption, match="no LoRAs installed"):
        check_networks(settings, "<lora:x>")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:>", "has no LoRA name"),
        ("<lora:Watercolor:much>", "the weight must be a number"),
        ("<lora:Watercolor:0.5", "is not closed"),
        ("<hypernet:anime:1>", "hypernetworks are not supported"),
    ],
)
def test_malformed_tags_are_refused(prompt_settings, prompt, message):
    with pytest.raises(InvalidOption, match=message):
        check_networks(prompt_settings, prompt)


def test_the_whole_settings_work_too(settings):
    # The conftest settings point at empty folders under tmp_path.
    assert lora_names(settings) == [] and embedding_names(settings) == []
    with pytest.raises(InvalidOption, match="Unknown LoRA `x`"):
        check_networks(settings, "<lora:x:1>")


def test_the_module_imports_no_torch():
    code = (
        "import sys, bot.prompts.networks, bot.jobs.network_checks;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_imagine_lists_applies_and_refuses_loras_and_embeddings(harness, tiny_pipe):
    """Through the bot and the real worker: autocomplete lists the files, the picked LoRA is
    written into the prompt and changes the image, and an unknown one queues nothing."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    from db.models import JobStatus
    from tests.test_inference_networks import write_kohya_lora

    prompts = harness.settings.prompts
    write_kohya_lora(tiny_pipe, Path(prompts.lora_dirs[0]) / "inkwash.safetensors", seed=3, scale=2.0)
    Path(prompts.embedding_dirs[0]).mkdir(parents=True, exist_ok=True)
    dim = tiny_pipe.text_encoder.get_input_embeddings().weight.shape[1]
    torch.save({"string_to_param": {"*": torch.randn(1, dim)}}, Path(prompts.embedding_dirs[0]) / "shiny-style.pt")

    alice = harness.member("alice")
    assert [c["name"] for c in await alice.autocomplete(harness.channel, "imagine", "lora", "ink")] == ["inkwash"]
    assert [c["name"] for c in await alice.autocomplete(harness.channel, "imagine", "embedding", "")] == ["shiny-style"]

    async def run(**options) -> tuple:
        await alice.slash(harness.channel, "imagine", prompt="a fox --seed 7", count=1, **options)
        job = await harness.wait_for_job((await harness.latest_job()).id)
        assert job.status == JobStatus.COMPLETED, job.error
        return job, np.asarray(PILImage.open(job.images[0].path), dtype=np.int16)

    plain_job, plain = await run()
    lora_job, with_lora = await run(lora="inkwash")
    assert lora_job.prompt == "a fox, <lora:inkwash:1>" and lora_job.seed == 7
    assert np.abs(with_lora - plain).mean() > 1.0
    embedding_job, _ = await run(embedding="shiny-style")
    assert embedding_job.prompt == "a fox, shiny-style"

    count = await harness.job_count()
    for options, expected in (
        ({"lora": "nope"}, "Unknown LoRA `nope`"),
        ({"embedding": "glossy"}, "Unknown embedding `glossy`. Available: shiny-style."),
        ({"prompt": "a fox <lora:inkwash:lots>"}, "lora"),
    ):
        answer = await alice.slash(harness.channel, "imagine", **{"prompt": "a fox", **options})
        assert expected in private_answer(answer), private_answer(answer)
        harness.expect_user_errors()
    assert await harness.job_count() == count
