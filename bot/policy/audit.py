"""The audit log: every job's outcome, every refusal, every moderation action, one row each.

Rows are written first (the database is the record); a server with a log channel also gets
each entry there as a short message, sent without waiting, and a failed send (channel gone,
permissions lost) is logged rather than raised: moderation never fails because of its mirror.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import discord
from sqlalchemy import delete, select

from bot.policy import store
from db.base import utcnow
from db.models import AuditEntry, Job, JobStatus

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.session import Database

log = logging.getLogger(__name__)
DETAILS_LIMIT = 1000  # characters of details kept per entry (prompts can be 4000)


class Action(StrEnum):
    JOB_QUEUED = "job.queued"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELED = "job.canceled"
    TARGET_GONE = "job.target_gone"  # its server, channel or thread, or its owner's access, is gone (details: which)
    IMAGE_FLAGGED = "image.flagged"  # the safety classifier flagged an image
    REFUSED = "policy.refused"  # a rule stopped a command or a job (details: which and why)
    RESULT_REMOVED = "result.removed"  # by its owner or a moderator
    BANNED = "mod.ban"
    UNBANNED = "mod.unban"
    CANCELED_BY_MODERATOR = "mod.cancel"
    POLICY_CHANGED = "mod.policy"  # any /admin setting, term or role limit
    AUDIT_PRUNED = "retention.audit"  # entries past [policy] audit_retention_days deleted
    IMAGES_EXPIRED = "retention.images"  # image files past [images] keep_days deleted


def new_entry(
    action: Action,
    *,
    actor_id: int,
    guild_id: int | None,
    channel_id: int | None = None,
    target_user_id: int | None = None,
    job_id: int | None = None,
    details: str = "",
) -> AuditEntry:
    """One entry, not yet written: record writes it, or a caller adds it to its own transaction."""
    details = details if len(details) <= DETAILS_LIMIT else details[: DETAILS_LIMIT - 1] + "…"
    return AuditEntry(
        guild_id=guild_id,
        channel_id=channel_id,
        actor_id=actor_id,
        action=str(action),
        target_user_id=target_user_id,
        job_id=job_id,
        details=details,
        created_at=utcnow(),
    )


def queued_entry(actor_id: int, job: Job) -> AuditEntry:
    """A job's JOB_QUEUED entry, written in the job's own transaction (JobQueue.enqueue's
    with_row): no transaction of its own for each job of a burst."""
    return new_entry(
        Action.JOB_QUEUED, actor_id=actor_id, guild_id=job.guild_id, channel_id=job.channel_id,
        target_user_id=job.user_id, job_id=job.id, details=job_summary(job),
    )


async def record(bot: SDBot, action: Action, **fields: Any) -> AuditEntry:
    """Write one entry (new_entry's fields), then mirror it to the server's log channel."""
    entry = new_entry(action, **fields)
    await _write(bot, entry)
    return entry


async def _write(bot: SDBot, entry: AuditEntry) -> None:
    """Write an entry in a transaction of its own, then mirror it to the server's log channel."""
    async with bot.queue.db.session() as session, session.begin():
        session.add(entry)
    await send_to_log_channel(bot, entry)


async def send_to_log_channel(bot: SDBot, entry: AuditEntry) -> None:
    """Send a written entry to the server's log channel when it has one, without waiting."""
    log_channel_id = (await store.policy_of(bot.queue.db, bot.settings, entry.guild_id)).log_channel_id
    if log_channel_id is not None:
        task = asyncio.create_task(_mirror(bot, log_channel_id, entry))
        _mirrors.add(task)
        task.add_done_callback(_mirrors.discard)


_mirrors: set[asyncio.Task[None]] = set()


async def drain_mirrors() -> None:
    """Wait for the log-channel messages in flight (shutdown, tests)."""
    while _mirrors:
        await asyncio.gather(*list(_mirrors), return_exceptions=True)


# Rows per transaction, and a pause after each: the writer lock is not handed over in turn,
# so without the pause the prune would take it again at once while a claim waits (bench.big_database
# times claims beside a prune of a year's log).
PRUNE_BATCH = 500
PRUNE_PAUSE_S = 0.05


async def prune_audit(db: Database, older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete the entries written before `older_than`, oldest first, `batch` rows per
    transaction, so jobs and commands get the writer between batches; the count deleted."""
    deleted = 0
    while True:
        oldest = select(AuditEntry.id).where(AuditEntry.created_at < older_than).order_by(AuditEntry.created_at).limit(batch)
        async with db.session() as session, session.begin():
            result = await session.execute(
                delete(AuditEntry).where(AuditEntry.id.in_(oldest.scalar_subquery())),
                execution_options={"synchronize_session": False},
            )
        deleted += result.rowcount
        if result.rowcount < batch:
            return deleted
        await asyncio.sleep(PRUNE_PAUSE_S)


def job_summary(job: Job) -> str:
    """The prompt and key parameters of a job, for its JOB_QUEUED entry."""
    parts = [f"{job.kind} {job.width}x{job.height}", f"{job.count} image(s)", f"{job.steps} steps", job.sampler,
             f"CFG {job.cfg_scale:g}", f"seed {job.seed}", f"model {job.model}"]
    if job.upscale_factor:
        parts.append(f"upscale {job.upscale_factor:g}x")
    if job.hires_scale:
        parts.append(f"hires {job.hires_scale:g}x")
    text = f"{', '.join(parts)}; prompt: {job.prompt}"
    return f"{text}; negative: {job.negative_prompt}" if job.negative_prompt else text


_OUTCOMES = {
    JobStatus.COMPLETED: Action.JOB_COMPLETED,
    JobStatus.FAILED: Action.JOB_FAILED,
    JobStatus.CANCELED: Action.JOB_CANCELED,
}


async def record_outcome(bot: SDBot, job: Job) -> None:
    """A job reached its final state (bot.delivery): the bot itself is the actor."""
    entry = outcome_entry(bot, job)
    if entry is not None:
        await _write(bot, entry)


def outcome_entry(bot: SDBot, job: Job) -> AuditEntry | None:
    """The entry of a job's final state, unwritten (None: the job is not final). A completion
    writes it in its own transaction (DiscordDelivery.outcome_row); other outcomes, after."""
    action = _OUTCOMES.get(JobStatus(job.status))
    if action is None:
        return None
    if job.status == JobStatus.COMPLETED:
        seconds = f" in {job.seconds:.1f} s" if job.seconds is not None else ""
        details = f"{job.count} image(s){seconds}"
    elif job.status == JobStatus.FAILED:
        details = job.error or ""
    else:
        details = "before it started" if job.started_at is None else "while running"
    actor_id = bot.user.id if bot.user is not None else 0
    return new_entry(
        action, actor_id=actor_id, guild_id=job.guild_id, channel_id=job.channel_id,
        target_user_id=job.user_id, job_id=job.id, details=details,
    )


def describe(entry: AuditEntry) -> str:
    """One line for people: when, who, what, to whom, which job, why."""
    parts = [f"<t:{int(entry.created_at.timestamp())}:f>", f"<@{entry.actor_id}>", f"`{entry.action}`"]
    if entry.target_user_id is not None and entry.target_user_id != entry.actor_id:
        parts.append(f"→ <@{entry.target_user_id}>")
    if entry.job_id is not None:
        parts.append(f"job #{entry.job_id}")
    if entry.channel_id is not None:
        parts.append(f"in <#{entry.channel_id}>")
    line = " ".join(parts)
    return f"{line}: {entry.details}" if entry.details else line


async def _mirror(bot: SDBot, channel_id: int, entry: AuditEntry) -> None:
    await bot.request_budget.bot_token_request()  # one of the bot token's requests (bot.request_budget)
    try:
        await bot.get_partial_messageable(channel_id).send(
            describe(entry)[:2000], allowed_mentions=discord.AllowedMentions.none()
        )
    except discord.HTTPException as error:
        log.warning("could not mirror audit entry %s to channel %s: %s", entry.id, channel_id, error)
