"""What the mask preview's buttons do: *Looks right* queues the inpaint, *Adjust* a new preview.

A mask from words is a job of its own (JobKind.SEGMENT, queued by /inpaint's mask_words):
the worker writes the mask (protocol.segment_mask_path) and posts it over the image as a
preview. Its row holds the inpaint to come (prompt, strength, masked content, count, seed...),
so *Looks right* queues that row as an inpaint job with the mask, and *Adjust* queues the same
row again with other words, threshold or dilation. Both are refused privately, queuing
nothing, when the preview, its source image or its mask is gone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot import actions
from bot.errors import ImageUnavailable, InvalidOption, echo
from bot.jobs.job_rows import parameters_of
from bot.jobs.params import JobParameters
from bot.jobs.workflow_params import check_segment, segment_parameters
from db.models import JobStatus
from inference.common.protocol import JobKind, segment_mask_path

if TYPE_CHECKING:
    import discord

    from bot.client import SDBot
    from bot.config import Settings
    from db.models import Job


def preview_mask_path(settings: Settings, job_id: int) -> str:
    """Where the worker wrote this segment job's mask (its outputs_dir is the bot's, resolved)."""
    return segment_mask_path(str(Path(settings.outputs_dir).resolve()), job_id)


def inpaint_of(job: Job, settings: Settings) -> JobParameters:
    """The inpaint job a preview stands for, with the mask it found."""
    return replace(
        parameters_of(job),
        kind=JobKind.INPAINT,
        mask_path=preview_mask_path(settings, job.id),
        segment_words=None,
        segment_threshold=None,
        segment_dilation=None,
        parent_job_id=job.id,
        parent_image_index=None,
    )


async def _preview(interaction: discord.Interaction[SDBot], job_id: int) -> Job:
    """The finished preview, its model still served, its source still on disk."""
    job, _ = await actions.finished_image(interaction, job_id, 0)
    return _check_source(job)


def _check_source(job: Job) -> Job:
    if job.kind != JobKind.SEGMENT:
        raise InvalidOption(f"Job #{job.id} is not a mask preview.")
    if job.init_image_path is None or not Path(job.init_image_path).is_file():
        raise ImageUnavailable(f"The image of job #{job.id} is no longer on disk: run /inpaint again.")
    return job


async def looks_right(interaction: discord.Interaction[SDBot], job_id: int) -> None:
    bot = interaction.client
    job = await _preview(interaction, job_id)
    params = inpaint_of(job, bot.settings)
    if not Path(params.mask_path or "").is_file():
        raise ImageUnavailable(f"The mask of job #{job.id} is no longer on disk: press Adjust to find it again.")
    await actions.submit(interaction, params)


async def check_adjustable(interaction: discord.Interaction[SDBot], job_id: int) -> Job:
    """The preview an Adjust form may start from (checked before the form opens, and again
    when it is sent): a finished one, or one that failed because the words matched nothing."""
    job = await actions.job_for_interaction(interaction, job_id)
    if job.status != JobStatus.FAILED:
        return await _preview(interaction, job_id)
    actions.check_not_removed(job)
    actions.check_files_kept(interaction.client, job)
    if interaction.client.settings.model(job.model) is None:
        raise InvalidOption(f"Model `{job.model}` of job #{job.id} is no longer available on this server.")
    return _check_source(job)


async def adjust(
    interaction: discord.Interaction[SDBot], job_id: int, *, words: str, threshold: str, dilation: str
) -> None:
    """A new preview of the same inpaint with what the Adjust form says."""
    bot = interaction.client
    segment = check_segment(
        bot.settings, words, _number(threshold, "threshold", float), _number(dilation, "dilation", int)
    )
    job = await check_adjustable(interaction, job_id)
    params = replace(parameters_of(job), parent_job_id=job.id, parent_image_index=None)
    await actions.submit(interaction, segment_parameters(params, bot.settings, segment))


def _number(text: str, name: str, kind: type[float] | type[int]) -> float | int | None:
    cleaned = text.strip().replace(",", ".")
    if not cleaned:
        return None
    try:
        return kind(cleaned)
    except ValueError:
        what = "a whole number of pixels" if kind is int else "a number between 0 and 1"
        raise InvalidOption(f"The mask {name} must be {what}, got `{echo(text)}`.") from None
