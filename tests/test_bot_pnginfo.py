"""/pnginfo and the "PNG info" message menu through the bot: A1111's infotext read from the
bot's own PNGs, from A1111-style PNGs, JPEGs and WebPs (EXIF UserComment), and "Re-run here"
queuing those parameters as a new job."""

from __future__ import annotations

import io

import discord
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bot import image_infotext as pnginfo_store
from bot.image_infotext import decode_user_comment
from db.models import JobStatus
from inference.common.protocol import JobKind
from tests.harness import private_answer
from tests.test_bot_inputs import noise_png

A1111_TEXT = (
    "a lighthouse at dusk, (oil painting:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 64x96, "
    'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def a1111_png(text: str = A1111_TEXT) -> bytes:
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 96), (90, 120, 200)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def with_exif_comment(fmt: str, comment: bytes) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    buffer = io.BytesIO()
    Image.new("RGB", (64, 96), (200, 120, 90)).save(buffer, format=fmt, exif=exif, quality=90)
    return buffer.getvalue()


def shown(answer):
    """The private answer holding the embed (the deferred reply, or its followup)."""
    assert answer.ephemeral, answer
    messages = [m for m in [answer.response, *answer.followups] if m is not None and m.embeds]
    assert messages, (answer.response, answer.followups)
    return messages[-1]


def fields(message) -> dict[str, str]:
    return {field.name: field.value for field in message.embeds[0].fields}


def test_user_comment_encodings():
    text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7"
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16")) == text  # with a BOM
    assert decode_user_comment(b"ASCII\0\0\0" + text.encode()) == text
    assert decode_user_comment(b"UNICODE\0") is None


async def test_pnginfo_reads_images_and_reruns_them(harness, monkeypatch):
    read = pnginfo_store.read_attachment
    alice = harness.member("alice")

    # An A1111 PNG: every pair shown; Re-run here queues them (an unknown model: the default).
    answer = await alice.slash(harness.channel, "pnginfo", image=("lighthouse.png", a1111_png()))
    message = shown(answer)
    embed = message.embeds[0]
    assert embed.description == "a lighthouse at dusk, (oil painting:1.2)"
    pairs = fields(message)
    assert pairs["Negative prompt"] == "blurry, lowres"
    assert (pairs["Steps"], pairs["Sampler"], pairs["Schedule type"], pairs["CFG scale"]) == ("3", "DPM++ 2M", "Karras", "6.5")
    assert (pairs["Seed"], pairs["Size"], pairs["Model"], pairs["Lora hashes"]) == ("1234", "64x96", "sd_xl_base_1.0", "a: 1, b: 2")
    assert "15 minutes" in message.content
    rerun = await alice.click(message.message, label="Re-run here")
    assert rerun.acknowledged and not rerun.ephemeral
    notes = [f.content for f in rerun.followups if f.ephemeral]
    assert notes == ["Model `sd_xl_base_1.0` is not on this server; its default model `tiny` was used."]
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert (job.kind, job.prompt, job.negative_prompt, job.model) == (
        JobKind.TXT2IMG, "a lighthouse at dusk, (oil painting:1.2)", "blurry, lowres", "tiny",
    )
    assert (job.steps, job.sampler, job.cfg_scale, job.seed, job.width, job.height, job.count, job.user_id) == (
        3, "DPM++ 2M", 6.5, 1234, 64, 96, 1, alice.id,
    )
    assert job.schedule_type == "Karras"

    # The bot's own result: read back from the message's file, and re-run from the menu.
    made = await alice.slash(harness.channel, "imagine", prompt="a red fox", count=1, seed=7, steps=2, sampler="Euler")
    assert made.acknowledged
    first = await harness.wait_for_job((await harness.latest_job()).id)
    result = harness.message(first.message_id)
    data = await result.attachments[0].read()
    message = shown(await alice.slash(harness.channel, "pnginfo", image=("fox.png", data)))
    pairs = fields(message)
    assert message.embeds[0].description == "a red fox"
    assert (pairs["Steps"], pairs["Sampler"], pairs["Seed"], pairs["Size"], pairs["Model"]) == ("2", "Euler", "7", "64x64", "tiny")

    menu = await alice.context_menu(harness.channel, "PNG info", result)
    message = shown(menu)
    assert message.embeds[0].description == "a red fox" and not message.content
    # The kept parameters are gone (15 minutes later, or after a restart): the button reads
    # the result message's image again.
    pnginfo_store._kept.clear()
    reads = []
    monkeypatch.setattr(pnginfo_store, "read_attachment", lambda a, s: reads.append(a.filename) or read(a, s))
    rerun = await alice.click(message.message, label="Re-run here")
    assert rerun.acknowledged and not [f for f in rerun.followups if f.ephemeral]
    assert reads == [result.attachments[0].filename]
    monkeypatch.undo()
    again = await harness.wait_for_job((await harness.latest_job()).id)
    assert again.id != first.id and again.status == JobStatus.COMPLETED, again.error
    assert (again.prompt, again.steps, again.sampler, again.seed, again.width, again.height) == (
        "a red fox", 2, "Euler", 7, 64, 64,
    )

    # An upload's parameters, once expired, are not guessed at.
    message = shown(await alice.slash(harness.channel, "pnginfo", image=("lighthouse.png", a1111_png())))
    pnginfo_store._kept.clear()
    expired = await alice.click(message.message, label="Re-run here")
    assert "have expired" in private_answer(expired)

    # JPEG and WebP: A1111's EXIF UserComment, UTF-16 big-endian (piexif) and little-endian.
    for name, fmt, comment in [
        ("photo.jpg", "JPEG", b"UNICODE\0" + A1111_TEXT.encode("utf-16-be")),
        ("photo.webp", "WEBP", b"UNICODE\0" + A1111_TEXT.encode("utf-16-be")),
        ("photo-le.webp", "WEBP", b"UNICODE\0" + A1111_TEXT.encode("utf-16-le")),
    ]:
        message = shown(await alice.slash(harness.channel, "pnginfo", image=(name, with_exif_comment(fmt, comment))))
        pairs = fields(message)
        assert message.embeds[0].description == "a lighthouse at dusk, (oil painting:1.2)", name
        assert (pairs["Seed"], pairs["Size"], pairs["Negative prompt"]) == ("1234", "64x96", "blurry, lowres"), name

    # No metadata, and not an image.
    answer = await alice.slash(harness.channel, "pnginfo", image=("plain.png", noise_png(32, 32)))
    assert "No generation parameters found in this image" in private_answer(answer)
    answer = await alice.slash(harness.channel, "pnginfo", image=("notes.png", b"a shopping list\n" * 10))
    assert "The image `notes.png` is not an image I can read" in private_answer(answer)
    harness.expect_user_errors()

    # The menu on a member's message: the first image of several; none at all.
    posted = await alice.send(
        harness.channel, "two pictures",
        attachments=[("readme.txt", b"hello"), ("one.png", a1111_png()), ("two.png", noise_png(16, 16))],
    )
    message = shown(await alice.context_menu(harness.channel, "PNG info", posted))
    assert message.content == "This message has 2 images; this is the first."
    assert fields(message)["Seed"] == "1234"
    text_only = await alice.send(harness.channel, "no pictures here")
    answer = await alice.context_menu(harness.channel, "PNG info", text_only)
    assert private_answer(answer) == "This message has no image attached."
    harness.expect_user_errors()


async def test_rerun_is_refused_past_the_server_limits(harness):
    alice = harness.member("alice")
    big = A1111_TEXT.replace("Size: 64x96", "Size: 1024x1024")
    message = shown(await alice.slash(harness.channel, "pnginfo", image=("big.png", a1111_png(big))))
    assert fields(message)["Size"] == "1024x1024"
    answer = await alice.click(message.message, label="Re-run here")
    assert "128" in private_answer(answer), private_answer(answer)
    harness.expect_user_errors()
    assert await harness.job_count() == 0


def test_the_embed_stays_within_discord_limits():
    from bot.cogs.pnginfo import info_embed

    params = {"Prompt": "p" * 5000, "Negative prompt": "n" * 3000}
    params.update({f"Key {number}": "v" * 900 for number in range(40)})
    embed = info_embed(params, "x" * 300)
    assert len(embed) <= 6000 and len(embed.fields) <= 25
    assert len(embed.title or "") <= 256 and len(embed.description or "") <= 4096
    assert all(len(field.value or "") <= 1024 and len(field.name or "") <= 256 for field in embed.fields)
    assert embed.fields[-1].name == "More"
    few = info_embed({"Prompt": "a cat", "Negative prompt": "", "Steps": "20", "Seed": "5"}, "cat.png")
    assert [(f.name, f.value) for f in few.fields] == [("Steps", "20"), ("Seed", "5")]


async def test_a_forged_rerun_button_reads_no_image_of_another_server(harness):
    # The button names the image's channel and message, read again once its parameters
    # expired: forged, it named an image of another server the bot is in, and queued its prompt.
    other = harness.env.create_guild(name="another server")
    elsewhere = other.create_text_channel("private")
    bob = other.add_member(harness.env.create_user("bob"))
    await harness.settle()
    posted = await bob.send(elsewhere, "mine", attachments=[("secret.png", a1111_png("a secret castle\nSteps: 2, Seed: 1, Size: 64x64"))])
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="Re-run here", custom_id=f"sd:pi:0badc0de:{elsewhere.id}:{posted.id}:0"))
    forged = await harness.bot.get_channel(harness.channel.id).send("copied", view=view)
    view.stop()
    await harness.settle()
    alice = harness.member("alice")
    assert "The image's message is gone" in private_answer(await alice.click(forged, label="Re-run here"))
    harness.expect_user_errors()
    assert await harness.job_count() == 0
