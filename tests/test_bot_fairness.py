"""GPU time through the bot: each job's cost, the caps on it, turns by recent use, ETAs by cost."""

from __future__ import annotations

from dataclasses import replace

from db.models import Job, JobStatus
from tests.harness import private_answer

SLOW = {"steps": 60, "count": 4, "width": 128, "height": 128}  # 0.75 units, long enough to act while it runs


def set_queue_settings(harness, **changes) -> None:
    """The same [queue] settings for the policy gate (the bot's) and the queue's own check."""
    queue_settings = replace(harness.bot.settings.queue, **changes)
    harness.bot.settings = replace(harness.bot.settings, queue=queue_settings)
    harness.queue.settings = queue_settings


async def wait_running(harness, job_id: int) -> Job:
    return await harness.wait_for_job(job_id, statuses=(JobStatus.RUNNING,))


async def test_a_plot_over_the_cost_cap_is_refused_with_its_cost_and_the_cap(harness):
    set_queue_settings(harness, max_job_cost=2.0)
    alice = harness.member("alice")
    # 16 cells of 128x128 (1/16 of a unit's pixels) at 60 steps (3 units' steps): 3 units.
    result = await alice.slash(
        harness.channel, "xyplot", prompt="a lighthouse", x_type="CFG Scale", x_values="1-16",
        width=128, height=128, steps=60,
    )
    text = private_answer(result)
    assert "This job costs 3 units of GPU time" in text and "at most 2 per job" in text, text
    assert await harness.job_count() == 0
    harness.expect_user_errors()


async def test_a_members_waiting_cost_is_capped(harness):
    set_queue_settings(harness, max_waiting_cost_per_member=1.0)
    alice, bob = harness.member("alice"), harness.member("bob")
    await bob.slash(harness.channel, "imagine", prompt="running", **SLOW)
    await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="waiting", **SLOW)
    refused = await alice.slash(harness.channel, "imagine", prompt="one too many", **SLOW)
    text = private_answer(refused)
    assert "Your waiting jobs cost 0.75 units" in text and "asks for 0.75 more" in text, text
    assert "allows 1 waiting per member" in text, text
    assert await harness.job_count() == 2
    # Small jobs still fit beside the waiting one.
    await alice.slash(harness.channel, "imagine", prompt="a small one", count=1)
    assert await harness.job_count() == 3
    harness.expect_user_errors()


async def test_the_eta_counts_the_hires_pass(harness):
    # Seconds per unit large enough that the ETA is the job's cost, whatever the machine.
    set_queue_settings(harness, initial_seconds_per_unit=76_800.0)
    alice = harness.member("alice")
    # 20 steps at 64x64 (1/64 unit), then 20 steps at 128x128 (1/16): 5/64 units, 6,000 s.
    await alice.slash(
        harness.channel, "imagine", prompt="a harbour", count=1, steps=20, hires_scale=2, hires_steps=20,
    )
    answer = harness.first_response()
    eta = {field["name"]: field["value"] for field in answer["embeds"][0]["fields"]}["ETA"]
    # Without the hires pass it would be 1,200 s: "about 20 min".
    assert eta.endswith(" h"), eta
    job = await harness.latest_job()
    assert job.cost == 5 / 64
