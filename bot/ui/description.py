"""The message of a finished describe job: its prompt suggestions, numbered as the buttons
under it (bot.ui.suggestions), with the image it described as the thumbnail."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import discord

from bot import uploads
from bot.flagged_results import Posting
from bot.jobs.describe_params import suggestions_of
from bot.ui.embeds import DONE_COLOUR, clip

if TYPE_CHECKING:
    from db.models import Job

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
# Discord's embed description holds 4096 characters: a quarter each, with room for the numbers.
SUGGESTION_LIMIT = 1000
INTERROGATOR_NAMES = {"clip": "caption + CLIP", "tagger": "tagger"}


def description_embed(job: Job, thumbnail: str | None) -> discord.Embed:
    """The suggestions, numbered as their buttons; the described image as the thumbnail."""
    lines = [f"{NUMBERS[i]} {clip(text, SUGGESTION_LIMIT)}" for i, text in enumerate(suggestions_of(job))]
    embed = discord.Embed(title="Describe: prompts for this image", description="\n\n".join(lines), colour=DONE_COLOUR)
    if job.parent_job_id is not None:
        source = f"job #{job.parent_job_id}"
        if job.parent_image_index is not None:
            source += f", image {job.parent_image_index + 1}"
        embed.add_field(name="From", value=source)
    embed.add_field(name="Interrogator", value=INTERROGATOR_NAMES.get(job.interrogator or "", job.interrogator or "?"))
    if thumbnail:
        embed.set_thumbnail(url=f"attachment://{thumbnail}")
    took = f" · {job.seconds:.1f} s" if job.seconds is not None else ""
    embed.set_footer(text=f"Job #{job.id}{took} · a button queues that prompt as /imagine for you")
    return embed


async def description_post(job: Job) -> tuple[Posting, discord.Embed]:
    """What the delivery posts for a finished describe job: the embed, and the image it
    described as its thumbnail while the file is kept ([images] keep_days may have removed it)."""
    posting = Posting(in_embed=False)
    if job.init_image_path and Path(job.init_image_path).is_file():
        thumbnail = await uploads.image_file(job.init_image_path, job.upload_limit_bytes, f"job{job.id}-source")
        posting.files.append(thumbnail)
    return posting, description_embed(job, posting.filename or None)
