"""The forms behind the Remix and Inpaint buttons.

A modal must be the first answer to a click (it cannot follow a deferral), so the buttons
check the job before opening one, and the submit handler checks everything again: the job may
have been deleted while the form was open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import ui

from bot import actions
from bot.ui import confirm
from inference.common.protocol import MaskedContent

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job

TEXT_INPUT_LIMIT = 4000  # Discord's longest text input
TITLE_LIMIT = 45  # Discord's longest modal title
WHOLE_PICTURE, ONLY_MASKED = "whole picture", "only masked"


def _title(text: str) -> str:
    return text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 1] + "…"


def _prompt_input(prompt: str) -> ui.TextInput:
    return ui.TextInput(
        custom_id="prompt",
        label="Prompt",
        style=discord.TextStyle.paragraph,
        default=prompt,
        max_length=TEXT_INPUT_LIMIT,
    )


class RemixModal(ui.Modal):
    """Edit the prompts; the job runs again with the same seeds and parameters.

    A private job's negative prompt is its owner's alone: a moderator remixing it starts
    from an empty one (the result's embed never showed it to them)."""

    def __init__(self, job: Job, *, viewer_id: int) -> None:
        super().__init__(title=_title(f"Remix job #{job.id}"), custom_id=f"sd:modal:remix:{job.id}")
        self.job_id = job.id
        self.prompt = _prompt_input(job.prompt)
        self.negative_prompt = ui.TextInput(
            custom_id="negative_prompt",
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            default=(job.negative_prompt or None) if not job.private or viewer_id == job.user_id else None,
            required=False,
            max_length=TEXT_INPUT_LIMIT,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative_prompt)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def run() -> None:
            negative_prompt = self.negative_prompt.value or ""
            params = await actions.remix_jobs(interaction, self.job_id, self.prompt.value, negative_prompt)
            await confirm.submit_jobs(interaction, params)

        await actions.run_for_user(interaction, run, queues_jobs=True, parent_job_id=self.job_id)


class InpaintModal(ui.Modal):
    """A1111's inpaint tab in one form: the prompt, the mask upload, strength and options."""

    def __init__(self, job: Job, index: int, default_strength: float) -> None:
        super().__init__(
            title=_title(f"Inpaint image {index + 1} of job #{job.id}"),
            custom_id=f"sd:modal:inpaint:{job.id}:{index}",
        )
        self.job_id, self.index = job.id, index
        self.prompt = _prompt_input(job.prompt)
        self.mask = ui.FileUpload(custom_id="mask", required=True, min_values=1, max_values=1)
        self.strength = ui.TextInput(
            custom_id="strength",
            label="Denoising strength (0 keeps, 1 repaints)",
            default=f"{default_strength:g}",
            max_length=10,
        )
        self.masked_content = ui.Select(
            custom_id="masked_content",
            options=[
                discord.SelectOption(label=content.value, value=content.value, default=content == MaskedContent.ORIGINAL)
                for content in MaskedContent
            ],
            required=False,
        )
        self.area = ui.Select(
            custom_id="area",
            options=[
                discord.SelectOption(label="Whole picture", value=WHOLE_PICTURE, default=True),
                discord.SelectOption(label="Only masked (full resolution)", value=ONLY_MASKED),
            ],
            required=False,
        )
        self.add_item(self.prompt)
        self.add_item(
            ui.Label(
                text="Mask",
                description="A PNG of the image's size: white is repainted, black is kept.",
                component=self.mask,
            )
        )
        self.add_item(self.strength)
        self.add_item(ui.Label(text="Masked content (what the area starts from)", component=self.masked_content))
        self.add_item(ui.Label(text="Inpaint area", component=self.area))

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def run() -> None:
            params, note = await actions.inpaint_jobs(
                interaction,
                self.job_id,
                self.index,
                prompt=self.prompt.value,
                strength=self.strength.value,
                mask=self.mask.values[0] if self.mask.values else None,
                masked_content=self.masked_content.values[0] if self.masked_content.values else None,
                only_masked=bool(self.area.values) and self.area.values[0] == ONLY_MASKED,
            )
            await confirm.submit_jobs(interaction, params)
            if note:
                await interaction.followup.send(note, ephemeral=True)

        await actions.run_for_user(interaction, run, queues_jobs=True, parent_job_id=self.job_id)
