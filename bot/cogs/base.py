"""What every cog starts from: the bot it was loaded into, typed as SDBot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord.ext import commands

if TYPE_CHECKING:
    from bot.client import SDBot


class BotCog(commands.Cog):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot
