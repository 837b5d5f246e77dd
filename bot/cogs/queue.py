"""/queue shows your jobs with their places and ETAs; /cancel stops one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import actions
from bot.cogs.base import BotCog
from bot.errors import NothingToDo
from bot.interactions import MAX_CHOICES, send_private
from bot.jobs.leases import WorkerRegistry, workers_summary
from bot.ui.embeds import clip, format_duration
from db.models import JobStatus

if TYPE_CHECKING:
    from bot.client import SDBot


class Queue(BotCog):
    @app_commands.command(name="queue", description="Your jobs waiting or running, with their place in line.")
    async def queue(self, interaction: discord.Interaction[SDBot]) -> None:
        mine = await self.bot.queue.active_entries(interaction.user.id)
        waiting = await self.bot.queue.waiting_count()
        workers = await self._workers_line()
        if not mine:
            await send_private(interaction, f"You have no jobs waiting or running. {waiting} jobs are in the queue{workers}.")
            return
        lines = []
        for entry in mine:
            where = "running now" if entry.position == 0 else f"#{entry.position} in line"
            lines.append(
                f"**#{entry.job.id}** · {where} · done in about {format_duration(entry.eta_seconds)}"
                f"\n{clip(entry.job.prompt, 80)}"
            )
        embed = discord.Embed(title="Your jobs", description="\n".join(lines), colour=discord.Colour.blurple())
        embed.set_footer(text=f"{waiting} jobs waiting in total{workers}")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    async def _workers_line(self) -> str:
        """With separate workers, how many there are to run the queue ("" with the built-in one)."""
        settings = self.bot.settings
        if settings.worker.builtin:
            return ""
        return ", " + workers_summary(await WorkerRegistry(self.bot.queue, settings.worker.lease_timeout_s).workers())

    @app_commands.command(name="cancel", description="Cancel one of your jobs (moderators: anyone's).")
    @app_commands.describe(job="The job number; empty for your running job, or else your latest waiting one")
    async def cancel(self, interaction: discord.Interaction[SDBot], job: int | None = None) -> None:
        if job is None:
            mine = [entry.job for entry in await self.bot.queue.active_entries(interaction.user.id)]
            running = [j for j in mine if j.status == JobStatus.RUNNING]
            if not mine:
                raise NothingToDo("You have no job waiting or running.")
            job = (running or sorted(mine, key=lambda j: j.id, reverse=True))[0].id
        await actions.cancel(interaction, job)

    @cancel.autocomplete("job")
    async def job_autocomplete(self, interaction: discord.Interaction[SDBot], current: str) -> list[app_commands.Choice[int]]:
        entries = await self.bot.queue.active_entries(interaction.user.id)
        return [
            app_commands.Choice(name=clip(f"#{e.job.id} · {e.job.prompt}", 100), value=e.job.id)
            for e in entries
            if current in str(e.job.id)
        ][:MAX_CHOICES]


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Queue(bot))
