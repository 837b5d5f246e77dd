"""The buttons under jobs, as DynamicItems: they work after a restart and never time out.

Each custom_id carries the job id (and the image index), nothing else: the state lives in the
database under that id, and a click re-reads it. A click on a job that was deleted, by someone
who may not, or on an image that is gone, gets a private message and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem

from bot import actions

if TYPE_CHECKING:
    from bot.config import DiscordSettings
    from db.models import Job

Strength = str  # "subtle" | "strong"


async def _guarded(interaction: discord.Interaction, action: Callable[[], Awaitable[Any]]) -> None:
    # discord.py only logs what a dynamic item's callback raises; reply to the user first.
    await actions.run_for_user(interaction, action)


class UpscaleButton(DynamicItem[Button], template=r"sd:u:(?P<job>\d+):(?P<index>\d+)"):
    """U1..U4: post that image alone, full size, with its own buttons."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(
            Button(label=f"U{index + 1}", style=discord.ButtonStyle.secondary, custom_id=f"sd:u:{job_id}:{index}")
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Button, match: re.Match[str]) -> UpscaleButton:
        return cls(job_id=int(match["job"]), index=int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _guarded(interaction, lambda: actions.post_single_image(interaction, self.job_id, self.index))


class VariationButton(DynamicItem[Button], template=r"sd:v:(?P<job>\d+):(?P<index>\d+):(?P<strength>subtle|strong)"):
    """V1..V4 under a grid, "Vary (subtle)" / "Vary (strong)" under one image."""

    def __init__(self, job_id: int, index: int, strength: Strength, label: str | None = None) -> None:
        super().__init__(
            Button(
                label=label or f"V{index + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sd:v:{job_id}:{index}:{strength}",
            )
        )
        self.job_id, self.index, self.strength = job_id, index, strength

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: Button, match: re.Match[str]
    ) -> VariationButton:
        return cls(job_id=int(match["job"]), index=int(match["index"]), strength=match["strength"], label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:
        await _guarded(interaction, lambda: actions.vary(interaction, self.job_id, self.index, self.strength))


class RerollButton(DynamicItem[Button], template=r"sd:reroll:(?P<job>\d+)"):
    """Same parameters, new seeds."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            Button(emoji="🔄", label="Reroll", style=discord.ButtonStyle.secondary, custom_id=f"sd:reroll:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Button, match: re.Match[str]) -> RerollButton:
        return cls(job_id=int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _guarded(interaction, lambda: actions.reroll(interaction, self.job_id))


class CancelButton(DynamicItem[Button], template=r"sd:cancel:(?P<job>\d+)"):
    """Shown while a job waits or runs; its owner or a moderator may press it."""

    def __init__(self, job_id: int) -> None:
        super().__init__(Button(label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"sd:cancel:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Button, match: re.Match[str]) -> CancelButton:
        return cls(job_id=int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _guarded(interaction, lambda: actions.cancel(interaction, self.job_id))


DYNAMIC_ITEMS = (UpscaleButton, VariationButton, RerollButton, CancelButton)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)  # never expires: the buttons are dynamic items
    for item in items:
        view.add_item(item)
    return view


def status_view(job_id: int) -> discord.ui.View:
    return _view(CancelButton(job_id))


def result_view(job: Job) -> discord.ui.View:
    """Under a finished job: U/V per image for a grid, Vary buttons for a single image."""
    if job.count == 1:
        return single_image_view(job.id, 0, with_reroll=True)
    upscales = [UpscaleButton(job.id, i) for i in range(job.count)]
    variations = [VariationButton(job.id, i, "strong") for i in range(job.count)]
    for button in upscales:
        button.row = 0
    for button in variations:
        button.row = 1
    reroll = RerollButton(job.id)
    reroll.row = 0
    return _view(*upscales, reroll, *variations)


def single_image_view(job_id: int, index: int, *, with_reroll: bool = False) -> discord.ui.View:
    items: list[discord.ui.Item[Any]] = [
        VariationButton(job_id, index, "subtle", label="Vary (subtle)"),
        VariationButton(job_id, index, "strong", label="Vary (strong)"),
    ]
    if with_reroll:
        items.append(RerollButton(job_id))
    return _view(*items)


def variation_strength(settings: DiscordSettings, strength: Strength) -> float:
    return settings.variation_subtle if strength == "subtle" else settings.variation_strong
