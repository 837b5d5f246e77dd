"""What is posted of a result the safety classifier flagged, per the server's policy.

The worker only flags images (inference.safety_checker; Image.flagged); here the bot decides what to
post, wherever a result image is posted (the result delivery, the U buttons, /show):

- "blur": a strong Gaussian blur. In a plain grid only the flagged cells are blurred, so the
  other images stay usable; a plot's labelled grid is blurred whole (its cells are not at
  fixed places). The embed says which images were blurred.
- "spoiler": the attachment goes behind Discord's spoiler (a filename starting with
  ``SPOILER_``). Discord ignores spoilers on embed images, so the embed does not show it.
- "withhold": nothing of a flagged image is posted: a plain grid has the flagged cells
  blanked, anything else is not attached at all, and the embed says the server's safety
  filter withheld it.

The files on disk are never changed: moderators keep the originals. Images are only ever
flagged outside age-restricted channels (jobs there are not checked), and a result shown in
an age-restricted channel is posted as it is. Each flagged job writes one audit entry.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from PIL import Image, ImageFilter

from bot import uploads
from bot.errors import ImageUnavailable, NotAllowed
from bot.policy import store
from bot.policy.audit import Action, record
from db.models import Job
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.client import SDBot

SPOILER_PREFIX = "SPOILER_"
# A blur radius of this fraction of the larger side of what is blurred: shapes and faces are
# gone, only the colours remain.
BLUR_FRACTION = 1 / 10
WITHHELD_FILL = (96, 96, 96)


async def flagged_action(bot: SDBot, guild_id: int | None) -> str:
    """The server's choice ("blur", "spoiler" or "withhold"), else the config's."""
    return (await store.policy_of(bot.queue.db, bot.settings, guild_id)).flagged_action


@dataclass(frozen=True)
class Posting:
    """The attachment of a result post (or none) and what its embed must say."""

    files: list[discord.File] = field(default_factory=list)
    note: str | None = None
    # The embed shows the attachment as its image (not a spoiler's: Discord would unveil it).
    in_embed: bool = True

    @property
    def filename(self) -> str:
        return self.files[0].filename if self.files else ""

    def dress(self, embed: discord.Embed) -> discord.Embed:
        """The result embed, made for ``filename``, fitted to what is really posted."""
        if not self.in_embed or not self.files:
            embed.set_image(url=None)
        if self.note:
            embed.add_field(name="Safety filter", value=self.note, inline=False)
        return embed

    def file_kwargs(self) -> dict[str, discord.File]:
        """``file=`` for a send, or nothing: Discord refuses an empty ``files`` list there."""
        return {"file": self.files[0]} if self.files else {}


@dataclass(frozen=True)
class Verdict:
    """Which of the posted images are flagged and what the server does with them; cheap to
    make (no image is read), so a command can refuse before it acknowledges."""

    job: Job
    image_index: int | None  # one image of the job, or its result (grid or single image)
    flagged: tuple[int, ...]  # 0-based indexes of the job's images
    action: str | None  # None: posted as it is

    @property
    def withheld_whole(self) -> bool:
        return self.action == "withhold" and self._whole()

    def _whole(self) -> bool:
        """Censoring covers the whole attachment (not some cells of a grid)."""
        every_image = len(self.flagged) == len(self.job.images)
        return self.image_index is not None or every_image or _cell_layout(self.job) is None

    async def posting(self, path: str | Path, limit: int | None, stem: str) -> Posting:
        """The file to attach (read and censored in threads) and the embed's note."""
        if self.action is None:
            return Posting([await uploads.image_file(path, limit, stem)])
        note = self._note()
        if self.action == "spoiler":
            return Posting([await uploads.image_file(path, limit, SPOILER_PREFIX + stem)], note, in_embed=False)
        if self.withheld_whole:
            return Posting([], note)
        cells = None if self._whole() else _cell_layout(self.job)
        data = await asyncio.to_thread(_censored_png, Path(path), self.action, cells, self.flagged)
        return Posting([await uploads.bytes_file(data, limit, stem)], note)

    def _note(self) -> str:
        which = _numbers(self.flagged)
        if self.image_index is not None or len(self.job.images) == 1:
            subject = "This image was flagged by the safety classifier"
        else:
            subject = f"{which} of this grid {'was' if len(self.flagged) == 1 else 'were'} flagged by the safety classifier"
        if self.action == "spoiler":
            return f"{subject}: the result is behind a spoiler (open the attachment)."
        if self.action == "withhold":
            if self.withheld_whole:
                return f"{subject} and withheld by this server's safety filter."
            return f"{subject}: withheld by this server's safety filter, blanked in the grid."
        if self._whole() and self.image_index is None and len(self.job.images) > 1:
            return f"{subject}: the whole grid is blurred."
        return f"{subject} and is shown blurred." if len(self.flagged) == 1 else f"{subject} and are shown blurred."


async def verdict(
    bot: SDBot, job: Job, *, guild_id: int | None, age_restricted: bool, image_index: int | None = None
) -> Verdict:
    """What to do with this post of ``job`` (its result, or one of its images)."""
    shown = [image for image in job.images if image_index is None or image.index == image_index]
    flagged = tuple(sorted(image.index for image in shown if image.flagged))
    if not flagged or age_restricted:
        return Verdict(job, image_index, flagged, None)
    return Verdict(job, image_index, flagged, await flagged_action(bot, guild_id))


def refuse_withheld_image(found: Verdict) -> None:
    """A U button on an image the server withholds: a private answer, nothing posted."""
    if found.withheld_whole and found.image_index is not None:
        raise ImageUnavailable(
            f"Image {found.image_index + 1} of job #{found.job.id} was flagged by the safety classifier "
            "and is withheld by this server's safety filter."
        )


def check_shown_where_allowed(bot: SDBot, job: Job, *, here_age_restricted: bool) -> None:
    """A result made in an age-restricted channel was not checked, so it is shown again only
    in such a channel, never in an ordinary one."""
    if here_age_restricted or job.channel_id is None or job.guild_id is None:
        return
    origin = bot.get_channel(job.channel_id)
    is_nsfw = getattr(origin, "is_nsfw", None)
    if callable(is_nsfw) and is_nsfw():
        raise NotAllowed(
            f"Job #{job.id} was made in an age-restricted channel, so it can be shown only in an age-restricted channel."
        )


async def audit_flagged(bot: SDBot, job: Job, found: Verdict) -> None:
    """One audit entry for a delivered job with flagged images: which, and what was done."""
    if not found.flagged:
        return
    done = {"blur": "posted blurred", "spoiler": "posted behind a spoiler", "withhold": "withheld"}
    details = (
        f"{_numbers(found.flagged)} of {len(job.images)} flagged by the safety classifier; "
        f"{done.get(found.action or '', 'posted as it is')}"
    )
    assert bot.user is not None
    await record(
        bot, Action.IMAGE_FLAGGED, actor_id=bot.user.id, guild_id=job.guild_id, channel_id=job.channel_id,
        target_user_id=job.user_id, job_id=job.id, details=details,
    )


def _numbers(indexes: tuple[int, ...]) -> str:
    numbers = [str(index + 1) for index in indexes]
    if len(numbers) == 1:
        return f"Image {numbers[0]}"
    return f"Images {', '.join(numbers[:-1])} and {numbers[-1]}"


def _cell_layout(job: Job) -> tuple[int, int] | None:
    """The cell size of the job's plain grid, None when it has none.

    inference.images.make_grid puts image i at column i % columns, row i // columns, every
    cell the first image's size; a plot's labelled grid has margins, so it has no cells here.
    """
    if job.grid_path is None or job.kind == JobKind.PLOT or not job.images:
        return None
    first = min(job.images, key=lambda image: image.index)
    return first.width, first.height


def _censored_png(path: Path, action: str, cells: tuple[int, int] | None, flagged: tuple[int, ...]) -> bytes:
    """The image at ``path`` blurred or blanked, as a PNG: the flagged cells of a grid of
    ``cells``-sized images, or all of it when ``cells`` is None."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    boxes = [(0, 0, image.width, image.height)]
    if cells is not None:
        width, height = cells
        columns = max(1, image.width // width)
        boxes = [
            ((i % columns) * width, (i // columns) * height, (i % columns + 1) * width, (i // columns + 1) * height)
            for i in flagged
        ]
    for box in boxes:
        region = image.crop(box)
        if action == "withhold":
            region = Image.new("RGB", region.size, WITHHELD_FILL)
        else:
            radius = max(4.0, max(region.size) * BLUR_FRACTION)
            region = region.filter(ImageFilter.GaussianBlur(radius))
        image.paste(region, box[:2])
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
