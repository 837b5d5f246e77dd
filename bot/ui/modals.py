"""The forms behind the Remix and Inpaint buttons.

A modal must be the first answer to a click (it cannot follow a deferral), so the buttons
check the job before opening one, and the submit handler checks everything again: the job may
have been deleted while the form was open. discord.py finds an open form by its custom_id
alone, so each names the member it was opened for: two members' forms on one job are two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import ui

from bot import actions
from bot.ui import confirm
from inference.common.protocol import MAX_SEGMENT_WORDS, MaskedContent

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
        super().__init__(title=_title(f"Remix job #{job.id}"), custom_id=f"sd:modal:remix:{job.id}:{viewer_id}")
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


def _fill_and_area(content: MaskedContent, area: str) -> str:
    return f"{content.value}|{area}"


# Discord's forms hold five items: masked content and inpaint area share one menu, which
# leaves room for the mask's words.
FILL_AND_AREA = {
    _fill_and_area(content, area): (content.value, area == ONLY_MASKED)
    for area in (WHOLE_PICTURE, ONLY_MASKED)
    for content in MaskedContent
}


class InpaintModal(ui.Modal):
    """A1111's inpaint tab in one form: the prompt, the mask (an upload, or words that make a
    preview first: bot.masks_from_words), strength and options."""

    def __init__(self, job: Job, index: int, default_strength: float, *, viewer_id: int) -> None:
        super().__init__(
            title=_title(f"Inpaint image {index + 1} of job #{job.id}"),
            custom_id=f"sd:modal:inpaint:{job.id}:{index}:{viewer_id}",
        )
        self.job_id, self.index = job.id, index
        self.prompt = _prompt_input(job.prompt)
        self.mask = ui.FileUpload(custom_id="mask", required=False, min_values=0, max_values=1)
        self.mask_words = ui.TextInput(
            custom_id="mask_words",
            label="Or say what to repaint (\"the sky\")",
            placeholder="You see the mask found before anything is repainted",
            required=False,
            max_length=MAX_SEGMENT_WORDS,
        )
        self.strength = ui.TextInput(
            custom_id="strength",
            label="Denoising strength (0 keeps, 1 repaints)",
            default=f"{default_strength:g}",
            max_length=10,
        )
        default = _fill_and_area(MaskedContent.ORIGINAL, WHOLE_PICTURE)
        self.fill_and_area = ui.Select(
            custom_id="fill_and_area",
            options=[
                discord.SelectOption(
                    label=f"{content} · {'only masked (full resolution)' if only_masked else 'whole picture'}",
                    value=value,
                    default=value == default,
                )
                for value, (content, only_masked) in FILL_AND_AREA.items()
            ],
            required=False,
        )
        for item in (
            self.prompt,
            ui.Label(
                text="Mask",
                description="A PNG of the image's size: white is repainted, black is kept.",
                component=self.mask,
            ),
            self.mask_words,
            self.strength,
            ui.Label(
                text="Masked content · inpaint area",
                description="What the area starts from, and whether only the area around it is repainted",
                component=self.fill_and_area,
            ),
        ):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def run() -> None:
            chosen = self.fill_and_area.values[0] if self.fill_and_area.values else None
            masked_content, only_masked = FILL_AND_AREA.get(chosen or "", (None, False))
            params, note = await actions.inpaint_jobs(
                interaction,
                self.job_id,
                self.index,
                prompt=self.prompt.value,
                strength=self.strength.value,
                mask=self.mask.values[0] if self.mask.values else None,
                mask_words=self.mask_words.value,
                masked_content=masked_content,
                only_masked=only_masked,
            )
            await confirm.submit_jobs(interaction, params)
            if note:
                await interaction.followup.send(note, ephemeral=True)

        await actions.run_for_user(interaction, run, queues_jobs=True, parent_job_id=self.job_id)
