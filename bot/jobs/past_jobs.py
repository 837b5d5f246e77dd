"""A member's past jobs, read from the database: paged newest first, and re-run exactly.

No Discord here: bot/cogs/history.py shows the pages, and these functions only read rows and
derive parameters. A re-run is the job's parameters unchanged, seeds included (Reroll gives new
seeds), checked again against today's server settings before it is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.errors import ImageUnavailable, InvalidOption
from bot.jobs.params import JobParameters
from bot.jobs.job_rows import parameters_of
from bot.jobs.retention import expired_message
from db.models import Job
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.config import Settings
    from db.session import Database

PAGE_SIZE = 10


@dataclass(frozen=True)
class HistoryPage:
    jobs: list[Job]
    page: int  # 0-based, within 0..pages-1
    total: int  # the user's jobs in all
    page_size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_previous(self) -> bool:
        return self.page > 0

    @property
    def has_next(self) -> bool:
        return self.page + 1 < self.pages


async def count_user_jobs(db: Database, user_id: int) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count(Job.id)).where(Job.user_id == user_id)) or 0)


async def user_jobs_page(db: Database, user_id: int, page: int, page_size: int = PAGE_SIZE) -> HistoryPage:
    """One page of the user's jobs, newest first; a page past the end shows the last one."""
    total = await count_user_jobs(db, user_id)
    pages = max(1, -(-total // page_size))
    page = min(max(0, page), pages - 1)
    async with db.session() as session:
        jobs = list(
            await session.scalars(
                select(Job)
                .where(Job.user_id == user_id)
                .order_by(Job.id.desc())
                .offset(page * page_size)
                .limit(page_size)
            )
        )
    return HistoryPage(jobs=jobs, page=page, total=total, page_size=page_size)


def rerun_of(job: Job) -> JobParameters:
    """The same job again, exactly: same kind, prompt, settings and seeds (variation seeds too)."""
    return replace(parameters_of(job), parent_job_id=job.id, parent_image_index=None)


def check_rerun(job: Job, settings: Settings) -> None:
    """Refuse a re-run that today's server would refuse as a new command, or that cannot run."""
    if settings.model(job.model) is None:
        raise InvalidOption(f"Model `{job.model}` of job #{job.id} is no longer available on this server.")
    limits = settings.limits
    if len(job.prompt) > limits.max_prompt_length:
        raise InvalidOption(f"The prompt of job #{job.id} is longer than this server now allows.")
    kind = JobKind(job.kind)
    if kind not in (JobKind.UPSCALE, JobKind.RESTORE_FACES):
        if job.steps > limits.max_steps:
            raise InvalidOption(f"Job #{job.id} has {job.steps} steps; this server now allows at most {limits.max_steps}.")
        if job.cfg_scale > limits.max_cfg_scale:
            raise InvalidOption(f"Job #{job.id} has CFG {job.cfg_scale:g}; the limit is now {limits.max_cfg_scale:g}.")
    if kind in (JobKind.TXT2IMG, JobKind.VARIATION):
        if job.count > limits.max_count:
            raise InvalidOption(f"Job #{job.id} made {job.count} images; this server now allows {limits.max_count}.")
        sizes_ok = all(limits.min_size <= side <= limits.max_size for side in (job.width, job.height))
        if not sizes_ok or job.width * job.height > limits.max_pixels:
            raise InvalidOption(f"Job #{job.id} is {job.width}x{job.height}, beyond this server's size limits now.")
    for path in (job.init_image_path, job.mask_path):
        if path is not None and job.files_expired_at is not None:
            made_from = expired_message(job, settings.images.keep_days, rerun_hint=False)
            raise ImageUnavailable(f"{made_from} It was made from an image, which went with them, so it cannot run again.")
        if path is not None and not Path(path).is_file():
            raise ImageUnavailable(f"The input image of job #{job.id} is no longer on disk, so it cannot run again.")
