"""What every cog starts from: the bot it was loaded into, typed as SDBot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.client import SDBot


class BotCog(commands.Cog):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot


async def add_with_menu(bot: SDBot, cog: commands.Cog, menu: app_commands.ContextMenu, *items: type[Any]) -> None:
    """A cog's setup: the cog, its message menu, and the persistent buttons of its answers."""
    await bot.add_cog(cog)
    bot.tree.add_command(menu)
    bot.add_dynamic_items(*items)


def remove_menu(bot: SDBot, menu: app_commands.ContextMenu, *items: type[Any]) -> None:
    """Undo add_with_menu's menu and buttons (the cog itself is removed by discord.py)."""
    bot.tree.remove_command(menu.name, type=discord.AppCommandType.message)
    bot.remove_dynamic_items(*items)
