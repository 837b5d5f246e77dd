"""/style: A1111's saved styles, a member's own and the server's, and the `style` option's
autocomplete that the generating commands share.

Server styles are changed only by members with Manage Server, checked here on every call
(`interaction.permissions`). Discord's default_member_permissions cannot help: it applies to
a whole command, and /style add, delete and list are for everyone (personal styles). Every
answer is private: a style is a member's tool, not a post for the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidOption, NotAllowed
from bot.interactions import MAX_CHOICES, send_private
from bot.policy import gate
from bot.prompts import style_store
from bot.prompts.style_store import Scope
from bot.ui.embeds import clip

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Style

CHOICE_LIMIT = 100  # a choice's name and value: at most 100 characters
MAX_IMPORT_BYTES = 1024 * 1024
LIST_LIMIT = 4000  # an embed description holds 4096 characters


def _scope(interaction: discord.Interaction[SDBot], server: bool) -> Scope:
    """The member's own styles, or this server's for a member who may manage it."""
    if not server:
        return Scope(user_id=interaction.user.id)
    if interaction.guild_id is None:
        raise InvalidOption("Server styles exist only on a server; leave `server` off for your own styles.")
    if not interaction.permissions.manage_guild:
        raise NotAllowed("Only members with the Manage Server permission can change this server's styles.")
    return Scope(guild_id=interaction.guild_id)


async def style_autocomplete(interaction: discord.Interaction[SDBot], current: str) -> list[app_commands.Choice[str]]:
    """The member's and the server's styles; after a comma, the next style of several."""
    done, _, typing = current.rpartition(",")
    styles = await style_store.visible_styles(
        interaction.client.queue.db, interaction.user.id, interaction.guild_id
    )
    spelled = {s.name.casefold(): s.name for s in reversed(styles)}  # the member's own first
    chosen = [spelled.get(name.casefold(), name) for name in style_store.split_names(done)]
    prefix = "".join(f"{name}, " for name in chosen)
    taken = {name.casefold() for name in chosen}
    wanted = typing.strip().casefold()
    names = dict.fromkeys(s.name for s in styles if s.name.casefold() not in taken and wanted in s.name.casefold())
    choices = [prefix + name for name in names if len(prefix + name) <= CHOICE_LIMIT]
    return [app_commands.Choice(name=choice, value=choice) for choice in choices][:MAX_CHOICES]


def _line(style: Style) -> str:
    text = f"**{style.name}**: {clip(style.prompt, 120) or '(no prompt)'}"
    if style.negative_prompt:
        text += f" · negative: {clip(style.negative_prompt, 80)}"
    return text


class Styles(commands.GroupCog, group_name="style", group_description="Saved prompt styles (AUTOMATIC1111's)"):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="add", description="Save a style: {prompt} in it is replaced by your prompt")
    @app_commands.describe(
        name="The style's name (no commas)",
        prompt="Added to prompts after a comma, or with {prompt} where the prompt goes",
        negative_prompt="Added to negative prompts the same way",
        server="Save it for the whole server (needs Manage Server)",
    )
    async def add(
        self,
        interaction: discord.Interaction[SDBot],
        name: app_commands.Range[str, 1, 100],
        prompt: app_commands.Range[str, 1, 4000],
        negative_prompt: app_commands.Range[str, 0, 4000] | None = None,
        server: bool = False,
    ) -> None:
        scope = _scope(interaction, server)
        await gate.check_style_text(interaction, prompt, negative_prompt or "")
        style = await style_store.add_style(
            self.bot.queue.db, scope, name, prompt, negative_prompt or "", created_by=interaction.user.id
        )
        await send_private(interaction, f"Saved {scope.label} {_line(style)}\nUse it with the `style` option.")

    @app_commands.command(name="delete", description="Delete a style")
    @app_commands.describe(name="The style to delete", server="A server style (needs Manage Server)")
    @app_commands.autocomplete(name=style_autocomplete)
    async def delete(
        self, interaction: discord.Interaction[SDBot], name: app_commands.Range[str, 1, 100], server: bool = False
    ) -> None:
        scope = _scope(interaction, server)
        deleted = await style_store.delete_style(self.bot.queue.db, scope, name)
        await send_private(interaction, f"Deleted {scope.label} `{deleted}`.")

    @app_commands.command(name="list", description="Your styles and this server's")
    async def list_styles(self, interaction: discord.Interaction[SDBot]) -> None:
        styles = await style_store.visible_styles(self.bot.queue.db, interaction.user.id, interaction.guild_id)
        own = [_line(s) for s in styles if s.guild_id is None]
        shared = [_line(s) for s in styles if s.guild_id is not None]
        embed = discord.Embed(title="Styles", colour=discord.Colour.blurple())
        lines = ["**Yours**", *(own or ["none yet: /style add"])]
        if interaction.guild_id is not None:
            lines += ["", "**This server's**", *(shared or ["none"])]
        embed.description = clip("\n".join(lines), LIST_LIMIT)
        embed.set_footer(text="Several styles: separate their names with commas in the style option.")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="import", description="Import A1111's styles.csv as server styles (Manage Server)")
    @app_commands.describe(file="styles.csv: a header row, then name, prompt, negative_prompt")
    async def import_styles(self, interaction: discord.Interaction[SDBot], file: discord.Attachment) -> None:
        scope = _scope(interaction, server=True)
        if file.size > MAX_IMPORT_BYTES:
            raise InvalidOption(f"The file is {file.size:,} bytes; a styles.csv may be {MAX_IMPORT_BYTES:,} at most.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        assert scope.guild_id is not None
        report = await style_store.import_styles(
            self.bot.queue.db, scope.guild_id, data, interaction.user.id, refuse=await gate.style_refuser(interaction)
        )
        lines = [f"Imported {len(report.added) + len(report.replaced)} server styles from `{file.filename}`."]
        if report.added:
            lines.append(f"New: {', '.join(report.added)}")
        if report.replaced:
            lines.append(f"Replaced: {', '.join(report.replaced)}")
        if report.skipped:
            lines.append(f"Skipped: {'; '.join(report.skipped)}")
        await interaction.followup.send(clip("\n".join(lines), 2000), ephemeral=True)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Styles(bot))
