"""What the bot says fits Discord and gives nothing away: refusals that quote a member's text,
failed jobs' public messages, and prompt text cleaned of control characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import private_answer

LONG = "a" * 2500


@pytest.mark.parametrize(
    "options",
    [
        {"sampler": LONG},
        {"model": LONG},
        {"embedding": LONG},
        {"hires_scale": 1.5, "hires_upscaler": LONG},
        {"style": LONG},
        {"lora": LONG},
        {"prompt": "a cat --" + LONG},
    ],
)
async def test_a_refusal_quoting_a_huge_option_fits_in_one_message(harness, options):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", **{"prompt": "a cat", **options})
    answer = private_answer(result)
    assert len(answer) <= 400 and "a" * 120 not in answer, answer
    harness.expect_user_errors()
    assert await harness.job_count() == 0


async def test_an_unknown_lora_among_many_is_refused_in_a_short_message(harness):
    loras = Path(harness.settings.prompts.lora_dirs[0])
    loras.mkdir(parents=True, exist_ok=True)
    for number in range(25):
        (loras / f"{number:02d}-{'watercolour landscape style ' * 3}.safetensors").write_bytes(b"")
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a cat <lora:" + "x" * 1400 + ">")
    answer = private_answer(result)
    assert answer.startswith("Unknown LoRA") and "and 15 more" in answer and len(answer) <= 800, answer
    harness.expect_user_errors()
    assert await harness.job_count() == 0

