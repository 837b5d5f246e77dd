"""Removing a finished job's result: by its owner (the 🗑️ button) or a moderator (the button,
or /admin remove). The job's row stays (history, audit and quotas read it) and records who
removed it and when; its status message is deleted, and on request its image files too.

Input images (uploads, masks) are not removed: they are content-addressed and may be the
source of other members' jobs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from bot.bot_messages import delete_message
from bot.errors import NothingToDo
from bot.policy import audit
from db.base import utcnow
from db.models import Job

if TYPE_CHECKING:
    from bot.client import SDBot


async def remove_result(bot: SDBot, job_id: int, *, actor_id: int, remove_files: bool) -> Job:
    """Delete the job's status message (and its image files when asked), mark the row, audit it.

    The caller has checked that the actor may (owner, or a moderator)."""
    job = await bot.queue.require(job_id)
    if job.is_active:
        raise NothingToDo(f"Job #{job.id} has not finished: cancel it instead.")
    if job.removed_at is not None and not remove_files:
        raise NothingToDo(f"The result of job #{job.id} was already removed.")
    if job.channel_id is not None and job.message_id is not None:
        await delete_message(bot, job.channel_id, job.message_id)
    files_removed = 0
    if remove_files:
        paths = [image.path for image in job.images] + ([job.grid_path] if job.grid_path else [])
        files_removed = await asyncio.to_thread(unlink_all, paths)
    async with bot.queue.db.session() as session, session.begin():
        row = await session.get(Job, job.id)
        assert row is not None
        if row.removed_at is None:
            row.removed_at, row.removed_by = utcnow(), actor_id
        job.removed_at, job.removed_by = row.removed_at, row.removed_by
    details = f"message deleted; {files_removed} file(s) removed" if remove_files else "message deleted"
    await audit.record(
        bot, audit.Action.RESULT_REMOVED, actor_id=actor_id, guild_id=job.guild_id, channel_id=job.channel_id,
        target_user_id=job.user_id, job_id=job.id, details=details,
    )
    return job



def unlink_all(paths: list[str]) -> int:
    removed = 0
    for path in paths:
        file = Path(path)
        if file.is_file():
            file.unlink()
            removed += 1
    return removed
