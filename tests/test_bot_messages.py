"""What the bot says fits Discord and gives nothing away: refusals that quote a member's text,
failed jobs' public messages, and prompt text cleaned of control characters."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.policy.audit import Action
from db.models import AuditEntry, JobStatus
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



async def test_a_job_that_breaks_on_the_server_shows_a_sentence_and_keeps_the_error_for_moderators(harness):
    outputs = Path(harness.settings.outputs_dir)
    outputs.mkdir(parents=True, exist_ok=True)
    today = dt.date.today()  # the worker's day folder; either side of it, in case midnight passes
    for day in (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)):
        (outputs / day.isoformat()).write_text("a file where the day's folder should be")
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a lighthouse", count=1)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.FAILED
    shown = str(harness.message(result.response.id).embeds[0].to_dict())
    assert "Saving the images failed. The error was logged for the server's moderators." in shown
    for internal in ("Errno", "FileExistsError", "Error:", str(outputs)):
        assert internal not in shown, shown
    assert "FileExistsError" in job.error and str(outputs) in job.error
    async with harness.db.session() as session:
        [entry] = await session.scalars(select(AuditEntry).where(AuditEntry.action == str(Action.JOB_FAILED)))
    assert "FileExistsError" in entry.details
