"""/history lists your jobs (privately, with Previous/Next and Re-run); /show re-posts a result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import flagged_results
from bot.actions import job_for_interaction
from bot.cogs.base import BotCog
from bot.interactions import is_age_restricted
from bot.errors import ImageUnavailable, NothingToDo
from bot.jobs.retention import expired_message
from bot.ui import description, embeds
from bot.ui.history_page import HISTORY_ITEMS, history_message
from db.models import Job, JobStatus
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.client import SDBot


class History(BotCog):
    @app_commands.command(name="history", description="Your recent jobs, newest first (only you see them).")
    @app_commands.describe(page="The page to show (10 jobs a page); 1 is the newest")
    async def history(self, interaction: discord.Interaction[SDBot], page: app_commands.Range[int, 1] = 1) -> None:
        shown = await history_message(interaction, interaction.user.id, page - 1)
        await interaction.response.send_message(**shown, ephemeral=True)

    @app_commands.command(name="show", description="Post a finished job's result again, with its buttons.")
    @app_commands.describe(job="The job number (see /history)")
    async def show(self, interaction: discord.Interaction[SDBot], job: app_commands.Range[int, 1]) -> None:
        found = await job_for_interaction(interaction, job)
        if found.status != JobStatus.COMPLETED:
            raise NothingToDo(await self._state_of(found))
        path = found.grid_path or (found.images[0].path if found.images else None)
        if found.removed_at is not None:
            # Removed by its owner or a moderator: not posted again (the row stays, for /history).
            files = "" if path is not None and Path(path).is_file() else ", and its image files were deleted"
            raise ImageUnavailable(
                f"The result of job #{found.id} was removed{files}, so it cannot be shown. "
                "Its parameters are kept: pick it in /history to run it again."
            )
        if found.kind == JobKind.DESCRIBE:  # its suggestions, which outlive the image files
            await self._show_description(interaction, found)
            return
        if found.files_expired_at is not None:
            raise ImageUnavailable(expired_message(found, self.bot.settings.images.keep_days))
        if path is None or not Path(path).is_file():
            raise ImageUnavailable(
                f"The images of job #{found.id} are no longer on disk, so it cannot be shown. "
                "Its parameters are kept: pick it in /history to run it again."
            )
        here_age_restricted = is_age_restricted(interaction)
        flagged_results.check_shown_where_allowed(self.bot, found, here_age_restricted=here_age_restricted)
        shown = await flagged_results.verdict(self.bot, found, guild_id=interaction.guild_id, age_restricted=here_age_restricted)
        # A private job reaches only its owner or a moderator (job_for_interaction): privately.
        private = found.private and interaction.guild_id is not None
        await interaction.response.defer(thinking=True, ephemeral=private)
        posting = await shown.posting(path, interaction.filesize_limit, f"job{found.id}")
        extra: dict[str, Any] = posting.file_kwargs()
        view = self.bot.job_views.result(found)
        if view is not None:
            extra["view"] = view
        await interaction.followup.send(
            content=f"Job #{found.id} by <@{found.user_id}>, shown by {interaction.user.mention}",
            embed=posting.dress(embeds.result_embed(found, posting.filename)),
            allowed_mentions=discord.AllowedMentions.none(),
            ephemeral=private,
            **extra,
        )

    async def _show_description(self, interaction: discord.Interaction[SDBot], found: Job) -> None:
        private = found.private and interaction.guild_id is not None
        await interaction.response.defer(thinking=True, ephemeral=private)
        posting, embed = await description.description_post(found)
        await interaction.followup.send(
            content=f"Job #{found.id} by <@{found.user_id}>, shown by {interaction.user.mention}",
            embed=embed,
            view=self.bot.job_views.result(found),
            allowed_mentions=discord.AllowedMentions.none(),
            ephemeral=private,
            **posting.file_kwargs(),
        )

    async def _state_of(self, job: Job) -> str:
        if job.status == JobStatus.PENDING:
            entry = await self.bot.queue.entry(job.id)
            place = f" (#{entry.position} in line)" if entry is not None and entry.position > 0 else ""
            return f"Job #{job.id} is still waiting in the queue{place}; it has no result to show yet."
        if job.status == JobStatus.RUNNING:
            return f"Job #{job.id} is running now; it has no result to show yet."
        if job.status == JobStatus.FAILED:
            return f"Job #{job.id} failed, so there is nothing to show: {job.member_error or 'no reason was recorded.'}"
        return f"Job #{job.id} was canceled, so there is nothing to show."


async def setup(bot: SDBot) -> None:
    bot.add_dynamic_items(*HISTORY_ITEMS)
    await bot.add_cog(History(bot))
