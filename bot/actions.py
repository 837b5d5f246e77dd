"""What the slash commands and the buttons do, in one place, so both behave the same."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import uploads
from bot.errors import ImageUnavailable, InvalidOption, NotAllowed, UserError
from bot.jobs.params import JobParameters, reroll_of, variation_of
from bot.jobs.queue import CancelOutcome, Requester
from bot.ui import buttons, embeds
from db.models import Image, Job, JobStatus

if TYPE_CHECKING:
    from bot.client import SDBot

log = logging.getLogger(__name__)
APOLOGY = "Something went wrong on our side. The error was logged; please try again in a moment."


def bot_of(interaction: discord.Interaction) -> SDBot:
    return interaction.client  # type: ignore[return-value]


async def send_private(interaction: discord.Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def run_for_user(interaction: discord.Interaction, action: Callable[[], Awaitable[Any]]) -> None:
    """Run a button's action; the user hears privately about anything that goes wrong."""
    try:
        await action()
    except UserError as error:
        await send_private(interaction, error.message)
    except Exception:
        await send_private(interaction, APOLOGY)
        raise


def requester(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        upload_limit_bytes=interaction.filesize_limit,
    )


def may_manage(interaction: discord.Interaction, job: Job) -> bool:
    """The job's owner, or a moderator (Manage Messages in this channel)."""
    return interaction.user.id == job.user_id or interaction.permissions.manage_messages


async def submit(interaction: discord.Interaction, params: JobParameters) -> Job:
    """Queue a job and answer with its status message: the row exists before the answer."""
    bot = bot_of(interaction)
    job = await bot.queue.enqueue(params, requester(interaction))
    bot.delivery.track(job.id, interaction)
    entry = await bot.queue.entry(job.id)
    position, eta = (entry.position, entry.eta_seconds) if entry else (1, 0.0)
    response = await interaction.response.send_message(
        embed=embeds.queued_embed(job, position, eta), view=buttons.status_view(job.id)
    )
    if isinstance(response.resource, discord.InteractionMessage):
        await bot.queue.set_message(job.id, response.resource.channel.id, response.resource.id)
    bot.dispatcher.wake()
    return job


async def cancel(interaction: discord.Interaction, job_id: int) -> None:
    bot = bot_of(interaction)
    job = await bot.queue.require(job_id)
    if not may_manage(interaction, job):
        raise NotAllowed(f"Only the person who started job #{job.id}, or a moderator, can cancel it.")
    job, outcome = await bot.dispatcher.cancel(job_id)
    text = {
        CancelOutcome.CANCELED: f"Job #{job.id} canceled.",
        CancelOutcome.STOPPING: f"Stopping job #{job.id}: it ends after the current step.",
        CancelOutcome.ALREADY_FINISHED: f"Job #{job.id} has already {job.status}; nothing to cancel.",
    }[outcome]
    await send_private(interaction, text)


async def _finished_image(bot: SDBot, job_id: int, index: int) -> tuple[Job, Image]:
    job = await bot.queue.require(job_id)
    if job.status != JobStatus.COMPLETED:
        raise ImageUnavailable(f"Job #{job.id} has not finished, so it has no images yet.")
    image = next((image for image in job.images if image.index == index), None)
    if image is None:
        raise ImageUnavailable(f"Job #{job.id} has no image {index + 1}.")
    return job, image


async def post_single_image(interaction: discord.Interaction, job_id: int, index: int) -> None:
    bot = bot_of(interaction)
    job, image = await _finished_image(bot, job_id, index)
    if not Path(image.path).is_file():
        raise ImageUnavailable(f"Image {index + 1} of job #{job.id} is no longer on disk.")
    await interaction.response.defer(thinking=True)
    file = await uploads.image_file(image.path, interaction.filesize_limit, f"job{job.id}-{index + 1}")
    await interaction.followup.send(
        content=f"Image {index + 1} of job #{job.id}, for {interaction.user.mention}",
        embed=embeds.result_embed(job, file.filename, image_index=index),
        file=file,
        view=buttons.single_image_view(job.id, index),
    )


async def vary(interaction: discord.Interaction, job_id: int, index: int, strength: str) -> None:
    bot = bot_of(interaction)
    job, image = await _finished_image(bot, job_id, index)
    _check_model_still_there(bot, job)
    amount = buttons.variation_strength(bot.settings.discord, strength)
    count = min(4, bot.settings.limits.max_count)
    await submit(interaction, variation_of(job, index, image.seed, amount, count))


async def reroll(interaction: discord.Interaction, job_id: int) -> None:
    bot = bot_of(interaction)
    job = await bot.queue.require(job_id)
    _check_model_still_there(bot, job)
    await submit(interaction, reroll_of(job))


def _check_model_still_there(bot: SDBot, job: Job) -> None:
    if bot.settings.model(job.model) is None:
        raise InvalidOption(f"Model `{job.model}` of job #{job.id} is no longer available on this server.")
