"""🗑️ Remove under results: by the owner or a moderator, with or without the image files;
anyone else is refused; a removed job's buttons and /show say it was removed."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.models import AuditEntry, JobStatus
from tests.harness import button_labels, private_answer


def refused(result, expected: str) -> None:
    assert expected in (text := private_answer(result)), text


def message_ids(harness) -> set[int]:
    return {message.id for message in harness.channel.history()}


def files_of(job) -> list[Path]:
    return [Path(p) for p in [job.grid_path, *(image.path for image in job.images)] if p]


async def finished(harness, member, **options):
    await member.slash(harness.channel, "imagine", **options)
    job = await harness.wait_for_job((await harness.latest_job(member.id)).id)
    assert job.status == JobStatus.COMPLETED, job.error
    return job


async def remove(member, message, choice: str):
    """Press 🗑️, then one of the two private choices."""
    asked = await member.click(message, label="Remove")
    assert "Remove the result of job" in private_answer(asked)
    chosen = await member.click(asked.response, label=choice)
    assert chosen.acknowledged
    return asked


async def test_owner_and_moderator_remove_results_others_are_refused(harness):
    alice, bob, mod = harness.member("alice"), harness.member("bob"), harness.member("mod", moderator=True)
    grid = await finished(harness, alice, prompt="a red kite", count=2, seed=5)
    message = harness.message(grid.message_id)
    assert button_labels(message)[-1] == "Remove"

    # Posts of the same result: a U button's single image (with its own 🗑️), and a /show.
    single = await alice.click(message, label="U1")
    single_post = (single.followups or [single.response])[-1]
    assert button_labels(harness.message(single_post.id))[-1] == "Remove"
    shown = await bob.slash(harness.channel, "show", job=grid.id)
    show_post = (shown.followups or [shown.response])[-1]

    refused(await bob.click(message, label="Remove"), f"Only the person who made job #{grid.id}, or a moderator")
    harness.expect_user_errors()

    # The owner, from the single-image post, keeps the files: that post and the status message go.
    asked = await remove(alice, harness.message(single_post.id), "Remove message")
    assert f"Job #{grid.id}: its message was removed." in asked.response.content
    ids = message_ids(harness)
    assert grid.message_id not in ids and single_post.id not in ids and show_post.id in ids
    job = await harness.queue.get(grid.id)
    assert job.removed_at is not None and job.removed_by == alice.id
    assert all(path.is_file() for path in files_of(job))

    # Its buttons (the /show post still has them) and /show answer "removed"; the row stays.
    refused(await bob.click(harness.message(show_post.id), label="U2"), f"The result of job #{grid.id} was removed.")
    refused(await bob.click(harness.message(show_post.id), label="Reroll"), "was removed")
    refused(await bob.slash(harness.channel, "show", job=grid.id), f"The result of job #{grid.id} was removed, so")
    harness.expect_user_errors()
    # The last post can still go, by a moderator, with the files this time.
    await remove(mod, harness.message(show_post.id), "Remove message and image files")
    assert show_post.id not in message_ids(harness)
    assert not any(path.is_file() for path in files_of(job))
    refused(await alice.slash(harness.channel, "show", job=grid.id), "and its image files were deleted")
    assert (await harness.queue.get(grid.id)) is not None
    harness.expect_user_errors()

    # A moderator removes someone's single image with its files.
    one = await finished(harness, alice, prompt="a blue kite", count=1)
    await remove(mod, harness.message(one.message_id), "Remove message and image files")
    assert one.message_id not in message_ids(harness)
    assert not any(path.is_file() for path in files_of(one))
    assert (await harness.queue.get(one.id)).removed_by == mod.id

    async with harness.db.session() as session:
        entries = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "result.removed")))
    assert [(e.job_id, e.actor_id, e.target_user_id) for e in entries] == [
        (grid.id, alice.id, alice.id), (grid.id, mod.id, alice.id), (one.id, mod.id, alice.id),
    ]
    assert harness.expect_user_errors() == []
