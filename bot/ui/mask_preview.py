"""The buttons under a mask from words' preview, and the Adjust form (bot.masks_from_words).

*Looks right* queues the inpaint with the mask shown; *Adjust* opens a form with the words,
threshold and dilation, which queues a new preview. Both are DynamicItems whose custom_id
carries the preview's job id: they work after a restart and never time out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import ui
from discord.ui import Button, DynamicItem

from bot import actions, masks_from_words
from bot.interactions import send_form
from inference.common.protocol import MAX_SEGMENT_WORDS

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job


class _PreviewButton:
    """What both buttons share, placed before DynamicItem in their bases: the preview's job
    id, and from_custom_id rebuilding the button from it."""

    def __init__(self, job_id: int, button: Button) -> None:
        super().__init__(button)  # DynamicItem's
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(int(match["job"]))


class LooksRightButton(_PreviewButton, DynamicItem[Button], template=r"sd:seg:ok:(?P<job>\d+)"):
    def __init__(self, job_id: int) -> None:
        style = discord.ButtonStyle.success
        super().__init__(job_id, Button(label="Looks right", emoji="✅", style=style, custom_id=f"sd:seg:ok:{job_id}"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(
            interaction, lambda: masks_from_words.looks_right(interaction, self.job_id),
            queues_jobs=True, parent_job_id=self.job_id,
        )


class AdjustButton(_PreviewButton, DynamicItem[Button], template=r"sd:seg:adjust:(?P<job>\d+)"):
    def __init__(self, job_id: int) -> None:
        style = discord.ButtonStyle.secondary
        super().__init__(job_id, Button(label="Adjust", emoji="🎯", style=style, custom_id=f"sd:seg:adjust:{job_id}"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        async def open_form() -> None:
            job = await masks_from_words.check_adjustable(interaction, self.job_id)
            await send_form(interaction, AdjustModal(job, viewer_id=interaction.user.id))

        await actions.run_for_user(interaction, open_form)


class AdjustModal(ui.Modal):
    """Other words, threshold or dilation for the same inpaint: a new preview."""

    def __init__(self, job: Job, *, viewer_id: int) -> None:
        super().__init__(title=f"Adjust the mask of job #{job.id}", custom_id=f"sd:modal:seg:{job.id}:{viewer_id}")
        self.job_id = job.id
        self.words = ui.TextInput(
            custom_id="words", label="What to repaint, in a few words", default=job.segment_words,
            max_length=MAX_SEGMENT_WORDS,
        )
        self.threshold = ui.TextInput(
            custom_id="threshold", label="Threshold (0-1: lower finds more)", default=f"{job.segment_threshold:g}",
            max_length=10, required=False,
        )
        self.dilation = ui.TextInput(
            custom_id="dilation", label="Dilation (pixels the mask grows by)", default=str(job.segment_dilation),
            max_length=4, required=False,
        )
        for item in (self.words, self.threshold, self.dilation):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def run() -> None:
            await masks_from_words.adjust(
                interaction, self.job_id, words=self.words.value, threshold=self.threshold.value,
                dilation=self.dilation.value,
            )

        await actions.run_for_user(interaction, run, queues_jobs=True, parent_job_id=self.job_id)


def preview_items(job: Job) -> list[discord.ui.Item[Any]]:
    """The buttons under a finished preview (buttons.result_view adds Remove)."""
    return [LooksRightButton(job.id), AdjustButton(job.id)]


def failed_items(job: Job) -> list[discord.ui.Item[Any]]:
    """Under a preview that failed (the words matched nothing): Adjust alone."""
    return [AdjustButton(job.id)]


MASK_PREVIEW_ITEMS = (LooksRightButton, AdjustButton)
