"""Retention: the daily pass that deletes what the server keeps only for a while, and the
disk usage moderators see in /admin policy show.

- Audit log entries older than [policy] audit_retention_days (bot.policy.audit.prune_audit).
- Image files of jobs finished more than [images] keep_days ago: their images, grid, and
  their uploads and sources once no job that still keeps its files uses them (uploads are
  content-addressed, and a derived job's source is its parent's image). The rows stay, marked
  files_expired_at: /history lists them, and their buttons and /show say the images expired.

Both delete in batches, one transaction each, so SQLite's single writer is never held long
while members' jobs wait for it; each pass that deleted anything is audited once.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from bot.jobs.removal import unlink_all
from bot.policy import audit
from db.backup import sqlite_path
from db.base import utcnow
from db.models import Job

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.config import Settings
    from db.session import Database

# Jobs per transaction (and per query of the paths still in use): each batch's jobs and images
# are loaded on the event loop, and a thousand ORM rows there stall it for a good part of a second.
EXPIRE_BATCH = 200


@dataclass(frozen=True)
class ExpiredImages:
    jobs: int = 0
    files: int = 0


async def expire_images(db: Database, older_than: datetime, batch: int = EXPIRE_BATCH) -> ExpiredImages:
    """Delete the files of the jobs that finished before `older_than` and mark their rows."""
    jobs = files = 0
    while True:
        async with db.session() as session:
            expiring = list(
                await session.scalars(
                    select(Job)
                    .options(selectinload(Job.images))
                    .where(Job.finished_at < older_than, Job.files_expired_at.is_(None))
                    .order_by(Job.finished_at)
                    .limit(batch)
                )
            )
        if not expiring:
            return ExpiredImages(jobs, files)
        ids = [job.id for job in expiring]
        paths = {path for job in expiring for path in _files_of(job)}
        paths -= await _still_used(db, paths, ids)
        files += await asyncio.to_thread(unlink_all, sorted(paths))
        async with db.session() as session, session.begin():
            await session.execute(update(Job).where(Job.id.in_(ids)).values(files_expired_at=utcnow()))
        jobs += len(expiring)
        if len(expiring) < batch:
            return ExpiredImages(jobs, files)


def _files_of(job: Job) -> list[str]:
    candidates = [image.path for image in job.images] + [job.grid_path, job.init_image_path, job.mask_path]
    return [path for path in candidates if path]


async def _still_used(db: Database, paths: set[str], expiring_ids: list[int]) -> set[str]:
    """The paths among `paths` that a job keeping its files reads as its source or mask."""
    if not paths:
        return set()
    keeping = Job.files_expired_at.is_(None) & Job.id.not_in(expiring_ids)
    async with db.session() as session:
        rows = await session.execute(
            select(Job.init_image_path, Job.mask_path).where(
                keeping, or_(Job.init_image_path.in_(paths), Job.mask_path.in_(paths))
            )
        )
        return {path for row in rows for path in row if path in paths}


@dataclass(frozen=True)
class RetentionReport:
    audit_entries: int = 0
    expired: ExpiredImages = ExpiredImages()


async def run_retention_pass(bot: SDBot) -> RetentionReport:
    """One pass of both retention settings (a setting of 0 keeps everything); audited."""
    settings, db = bot.settings, bot.queue.db
    actor_id = bot.user.id if bot.user is not None else 0
    report = RetentionReport()
    if days := settings.policy.audit_retention_days:
        pruned = await audit.prune_audit(db, utcnow() - timedelta(days=days))
        report = RetentionReport(audit_entries=pruned)
        if pruned:
            await audit.record(
                bot, audit.Action.AUDIT_PRUNED, actor_id=actor_id, guild_id=None,
                details=f"{pruned} audit entries older than {days} days deleted",
            )
    if days := settings.images.keep_days:
        expired = await expire_images(db, utcnow() - timedelta(days=days))
        report = RetentionReport(report.audit_entries, expired)
        if expired.jobs:
            await audit.record(
                bot, audit.Action.IMAGES_EXPIRED, actor_id=actor_id, guild_id=None,
                details=f"images of {expired.jobs} job(s) finished over {days} days ago expired: "
                f"{expired.files} file(s) deleted",
            )
    return report


def expired_message(job: Job, keep_days: int, *, rerun_hint: bool = True) -> str:
    """What a button, /show or a re-run of a job whose images expired answers."""
    kept = f" after {keep_days} days (the server keeps images for {keep_days} days)" if keep_days else ""
    text = f"The images of job #{job.id} expired{kept}."
    return f"{text} Its parameters are kept: pick it in /history to run it again." if rerun_hint else text


@dataclass(frozen=True)
class DiskUsage:
    output_files: int
    output_bytes: int
    database_bytes: int | None  # None: not a SQLite file


def disk_usage(settings: Settings) -> DiskUsage:
    """The outputs folder's files and bytes, and the database file's size (with its -wal).
    Walks the folder: call it in a thread."""
    files = size = 0
    folders = [settings.outputs_dir]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:  # not created yet, or gone meanwhile
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                files += 1
                size += entry.stat(follow_symlinks=False).st_size
    database = sqlite_path(settings.database_url)
    database_bytes = None
    if database is not None:
        parts = (database, Path(f"{database}-wal"))
        database_bytes = sum(part.stat().st_size for part in parts if part.is_file())
    return DiskUsage(files, size, database_bytes)
