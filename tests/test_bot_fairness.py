"""GPU time through the bot: each job's cost, the caps on it, turns by recent use, ETAs by cost."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from bot.jobs.cost import job_cost
from bot.jobs.params import JobParameters
from db.models import Job, JobStatus
from inference.common.protocol import JobKind
from tests.harness import private_answer

SLOW = {"steps": 60, "count": 4, "width": 128, "height": 128}  # 0.75 units, long enough to act while it runs


def set_queue_settings(harness, **changes) -> None:
    """The same [queue] settings for the policy gate (the bot's) and the queue's own check."""
    queue_settings = replace(harness.bot.settings.queue, **changes)
    harness.bot.settings = replace(harness.bot.settings, queue=queue_settings)
    harness.queue.settings = queue_settings


async def wait_running(harness, job_id: int) -> Job:
    return await harness.wait_for_job(job_id, statuses=(JobStatus.RUNNING,))


async def started_prompts(harness) -> list[str]:
    async with harness.db.session() as session:
        jobs = await session.scalars(select(Job).where(Job.started_at.is_not(None)).order_by(Job.started_at))
        return [job.prompt for job in jobs]


def test_a_prompt_split_by_and_costs_a_model_call_per_two_parts():
    def cost(prompt: str) -> float:
        return job_cost(JobParameters(
            kind=JobKind.TXT2IMG, prompt=prompt, negative_prompt="", model="tiny", width=512, height=512,
            steps=20, cfg_scale=7.0, sampler="Euler a", count=1, seed=1,
        ))

    assert cost("a cat") == cost("(a cat:1.2) :1.5") == 1.0  # the uncond and the cond: one call
    assert cost("a cat AND a dog") == cost("a cat AND a dog AND a bird") == 2.0  # the uncond and the parts, two a call
    # 250 ANDs held the GPU 125 times as long as their cost said, past every cap and turn.
    assert cost("a cat <lora:x:1>" + " AND a dog" * 250) == 126.0


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


async def test_a_member_who_used_the_gpu_a_lot_waits_behind_small_jobs(harness):
    alice, bob, carol = harness.member("alice"), harness.member("bob"), harness.member("carol")
    # Alice's earlier job cost 4 x 1/64 x 10/20 = 1/32 unit; each of Bob's 3/1280.
    await alice.slash(harness.channel, "imagine", prompt="alice big", count=4, steps=10)
    await harness.wait_for_job((await harness.latest_job()).id)
    await carol.slash(harness.channel, "imagine", prompt="carol running", **SLOW)
    running = await wait_running(harness, (await harness.latest_job()).id)
    await alice.slash(harness.channel, "imagine", prompt="alice small", count=1)
    for i in range(3):
        await bob.slash(harness.channel, "imagine", prompt=f"bob {i}", count=1)
    await carol.slash(harness.channel, "cancel", job=running.id)  # the waiting jobs' turns come now
    await harness.wait_for_job((await harness.latest_job(alice.id)).id)
    await harness.wait_for_job((await harness.latest_job(bob.id)).id)
    # Turns by count would give Alice the second turn; by GPU time, Bob's three small jobs
    # together cost less than Alice's earlier one, so they all run first.
    assert await started_prompts(harness) == [
        "alice big", "carol running", "bob 0", "bob 1", "bob 2", "alice small",
    ]


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


async def test_a_server_sets_its_own_cost_caps_within_the_bots(harness):
    from tests.test_bot_admin import admin_member

    mod = admin_member(harness, "mod")
    patrons = harness.guild.create_role("Patrons")
    patron = harness.guild.add_member(harness.env.create_user("pat"), roles=[patrons])
    alice = harness.member("alice")
    plot = {"prompt": "a lighthouse", "x_type": "CFG Scale", "x_values": "1-16", "width": 128, "height": 128, "steps": 60}

    looser = await mod.slash(harness.channel, "admin limits set", max_job_cost=500)
    assert "max_job_cost can be at most 200: the bot's own limit" in private_answer(looser)
    await mod.slash(harness.channel, "admin limits set", max_job_cost=2, max_waiting_cost=50)
    await mod.slash(harness.channel, "admin limits set", max_job_cost=0, role=patrons)  # no cap of the server's
    shown = private_answer(await mod.slash(harness.channel, "admin limits show"))
    assert "job cost 2 units, waiting cost 50 units" in shown and "job cost no limit" in shown, shown

    text = private_answer(await alice.slash(harness.channel, "xyplot", **plot))
    assert "This job costs 3 units of GPU time" in text and "at most 2 per job" in text, text
    assert await harness.job_count() == 0
    # A patron's own limit lifts the server's cap, not the bot's (200): the plot is queued.
    await patron.slash(harness.channel, "xyplot", **plot)
    queued = await harness.latest_job(patron.id)
    assert queued is not None and queued.cost == 3
    await patron.slash(harness.channel, "cancel", job=queued.id)

    await mod.slash(harness.channel, "admin limits reset")
    await alice.slash(harness.channel, "xyplot", **plot)
    assert (await harness.latest_job(alice.id)).cost == 3
    await alice.slash(harness.channel, "cancel", job=(await harness.latest_job(alice.id)).id)
    harness.expect_user_errors()
