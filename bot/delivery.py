"""Turns the dispatcher's job events into Discord messages.

One status message per job goes from queued to running (with a throttled preview) to its
result. While the interaction token is fresh (it expires after 15 minutes) the message is
edited through the interaction; after that, or after a restart, through the bot's own token,
and the result arrives as a new channel message that mentions its owner, since a webhook
edit would fail with 50027. A status message someone deleted (10008) ends the progress
updates for that job, never the job itself. A member with private results has an ephemeral
status message (bot.actions.submit), so a late result of theirs arrives by DM instead.

Every method only schedules a task, so the dispatcher never waits on Discord. A job's tasks
take its lock in turn, and a progress frame that finds an edit in flight is dropped.

Every request keeps to the bot's request budget (bot.request_budget): a job's progress edits
space out as more jobs run at once, and progress, model-loading and queue-position edits are
dropped when the budget has no room for them; starts, requeues, results and failures wait for
their turn and always go out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord

from bot import flagged_results, uploads
from bot.bot_messages import edit_message
from bot.jobs.queue import QueueEntry
from bot.policy import audit
from bot.ui import description, embeds
from db.models import AuditEntry, Job, JobStatus
from inference.common.protocol import JobKind, JobProgress, ModelLoading

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from bot.client import SDBot

log = logging.getLogger(__name__)

INVALID_WEBHOOK_TOKEN = 50027  # Discord's JSON error code for an interaction token it no longer takes


@dataclass
class _JobMessage:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    editing: bool = False
    last_edit: float = float("-inf")
    finished: bool = False
    # The command's answer already said "Generating" (a job claimed before it answered): the
    # worker's JobStarted then needs no edit of its own, one edit fewer per job on an idle bot.
    answered_running: bool = False


class DiscordDelivery:
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot
        self._interactions: dict[int, discord.Interaction[SDBot]] = {}
        self._messages: dict[int, _JobMessage] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes_written: dict[int, AuditEntry] = {}  # by outcome_row, by job id

    def track(self, job_id: int, interaction: discord.Interaction[SDBot]) -> None:
        """Remember the interaction that created a job, to edit its response while it may."""
        self._interactions[job_id] = interaction

    @asynccontextmanager
    async def announcing(self, job_id: int) -> AsyncIterator[None]:
        """Held while a new job's status message is sent. A short job can start, or even
        finish, before the command has answered (bench/load.py saw it): its updates wait
        here, or its result would go to a new message that the "Queued" answer then follows."""
        async with self._message(job_id).lock:
            yield

    def answered_running(self, job_id: int) -> None:
        """Called inside ``announcing`` when the answer shows the job running already."""
        self._message(job_id).answered_running = True

    # --- JobEvents ---------------------------------------------------------------------------

    def job_started(self, job: Job) -> None:
        self._spawn(self._show_started(job))

    def job_progress(self, job: Job, progress: JobProgress) -> None:
        state = self._message(job.id)
        interval = self._progress_interval()
        now = time.perf_counter()
        if state.finished or state.editing or now - state.last_edit < interval:
            return  # drop the frame: a newer one, or the result, follows
        if progress.step >= progress.total_steps and not progress.preview_jpeg:
            return  # a pass's last step, nothing new to show: the result or the next pass follows
        if not self._progress_budgeted(job.id):
            return  # many jobs at once: this one's frames thin out, its result does not
        state.editing, state.last_edit = True, now
        self._spawn(self._show_progress(job, progress, state))

    def model_loading(self, job: Job, loading: ModelLoading) -> None:
        state = self._message(job.id)
        interval = self._progress_interval()
        now = time.perf_counter()
        # The first report always shows (a load is news); later ones as edits allow.
        if state.finished or state.editing or (loading.done and now - state.last_edit < interval):
            return
        if not self._progress_budgeted(job.id):
            return
        state.editing, state.last_edit = True, now
        self._spawn(self._show_loading(job, loading, state))

    def outcome_row(self, job: Job) -> AuditEntry | None:
        """A completed job's audit entry, for its completion's own transaction (the
        dispatcher's completion_row): job_finished then only mirrors it to the log channel."""
        entry = audit.outcome_entry(self.bot, job)
        if entry is not None:
            self._outcomes_written[job.id] = entry
        return entry

    def job_finished(self, job: Job) -> None:
        self._message(job.id).finished = True
        # The record must not depend on Discord, and the result need not wait for the record:
        # the result's task starts first, so the record is written while its file is read.
        self._spawn(self._show_final(job))
        # outcome_row keeps only completions' entries; one left by a completion that did not
        # commit is dropped here, and the job's actual outcome recorded.
        written = self._outcomes_written.pop(job.id, None)
        if written is not None and job.status == JobStatus.COMPLETED:
            self._spawn(audit.send_to_log_channel(self.bot, written))
        else:  # not written with the job (a failure, a cancel, a separate worker's completion)
            self._spawn(audit.record_outcome(self.bot, job))

    def job_requeued(self, job: Job, reason: str) -> None:
        # Its next start is a new attempt, whatever the answer showed for the first.
        self._message(job.id).answered_running = False
        self._spawn(
            self._show(
                job, embed=embeds.requeued_embed(job, reason), view=self.bot.job_views.status(job.id), attachments=[]
            )
        )

    def queue_moved(self, waiting: list[QueueEntry]) -> None:
        for entry in waiting:
            if not self._message(entry.job.id).finished and self._progress_budgeted(entry.job.id):
                embed = embeds.queued_embed(entry.job, entry.position, entry.eta_seconds)
                self._spawn(
                    self._show(entry.job, embed=embed, view=self.bot.job_views.status(entry.job.id), budgeted=True)
                )

    # --- the work ------------------------------------------------------------------------------

    async def _show(self, job: Job, *, budgeted: bool = False, **fields: Any) -> bool:
        async with self._message(job.id).lock:
            return await self._edit_status(job, budgeted=budgeted, **fields)

    async def _show_started(self, job: Job) -> None:
        state = self._message(job.id)
        async with state.lock:  # after the answer, which may have shown the start already
            if state.answered_running:
                state.answered_running = False
                return
            await self._edit_status(job, embed=embeds.running_embed(job), view=self.bot.job_views.status(job.id))

    async def _show_progress(self, job: Job, progress: JobProgress, state: _JobMessage) -> None:
        try:
            async with state.lock:
                if state.finished:
                    return
                fields: dict[str, Any] = {"view": self.bot.job_views.status(job.id)}
                if progress.preview_jpeg:
                    preview = uploads.preview_file(progress.preview_jpeg)
                    fields["attachments"] = [preview]
                    fields["embed"] = embeds.running_embed(job, progress.step, progress.total_steps, preview.filename)
                else:
                    fields["embed"] = embeds.running_embed(job, progress.step, progress.total_steps)
                await self._edit_status(job, budgeted=True, **fields)
        finally:
            state.editing = False

    async def _show_loading(self, job: Job, loading: ModelLoading, state: _JobMessage) -> None:
        try:
            async with state.lock:
                if not state.finished:
                    embed = embeds.loading_embed(job, loading)
                    await self._edit_status(job, budgeted=True, embed=embed, view=self.bot.job_views.status(job.id))
        finally:
            state.editing = False

    async def _show_final(self, job: Job) -> None:
        async with self._message(job.id).lock:
            if job.status == JobStatus.COMPLETED and job.kind == JobKind.MERGE:
                await self._deliver_merge(job)
            elif job.status == JobStatus.COMPLETED:
                await self._deliver_result(job)
            elif job.status == JobStatus.FAILED:
                view = self.bot.job_views.failed(job)  # a mask preview's Adjust; None for most
                shown = await self._edit_status(job, embed=embeds.failed_embed(job), view=view, attachments=[])
                if not shown:
                    send = self._send_by_dm if await self._goes_by_dm(job) else self._send_to_channel
                    await send(job, f"<@{job.user_id}> job #{job.id} failed.", embed=embeds.failed_embed(job), view=view)
            else:
                await self._edit_status(job, embed=embeds.canceled_embed(job), view=None, attachments=[])
        self._interactions.pop(job.id, None)
        self._messages.pop(job.id, None)

    async def _deliver_merge(self, job: Job) -> None:
        """A merge made a model, not an image: the models are rescanned at once, so the answer
        can say it is listed (or why not), and the new name autocompletes from then on."""
        change = await self.bot.models.refresh()
        embed = embeds.merged_embed(job, {m.name for m in self.bot.settings.models}, change.refused)
        if not await self._edit_status(job, embed=embed, view=None, attachments=[]):
            send = self._send_by_dm if await self._goes_by_dm(job) else self._send_to_channel
            await send(job, f"<@{job.user_id}> job #{job.id} is done.", embed=embed)

    async def _deliver_result(self, job: Job) -> None:
        post = await self._result_post(job)
        interaction = self._fresh_interaction(job.id)
        if interaction is not None:
            posting, embed = await post()
            try:
                await interaction.edit_original_response(
                    content=None, embed=embed, attachments=posting.files, view=self.bot.job_views.result(job)
                )
                return
            except discord.NotFound:
                log.info("status message of job %s is gone; posting the result anew", job.id)
            except discord.HTTPException as error:
                # 50027 Invalid Webhook Token before our own margin ran out (the member's
                # Discord, or Discord itself, ended it early), or Discord failing: the result
                # goes out through the bot's token rather than being lost.
                log.warning("could not edit job %s's status through its interaction (%s); posting the result anew", job.id, error)
                self._forget_dead_token(job.id, error)
        # A new message: the token has expired (or the message was deleted), and editing an old
        # message would not notify its owner anyway.
        posting, embed = await post()
        private = await self._goes_by_dm(job)
        message = await (self._send_by_dm if private else self._send_to_channel)(
            job,
            f"<@{job.user_id}> job #{job.id} is done.",
            embed=embed,
            **posting.file_kwargs(),
            view=self.bot.job_views.result(job),
        )
        if message is not None and private:
            # The row keeps its status message, if any (a public one, from before the member
            # turned private results on): the DM is theirs, and 🗑️ under it deletes it.
            if job.message_id is not None:
                await self.bot.request_budget.bot_token_request()
                await edit_message(
                    self.bot, job.channel_id, job.message_id, content=f"Job #{job.id} is done: sent to its owner privately.",
                    embed=None, view=None,
                )
        elif message is not None:
            old_message_id = job.message_id
            await self.bot.queue.set_message(job.id, message.channel.id, message.id)
            if old_message_id is not None:
                await self.bot.request_budget.bot_token_request()
                await edit_message(
                    self.bot, job.channel_id, old_message_id, content=f"Job #{job.id} is done: {message.jump_url}", embed=None, view=None
                )

    async def _result_post(self, job: Job) -> Callable[[], Awaitable[tuple[flagged_results.Posting, discord.Embed]]]:
        """What makes the result's attachment and embed (each post reads its file anew): the
        images as the server's safety filter shows them, or a describe job's suggestions."""
        if job.kind == JobKind.DESCRIBE:
            return lambda: description.description_post(job)
        path = job.grid_path or job.images[0].path
        # Only jobs from outside age-restricted channels were checked, so any flag applies here.
        shown = await flagged_results.verdict(self.bot, job, guild_id=job.guild_id, age_restricted=False)
        await flagged_results.audit_flagged(self.bot, job, shown)

        async def images_post() -> tuple[flagged_results.Posting, discord.Embed]:
            posting = await shown.posting(path, job.upload_limit_bytes, f"job{job.id}")
            return posting, posting.dress(embeds.result_embed(job, posting.filename))

        return images_post

    async def _edit_status(self, job: Job, *, budgeted: bool = False, **fields: Any) -> bool:
        """Edit the job's status message. ``budgeted``: a progress edit that has its request
        budget already (``_progress_budgeted``); any other edit by the bot token waits for its turn."""
        interaction = self._fresh_interaction(job.id)
        if interaction is not None:
            try:
                await interaction.edit_original_response(**fields)
                return True
            except discord.NotFound:
                return False  # deleted by someone; the job goes on without updates
            except discord.HTTPException as error:
                log.warning("could not edit the status of job %s through its interaction: %s", job.id, error)
                self._forget_dead_token(job.id, error)
                return False
        if job.message_id is None:
            return False
        if not budgeted:
            await self.bot.request_budget.bot_token_request()
        return await edit_message(self.bot, job.channel_id, job.message_id, **fields)

    async def _send_to_channel(self, job: Job, content: str, **fields: Any) -> discord.Message | None:
        if job.channel_id is None:
            return None
        # With its server, or the message's jump link would read discord.com/channels/@me/….
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        await self.bot.request_budget.bot_token_request()
        try:
            return await channel.send(
                content, allowed_mentions=discord.AllowedMentions(users=True, roles=False, everyone=False), **fields
            )
        except discord.NotFound as error:
            # The channel (or the server) is gone: expected, and its jobs are canceled (bot.cogs.lifecycle).
            log.warning("could not post job %s to channel %s, which is gone: %s", job.id, job.channel_id, error)
            return None
        except discord.HTTPException as error:
            log.error("could not post job %s to channel %s: %s", job.id, job.channel_id, error)
            return None

    async def _goes_by_dm(self, job: Job) -> bool:
        """A late result (token expired, or a restart) of a member with private results goes
        to them by DM, never to the channel. Their setting now decides: it is their wish for
        results that reach them from now on. A job made in a DM is answered there anyway."""
        if job.guild_id is None:
            return False
        return await self.bot.queue.privacy.answers_privately(job.user_id, job.id)

    async def _send_by_dm(self, job: Job, content: str, **fields: Any) -> discord.Message | None:
        budget = self.bot.request_budget
        try:
            await budget.bot_token_request()
            channel = await self.bot.create_dm(discord.Object(job.user_id))
            await budget.bot_token_request()
            return await channel.send(content, **fields)
        except discord.Forbidden as error:
            # DMs closed (50007): the member would hear nothing, so the channel tells them where
            # the result is, without a word of it (its prompt, its image): those stay private.
            log.info("could not send job %s to its owner by DM: %s", job.id, error)
            await self._send_to_channel(job, dms_closed_notice(job))
            return None
        except discord.HTTPException as error:
            log.warning("could not send job %s to its owner by DM: %s", job.id, error)
            return None

    def _forget_dead_token(self, job_id: int, error: discord.HTTPException) -> None:
        """A token Discord called invalid is not tried again: the job's later edits and its
        result go through the bot's token, as after the 15 minutes."""
        if error.code == INVALID_WEBHOOK_TOKEN:
            self._interactions.pop(job_id, None)

    def _fresh_interaction(self, job_id: int) -> discord.Interaction[SDBot] | None:
        interaction = self._interactions.get(job_id)
        if interaction is None:
            return None
        lifetime = timedelta(seconds=self.bot.settings.discord.interaction_token_lifetime_s)
        if discord.utils.utcnow() - interaction.created_at >= lifetime:
            del self._interactions[job_id]
            return None
        return interaction

    def _progress_interval(self) -> float:
        """Seconds between two progress edits of one job, stretched with the jobs running at
        once so that each gets its share of the progress budget in turn."""
        configured = self.bot.settings.discord.progress_edit_interval_s
        return self.bot.request_budget.progress_interval(configured, running=len(self.bot.dispatcher.running))

    def _progress_budgeted(self, job_id: int) -> bool:
        """Whether the request budget has room for one more progress edit of this job now."""
        through_bot_token = self._fresh_interaction(job_id) is None
        return self.bot.request_budget.progress_edit(through_bot_token=through_bot_token)

    def _message(self, job_id: int) -> _JobMessage:
        return self._messages.setdefault(job_id, _JobMessage())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("delivering a job update failed", exc_info=error)

    async def drain(self) -> None:
        """Wait for the messages already being sent (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def dms_closed_notice(job: Job) -> str:
    """The channel's word to a member with private results whose DMs are closed."""
    return (
        f"<@{job.user_id}> your private job #{job.id} has finished, but your DMs are closed, so it could not "
        f"be sent to you. See it with /history or `/show job:{job.id}` (only you will see it)."
    )
