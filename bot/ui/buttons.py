"""The buttons under jobs, as DynamicItems: they work after a restart and never time out.

Each custom_id carries the job id (and the image index), nothing else: the state lives in the
database under that id, and a click re-reads it. A click on a job that was deleted, by someone
who may not, or on an image that is gone, gets a private message and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem

from bot import actions
from bot.interactions import send_form
from bot.ui import mask_preview, modals
from bot.ui.remove_button import RemoveButton
from bot.ui.suggestions import suggestions_view
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job

Strength = str  # "subtle" | "strong"


async def _guarded(interaction: discord.Interaction[SDBot], action: Callable[[], Awaitable[Any]]) -> None:
    # discord.py only logs what a dynamic item's callback raises; reply to the user first.
    await actions.run_for_user(interaction, action)


async def _queuing(interaction: discord.Interaction[SDBot], job_id: int, action: Callable[[], Awaitable[Any]]) -> None:
    """A button that makes new work from job_id: acknowledged before its checks."""
    await actions.run_for_user(interaction, action, queues_jobs=True, parent_job_id=job_id)


class _JobButton:
    """What every button here shares, placed before DynamicItem in its bases: the job and the
    image index it acts on (0 for a button on the whole job), and from_custom_id, which
    rebuilds the button from its template's named parts: ``job`` and ``index`` as numbers, a
    subclass's other parts by its own custom_id_arguments."""

    def __init__(self, job_id: int, index: int, button: Button) -> None:
        super().__init__(button)  # DynamicItem's
        self.job_id, self.index = job_id, index

    @classmethod
    def custom_id_arguments(cls, match: re.Match[str], item: Button) -> dict[str, Any]:
        arguments = {"job_id": int(match["job"])}
        if "index" in match.re.groupindex:
            arguments["index"] = int(match["index"])
        return arguments

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(**cls.custom_id_arguments(match, item))


def _secondary(custom_id: str, label: str, emoji: str | None = None) -> Button:
    return Button(emoji=emoji, label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id)


class UpscaleButton(_JobButton, DynamicItem[Button], template=r"sd:u:(?P<job>\d+):(?P<index>\d+)"):
    """U1..U4: post that image alone, full size, with its own buttons."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(job_id, index, _secondary(f"sd:u:{job_id}:{index}", f"U{index + 1}"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.post_single_image(interaction, self.job_id, self.index))


class VariationButton(
    _JobButton, DynamicItem[Button], template=r"sd:v:(?P<job>\d+):(?P<index>\d+):(?P<strength>subtle|strong)"
):
    """V1..V4 under a grid, "Vary (subtle)" / "Vary (strong)" under one image."""

    def __init__(self, job_id: int, index: int, strength: Strength, label: str | None = None) -> None:
        super().__init__(job_id, index, _secondary(f"sd:v:{job_id}:{index}:{strength}", label or f"V{index + 1}"))
        self.strength = strength

    @classmethod
    def custom_id_arguments(cls, match: re.Match[str], item: Button) -> dict[str, Any]:
        return {**super().custom_id_arguments(match, item), "strength": match["strength"], "label": item.label}

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.vary(interaction, self.job_id, self.index, self.strength))


class RerollButton(_JobButton, DynamicItem[Button], template=r"sd:reroll:(?P<job>\d+)"):
    """Same parameters, new seeds."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, 0, _secondary(f"sd:reroll:{job_id}", "Reroll", emoji="🔄"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.reroll(interaction, self.job_id))


class CancelButton(_JobButton, DynamicItem[Button], template=r"sd:cancel:(?P<job>\d+)"):
    """Shown while a job waits or runs; its owner or a moderator may press it."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, 0, Button(label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"sd:cancel:{job_id}"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _guarded(interaction, lambda: actions.cancel(interaction, self.job_id))


class UpscaleImageButton(_JobButton, DynamicItem[Button], template=r"sd:up:(?P<job>\d+):(?P<index>\d+):(?P<scale>[24])"):
    """Upscale 2x / 4x under one image, with the server's default upscaler."""

    def __init__(self, job_id: int, index: int, scale: int) -> None:
        super().__init__(job_id, index, _secondary(f"sd:up:{job_id}:{index}:{scale}", f"Upscale {scale}x"))
        self.scale = scale

    @classmethod
    def custom_id_arguments(cls, match: re.Match[str], item: Button) -> dict[str, Any]:
        return {**super().custom_id_arguments(match, item), "scale": int(match["scale"])}

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.upscale(interaction, self.job_id, self.index, float(self.scale)))


class RestoreFacesButton(_JobButton, DynamicItem[Button], template=r"sd:faces:(?P<job>\d+):(?P<index>\d+)"):
    """A1111's Extras face restoration of one image, with the member's restorer (/settings)."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(job_id, index, _secondary(f"sd:faces:{job_id}:{index}", "Restore faces"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.restore_faces(interaction, self.job_id, self.index))


class DetailedUpscaleButton(_JobButton, DynamicItem[Button], template=r"sd:sdup:(?P<job>\d+):(?P<index>\d+)"):
    """*Upscale (detailed)*: A1111's SD upscale 2x, the image redrawn by tiles with its prompt."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(job_id, index, _secondary(f"sd:sdup:{job_id}:{index}", "Upscale (detailed)"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.sd_upscale(interaction, self.job_id, self.index))


# Direction in the custom_id -> the button's label.
OUTPAINT_LABELS = {
    "zoom1.5": "Zoom out 1.5x",
    "zoom2": "Zoom out 2x",
    "left": "⬅️",
    "right": "➡️",
    "up": "⬆️",
    "down": "⬇️",
}


class OutpaintButton(
    _JobButton,
    DynamicItem[Button],
    template=r"sd:out:(?P<job>\d+):(?P<index>\d+):(?P<direction>zoom1\.5|zoom2|left|right|up|down)",
):
    """Zoom out and pan: outpaint the image on every side or on one."""

    def __init__(self, job_id: int, index: int, direction: str) -> None:
        super().__init__(job_id, index, _secondary(f"sd:out:{job_id}:{index}:{direction}", OUTPAINT_LABELS[direction]))
        self.direction = direction

    @classmethod
    def custom_id_arguments(cls, match: re.Match[str], item: Button) -> dict[str, Any]:
        return {**super().custom_id_arguments(match, item), "direction": match["direction"]}

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await _queuing(interaction, self.job_id, lambda: actions.outpaint(interaction, self.job_id, self.index, self.direction))


class RemixButton(_JobButton, DynamicItem[Button], template=r"sd:remix:(?P<job>\d+)"):
    """Edit the prompt in a form and run the job again with the same seeds."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, 0, _secondary(f"sd:remix:{job_id}", "Remix", emoji="🎛️"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        async def open_form() -> None:
            job = await actions.job_for_interaction(interaction, self.job_id)
            actions.check_not_removed(job)
            actions.check_files_kept(interaction.client, job)
            await send_form(interaction, modals.RemixModal(job, viewer_id=interaction.user.id))

        await _guarded(interaction, open_form)


class InpaintButton(_JobButton, DynamicItem[Button], template=r"sd:inpaint:(?P<job>\d+):(?P<index>\d+)"):
    """Open the inpaint form (prompt, mask upload, strength) for one image."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(job_id, index, _secondary(f"sd:inpaint:{job_id}:{index}", "Inpaint", emoji="🖌️"))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        async def open_form() -> None:
            job, _ = await actions.finished_image(interaction, self.job_id, self.index)
            strength = interaction.client.settings.images.default_denoising_strength
            await send_form(interaction, modals.InpaintModal(job, self.index, strength, viewer_id=interaction.user.id))

        await _guarded(interaction, open_form)


DYNAMIC_ITEMS = (
    UpscaleButton,
    VariationButton,
    RerollButton,
    CancelButton,
    UpscaleImageButton,
    DetailedUpscaleButton,
    OutpaintButton,
    RemixButton,
    InpaintButton,
    RestoreFacesButton,
)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)  # never expires: the buttons are dynamic items
    for item in items:
        view.add_item(item)
    return view


def status_view(job_id: int) -> discord.ui.View:
    return _view(CancelButton(job_id))


def _rows(*rows: list[discord.ui.Item[Any]]) -> discord.ui.View:
    for number, row in enumerate(rows):
        for item in row:
            item.row = number
    return _view(*(item for row in rows for item in row))


def result_view(job: Job, *, restore_faces: bool = True) -> discord.ui.View | None:
    """Under a finished job: U/V per image for a grid, the image workflows for a single image;
    🗑️ Remove under every result (bot.ui.remove_button). ``restore_faces``: whether the bot
    has a face restorer to offer (without one, its button could only refuse).

    An upscale (plain or detailed) has only Restore faces (A1111's Extras order: upscale, then
    restore) and Remove: every other workflow on a 2048 px image would pass the server's limits.
    """
    if job.kind in (JobKind.UPSCALE, JobKind.SD_UPSCALE) and not job.face_restorer and restore_faces:
        return _view(RestoreFacesButton(job.id, 0), RemoveButton(job.id))
    if job.kind in (JobKind.UPSCALE, JobKind.SD_UPSCALE, JobKind.RESTORE_FACES):
        return _view(RemoveButton(job.id))
    if job.kind == JobKind.DESCRIBE:
        return suggestions_view(job)
    if job.kind == JobKind.SEGMENT:  # a mask from words, before its inpaint
        return _view(*mask_preview.preview_items(job), RemoveButton(job.id))
    if job.kind == JobKind.PLOT:
        # A plot's cells differ in more than their seed, and up to 16 of them would pass
        # Discord's 5 buttons a row: Reroll remakes the whole plot with a new seed.
        return _view(RerollButton(job.id), RemoveButton(job.id))
    if job.count == 1:
        return single_image_view(job.id, 0, with_reroll=True, restore_faces=restore_faces)
    upscales: list[discord.ui.Item[Any]] = [UpscaleButton(job.id, i) for i in range(job.count)]
    variations: list[discord.ui.Item[Any]] = [VariationButton(job.id, i, "strong") for i in range(job.count)]
    return _rows([*upscales, RerollButton(job.id)], [*variations, RemixButton(job.id)], [RemoveButton(job.id)])


def failed_view(job: Job) -> discord.ui.View | None:
    """Under a failed job: Adjust under a mask preview that found nothing (other words, a
    lower threshold); nothing under the others."""
    if job.kind == JobKind.SEGMENT:
        return _view(*mask_preview.failed_items(job))
    return None


def single_image_view(
    job_id: int, index: int, *, with_reroll: bool = False, restore_faces: bool = True
) -> discord.ui.View:
    """Midjourney's buttons under one image, A1111's workflows behind them (5 rows at most);
    Restore faces only where the bot has a face restorer (``restore_faces``)."""
    first: list[discord.ui.Item[Any]] = [
        VariationButton(job_id, index, "subtle", label="Vary (subtle)"),
        VariationButton(job_id, index, "strong", label="Vary (strong)"),
        InpaintButton(job_id, index),
    ]
    if with_reroll:
        first += [RemixButton(job_id), RerollButton(job_id)]
    return _rows(
        first,
        [
            UpscaleImageButton(job_id, index, 2),
            UpscaleImageButton(job_id, index, 4),
            DetailedUpscaleButton(job_id, index),
            *([RestoreFacesButton(job_id, index)] if restore_faces else []),
        ],
        [OutpaintButton(job_id, index, "zoom1.5"), OutpaintButton(job_id, index, "zoom2")],
        [
            *(OutpaintButton(job_id, index, direction) for direction in ("left", "right", "up", "down")),
            RemoveButton(job_id),
        ],
    )


class JobViews:
    """The buttons under a job's messages, as the bot hands them to the modules that post
    those messages (bot.actions, bot.delivery): the buttons' callbacks call those modules, so
    those modules reach the buttons through the bot (bot.client.SDBot.job_views) rather than
    by importing this one."""

    def __init__(self, face_restorers: Callable[[], Sequence[str]]) -> None:
        # The face restorers members can use now (their weights may be added while the bot runs).
        self._face_restorers = face_restorers

    status = staticmethod(status_view)
    failed = staticmethod(failed_view)

    def result(self, job: Job) -> discord.ui.View | None:
        return result_view(job, restore_faces=bool(self._face_restorers()))

    def single_image(self, job_id: int, index: int) -> discord.ui.View:
        return single_image_view(job_id, index, restore_faces=bool(self._face_restorers()))
