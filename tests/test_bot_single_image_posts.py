"""A U button posts an image alone once: a click flood cannot fill the channel with copies."""

from __future__ import annotations

import asyncio

from db.models import JobStatus
from tests.harness import private_answer


def bot_posts_of(channel, job_id: int, index: int) -> list:
    return [m for m in channel.history() if m.author.bot and m.content.startswith(f"Image {index + 1} of job #{job_id}")]


async def test_thirty_simultaneous_u_clicks_post_the_image_once(harness):
    alice = harness.member("alice")
    members = [alice, *(harness.member(f"member{n}") for n in range(5))]
    result = await alice.slash(harness.channel, "imagine", prompt="a crowded pier", count=2)
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED
    grid = harness.message(result.response.id)

    with harness.arriving_together():
        clicks = await asyncio.gather(*(members[n % len(members)].click(grid, label="U1") for n in range(30)))
    await harness.settle()

    [post] = bot_posts_of(harness.channel, job.id, 0)
    assert post.attachments
    links = [private_answer(click) for click in clicks if click.response is None or click.response.ephemeral]
    assert len(links) == 29
    assert all(link == f"Image 1 of job #{job.id} is already posted: {post.jump_url}" for link in links)
    # Another image is its own post; a later U1 still links to the first post.
    assert not (await members[1].click(grid, label="U2")).ephemeral
    later = await members[2].click(grid, label="U1")
    assert post.jump_url in private_answer(later)
    assert len(bot_posts_of(harness.channel, job.id, 0)) == 1 and len(bot_posts_of(harness.channel, job.id, 1)) == 1

    # Once a moderator deleted that post, U1 posts the image again.
    await harness.member("mod", moderator=True).delete(post)
    await harness.settle()
    again = await members[3].click(grid, label="U1")
    assert not again.ephemeral and len(bot_posts_of(harness.channel, job.id, 0)) == 1
    assert harness.expect_user_errors() == []
