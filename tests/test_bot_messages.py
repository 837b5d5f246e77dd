"""What the bot says fits Discord and gives nothing away: refusals that quote a member's text,
failed jobs' public messages, and prompt text cleaned of control characters."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import select

from bot.policy.audit import Action
from db.models import AuditEntry, JobStatus
from tests.harness import private_answer

LONG = "a" * 2500


HUGE_OPTIONS = [
    {"sampler": LONG},
    {"model": LONG},
    {"embedding": LONG},
    {"hires_scale": 1.5, "hires_upscaler": LONG},
    {"style": LONG},
    {"lora": LONG},
    {"prompt": "a cat --" + LONG},
]


async def test_a_refusal_quoting_a_huge_option_fits_in_one_message(harness):
    # One bot for every option (a refusal changes nothing), each sent by a member of its own.
    for number, options in enumerate(HUGE_OPTIONS):
        member = harness.member(f"alice{number}")
        result = await member.slash(harness.channel, "imagine", **{"prompt": "a cat", **options})
        answer = private_answer(result)
        assert len(answer) <= 400 and "a" * 120 not in answer, (list(options), answer)
        harness.expect_user_errors()
        assert await harness.job_count() == 0, list(options)


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


UNSEEN = ("\x00", "\x1b", "\u202e", "\u2066", "\u200f")


def png_with_parameters(*texts: str) -> bytes:
    info = PngInfo()
    for text in texts:
        info.add_text("parameters", text)  # each its own chunk, in order
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg_with_comment(comment: bytes) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment  # the EXIF IFD's UserComment
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 90)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


async def test_control_and_bidi_characters_never_reach_a_jobs_prompt(harness):
    alice = harness.member("alice")
    result = await alice.slash(
        harness.channel, "imagine", prompt="a red\x00 fox\u202e xof\u202c\nin snow\x1b[31m",
        negative_prompt="blur\u2066ry\u2069", count=1,
    )
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert (job.prompt, job.negative_prompt) == ("a red fox xof in snow[31m", "blurry")
    embed = str(harness.message(result.response.id).embeds[0].to_dict())
    assert not any(char in embed for char in UNSEEN)


async def test_pnginfo_says_which_parameters_chunk_it_read_and_cleans_it(harness):
    alice = harness.member("alice")
    image = png_with_parameters(
        "a lighthouse\nSteps: 2, Seed: 1, Size: 64x64",
        "a red\x00 fox\u202e\nNegative prompt: blur\u200fry\nSteps: 2, Seed: 5, Size: 64x64",
    )
    answer = await alice.slash(harness.channel, "pnginfo", image=("two.png", image))
    message = next(m for m in [answer.response, *answer.followups] if m is not None and m.embeds)
    assert 'This image has 2 "parameters" text chunks; the last one was read' in message.content
    assert message.embeds[0].description == "a red fox"
    await alice.click(message.message, label="Re-run here")
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert (job.prompt, job.negative_prompt, job.seed) == ("a red fox", "blurry", 5)


UNDECODABLE_COMMENTS = [
    b"UNICODE\0" + "a cat\nSteps: 2".encode("utf-16-be")[:-1],  # cut in the middle of a character
    b"UNICODE\0\xd8\x00\x00a",  # a lone surrogate
    b"JIS\0\0\0\0\0" + "a cat\nSteps: 2".encode("shift_jis"),
    b"ASCII\0\0\0a cat \xff\xfe\nSteps: 2",
]


async def test_pnginfo_refuses_an_exif_comment_that_does_not_decode(harness):
    # One bot for every comment (a refusal changes nothing), each sent by a member of its own.
    for number, comment in enumerate(UNDECODABLE_COMMENTS):
        member = harness.member(f"alice{number}")
        answer = await member.slash(harness.channel, "pnginfo", image=("photo.jpg", jpeg_with_comment(comment)))
        assert "This image's EXIF comment" in private_answer(answer), comment
        harness.expect_user_errors()
        assert await harness.job_count() == 0, comment


async def test_a_prompt_hitting_many_blocked_terms_is_refused_in_one_message(harness):
    from tests.test_bot_policy import admin_member

    mod = admin_member(harness, "mod")
    words = [f"word{n}" for n in range(40)]
    for word in words:
        await mod.slash(harness.channel, "admin terms add", scope="banned", kind="word", pattern=word)
    await mod.slash(harness.channel, "admin terms add", scope="banned", kind="regex", pattern=r"z+")
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt=" ".join(words) + " " + "z" * 1000, count=1)
    answer = private_answer(result)
    assert "the word `word0`" in answer and "more, which this server allows at all" in answer, answer
    assert len(answer) <= 400 and "z" * 100 not in answer
    harness.expect_user_errors()
    assert await harness.job_count() == 0
