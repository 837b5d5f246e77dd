"""/describe and the "Describe" message menu: prompt suggestions for an image (A1111's
Interrogate CLIP and its tagger, Midjourney's /describe).

Either way the image is read and checked as every upload is (bot.inputs: format, bytes,
pixels), and a describe job joins the fair queue with a status message like any other job;
its answer is up to four prompts, each with a button that queues it as /imagine for whoever
presses it (bot.ui.suggestions). Which interrogator runs is the server's choice (/admin
describe), else the [describe] default. A bot without describe models, a message without an
image or an upload that is not one is answered privately, and nothing is queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import actions, image_infotext, inputs
from bot.cogs.base import BotCog, add_with_menu, remove_menu
from bot.errors import InvalidOption
from bot.jobs.describe_params import describe_parameters, interrogator_for, with_source_job
from bot.policy import store
from bot.ui.suggestions import SuggestionButton

if TYPE_CHECKING:
    from bot.client import SDBot

MENU_NAME = "Describe"


async def describe_image(
    interaction: discord.Interaction[SDBot], attachment: discord.Attachment, message: discord.Message | None = None
) -> None:
    """Queue a describe job for one attachment (of ``message``, for the menu), refused before
    the download when this bot cannot describe at all."""
    bot = interaction.client
    policy = await store.policy_of(bot.queue.db, bot.settings, interaction.guild_id)
    interrogator = interrogator_for(bot.settings, policy.interrogator)
    source = await inputs.read_image_upload(attachment, bot.settings)
    if message is not None and bot.user is not None and message.author.id == bot.user.id:
        source = await with_source_job(bot.queue.db, source, message.id)
    await actions.submit(interaction, describe_parameters(bot.settings, source, interrogator))


class Describe(BotCog):
    @app_commands.command(
        name="describe", description="Get four prompts that describe an image you upload.", extras=actions.QUEUES_JOBS
    )
    @app_commands.describe(image="The image to describe (PNG, JPEG, WebP...)")
    async def describe(self, interaction: discord.Interaction[SDBot], image: discord.Attachment) -> None:
        await describe_image(interaction, image)


@app_commands.context_menu(name=MENU_NAME, extras=actions.QUEUES_JOBS)
async def describe_menu(interaction: discord.Interaction[SDBot], message: discord.Message) -> None:
    images = [attachment for attachment in message.attachments if image_infotext.is_image(attachment)]
    if not images:
        raise InvalidOption("This message has no image attached to describe.")
    await describe_image(interaction, images[0], message)


async def setup(bot: SDBot) -> None:
    await add_with_menu(bot, Describe(bot), describe_menu, SuggestionButton)


async def teardown(bot: SDBot) -> None:
    remove_menu(bot, describe_menu, SuggestionButton)
