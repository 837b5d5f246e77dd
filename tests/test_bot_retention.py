"""Retention through the bot: [images] keep_days expires old jobs' files (rows stay, buttons
and /show say so, a source still in use stays), the audit log is pruned in batches, both
audited, and /admin policy show tells the disk usage."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bot.jobs.retention import run_retention_pass
from bot.policy.audit import Action, prune_audit
from db.base import utcnow
from db.models import AuditEntry, Job, JobStatus
from tests.harness import private_answer
from tests.test_bot_admin import admin_member, private_text

KEEP_DAYS = 30


@pytest.fixture
def settings(settings):
    return dataclasses.replace(
        settings,
        images=dataclasses.replace(settings.images, keep_days=KEEP_DAYS),
        policy=dataclasses.replace(settings.policy, audit_retention_days=90),
    )


def files_of(job: Job) -> list[Path]:
    return [Path(p) for p in [job.grid_path, *(image.path for image in job.images)] if p]


async def finished_long_ago(harness, job_id: int, days: int) -> None:
    async with harness.db.session() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=days)))


async def audit_entries(harness, action: Action) -> list[AuditEntry]:
    async with harness.db.session() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == str(action))))


def expired(result, job_id: int) -> None:
    text = private_answer(result)
    assert f"The images of job #{job_id} expired after {KEEP_DAYS} days (the server keeps images for {KEEP_DAYS} days)." in text, text


async def test_old_jobs_images_expire_their_rows_stay_and_their_buttons_say_so(harness):
    alice = harness.member("alice")
    await alice.slash(harness.channel, "imagine", prompt="a paper crane", count=2, seed=7)
    grid = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert grid.status == JobStatus.COMPLETED, grid.error
    message = harness.message(grid.message_id)
    # An upscale of image 1, made from its file: that file is the newer job's source.
    single = await alice.click(message, label="U1")
    single_post = harness.message((single.followups or [single.response])[-1].id)
    await alice.click(single_post, label="Upscale 2x")
    upscale = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    assert upscale.status == JobStatus.COMPLETED and upscale.init_image_path == grid.images[0].path

    await finished_long_ago(harness, grid.id, KEEP_DAYS + 1)
    report = await run_retention_pass(harness.bot)
    assert (report.expired.jobs, report.expired.files) == (1, 2)  # image 2 and the grid
    source, image_2 = Path(grid.images[0].path), Path(grid.images[1].path)
    assert source.is_file() and not image_2.exists() and not Path(grid.grid_path).exists()
    assert all(path.is_file() for path in files_of(upscale))

    # The row stays; every button and /show answer privately that the images expired.
    job = await harness.queue.get(grid.id)
    assert job is not None and job.files_expired_at is not None and len(job.images) == 2
    for label in ("U1", "U2", "V2", "Reroll", "Remix"):
        expired(await alice.click(message, label=label), grid.id)
    for label in ("Vary (subtle)", "Upscale 4x", "Zoom out 2x", "Inpaint"):
        expired(await alice.click(single_post, label=label), grid.id)
    expired(await alice.slash(harness.channel, "show", job=grid.id), grid.id)
    listed = await alice.slash(harness.channel, "history")
    assert f"**#{grid.id}** · completed, images expired" in listed.response.embeds[0].description
    harness.expect_user_errors()
    assert (await harness.job_count()) == 2  # nothing was queued by the clicks

    # Once the upscale expires too, the source goes with it; a second pass finds nothing.
    await finished_long_ago(harness, upscale.id, KEEP_DAYS + 1)
    report = await run_retention_pass(harness.bot)
    assert (report.expired.jobs, report.expired.files) == (1, 2)
    assert not source.exists() and not any(path.exists() for path in files_of(upscale))
    assert (await run_retention_pass(harness.bot)).expired.jobs == 0
    # /history re-runs a job from its parameters, but not one made from an image that expired.
    listed = await alice.slash(harness.channel, "history")
    rerun = private_answer(await alice.select(listed.response, [str(upscale.id)]))
    assert f"The images of job #{upscale.id} expired after {KEEP_DAYS} days" in rerun and "cannot run again" in rerun
    harness.expect_user_errors()
    assert (await harness.job_count()) == 2

    entries = await audit_entries(harness, Action.IMAGES_EXPIRED)
    assert [entry.details for entry in entries] == [
        f"images of 1 job(s) finished over {KEEP_DAYS} days ago expired: 2 file(s) deleted",
    ] * 2
    assert all(entry.actor_id == harness.bot.user.id for entry in entries)


async def test_the_audit_log_is_pruned_in_batches_and_the_prune_is_audited(harness):
    now = utcnow()
    async with harness.db.session() as session, session.begin():
        session.add_all(
            AuditEntry(actor_id=1, action="job.queued", details="old", created_at=now - timedelta(days=91 + n))
            for n in range(7)
        )
        session.add(AuditEntry(actor_id=1, action="job.queued", details="recent", created_at=now - timedelta(days=89)))

    # Batches smaller than the backlog: each one its own transaction, until none is left.
    assert await prune_audit(harness.db, now - timedelta(days=93), batch=3) == 4  # 94 to 97 days old
    report = await run_retention_pass(harness.bot)
    assert report.audit_entries == 3
    async with harness.db.session() as session:
        left = list(await session.scalars(select(AuditEntry.details).where(AuditEntry.action == "job.queued")))
        assert left == ["recent"]
    (entry,) = await audit_entries(harness, Action.AUDIT_PRUNED)
    assert entry.details == "3 audit entries older than 90 days deleted" and entry.guild_id is None
    assert (await run_retention_pass(harness.bot)).audit_entries == 0
    async with harness.db.session() as session:
        pruned_entries = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == str(Action.AUDIT_PRUNED))
        )
    assert pruned_entries == 1  # a pass that deleted nothing leaves no entry


async def test_policy_show_tells_disk_usage_and_retention(harness):
    alice, mod = harness.member("alice"), admin_member(harness, "mod")
    await alice.slash(harness.channel, "imagine", prompt="a quiet pond", count=2)
    job = await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    size = sum(path.stat().st_size for path in files_of(job))

    shown = private_text(await mod.slash(harness.channel, "admin policy show"))
    assert f"**Storage** (the whole bot): 3 files, {size / 1024 ** 2:.1f} MB in the outputs folder; database " in shown
    assert f"**Kept** (the bot's settings): images {KEEP_DAYS} days, audit log 90 days" in shown


async def add_old_audit_entries(harness, count: int) -> None:
    async with harness.db.session() as session, session.begin():
        session.add_all(
            AuditEntry(actor_id=1, action="job.queued", details="old", created_at=utcnow() - timedelta(days=100))
            for _ in range(count)
        )


async def old_entries_left(harness) -> int:
    async with harness.db.session() as session:
        return await session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.details == "old"))


async def test_the_bot_runs_the_pass_once_connected_and_then_every_day(harness):
    await add_old_audit_entries(harness, 3)
    await harness.restart()  # a bot starting on a database with a backlog

    async def pruned() -> bool:
        return await old_entries_left(harness) == 0

    await harness.wait_for(pruned, "the retention pass after start-up")
    await add_old_audit_entries(harness, 2)
    await harness.env.advance_time(23 * 3600)
    assert await old_entries_left(harness) == 2  # not before the day is over
    await harness.env.advance_time(3600)
    await harness.wait_for(pruned, "the next day's retention pass")
    assert [entry.details for entry in await audit_entries(harness, Action.AUDIT_PRUNED)] == [
        "3 audit entries older than 90 days deleted", "2 audit entries older than 90 days deleted",
    ]
