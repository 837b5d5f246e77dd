"""/history's page: the member's jobs, Previous/Next, and a "Re-run" select.

The components are DynamicItems like the job buttons: their custom_id carries the member's id
and the page (the select: the member's id), so they keep working after a restart, and a press
by anyone else is refused privately. The page is re-read from the database on every press.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem, Select

from bot import actions
from bot.errors import JobNotFound, NotAllowed
from bot.jobs.past_jobs import HistoryPage, check_rerun, rerun_of, user_jobs_page
from bot.ui import confirm
from bot.ui.embeds import clip

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job

PROMPT_CHARS = 60
NOT_YOURS = "This is someone else's history: use /history to see your own."


def job_link(job: Job) -> str | None:
    if job.channel_id is None or job.message_id is None:
        return None
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/{job.message_id}"


def history_line(job: Job) -> str:
    when = f"<t:{int(job.created_at.timestamp())}:R>"
    prompt = clip(" ".join(job.prompt.split()), PROMPT_CHARS) or "(no prompt)"
    state = f"{job.status}, result removed" if job.removed_at is not None else job.status
    if job.files_expired_at is not None:
        state = f"{state}, images expired"
    line = f"**#{job.id}** · {state} · {when}\n{prompt} · seed {job.seed} · {job.model}"
    # A removed result's message is gone, and a private one (no message id) has no link.
    link = job_link(job) if job.removed_at is None else None
    return f"{line} · [message]({link})" if link else line


def history_embed(page: HistoryPage) -> discord.Embed:
    if not page.jobs:
        description = "You have no jobs yet: try /imagine."
    else:
        description = "\n".join(history_line(job) for job in page.jobs)
    embed = discord.Embed(title="Your jobs", description=description, colour=discord.Colour.blurple())
    embed.set_footer(text=f"Page {page.page + 1} of {page.pages} · {page.total} jobs, newest first")
    return embed


def history_view(user_id: int, page: HistoryPage) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if page.jobs:
        view.add_item(RerunSelect(user_id, page.page, [job for job in page.jobs]))
    view.add_item(HistoryPageButton(user_id, page.page - 1, "prev", disabled=not page.has_previous))
    view.add_item(HistoryPageButton(user_id, page.page + 1, "next", disabled=not page.has_next))
    return view


async def history_message(interaction: discord.Interaction[SDBot], user_id: int, page: int) -> dict[str, Any]:
    shown = await user_jobs_page(interaction.client.queue.db, user_id, page)
    return {"embed": history_embed(shown), "view": history_view(user_id, shown)}


class HistoryPageButton(DynamicItem[Button], template=r"sd:hist:(?P<user>\d+):(?P<page>-?\d+):(?P<dir>prev|next)"):
    """Previous / Next: edits the page in place; only the member whose history it is."""

    def __init__(self, user_id: int, page: int, direction: str, *, disabled: bool = False) -> None:
        super().__init__(
            Button(
                label="Previous" if direction == "prev" else "Next",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sd:hist:{user_id}:{page}:{direction}",
                disabled=disabled,
                row=1,
            )
        )
        self.user_id, self.page, self.direction = user_id, page, direction

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(int(match["user"]), int(match["page"]), match["dir"])

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        async def turn() -> None:
            if interaction.user.id != self.user_id:
                raise NotAllowed(NOT_YOURS)
            await interaction.response.edit_message(**await history_message(interaction, self.user_id, self.page))

        await actions.run_for_user(interaction, turn)


class RerunSelect(DynamicItem[Select], template=r"sd:rerun:(?P<user>\d+):(?P<page>\d+)"):
    """One option per job of the page: choosing one queues it again with the same seed."""

    def __init__(self, user_id: int, page: int, jobs: list[Job] | None = None) -> None:
        options = [
            discord.SelectOption(
                label=f"Re-run #{job.id} (same seed)",
                value=str(job.id),
                description=clip(" ".join(job.prompt.split()), 100) or None,
            )
            for job in jobs or []
        ] or [discord.SelectOption(label="-", value="0")]
        super().__init__(
            Select(
                placeholder="Re-run a job (same parameters, same seed)…",
                custom_id=f"sd:rerun:{user_id}:{page}",
                options=options,
                row=0,
            )
        )
        self.user_id, self.page = user_id, page

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Select, match: re.Match[str]) -> Any:
        return cls(int(match["user"]), int(match["page"]))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        values = (interaction.data or {}).get("values") or []  # type: ignore[union-attr]

        async def rerun() -> None:
            if interaction.user.id != self.user_id:
                raise NotAllowed(NOT_YOURS)
            await rerun_job(interaction, int(values[0]))

        parent_job_id = int(values[0]) if values and values[0].isdigit() else None
        await actions.run_for_user(interaction, rerun, queues_jobs=True, parent_job_id=parent_job_id)


async def rerun_job(interaction: discord.Interaction[SDBot], job_id: int) -> None:
    bot = interaction.client
    job = await bot.queue.get(job_id)
    if job is None:
        raise JobNotFound(f"Job #{job_id} no longer exists.")
    if job.user_id != interaction.user.id:
        raise NotAllowed(f"Job #{job_id} is not one of yours.")
    check_rerun(job, bot.settings)
    await confirm.submit_jobs(interaction, [rerun_of(job)])


HISTORY_ITEMS = (HistoryPageButton, RerunSelect)
