"""The 🗑️ Remove button under results, and the private question it asks.

A click by the job's owner or a moderator (Manage Messages) answers privately with two
choices: "Remove message" or "Remove message and image files". The choice removes the result
(bot.jobs.removal: the job's status message, the files when asked, the row marked, an audit
entry) and deletes the message the button was on when that is another post of the same result
(a U button's single image, a /show). Anyone else is refused privately.

Both are DynamicItems: their custom_id carries the job id (the choice also the channel and the
message the 🗑️ was on), so they work after a restart. Permissions are checked on every click,
the choice's too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem

from bot import actions
from bot.bot_messages import delete_message
from bot.errors import NotAllowed, NothingToDo
from bot.jobs import removal

if TYPE_CHECKING:
    from bot.client import SDBot

FILES_LABEL = "Remove message and image files"


def _check_may_remove(interaction: discord.Interaction[SDBot], job: Any) -> None:
    if not actions.may_manage(interaction, job):
        raise NotAllowed(f"Only the person who made job #{job.id}, or a moderator, can remove its result.")
    if job.is_active:
        raise NothingToDo(f"Job #{job.id} has not finished: cancel it instead.")


class RemoveButton(DynamicItem[Button], template=r"sd:rm:(?P<job>\d+)"):
    """🗑️ under a result: asks its owner (or a moderator) privately what to remove."""

    def __init__(self, job_id: int, *, row: int | None = None) -> None:
        super().__init__(
            Button(
                emoji="🗑️", label="Remove", style=discord.ButtonStyle.secondary, custom_id=f"sd:rm:{job_id}", row=row
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(interaction, lambda: self._ask(interaction))

    async def _ask(self, interaction: discord.Interaction[SDBot]) -> None:
        job = await actions.job_for_interaction(interaction, self.job_id)
        _check_may_remove(interaction, job)
        origin = interaction.message
        # An ephemeral message (a private result) cannot be deleted with the bot's token: 0.
        message_id = 0 if origin is None or origin.flags.ephemeral else origin.id
        channel_id = interaction.channel_id or 0
        view = discord.ui.View(timeout=None)
        view.add_item(RemoveChoiceButton(job.id, channel_id, message_id, files=False))
        view.add_item(RemoveChoiceButton(job.id, channel_id, message_id, files=True))
        already = " It was already removed; its other posts can still go." if job.removed_at is not None else ""
        await interaction.response.send_message(
            f"Remove the result of job #{job.id}? This deletes its message; the job stays in /history.{already}",
            view=view,
            ephemeral=True,
        )


class RemoveChoiceButton(
    DynamicItem[Button], template=r"sd:rmok:(?P<job>\d+):(?P<channel>\d+):(?P<message>\d+):(?P<files>[01])"
):
    """"Remove message" / "Remove message and image files", under the private question."""

    def __init__(self, job_id: int, channel_id: int, message_id: int, *, files: bool) -> None:
        super().__init__(
            Button(
                label=FILES_LABEL if files else "Remove message",
                style=discord.ButtonStyle.danger,
                custom_id=f"sd:rmok:{job_id}:{channel_id}:{message_id}:{int(files)}",
            )
        )
        self.job_id, self.channel_id, self.message_id, self.files = job_id, channel_id, message_id, files

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(int(match["job"]), int(match["channel"]), int(match["message"]), files=match["files"] == "1")

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(interaction, lambda: self._remove(interaction))

    async def _remove(self, interaction: discord.Interaction[SDBot]) -> None:
        bot = interaction.client
        job = await actions.job_for_interaction(interaction, self.job_id)
        _check_may_remove(interaction, job)
        status_message = (job.channel_id, job.message_id)
        other_post = bool(self.message_id) and (self.channel_id, self.message_id) != status_message
        if other_post and not await _is_post_of(bot, job.id, self.channel_id, self.message_id):
            raise NotAllowed(f"That message is not a post of job #{job.id}, so this button cannot remove it.")
        if job.removed_at is None or self.files:
            job = await removal.remove_result(bot, job.id, actor_id=interaction.user.id, remove_files=self.files)
        # The post the 🗑️ was on, when it is not the status message remove_result deleted.
        if other_post:
            await delete_message(bot, self.channel_id, self.message_id)
        done = "its message and image files were removed" if self.files else "its message was removed"
        await interaction.response.edit_message(content=f"Job #{job.id}: {done}.", view=None)


async def _is_post_of(bot: Any, job_id: int, channel_id: int, message_id: int) -> bool:
    """The choice's custom_id names the message to delete: it must be one of the bot's posts
    of this job (it carries this job's 🗑️), or a forged id could delete any of its messages.
    One already gone passes: deleting it again does nothing."""
    try:
        message = await bot.get_partial_messageable(channel_id).fetch_message(message_id)
    except discord.NotFound:
        return True
    removes_this_job = RemoveButton(job_id).custom_id
    return message.author.id == bot.user.id and any(
        getattr(child, "custom_id", None) == removes_this_job
        for row in message.components
        for child in getattr(row, "children", [])
    )


REMOVAL_ITEMS = (RemoveButton, RemoveChoiceButton)
