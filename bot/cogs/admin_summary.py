"""How /admin shows a server's policy: a line or two per setting, and the private embed that
carries them (and the audit log's pages). Apart from the commands in bot.cogs.admin, which
change what these lines show."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.jobs import retention
from bot.policy import store
from bot.ui.embeds import clip

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.config import Settings

EMBED_LIMIT = 4000  # an embed description holds 4096 characters


def show_limit(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return "no limit" if value == 0 else f"{value:g}{unit}"


def noise_line(policy: store.Policy, settings: Settings) -> str:
    """The server's A1111 noise settings, each marked as its own or the bot's default."""
    limits = settings.limits
    rng = f"{policy.rng} (this server's)" if policy.rng else f"{limits.default_rng} (the bot's default)"
    ensd = f"{policy.ensd} (this server's)" if policy.ensd is not None else f"{limits.default_ensd} (the bot's default)"
    return f"RNG source {rng}, ENSD {ensd}"


def channels_line(policy: store.Policy) -> str:
    if not policy.channel_ids:
        return "**Channels**: every channel (no list set)"
    return "**Channels**: " + ", ".join(f"<#{channel_id}>" for channel_id in policy.channel_ids)


def roles_lines(policy: store.Policy) -> str:
    def listed(ids: tuple[int, ...]) -> str:
        return ", ".join(f"<@&{role_id}>" for role_id in ids) if ids else "everyone"

    return f"**May use the bot**: {listed(policy.user_role_ids)}\n**May use costly features**: {listed(policy.costly_role_ids)}"


def storage_lines(settings: Settings, usage: retention.DiskUsage) -> list[str]:
    database = "" if usage.database_bytes is None else f"; database {megabytes(usage.database_bytes)}"
    images_days, audit_days = settings.images.keep_days, settings.policy.audit_retention_days
    return [
        f"**Storage** (the whole bot): {usage.output_files} files, {megabytes(usage.output_bytes)} in the outputs folder{database}",
        f"**Kept** (the bot's settings): images {f'{images_days} days' if images_days else 'forever'}, "
        f"audit log {f'{audit_days} days' if audit_days else 'forever'}",
    ]


def megabytes(size: int) -> str:
    return f"{size / 1024 ** 2:.1f} MB"


def limits_line(limits: store.Limits | store.RoleLimits) -> str:
    return (
        f"images per day {show_limit(limits.images_per_day)}, cooldown {show_limit(limits.cooldown_s, ' s')}, "
        f"waiting jobs {show_limit(limits.max_pending)}, job cost {show_limit(limits.max_job_cost, ' units')}, "
        f"waiting cost {show_limit(limits.max_waiting_cost, ' units')}"
    )


async def send_embed(interaction: discord.Interaction[SDBot], title: str, lines: list[str], footer: str | None = None) -> None:
    embed = discord.Embed(title=title, description=clip("\n".join(lines), EMBED_LIMIT), colour=discord.Colour.dark_gold())
    if footer:
        embed.set_footer(text=footer)
    send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
    await send(embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
