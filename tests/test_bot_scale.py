"""Discord at scale: the request budget (bot.request_budget) with many jobs at once, through the
whole bot and the real worker, and the sharded bot ([discord] shards) serving /imagine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from bot.client import ShardedSDBot
from bot.config import ConfigError, DiscordSettings
from bot.request_budget import RequestBudget, TokenBucket
from db.models import JobStatus

BLOCKER = {"steps": 60, "count": 4, "width": 128, "height": 128}
MEMBERS = 8  # one pass of eight members' jobs: eight jobs' progress at every step


class TimedRequests(list):
    """simcord's request log, with the moment each request reached the simulated Discord."""

    def __init__(self, requests) -> None:  # type: ignore[no-untyped-def]
        super().__init__(requests)
        self.times = [float("-inf")] * len(requests)

    def append(self, entry) -> None:  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter())
        super().append(entry)

    def since(self, start: int, keep) -> list[float]:  # type: ignore[no-untyped-def]
        return [moment for moment, request in zip(self.times[start:], self[start:]) if keep(request)]


def most_in_one_second(moments: list[float]) -> int:
    moments = sorted(moments)
    return max((sum(1 for m in moments[i:] if m - start < 1.0) for i, start in enumerate(moments)), default=0)


def is_progress_edit(request) -> bool:  # type: ignore[no-untyped-def]
    return request.method == "PATCH" and "Generating · step" in str(request.json)


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """Batching on (eight members' jobs in one pass), and a progress edit wanted at every step."""
    return replace(
        settings,
        worker=replace(settings.worker, max_batch_images=MEMBERS),
        discord=replace(settings.discord, progress_edit_interval_s=0.0, progress_edits_per_s=2.0),
    )


async def many_jobs_at_once(harness, steps: int) -> tuple[list[int], int]:  # type: ignore[no-untyped-def]
    """Eight members' jobs queued behind a long one, then running as one pass: their ids, and
    where the request log stood when they were let go."""
    xavier = harness.member("xavier")
    await xavier.slash(harness.channel, "imagine", prompt="a long night", **BLOCKER)
    blocker = await harness.latest_job()
    await harness.wait_for_job(blocker.id, statuses=(JobStatus.RUNNING,))
    ids = []
    for number in range(MEMBERS):
        member = harness.member(f"member{number}")
        await member.slash(harness.channel, "imagine", prompt=f"a lighthouse number {number}", steps=steps, seed=number, count=1,
        )
        ids.append((await harness.latest_job(member.id)).id)
    assert (await harness.queue.get(blocker.id)).status == JobStatus.RUNNING, "the blocker ended too soon"
    requests = harness.env.backend.http_requests = TimedRequests(harness.env.backend.http_requests)
    start = len(requests)
    await xavier.slash(harness.channel, "cancel")
    return ids, start


async def delivered(harness, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    for job_id in ids:
        job = await harness.wait_for_job(job_id)
        assert job.status == JobStatus.COMPLETED, job.error
    await harness.bot.delivery.drain()
    await harness.settle()
    for job_id in ids:
        message = harness.message((await harness.queue.get(job_id)).message_id)
        assert message.attachments, f"job {job_id}'s result has no image"
        assert "Generating" not in (message.embeds[0].title or ""), f"job {job_id} still shows its progress"


def record_grants(bucket: TokenBucket) -> list[float]:
    """The moments, on the bucket's own clock, at which it let a droppable request go."""
    granted: list[float] = []
    take = bucket.try_take

    def recorded() -> bool:
        if taken := take():
            granted.append(bucket._updated)  # the clock reading of the refill that found the token
        return taken

    bucket.try_take = recorded  # type: ignore[method-assign]
    return granted


async def test_many_jobs_progress_thins_out_within_the_budget_and_every_result_arrives(harness):
    granted = record_grants(harness.bot.request_budget.progress)
    ids, start = await many_jobs_at_once(harness, steps=40)
    await delivered(harness, ids)
    progress = harness.env.backend.http_requests.since(start, is_progress_edit)
    # 8 jobs x 40 steps wanted an edit each; 2 a second (a burst of 1) is what went. Every
    # edit that reached Discord had the budget's leave, and the leaves keep to its rate on its
    # own clock (timing the requests as they arrive would measure the machine's load too).
    assert progress, "progress thinned out to nothing"
    assert len(progress) <= len(granted)
    assert most_in_one_second(granted) <= 1 + 2, granted
    assert len(progress) < MEMBERS * 40 / 4


async def test_a_hundred_jobs_past_their_interaction_token_keep_the_bot_token_within_its_budget():
    # A hundred GPUs' jobs, all past their interaction token: every progress frame (ten a second
    # each) asks the budget, and every result must go, with the bot's own token.
    # Both buckets read one clock, and each request is timed with the reading that let it go:
    # nothing is awaited between a bucket's leave and the append, so no load can shift it.
    reading = [0.0]

    def clock() -> float:
        reading[0] = time.perf_counter()
        return reading[0]

    budget = RequestBudget(
        bot_token=TokenBucket(40.0, burst=10.0, clock=clock), progress=TokenBucket(20.0, burst=5.0, clock=clock)
    )
    defaults = RequestBudget.from_settings(DiscordSettings(bot_token_requests_per_s=40.0, progress_edits_per_s=20.0))
    assert (defaults.bot_token.burst, defaults.progress.burst) == (10.0, 5.0)  # the buckets the bot makes
    sent: list[tuple[float, str]] = []
    jobs = 100

    async def job(number: int) -> None:
        for _ in range(3):  # progress frames, a tenth of a second apart
            if budget.progress_edit(through_bot_token=True):
                sent.append((reading[0], "progress"))
            await asyncio.sleep(0.1)
        await budget.bot_token_request()  # the result, posted anew: it must go
        sent.append((reading[0], "result"))

    await asyncio.gather(*(job(number) for number in range(jobs)))
    results = [moment for moment, kind in sent if kind == "result"]
    progress = [moment for moment, kind in sent if kind == "progress"]
    assert len(results) == jobs, "a result was dropped"
    assert progress, "progress thinned out to nothing"
    # Discord's limit is 50 a second; the budget's 40 with its burst of 10 never reaches it.
    assert most_in_one_second([moment for moment, _ in sent]) <= 40 + 10
    assert most_in_one_second(progress) <= 20 + 5
    # With this many jobs running, each job's own edits space out to its share of the 20 a second.
    assert budget.progress_interval(1.5, running=jobs) == 5.0
    assert budget.progress_interval(1.5, running=2) == 1.5


async def test_a_waiting_result_goes_before_any_progress_edit():
    now = [0.0]
    bucket = TokenBucket(per_second=10.0, burst=2.0, clock=lambda: now[0])
    assert bucket.try_take() and bucket.try_take()
    assert not bucket.try_take()  # the burst is spent
    result = asyncio.create_task(bucket.take())
    await asyncio.sleep(0)
    now[0] += 1.0  # ten tokens' time: the result's turn comes first all the same
    assert not bucket.try_take(), "a progress edit went ahead of a waiting result"
    await asyncio.wait_for(result, timeout=5)
    assert bucket.try_take()  # the rest of the (full) bucket
    assert bucket.try_take() is False


def test_the_budget_settings_refuse_what_discord_would_not_take():
    with pytest.raises(ConfigError, match="at most 50"):
        DiscordSettings(bot_token_requests_per_s=60.0)
    with pytest.raises(ConfigError, match="progress_edits_per_s must be above 0"):
        DiscordSettings(progress_edits_per_s=0.0)
    with pytest.raises(ConfigError, match='shards must be "auto" or a number'):
        DiscordSettings(shards="many")
    with pytest.raises(ConfigError, match='shards must be "auto" or a number'):
        DiscordSettings(shards=0)
    with pytest.raises(ConfigError, match="bot_token_requests_per_s must be above 0"):
        DiscordSettings(bot_token_requests_per_s=0.0)


@pytest.mark.parametrize("shards", ["auto", 3])
async def test_a_sharded_bot_serves_imagine_in_servers_on_different_shards(settings, tmp_path, migrated_database_file, shards):
    from tests.conftest import copy_migrated_database
    from tests.harness import BotHarness

    copy_migrated_database(migrated_database_file, tmp_path)
    settings = replace(settings, discord=replace(settings.discord, shards=shards))
    async with BotHarness(settings, recommended_shards=2) as harness:
        bot = harness.bot
        assert isinstance(bot, ShardedSDBot)
        assert bot.shard_count == (2 if shards == "auto" else 3) and len(bot.shards) == bot.shard_count
        # One server on the first shard and one on the last (their ids say which, as on Discord).
        servers = [harness.env.create_guild(name=f"server {shard}", shard_id=shard) for shard in (0, bot.shard_count - 1)]
        await harness.settle()
        assert [bot.get_guild(server.id).shard_id for server in servers] == [0, bot.shard_count - 1]
        channels = [(server, server.create_text_channel("imagine")) for server in servers]
        ids = []
        for number, (guild, channel) in enumerate(channels):
            member = guild.add_member(harness.env.create_user(f"member{number}"))
            await member.slash(channel, "imagine", prompt="a lighthouse at dusk")
            ids.append((await harness.latest_job(member.id)).id)
        for job_id in ids:
            assert (await harness.wait_for_job(job_id)).status == JobStatus.COMPLETED
        await harness.bot.delivery.drain()
        await harness.settle()
        for job_id, (_, channel) in zip(ids, channels, strict=True):
            message_id = (await harness.queue.get(job_id)).message_id
            result = next(message for message in channel.history() if message.id == message_id)
            assert result.attachments, f"job {job_id}'s result in {channel.name} has no image"
