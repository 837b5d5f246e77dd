"""A describe job (/describe, the Describe message menu): its parameters, the interrogator a
server uses, and the suggestions it left on its row.

A describe job is a job like the others (the fair queue, progress, cancel, its status message)
that makes no images: the worker answers with up to four prompt suggestions, which the job row
keeps (Job.suggestions) for the buttons that queue them as /imagine (bot.ui.suggestions).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.errors import InvalidOption
from bot.jobs.params import JobParameters, random_seed
from db.models import Image, Job
from inference.common.protocol import INTERROGATORS, JobKind

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.jobs.workflow_params import SourceImage
    from db.session import Database

NOT_SET_UP = (
    "/describe is not set up on this bot: its admin has configured no caption and CLIP models and no tagger "
    "([describe] in config.toml)."
)


def interrogator_for(settings: Settings, chosen: str | None) -> str:
    """The interrogator a server's describe jobs use: its admins' choice (``chosen``), else the
    [describe] default, else whichever one the bot has models for."""
    available = settings.describe.available
    if not available:
        raise InvalidOption(NOT_SET_UP)
    for name in (chosen, settings.describe.interrogator):
        if name in available:
            return name
    return available[0]


def describe_parameters(settings: Settings, source: SourceImage, interrogator: str) -> JobParameters:
    """A describe job of one image (an upload, or an image of the bot's: ``source`` says whose)."""
    if interrogator not in INTERROGATORS:
        raise InvalidOption(f"Unknown interrogator `{interrogator}`. Choose one of: {', '.join(INTERROGATORS)}.")
    limits = settings.limits
    return JobParameters(
        kind=JobKind.DESCRIBE,
        prompt="",
        negative_prompt="",
        model=settings.default_model,  # runs no checkpoint; the column needs one
        width=source.width,
        height=source.height,
        steps=1,
        cfg_scale=limits.default_cfg_scale,
        sampler=limits.default_sampler,
        count=1,
        seed=random_seed(),
        init_image_path=source.path,
        parent_job_id=source.parent_job_id,
        parent_image_index=source.parent_image_index,
        interrogator=interrogator,
    )


def suggestions_of(job: Job) -> list[str]:
    """A finished describe job's prompt suggestions, best first ([] before it finishes)."""
    return list(json.loads(job.suggestions)) if job.suggestions else []


async def with_source_job(db: Database, source: SourceImage, message_id: int) -> SourceImage:
    """The image of one of the bot's messages, linked to the job that made it: the result of a
    job (its grid, or its one image), or one image posted alone by a U button. The answer then
    says "From job #N", as the other work made from the bot's images does."""
    async with db.session() as session:
        job_id = await session.scalar(select(Job.id).where(Job.message_id == message_id))
        if job_id is not None:
            single = await session.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id)) == 1
            return replace(source, parent_job_id=job_id, parent_image_index=0 if single else None)
        posted = (await session.execute(
            select(Image.job_id, Image.index).where(Image.posted_message_id == message_id)
        )).first()
    if posted is None:
        return source
    return replace(source, parent_job_id=posted.job_id, parent_image_index=posted.index)
