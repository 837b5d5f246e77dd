"""/settings: the member's defaults, shown privately with the controls that change them
(bot.ui.settings_panel). They apply to every new job of theirs (bot.jobs.params, bot.prompts.prepare)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.cogs.base import BotCog
from bot.ui.settings_panel import SETTINGS_ITEMS, settings_message

if TYPE_CHECKING:
    from bot.client import SDBot


class MemberSettings(BotCog):
    @app_commands.command(name="settings", description="Your defaults for new jobs, and private results (only you see them).")
    async def settings(self, interaction: discord.Interaction[SDBot]) -> None:
        await interaction.response.send_message(**await settings_message(interaction, interaction.user.id), ephemeral=True)


async def setup(bot: SDBot) -> None:
    bot.add_dynamic_items(*SETTINGS_ITEMS)
    await bot.add_cog(MemberSettings(bot))
