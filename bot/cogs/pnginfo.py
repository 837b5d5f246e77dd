"""/pnginfo and the "PNG info" message menu: the generation parameters in an image, and a
"Re-run here" button that queues them as a new /imagine job for whoever clicks it.

The answer is private (ephemeral). The button must work after a restart, but a custom_id holds
100 characters, not a prompt: the parsed parameters are kept in memory under a short key for
bot.image_infotext.KEEP_S (15 minutes), and a button under a message's image also carries the
message's channel, id and attachment index, so once the key is gone (expired, restarted) the
click reads the image again (the bot's own results always; another member's image where Discord
still shows the bot its attachments). An upload to /pnginfo has no message to go back to: after
15 minutes its button says so and asks to run /pnginfo again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ui import Button, DynamicItem

from bot import actions, image_infotext
from bot.cogs.base import BotCog, add_with_menu, remove_menu
from bot.errors import InvalidOption
from bot.interactions import send_private
from bot.jobs.params import resolve_parameters, with_refiner
from bot.jobs.workflow_params import hires_parameters, upscaler_names
from bot.ui import confirm
from bot.ui.embeds import clip
from inference.common.infotext import NEGATIVE_PROMPT_KEY, PROMPT_KEY

if TYPE_CHECKING:
    from bot.client import SDBot

MENU_NAME = "PNG info"
# Discord's embed limits: 4096 description, 25 fields of 256/1024, 6000 in all.
DESCRIPTION_LIMIT = 2000
FIELD_NAME_LIMIT = 256
FIELD_LIMIT = 1024
MAX_FIELDS = 25
EMBED_BUDGET = 5800
MESSAGE_LIMIT = 2000


def info_embed(params: dict[str, str], filename: str) -> discord.Embed:
    """The prompt, the negative prompt and every other pair, clipped to Discord's limits."""
    prompt = params.get(PROMPT_KEY, "")
    embed = discord.Embed(
        title=clip(f"PNG info: {filename}", FIELD_NAME_LIMIT),
        description=clip(prompt, DESCRIPTION_LIMIT) if prompt else "*(no prompt)*",
        colour=discord.Colour.blurple(),
    )
    used = len(embed.title or "") + len(embed.description or "")
    negative = params.get(NEGATIVE_PROMPT_KEY, "")
    if negative:
        embed.add_field(name="Negative prompt", value=clip(negative, FIELD_LIMIT), inline=False)
        used += len(embed.fields[-1].value or "") + len("Negative prompt")
    pairs = [(k, v) for k, v in params.items() if k not in (PROMPT_KEY, NEGATIVE_PROMPT_KEY)]
    for number, (key, value) in enumerate(pairs):
        name, text = clip(key, FIELD_NAME_LIMIT), clip(value or "-", FIELD_LIMIT)
        last_slot = len(embed.fields) == MAX_FIELDS - 1
        if (last_slot and number < len(pairs) - 1) or used + len(name) + len(text) > EMBED_BUDGET:
            rest = ", ".join(f"{k}: {v}" for k, v in pairs[number:])
            room = max(0, min(FIELD_LIMIT, EMBED_BUDGET - used - 10))
            if room > 20:
                embed.add_field(name="More", value=clip(rest, room), inline=False)
            break
        embed.add_field(name=name, value=text, inline=len(text) <= 40)
        used += len(name) + len(text)
    embed.set_footer(text="Re-run here queues a new image with these parameters, as /imagine would.")
    return embed


class RerunButton(
    DynamicItem[Button],
    template=r"sd:pi:(?P<key>[0-9a-f]{8})(?::(?P<channel>\d+):(?P<message>\d+):(?P<index>\d+))?",
):
    """"Re-run here": the key of the parameters kept in memory, and where the image was."""

    def __init__(self, key: str, source: tuple[int, int, int] | None = None) -> None:
        custom_id = f"sd:pi:{key}" + (":{}:{}:{}".format(*source) if source else "")
        super().__init__(Button(emoji="🔁", label="Re-run here", style=discord.ButtonStyle.primary, custom_id=custom_id))
        self.key, self.source = key, source

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        source = None
        if match["channel"]:
            source = (int(match["channel"]), int(match["message"]), int(match["index"]))
        return cls(match["key"], source)

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(interaction, lambda: self._rerun(interaction), queues_jobs=True)

    async def _rerun(self, interaction: discord.Interaction[SDBot]) -> None:
        params = image_infotext.kept(self.key)
        if params is not None:
            await rerun(interaction, params)
            return
        if self.source is None:
            await send_private(
                interaction,
                "These parameters have expired: an uploaded image's are kept for 15 minutes, and not across a "
                "restart of the bot. Run /pnginfo on the image again.",
            )
            return
        params = await _reread(interaction, *self.source)
        await rerun(interaction, params)


async def _reread(
    interaction: discord.Interaction[SDBot], channel_id: int, message_id: int, index: int
) -> dict[str, str]:
    bot = interaction.client
    gone = "The image's message is gone or I can no longer read it; use PNG info on an image again."
    # The menu answers in the image's own channel, so a press from elsewhere is a forged button:
    # it would read (and queue publicly) the parameters of an image in a channel, or a server,
    # the member cannot see.
    if channel_id != interaction.channel_id:
        raise InvalidOption(gone)
    try:
        channel = bot.get_channel(channel_id) or await bot.fetch_channel(channel_id)
        message = await channel.fetch_message(message_id)  # type: ignore[union-attr]
    except (discord.NotFound, discord.Forbidden, AttributeError) as error:
        raise InvalidOption(gone) from error
    if index >= len(message.attachments):
        raise InvalidOption(gone)
    try:
        return await image_infotext.read_attachment(message.attachments[index], bot.settings)
    except image_infotext.NoInfotext as error:
        raise InvalidOption(str(error)) from error


async def rerun(interaction: discord.Interaction[SDBot], params: dict[str, str]) -> None:
    """Queue the parameters as /imagine would, checked by the same checks."""
    bot = interaction.client
    plan = image_infotext.rerun_options(params, bot.settings, upscaler_names(bot.settings), bot.models.model_by_hash)
    user = await bot.queue.user(interaction.user.id)
    # The infotext's prompt already carries its styles: no default style on top.
    prepared = await actions.prepare_for(interaction, plan.options, user, style_names="")
    jobs = [
        with_refiner(
            hires_parameters(resolve_parameters(each, bot.settings, user), bot.settings, **plan.hires)  # type: ignore[arg-type]
            if plan.hires
            else resolve_parameters(each, bot.settings, user),
            bot.settings, plan.refiner, plan.refiner_switch_at,
        )
        for each in prepared
    ]
    await confirm.submit_jobs(interaction, jobs)
    if plan.notes:
        await interaction.followup.send(clip("\n".join(plan.notes), MESSAGE_LIMIT), ephemeral=True)


async def _answer(
    interaction: discord.Interaction[SDBot],
    attachment: discord.Attachment,
    source: tuple[int, int, int] | None,
    note: str | None = None,
) -> None:
    bot = interaction.client
    await interaction.response.defer(ephemeral=True, thinking=True)
    notes = [note] if note else []
    try:
        params = await image_infotext.read_attachment(attachment, bot.settings, notes)
    except image_infotext.NoInfotext as error:
        await interaction.followup.send(str(error), ephemeral=True)
        return
    key = image_infotext.keep(params)
    view = discord.ui.View(timeout=None)  # a dynamic item: it never times out
    view.add_item(RerunButton(key, source))
    if source is None:
        notes.append("Re-run here works for 15 minutes (the parameters of an upload are kept that long).")
    filename = attachment.filename.replace("`", "'")[:100]
    await interaction.followup.send(
        content="\n".join(notes) or None, embed=info_embed(params, filename), view=view, ephemeral=True
    )


class PngInfo(BotCog):
    @app_commands.command(name="pnginfo", description="Show the generation parameters (A1111 infotext) in an image.")
    @app_commands.describe(image="A PNG, JPEG or WebP made by A1111 or by this bot")
    async def pnginfo_command(self, interaction: discord.Interaction[SDBot], image: discord.Attachment) -> None:
        await _answer(interaction, image, None)


@app_commands.context_menu(name=MENU_NAME)
async def png_info_menu(interaction: discord.Interaction[SDBot], message: discord.Message) -> None:
    images = [(index, a) for index, a in enumerate(message.attachments) if image_infotext.is_image(a)]
    if not images:
        raise InvalidOption("This message has no image attached.")
    index, attachment = images[0]
    note = f"This message has {len(images)} images; this is the first." if len(images) > 1 else None
    await _answer(interaction, attachment, (message.channel.id, message.id, index), note)


async def setup(bot: SDBot) -> None:
    await add_with_menu(bot, PngInfo(bot), png_info_menu, RerunButton)


async def teardown(bot: SDBot) -> None:
    remove_menu(bot, png_info_menu, RerunButton)
