"""What the slash commands and the buttons do, in one place, so both behave the same."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import flagged_results, inputs
from bot.errors import ImageUnavailable, InvalidOption, JobNotFound, NotAllowed, Restarting, UserError, echo
from bot.interactions import acknowledge, answers_privately, is_age_restricted, replace_thinking, send_private
from bot.jobs.params import GenerationOptions, JobParameters, ServerDefaults, member_defaults, resolve_parameters
from bot.jobs.job_rows import parameters_of, remix_of, reroll_of, sampling_options, variation_of
from bot.jobs.workflow_params import (
    SourceImage,
    check_segment,
    img2img_parameters,
    inpaint_parameters,
    outpaint_parameters,
    restore_faces_parameters,
    segment_parameters,
    upscale_parameters,
    without_workflow,
)
from bot.jobs.face_params import member_face_columns
from bot.jobs.sd_upscale_params import sd_upscale_parameters
from bot.jobs.queue import CancelOutcome, Requester
from bot.jobs.retention import expired_message
from bot.policy import audit, gate
from bot.prompts.prepare import prepare
from bot.ui import embeds
from db.models import AuditEntry, Image, Job, JobStatus, User
from inference.common.protocol import JobKind
from inference.common.vae_files import NONE

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.config import DiscordSettings

log = logging.getLogger(__name__)
APOLOGY = "Something went wrong on our side. The error was logged; please try again in a moment."
RESTARTING = "The bot is restarting; try again in a minute."


# Commands whose app_commands extras carry this are acknowledged before anything else
# (bot.client.CommandTree.interaction_check): they queue jobs, and their checks read the database.
QUEUES_JOBS = {"queues_jobs": True}


def check_not_stopping(interaction: discord.Interaction[SDBot]) -> None:
    """A bot that is shutting down takes nothing new: what it would queue or change now could
    be cut off half-way, and the member would not know whether it happened."""
    if interaction.client.stopping:
        raise Restarting(RESTARTING)


def is_job_command(command: Any) -> bool:
    """A command marked with QUEUES_JOBS (None, an autocomplete's or a menu's: False)."""
    return bool(getattr(command, "extras", {}).get("queues_jobs"))


async def run_for_user(
    interaction: discord.Interaction[SDBot],
    action: Callable[[], Awaitable[Any]],
    *,
    queues_jobs: bool = False,
    parent_job_id: int | None = None,
) -> None:
    """Run a button's or form's action; the user hears privately about anything that goes
    wrong. queues_jobs: acknowledge first (see acknowledge), for work made from parent_job_id."""
    try:
        check_not_stopping(interaction)
        if queues_jobs:
            await acknowledge(interaction, parent_job_id)
        await gate.check_access(interaction)  # the server's channels, roles and bans
        await action()
    except UserError as error:
        await send_private(interaction, error.message)
    except Exception:
        await send_private(interaction, APOLOGY)
        raise


async def prepare_for(
    interaction: discord.Interaction[SDBot],
    options: GenerationOptions,
    user: User | None,
    *,
    style_names: str | None = None,
    override: bool = False,
) -> list[GenerationOptions]:
    """bot.prompts.prepare for this member here: permutations, inline parameters, styles
    (theirs and this server's), LoRA and embedding checks; one GenerationOptions per job."""
    bot = interaction.client
    return await prepare(
        bot.queue.db, options, bot.settings, user, user_id=interaction.user.id, guild_id=interaction.guild_id,
        style_names=style_names, override=override,
    )


@dataclass(frozen=True)
class MemberRequest:
    """What a generating command reads before it works out its jobs' parameters."""

    user: User | None  # the member's row: their defaults (None: no row yet)
    jobs: list[GenerationOptions]  # one per job: prepare_for's
    server: ServerDefaults  # this server's own defaults (/admin noise)


async def member_request(
    interaction: discord.Interaction[SDBot], options: GenerationOptions, *, style_names: str | None = None
) -> MemberRequest:
    """The member, their options prepared (prepare_for: a bad prompt is refused here, before
    anything else is read) and the server's defaults: what every generating command starts from."""
    user = await interaction.client.queue.user(interaction.user.id)
    jobs = await prepare_for(interaction, options, user, style_names=style_names)
    return MemberRequest(user, jobs, await gate.server_defaults(interaction))


def requester(interaction: discord.Interaction[SDBot], *, private: bool = False) -> Requester:
    settings = interaction.client.settings
    return Requester(
        private=private,
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        upload_limit_bytes=interaction.filesize_limit,
        safety_check=bool(settings.policy.safety_checker) and not is_age_restricted(interaction),
    )


def may_manage(interaction: discord.Interaction[SDBot], job: Job) -> bool:
    """The job's owner, or a moderator (Manage Messages in this channel)."""
    return interaction.user.id == job.user_id or interaction.permissions.manage_messages


def may_use(interaction: discord.Interaction[SDBot], job: Job) -> bool:
    """Whether this member, here, may see and act on the job: its owner anywhere (a private
    result reaches them by DM, with its buttons); anyone else only in the job's own server,
    and a private job only as a moderator (Manage Messages in this channel)."""
    if interaction.user.id == job.user_id:
        return True
    if interaction.guild_id is None or job.guild_id != interaction.guild_id:
        return False
    return not job.private or interaction.permissions.manage_messages


async def job_for_interaction(interaction: discord.Interaction[SDBot], job_id: int) -> Job:
    """The job a command, button or form names, if this member may use it here (may_use).
    Job numbers count up, so the refusal is word for word the one for a job that never
    existed: it must not tell a member that a job they may not see is there."""
    job = await interaction.client.queue.get(job_id)
    if job is None or not may_use(interaction, job):
        raise JobNotFound(f"Job #{job_id} does not exist, or you cannot see it here.")
    return job


def check_not_removed(job: Job) -> None:
    """A removed result's buttons (anyone's, its owner's too) do nothing new with it."""
    if job.removed_at is not None:
        raise ImageUnavailable(f"The result of job #{job.id} was removed.")


def check_files_kept(bot: SDBot, job: Job) -> None:
    """A result whose images expired ([images] keep_days): every button says so."""
    if job.files_expired_at is not None:
        raise ImageUnavailable(expired_message(job, bot.settings.images.keep_days))


async def submit(
    interaction: discord.Interaction[SDBot], params: JobParameters, *, as_followup: bool = False, checked: bool = False
) -> Job:
    """Queue a job and answer with its status message: the row exists before the answer.

    as_followup: the interaction already has its answer (another job of the same permutation
    prompt, or a confirmation), so this job's status message is a new followup, which the
    delivery edits through the interaction's webhook by its message id.
    checked: the server's policy already passed these jobs as a whole (confirm.submit_jobs),
    in the member's turn (gate.member_turn), which this call is still part of.
    """
    if checked:
        return await _queue_and_announce(interaction, params, as_followup)
    async with gate.member_turn(interaction.user.id):
        await gate.check_jobs(interaction, [params])
        return await _queue_and_announce(interaction, params, as_followup)


async def _queue_and_announce(interaction: discord.Interaction[SDBot], params: JobParameters, as_followup: bool) -> Job:
    bot = interaction.client
    # A private result's status message is ephemeral: only the interaction can edit it, so the
    # row keeps no message id, and once the token expires the delivery sends the result by DM.
    private = await answers_privately(interaction, params.parent_job_id)
    queued: list[AuditEntry] = []  # the job's "job queued" entry, written with the job

    def queued_entry(job: Job) -> AuditEntry:
        queued.append(audit.queued_entry(interaction.user.id, job))
        return queued[-1]

    job = await bot.queue.enqueue(params, requester(interaction, private=private), with_row=queued_entry)
    async with bot.delivery.announcing(job.id):  # taken before any await: see announcing
        if not as_followup:
            bot.delivery.track(job.id, interaction)
        # The worker may start now: the job's updates wait for its status message (announcing).
        await bot.dispatcher.wake_and_wait()
        entry = await bot.queue.entry(job.id, claimed=bot.dispatcher.running.get(job.id))
        position, eta = (entry.position, entry.eta_seconds) if entry else (1, 0.0)
        if position == 0:  # claimed already: say so, rather than "Queued" and an edit after it
            embed = embeds.started_embed(job, eta)
            bot.delivery.answered_running(job.id)
        else:
            embed = embeds.queued_embed(job, position, eta)
        view = bot.job_views.status(job.id)
        if as_followup:
            message = await interaction.followup.send(embed=embed, view=view, wait=True, ephemeral=private)
            if not private:
                await bot.queue.set_message(job.id, message.channel.id, message.id)
            bot.delivery.track(job.id, FollowupStatus(interaction, message.id))  # type: ignore[arg-type]
        elif interaction.response.is_done():
            # Acknowledged first: the first followup replaces the "thinking…" message and is the
            # interaction's original response from then on.
            message = await replace_thinking(interaction, embed=embed, view=view, ephemeral=private)
            if not private:
                await bot.queue.set_message(job.id, message.channel.id, message.id)
        else:
            response = await interaction.response.send_message(embed=embed, view=view, ephemeral=private)
            if not private and isinstance(response.resource, discord.InteractionMessage):
                await bot.queue.set_message(job.id, response.resource.channel.id, response.resource.id)
    # After the answer: the member waits on nothing that is not theirs.
    await audit.send_to_log_channel(bot, queued[0])
    return job


class FollowupStatus:
    """A followup status message, shown to the delivery as the interaction it tracks: the
    delivery edits "the original response", which for this job is this followup."""

    def __init__(self, interaction: discord.Interaction[SDBot], message_id: int) -> None:
        self.interaction, self.message_id = interaction, message_id
        self.created_at = interaction.created_at  # the webhook token's age, as the interaction's

    async def edit_original_response(self, **fields: Any) -> discord.WebhookMessage:
        return await self.interaction.followup.edit_message(self.message_id, **fields)


async def cancel(interaction: discord.Interaction[SDBot], job_id: int, *, by_moderator: bool = False) -> None:
    """by_moderator: /admin cancel, whose caller has checked Manage Server."""
    bot = interaction.client
    job = await (bot.queue.require(job_id) if by_moderator else job_for_interaction(interaction, job_id))
    if not by_moderator and not may_manage(interaction, job):
        raise NotAllowed(f"Only the person who started job #{job.id}, or a moderator, can cancel it.")
    job, outcome = await bot.dispatcher.cancel(job_id)
    if job.user_id != interaction.user.id and outcome != CancelOutcome.ALREADY_FINISHED:
        await audit.record(
            bot, audit.Action.CANCELED_BY_MODERATOR, actor_id=interaction.user.id, guild_id=job.guild_id,
            channel_id=interaction.channel_id, target_user_id=job.user_id, job_id=job.id, details=f"was {outcome}",
        )
    text = {
        CancelOutcome.CANCELED: f"Job #{job.id} canceled.",
        CancelOutcome.STOPPING: f"Stopping job #{job.id}: it ends after the current step.",
        CancelOutcome.ALREADY_FINISHED: f"Job #{job.id} {_ended(job)}; nothing to cancel.",
    }[outcome]
    await send_private(interaction, text)


def _ended(job: Job) -> str:
    return "was already canceled" if job.status == JobStatus.CANCELED else f"has already {job.status}"


async def _finished_image(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> tuple[Job, Image]:
    job = await job_for_interaction(interaction, job_id)
    check_not_removed(job)
    check_files_kept(interaction.client, job)
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        ended = "failed" if job.status == JobStatus.FAILED else "was canceled"
        raise ImageUnavailable(f"Job #{job.id} {ended}, so it has no images.")
    if job.status != JobStatus.COMPLETED:
        raise ImageUnavailable(f"Job #{job.id} has not finished, so it has no images yet.")
    image = next((image for image in job.images if image.index == index), None)
    if image is None:
        raise ImageUnavailable(f"Job #{job.id} has no image {index + 1}.")
    return job, image


# One turn per image at a time: of simultaneous U clicks on the same image, the first posts it
# and records the post; the others then find that record and link to it.
_single_image_turns: weakref.WeakValueDictionary[tuple[int, int], asyncio.Lock] = weakref.WeakValueDictionary()


async def post_single_image(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> None:
    """A U button: the image alone, full size. The button acknowledged the click (run_for_user),
    so the post replaces its "thinking…". A public post is made once per image: while it
    exists, another U (anyone's, now or later) is answered privately with a link to it, so
    clicks cannot flood the channel (U makes no job: no cap or cooldown applies to it)."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    if not Path(image.path).is_file():
        raise ImageUnavailable(f"Image {index + 1} of job #{job.id} is no longer on disk.")
    shown = await flagged_results.verdict(
        bot, job, guild_id=interaction.guild_id, age_restricted=is_age_restricted(interaction), image_index=index
    )
    flagged_results.refuse_withheld_image(shown)
    private = await answers_privately(interaction, job.id)  # as the U button acknowledged it
    if private:  # seen by this member alone: nothing to flood
        await _send_single_image(interaction, job, index, shown, ephemeral=True)
        return
    turn = _single_image_turns.setdefault((job.id, index), asyncio.Lock())
    async with turn:
        existing = await _existing_post(bot, job.id, index)
        if existing is not None:
            await send_private(interaction, f"Image {index + 1} of job #{job.id} is already posted: {existing.jump_url}")
            return
        message = await _send_single_image(interaction, job, index, shown, ephemeral=False)
        await bot.queue.set_image_post(job.id, index, message.channel.id, message.id)


async def _send_single_image(
    interaction: discord.Interaction[SDBot], job: Job, index: int, shown: flagged_results.Verdict, *, ephemeral: bool
) -> discord.WebhookMessage:
    image = next(image for image in job.images if image.index == index)
    posting = await shown.posting(image.path, interaction.filesize_limit, f"job{job.id}-{index + 1}")
    return await replace_thinking(
        interaction,
        ephemeral=ephemeral,
        content=f"Image {index + 1} of job #{job.id}, for {interaction.user.mention}",
        embed=posting.dress(embeds.result_embed(job, posting.filename, image_index=index)),
        **posting.file_kwargs(),
        view=interaction.client.job_views.single_image(job.id, index),
    )


async def _existing_post(bot: SDBot, job_id: int, index: int) -> discord.Message | None:
    """The image's earlier public post alone, if it is still there (a deleted one is posted again)."""
    recorded = await bot.queue.image_post(job_id, index)
    if recorded is None:
        return None
    channel_id, message_id = recorded
    try:
        # The cached channel, when there is one, gives the message its server for the link.
        channel = bot.get_channel(channel_id) or bot.get_partial_messageable(channel_id)
        return await channel.fetch_message(message_id)  # type: ignore[union-attr]
    except (discord.NotFound, discord.Forbidden):  # deleted, or its channel gone from the bot's sight
        return None


async def vary(interaction: discord.Interaction[SDBot], job_id: int, index: int, strength: str) -> None:
    """A1111 variations of a txt2img image; an image made from another image (img2img,
    inpaint, outpaint) has no noise of its own to vary, so it gets img2img of itself."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    _check_model_still_there(bot, job)
    count = min(4, bot.settings.limits.max_count)
    if job.kind in (JobKind.TXT2IMG, JobKind.VARIATION):
        amount = variation_strength(bot.settings.discord, strength)
        await submit(interaction, variation_of(job, index, image.seed, amount, count))
        return
    source = _source_of(job, image)
    user = await bot.queue.user(interaction.user.id)
    options = replace(options_from(job), count=count)
    params = img2img_parameters(options, bot.settings, user, source, strength=IMG2IMG_VARY_STRENGTH[strength])
    await submit(interaction, params)


def variation_strength(settings: DiscordSettings, strength: str) -> float:
    """How far "Vary (subtle)" / "Vary (strong)" moves a txt2img image's variation seed."""
    return settings.variation_subtle if strength == "subtle" else settings.variation_strong


# Denoising strengths of "Vary" on an image made from another image: img2img needs more
# strength than a variation seed for the same visible change.
IMG2IMG_VARY_STRENGTH = {"subtle": 0.3, "strong": 0.6}


def options_from(job: Job, prompt: str | None = None, negative_prompt: str | None = None) -> GenerationOptions:
    """The generation options of an earlier job, with a new random seed, for work derived
    from one of its images; checked again against today's limits by the builders."""
    return GenerationOptions(
        prompt=job.prompt if prompt is None else prompt,
        negative_prompt=job.negative_prompt if negative_prompt is None else negative_prompt,
        steps=job.steps,
        cfg_scale=job.cfg_scale,
        model=job.model,
        vae=job.vae or NONE,  # "" is the model's own VAE
        clip_skip=job.clip_skip,
        **sampling_options(job),  # type: ignore[arg-type]
    )


def _source_of(job: Job, image: Image) -> SourceImage:
    if not Path(image.path).is_file():
        raise ImageUnavailable(f"Image {image.index + 1} of job #{job.id} is no longer on disk.")
    return SourceImage(image.path, image.width, image.height, image.seed, job.id, image.index)


async def upscale(interaction: discord.Interaction[SDBot], job_id: int, index: int, scale: float) -> None:
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    base = without_workflow(parameters_of(job))
    upscaler = member_defaults(await bot.queue.user(interaction.user.id), bot.settings).upscaler
    params = upscale_parameters(bot.settings, _source_of(job, image), scale=scale, upscaler=upscaler, base=base)
    await submit(interaction, params)


async def restore_faces(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> None:
    """The Restore faces button: A1111's Extras face restoration of one image, with the
    member's restorer, visibility and CodeFormer weight (bot.jobs.face_params)."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    defaults = member_defaults(await bot.queue.user(interaction.user.id), bot.settings)
    faces = member_face_columns(bot.settings, defaults, True, extras=True)
    base = without_workflow(parameters_of(job))
    await submit(interaction, restore_faces_parameters(bot.settings, _source_of(job, image), faces, base))
async def sd_upscale(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> None:
    """*Upscale (detailed)*: A1111's SD upscale of one image, 2x, with its job's prompt and seed."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    upscaler = member_defaults(await bot.queue.user(interaction.user.id), bot.settings).upscaler
    params = sd_upscale_parameters(bot.settings, _source_of(job, image), parameters_of(job), scale=2.0, upscaler=upscaler)
    await submit(interaction, params)


async def outpaint(interaction: discord.Interaction[SDBot], job_id: int, index: int, direction: str) -> None:
    """Zoom out ("zoom1.5", "zoom2") or pan ("left", "right", "up", "down") one image."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    _check_model_still_there(bot, job)
    source = _source_of(job, image)
    pads = outpaint_pixels(direction, image.width, image.height, bot.settings.images.pan_fraction)
    user = await bot.queue.user(interaction.user.id)
    options = replace(options_from(job), count=bot.settings.limits.default_count)
    await submit(interaction, outpaint_parameters(options, bot.settings, user, source, **pads))


def outpaint_pixels(direction: str, width: int, height: int, pan_fraction: float) -> dict[str, int]:
    """Pixels to add per side: a zoom adds the same on every side, a pan on one side only."""
    if direction.startswith("zoom"):
        factor = float(direction.removeprefix("zoom"))
        across, down = round(width * (factor - 1) / 2), round(height * (factor - 1) / 2)
        return {"left": across, "right": across, "top": down, "bottom": down}
    side = {"left": "left", "right": "right", "up": "top", "down": "bottom"}[direction]
    along = width if side in ("left", "right") else height
    return {side: round(along * pan_fraction)}


async def remix_jobs(
    interaction: discord.Interaction[SDBot], job_id: int, prompt: str, negative_prompt: str
) -> list[JobParameters]:
    """A job again with an edited prompt: same seeds, same everything else, except what
    inline parameters in the new prompt change (`--seed 5`, `--ar 3:2`...); permutations in
    it make one job each. The Remix form queues them (bot.ui.confirm.submit_jobs)."""
    bot = interaction.client
    job = await job_for_interaction(interaction, job_id)
    check_not_removed(job)
    check_files_kept(bot, job)
    _check_model_still_there(bot, job)
    user = await bot.queue.user(interaction.user.id)
    earlier = GenerationOptions(
        prompt=prompt, negative_prompt=negative_prompt, width=job.width, height=job.height, steps=job.steps,
        cfg_scale=job.cfg_scale, seed=job.seed, count=job.count, model=job.model,
        tiling=job.tiling, vae=job.vae or NONE, clip_skip=job.clip_skip, **sampling_options(job),  # type: ignore[arg-type]
    )
    prepared = await prepare_for(interaction, earlier, user, override=True)
    return [remix_of(job, resolve_parameters(options, bot.settings, user)) for options in prepared]


async def inpaint_jobs(
    interaction: discord.Interaction[SDBot],
    job_id: int,
    index: int,
    *,
    prompt: str,
    strength: str,
    mask: discord.Attachment | None,
    masked_content: str | None,
    only_masked: bool,
    mask_words: str = "",
) -> tuple[list[JobParameters], str | None]:
    """The jobs that inpaint one image with the mask the user uploaded in the inpaint form,
    and a note about the mask for them, if any; the form queues them (bot.ui.confirm.submit_jobs).
    The prompt may carry inline parameters and permutations, as in any prompt field; its own
    win (as in Remix)."""
    bot = interaction.client
    segment = None
    if mask is not None and mask_words.strip():
        raise InvalidOption("Give a mask or the words of what to repaint, not both.")
    if mask is None:
        if not mask_words.strip():
            raise InvalidOption(
                "Upload a mask (white where the image should change, black elsewhere), or say what to repaint."
            )
        segment = check_segment(bot.settings, mask_words)  # a preview of the mask first (bot.masks_from_words)
    value = parse_strength(strength)
    job, image = await _finished_image(interaction, job_id, index)
    _check_model_still_there(bot, job)
    source = _source_of(job, image)
    user = await bot.queue.user(interaction.user.id)
    options = replace(options_from(job, prompt=prompt), count=bot.settings.limits.default_count)
    prepared = await prepare_for(interaction, options, user, override=True)
    mask_path, note = ("", None) if mask is None else await inputs.read_mask_upload(mask, bot.settings, source)
    params = [
        inpaint_parameters(
            each, bot.settings, user, source, mask_path,
            strength=value, masked_content=masked_content, only_masked=only_masked,
        )
        for each in prepared
    ]
    if segment is not None:
        params = [segment_parameters(each, bot.settings, segment) for each in params]
    return params, note


def parse_strength(text: str) -> float:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise InvalidOption(f"The denoising strength must be a number between 0 and 1, got `{echo(text)}`.") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidOption(f"The denoising strength must be between 0 and 1, got {value:g}.")
    return value


async def finished_image(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> tuple[Job, Image]:
    """A finished job's image, checked to be usable for new work (file on disk, model there)."""
    bot = interaction.client
    job, image = await _finished_image(interaction, job_id, index)
    _check_model_still_there(bot, job)
    _source_of(job, image)
    return job, image


async def reroll(interaction: discord.Interaction[SDBot], job_id: int) -> None:
    bot = interaction.client
    job = await job_for_interaction(interaction, job_id)
    check_not_removed(job)
    check_files_kept(bot, job)
    _check_model_still_there(bot, job)
    for path, what in ((job.init_image_path, "source image"), (job.mask_path, "mask")):
        if path is not None and not Path(path).is_file():
            raise ImageUnavailable(f"The {what} of job #{job.id} is no longer on disk, so it can't be rerolled.")
    await submit(interaction, reroll_of(job))


def _check_model_still_there(bot: SDBot, job: Job) -> None:
    if bot.settings.model(job.model) is None:
        raise InvalidOption(f"Model `{job.model}` of job #{job.id} is no longer available on this server.")
