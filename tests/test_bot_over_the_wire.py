"""The real `sdbot run` process over the wire: its HTTP requests, multipart uploads and gateway
connection against the fake Discord of tests/discord_wire.py, which holds every request to
Discord's limits. The other bot tests run discord.py on simcord, which replaces this layer.

One bot process (with its worker) serves the whole module: starting one costs 10 to 20 s.
After each test, a request that broke a limit or took an unknown route, or an error in the
bot's log, fails it (`nothing_wrong_on_the_wire`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image
from sqlalchemy import select

from bot.config import Settings, WorkerSettings
from db.models import Image as JobImage
from db.models import Job
from db.session import Database
from tests.conftest import copy_migrated_database
from tests import discord_limits
from tests.discord_payloads import EPHEMERAL, LOADING, Member
from tests.discord_wire import (
    APPLICATION_ID, CHOICES, DEFERRED, START_TIMEOUT_S, WITH_MESSAGE, FakeDiscord, Interaction, start_bot, stop_with_sigterm,
)
from tests.test_startup_and_cli import write_config
from tests.tiny_settings import tiny_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOB_TIMEOUT_S = 120.0
PROMPT_OPTION_MAX = 4000  # the prompt options' max_length (bot.cogs.generation_options)
GRID_BUTTONS = ["U1", "U2", "U3", "U4", "Reroll", "V1", "V2", "V3", "V4", "Remix", "Remove"]
# The log lines of a failure, which discord.py writes instead of raising (a handler's error).
RESULT_FILE = re.compile(r"job\d+\.(png|jpg|webp)")  # bot.delivery's name of a result's upload
FAILURE_LINE = re.compile(r" (ERROR|CRITICAL) |^Traceback", re.MULTILINE)


@dataclass
class Wire:
    discord: FakeDiscord
    settings: Settings
    log: Path
    alice: Member
    bob: Member


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire(tmp_path_factory, tiny_model_dir, migrated_database_file):
    folder = tmp_path_factory.mktemp("wire")
    settings = tiny_settings(folder, tiny_model_dir, worker=WorkerSettings(device="cpu"))
    copy_migrated_database(migrated_database_file, folder)  # the bot's start migrates no further
    config = write_config(folder / "config.toml", settings)
    # Prompts as long as Discord lets a member type them (the options' 4000), not the default 1500.
    config.write_text(config.read_text().replace("[limits]\n", f"[limits]\nmax_prompt_length = {PROMPT_OPTION_MAX}\n"))
    discord = FakeDiscord()
    await discord.start()
    log = folder / "bot.log"
    bot = await start_bot(config, discord.address, log)
    discord.watch(bot)
    try:
        await discord.wait_for(lambda: discord.commands and discord.identified, "the command sync and IDENTIFY", START_TIMEOUT_S)
        yield Wire(discord, settings, log, discord.member("alice"), discord.member("bob"))
    finally:
        if bot.returncode is None:
            code, output = await stop_with_sigterm(bot, log)
            assert code == 0, output
        await discord.close()


@pytest.fixture(autouse=True)
def nothing_wrong_on_the_wire(wire: Wire):
    seen, logged = len(wire.discord.violations), wire.log.stat().st_size
    yield
    with wire.log.open("rb") as file:
        file.seek(logged)
        log = file.read().decode(errors="replace")
    problems = wire.discord.violations[seen:]
    if FAILURE_LINE.search(log):
        problems.append(f"the bot logged a failure:\n{log}")
    assert not problems, "\n".join(problems)


def upload_of(discord: FakeDiscord, interaction: Interaction, method: str) -> Image.Image | None:
    """The image of the interaction's original response, once a `method` request (PATCH: an
    edit; POST: the followup that replaced a "thinking…") that Discord took has uploaded one."""
    token = interaction.token
    sent = [
        s for s in discord.sent
        if s.method == method and s.files and s.status == 200 and s.path.startswith(f"/webhooks/{APPLICATION_ID}/{token}")
    ]
    if not sent:
        return None
    attachment = discord.messages[interaction.original_id or 0]["attachments"][0]
    image = Image.open(io.BytesIO(discord.uploads[int(attachment["id"])]))
    image.load()
    return image


def private_followup(discord: FakeDiscord, interaction: Interaction) -> dict | None:
    """The interaction's ephemeral message other than its original response, once sent."""
    ids = [i for i in interaction.message_ids if i != interaction.original_id and i in discord.messages]
    return next((discord.messages[i] for i in ids if int(discord.messages[i]["flags"]) & EPHEMERAL), None)


def labels(discord: FakeDiscord, message_id: int) -> list[str]:
    return [button.get("label", "") for row in discord.messages[message_id]["components"] for button in row.get("components", [])]


async def imagine_grid(wire: Wire, **options) -> tuple[Interaction, Image.Image]:  # type: ignore[no-untyped-def]
    """alice's /imagine of 4 images, to its grid uploaded by an edit of the original response."""
    discord = wire.discord
    options = {"prompt": "a lighthouse at dusk", **options}
    command = await discord.slash(wire.alice, "imagine", count=4, **options)
    grid = await discord.wait_for(lambda: upload_of(discord, command, "PATCH"), "the grid", JOB_TIMEOUT_S)
    return command, grid


async def grid_on_disk(settings: Settings, command: Interaction) -> Path:
    """The file the worker wrote for the job this command queued (its newest): its grid, or
    the image of a job of one image."""
    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            query = select(Job).where(Job.user_id == int(command.payload["member"]["user"]["id"])).order_by(Job.id.desc())
            job = await session.scalar(query.limit(1))
            assert job is not None
            first = await session.scalar(select(JobImage.path).where(JobImage.job_id == job.id, JobImage.index == 0))
    finally:
        await db.close()
    path = job.grid_path or first
    assert path is not None
    return Path(path)


async def test_imagine_ends_with_its_grid_and_buttons_in_an_edit_of_the_original_response(wire: Wire):
    command, grid = await imagine_grid(wire, seed=1234)
    assert command.callback is not None and command.callback["type"] == DEFERRED
    assert not int(command.callback.get("data", {}).get("flags", 0)) & EPHEMERAL  # public
    message = wire.discord.messages[command.original_id or 0]
    assert not int(message["flags"]) & LOADING
    assert grid.format == "PNG" and grid.size == (128, 128)
    # The embed shows the uploaded grid (the fake resolved its attachment:// name).
    assert message["embeds"][0]["image"]["url"] == message["attachments"][0]["url"]
    assert labels(wire.discord, int(message["id"])) == GRID_BUTTONS


async def test_u1_posts_the_first_image_and_a_stranger_cannot_remove_the_grid(wire: Wire):
    discord = wire.discord
    command, _ = await imagine_grid(wire, seed=99)
    grid_id = command.original_id or 0

    u1 = await discord.press(wire.alice, grid_id, "U1")
    image = await discord.wait_for(lambda: upload_of(discord, u1, "POST"), "U1's image", JOB_TIMEOUT_S)
    assert u1.callback is not None and u1.callback["type"] == DEFERRED
    assert image.size == (64, 64)
    post = discord.messages[u1.original_id or 0]
    assert post["content"].startswith("Image 1 of job #") and not int(post["flags"]) & EPHEMERAL
    assert "Upscale 2x" in labels(discord, int(post["id"]))

    # A second U1 is acknowledged publicly before the bot knows the image is posted: that
    # "thinking…" is finished and deleted, and the link comes privately.
    again = await discord.press(wire.alice, grid_id, "U1")
    link = await discord.wait_for(lambda: private_followup(discord, again), "the second U1's answer", JOB_TIMEOUT_S)
    assert link["content"].startswith("Image 1 of job #") and "already posted" in link["content"]
    assert again.original_id not in discord.messages

    # 🗑️ is its owner's (or a moderator's): bob hears so privately, and the grid stays.
    remove = await discord.press(wire.bob, grid_id, "Remove")
    await discord.wait_for(lambda: remove.callback, "the answer to bob's Remove", JOB_TIMEOUT_S)
    assert remove.callback["type"] == WITH_MESSAGE and int(remove.callback["data"]["flags"]) & EPHEMERAL
    assert remove.callback["data"]["content"].startswith("Only the person who made job #")
    assert grid_id in discord.messages


async def test_a_grid_over_the_upload_limit_goes_out_smaller_and_within_it(wire: Wire):
    """Every interaction says how big an upload may be (attachment_size_limit); the tiny
    model's PNG grid is over this one, so the bot must send a smaller file that fits."""
    limit = 16 * 1024
    command, grid = await imagine_grid(wire, seed=7, upload_limit=limit)
    png = await grid_on_disk(wire.settings, command)
    assert png.stat().st_size > limit, "the grid fits the limit as it is: lower the limit for this test"
    attachment = wire.discord.messages[command.original_id or 0]["attachments"][0]
    assert attachment["size"] <= limit
    assert grid.format in ("JPEG", "WEBP") or grid.width < 128


async def test_the_longest_prompts_fit_in_discords_embeds(wire: Wire):
    """The status and result embeds quote the prompts: cut to what an embed holds, all of them
    together within 6,000 characters (the checks of every request say whether they are)."""
    long = ("a lighthouse on a cliff at dusk, " * 130)[:PROMPT_OPTION_MAX]
    command, _ = await imagine_grid(wire, prompt=long, negative_prompt=long.upper())
    title = wire.discord.messages[command.original_id or 0]["embeds"][0]["title"]
    assert title.endswith("…") and long.startswith(title.removesuffix("…"))


def png(size: tuple[int, int], colour: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_attachment(discord: FakeDiscord, filename: str, size: tuple[int, int], colour: str = "white") -> dict:
    return discord.attachment(filename, png(size, colour), width=size[0], height=size[1])


async def refused_privately(discord: FakeDiscord, interaction: Interaction) -> str:
    """The private answer that ends a refused command: its "thinking…" withdrawn, the reason
    in an ephemeral followup only its member sees."""
    refusal = await discord.wait_for(lambda: private_followup(discord, interaction), "the private refusal", JOB_TIMEOUT_S)
    assert interaction.original_id not in discord.messages
    return refusal["content"]


async def test_img2img_reads_an_upload_from_discords_cdn_and_answers_with_its_result(wire: Wire):
    discord = wire.discord
    photo = image_attachment(discord, "photo.png", (64, 64), "navy")
    command = await discord.slash(wire.alice, "img2img", image=photo, prompt="a lighthouse at night", seed=5, count=1)
    result = await discord.wait_for(lambda: upload_of(discord, command, "PATCH"), "the img2img result", JOB_TIMEOUT_S)
    assert result.size == (64, 64)


async def test_uploads_that_are_not_images_or_too_large_are_refused_privately(wire: Wire):
    discord = wire.discord
    broken = discord.attachment("photo.png", b"these bytes are not a picture", content_type="image/png")
    command = await discord.slash(wire.alice, "img2img", image=broken, prompt="a lighthouse")
    assert "is not an image I can read" in await refused_privately(discord, command)

    limit = wire.settings.images.max_upload_bytes
    # Discord states the size: the bot refuses before downloading the (here small) bytes.
    huge = discord.attachment("huge.png", png((8, 8)), size=limit + 1, width=8, height=8)
    command = await discord.slash(wire.alice, "img2img", image=huge, prompt="a lighthouse")
    assert "this server accepts uploads of up to" in await refused_privately(discord, command)


async def test_inpaint_takes_a_scaled_mask_with_a_note_and_refuses_one_of_another_shape(wire: Wire):
    discord = wire.discord
    image = image_attachment(discord, "photo.png", (64, 64), "navy")
    wrong = image_attachment(discord, "mask.png", (64, 32))
    command = await discord.slash(wire.alice, "inpaint", image=image, mask=wrong, prompt="a boat")
    assert "they must have the same shape" in await refused_privately(discord, command)

    scaled = image_attachment(discord, "mask.png", (32, 32))
    command = await discord.slash(wire.alice, "inpaint", image=image, mask=scaled, prompt="a boat", seed=3, count=1)
    result = await discord.wait_for(lambda: upload_of(discord, command, "PATCH"), "the inpaint result", JOB_TIMEOUT_S)
    assert result.size == (64, 64)
    note = await discord.wait_for(lambda: private_followup(discord, command), "the note on the mask", JOB_TIMEOUT_S)
    assert note["content"] == "The mask was 32x32 and was resized to the image's 64x64."


async def test_remix_opens_a_form_within_discords_limits_and_its_submission_makes_the_new_job(wire: Wire):
    discord = wire.discord
    command, _ = await imagine_grid(wire, seed=11)
    remix = await discord.press(wire.alice, command.original_id or 0, "Remix")
    modal = await discord.wait_for(lambda: remix.modal, "the Remix form", JOB_TIMEOUT_S)
    prompts = {row["components"][0]["custom_id"]: row["components"][0].get("value") for row in modal["components"]}
    assert prompts == {"prompt": "a lighthouse at dusk", "negative_prompt": None}

    submitted = await discord.submit(wire.alice, remix, {"prompt": "a lighthouse at dawn"})
    await discord.wait_for(lambda: upload_of(discord, submitted, "PATCH"), "the remixed grid", JOB_TIMEOUT_S)
    message = discord.messages[submitted.original_id or 0]
    assert "a lighthouse at dawn" in message["embeds"][0]["title"]
    assert labels(discord, int(message["id"])) == GRID_BUTTONS


async def test_the_sampler_option_autocompletes_within_discords_limits(wire: Wire):
    discord = wire.discord
    typing = await discord.autocomplete(wire.alice, "imagine", "sampler", "dpm++ 2m", prompt="a lighthouse")
    answer = await discord.wait_for(lambda: typing.callback, "the autocomplete answer", JOB_TIMEOUT_S)
    assert answer["type"] == CHOICES
    names = [choice["name"] for choice in answer["data"]["choices"]]
    assert names and all("dpm++ 2m" in name.lower() for name in names), names
    assert "DPM++ 2M" in [choice["value"] for choice in answer["data"]["choices"]]


async def test_a_result_after_the_token_expired_arrives_as_a_channel_message_with_its_image_and_buttons(wire: Wire):
    """The interaction's id says it was made 14 min 50 s ago: its token (15 minutes from then)
    takes the status message, and the fake answers 50027 to its webhook from the 15th minute.
    The bot must not count on it past its own margin: the result is a new channel message,
    through the bot's token, mentioning its owner."""
    discord = wire.discord
    command = await discord.slash(wire.alice, "imagine", prompt="a lighthouse in fog", seed=21, count=4, age_s=14 * 60 + 50)

    def posted() -> dict | None:
        return next((m for m in discord.messages.values() if "webhook_id" not in m and m["attachments"]), None)

    message = await discord.wait_for(posted, "the result in a channel message", JOB_TIMEOUT_S)
    assert message["content"].startswith(f"<@{wire.alice.id}> job #") and not int(message["flags"]) & EPHEMERAL
    assert message["embeds"][0]["image"]["url"] == message["attachments"][0]["url"]
    assert labels(discord, int(message["id"])) == GRID_BUTTONS
    image = Image.open(io.BytesIO(discord.uploads[int(message["attachments"][0]["id"])]))
    assert image.size == (128, 128)
    assert not [s for s in discord.sent if s.method == "PATCH" and s.files and command.token in s.path]


async def test_a_token_discord_ends_early_still_gets_the_result_out_as_a_channel_message(wire: Wire):
    """Discord answers 50027 Invalid Webhook Token while the bot still counts the token as
    fresh (ended early by Discord, not by the clock): the result's edit fails, and the result
    goes out through the bot's token instead of being lost with the failed edit."""
    discord = wire.discord
    command = await discord.slash(wire.alice, "imagine", prompt="a harbour at night", seed=22, count=4, steps=40)

    def status() -> bool:  # the first followup has replaced the "thinking…" with the job's status
        return command.original_id is not None and bool(discord.messages[command.original_id]["embeds"])

    await discord.wait_for(status, "the status message", JOB_TIMEOUT_S)
    discord.revoke(command)

    def posted() -> dict | None:
        return next(
            (m for m in discord.messages.values()
             if "webhook_id" not in m and m["attachments"] and "harbour" in str(m["embeds"])), None,
        )

    message = await discord.wait_for(posted, "the result in a channel message", JOB_TIMEOUT_S)
    assert message["content"].startswith(f"<@{wire.alice.id}> job #")
    assert labels(discord, int(message["id"])) == GRID_BUTTONS


def result_message(discord: FakeDiscord, interaction: Interaction) -> dict | None:
    """The interaction's message that carries a job's result (its original response, edited or
    replaced by a followup, or a followup), once there is one: not the status's thumbnail of
    the image it started from."""
    ids = [interaction.original_id, *interaction.message_ids]
    return next(
        (discord.messages[i] for i in ids
         if i in discord.messages and any(RESULT_FILE.fullmatch(a["filename"]) for a in discord.messages[i]["attachments"])),
        None,
    )


def attached_image(discord: FakeDiscord, message: dict) -> Image.Image:
    image = Image.open(io.BytesIO(discord.uploads[int(message["attachments"][0]["id"])]))
    image.load()
    return image


def no_413(discord: FakeDiscord, since: int) -> None:
    refused = [f"{s.method} {s.path}" for s in discord.sent[since:] if s.status == 413]
    assert not refused, f"Discord refused uploads over the limit: {refused}"


async def test_an_upscale_over_the_upload_limit_goes_out_within_it(wire: Wire):
    """DISCORD.md's "413 Payload Too Large on big upscales": U1, then Upscale 4x under that
    image, where the member's server takes uploads of 16 KiB. The upscaled PNG is over it;
    the bot uploads a smaller file that fits instead of losing the result to a 413."""
    discord, limit = wire.discord, 16 * 1024
    command, _ = await imagine_grid(wire, seed=31)
    u1 = await discord.press(wire.alice, command.original_id or 0, "U1")
    await discord.wait_for(lambda: upload_of(discord, u1, "POST"), "U1's image", JOB_TIMEOUT_S)
    since = len(discord.sent)
    upscale = await discord.press(wire.alice, u1.original_id or 0, "Upscale 4x", upload_limit=limit)
    message = await discord.wait_for(lambda: result_message(discord, upscale), "the upscaled image", JOB_TIMEOUT_S)
    png = await grid_on_disk(wire.settings, upscale)
    with Image.open(png) as on_disk:
        assert on_disk.size == (256, 256)
    assert png.stat().st_size > limit, "the upscale fits the limit as it is: lower the limit for this test"
    assert message["attachments"][0]["size"] <= limit
    image = attached_image(discord, message)
    assert image.format in ("JPEG", "WEBP") or image.width < 256
    no_413(discord, since)


async def test_an_xy_plot_over_the_upload_limit_goes_out_within_it(wire: Wire):
    """An /xyplot grid (four cells and their labels) where uploads may be 16 KiB."""
    discord, limit = wire.discord, 16 * 1024
    since = len(discord.sent)
    command = await discord.slash(
        wire.alice, "xyplot", upload_limit=limit, prompt="a lighthouse", seed=7, x_type="Steps", x_values="2, 3",
        y_type="CFG Scale", y_values="5-7 (+2)",
    )
    message = await discord.wait_for(lambda: result_message(discord, command), "the plot", JOB_TIMEOUT_S)
    png = await grid_on_disk(wire.settings, command)
    assert png.stat().st_size > limit, "the plot fits the limit as it is: lower the limit for this test"
    assert message["attachments"][0]["size"] <= limit
    no_413(discord, since)


async def test_a_private_members_late_result_goes_by_dm_and_nothing_of_it_to_the_channel(wire: Wire):
    """carol turns private results on (/settings): her /imagine is answered privately (an
    ephemeral "thinking…"), and once its token has expired the result goes by DM, the DM
    opened through POST /users/@me/channels; the server's channel sees nothing of it."""
    discord = wire.discord
    carol = discord.member("carol")
    shown = await discord.slash(carol, "settings")
    await discord.wait_for(lambda: shown.original_id in discord.messages, "the settings panel", JOB_TIMEOUT_S)
    toggle = await discord.press(carol, shown.original_id or 0, "Private results: off")
    await discord.wait_for(lambda: "Private results: on" in labels(discord, shown.original_id or 0), "the setting saved", JOB_TIMEOUT_S)
    assert toggle.callback is not None

    before = set(discord.messages)
    prompt = "a secret garden in fog"
    command = await discord.slash(carol, "imagine", prompt=prompt, seed=23, count=4, age_s=14 * 60 + 50)
    await discord.wait_for(lambda: command.callback, "the acknowledgement", JOB_TIMEOUT_S)
    assert command.callback["type"] == DEFERRED and int(command.callback["data"]["flags"]) & EPHEMERAL

    def delivered() -> dict | None:
        return next((m for m in discord.dms_of(carol) if m["attachments"]), None)

    message = await discord.wait_for(delivered, "the result by DM", JOB_TIMEOUT_S)
    assert re.match(r"<@\d+> job #\d+ is done", message["content"]) and "guild_id" not in message
    assert message["embeds"][0]["image"]["url"] == message["attachments"][0]["url"]
    assert attached_image(discord, message).size == (128, 128)
    assert "Remove" in labels(discord, int(message["id"]))
    public = [
        m for i, m in discord.messages.items()
        if i not in before and m["channel_id"] == str(discord.guild.channel_id) and not int(m["flags"]) & EPHEMERAL
    ]
    assert not [m for m in public if str(carol.id) in str(m) or prompt in str(m)], public
    assert not [s for s in discord.sent if s.files and command.token in s.path]


async def test_the_inpaint_form_takes_a_mask_uploaded_in_it(wire: Wire):
    """Inpaint under one image opens a form with a file upload; Discord sends its submission
    with the upload's attachment id among the component's values and the attachment itself in
    data.resolved.attachments. The bot reads the mask from the CDN (half the image's size:
    the note that it was resized says it was read) and answers with the inpainted image."""
    discord = wire.discord
    command, _ = await imagine_grid(wire, seed=41)
    u1 = await discord.press(wire.alice, command.original_id or 0, "U1")
    await discord.wait_for(lambda: upload_of(discord, u1, "POST"), "U1's image", JOB_TIMEOUT_S)
    inpaint = await discord.press(wire.alice, u1.original_id or 0, "Inpaint")
    modal = await discord.wait_for(lambda: inpaint.modal, "the Inpaint form", JOB_TIMEOUT_S)
    uploads = [top["component"] for top in modal["components"] if top["type"] == discord_limits.LABEL]
    assert [u["custom_id"] for u in uploads if u["type"] == discord_limits.FILE_UPLOAD] == ["mask"]

    mask = image_attachment(discord, "mask.png", (32, 32))
    submitted = await discord.submit(wire.alice, inpaint, {"mask": [mask], "prompt": "a boat at sea"})
    message = await discord.wait_for(lambda: result_message(discord, submitted), "the inpainted image", JOB_TIMEOUT_S)
    assert "a boat at sea" in message["embeds"][0]["title"]
    assert attached_image(discord, message).size == (128, 128)  # the server's default count: four 64x64 inpaints
    note = await discord.wait_for(lambda: private_followup(discord, submitted), "the note on the mask", JOB_TIMEOUT_S)
    assert note["content"] == "The mask was 32x32 and was resized to the image's 64x64."
