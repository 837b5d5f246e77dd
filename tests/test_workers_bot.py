"""A bot with separate workers, through simulated Discord: /admin workers lists them (GPU,
models, current job, throughput), /queue says how many there are, and the bot starts no
worker of its own: a separate worker's result reaches the member's message."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.jobs.leases import WorkerRegistry
from bot.jobs.worker_relay import WorkerRelay
from db.base import utcnow
from db.models import JobStatus, Worker
from tests.harness import BotHarness, attachment_image
from tests.test_bot_admin import admin_member, private_text
from tests.test_queue import ALICE, params
from tests.worker_processes import START_TIMEOUT_S, start_worker, stop_worker, worker_config, worker_log


class SeparateWorkersHarness(BotHarness):
    """The bot as `sdbot run` starts it with [worker] builtin = false: a relay, no worker process."""

    async def _started_dispatcher(self) -> WorkerRelay:  # type: ignore[override]
        worker = self.settings.worker
        return WorkerRelay(self.queue, worker.lease_timeout_s, worker.heartbeat_s)


@pytest.fixture
async def separate(settings, tmp_path, migrated_database_file):
    from tests.conftest import copy_migrated_database

    copy_migrated_database(migrated_database_file, tmp_path)
    apart = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, builtin=False))
    async with SeparateWorkersHarness(apart) as bot:
        yield bot


async def test_admin_workers_and_queue_show_the_separate_workers(separate):
    registry = WorkerRegistry(separate.queue, separate.settings.worker.lease_timeout_s)
    await registry.register("gpu0", "box-a", "cuda:0", ("tiny",), ("tiny", "sdxl"))
    await registry.register("gpu1", "box-b", "cuda:1", (), ("tiny",))
    job = await separate.queue.enqueue(params(), ALICE)
    await registry.heartbeat("gpu0", job.id, ("tiny",), 12)
    async with separate.db.session() as session, session.begin():  # gpu1 went silent
        await session.execute(update(Worker).where(Worker.name == "gpu1").values(heartbeat_at=utcnow() - timedelta(minutes=5)))

    mod = admin_member(separate, "mod")
    listed = private_text(await mod.slash(separate.channel, "admin workers"))
    gpu0, gpu1 = listed.splitlines()
    assert gpu0.startswith("**gpu0** on box-a (cuda:0) · running #") and "loaded: tiny · can load: sdxl, tiny" in gpu0
    assert "12 jobs" in gpu0 and "/min" in gpu0
    assert gpu1.startswith("**gpu1** on box-b (cuda:1) · silent") and "loaded: nothing yet" in gpu1

    bob = separate.member("bob")
    answer = private_text(await bob.slash(separate.channel, "queue"))
    assert answer.endswith("1 jobs are in the queue, 1 worker (1 busy).")


async def test_admin_workers_with_the_builtin_worker_says_so(harness):
    mod = admin_member(harness, "mod")
    listed = private_text(await mod.slash(harness.channel, "admin workers"))
    assert listed.startswith("The bot's own worker on cpu · idle.")


async def test_a_separate_workers_result_reaches_discord(separate, tiny_model_dir, tmp_path):
    """/imagine on a bot without a worker: a real `sdbot worker` on the same database runs it,
    and the bot posts its grid in the member's message, as with its own worker."""
    folder = tmp_path / "worker"
    folder.mkdir()
    config = worker_config(folder, separate.settings.database_url, tiny_model_dir)
    worker = start_worker(config, "gpu0")
    try:
        alice = separate.member("alice")
        result = await alice.slash(separate.channel, "imagine", prompt="a lighthouse", count=2, seed=9)
        job = await separate.latest_job(alice.id)
        deadline = time.perf_counter() + START_TIMEOUT_S
        while (job := await separate.queue.get(job.id)).is_active or job.id in separate.dispatcher.running:
            assert time.perf_counter() < deadline and worker.poll() is None, worker_log(config, "gpu0")
            await separate.env.advance_time(0.25)  # the relay's poll of the rows (SQLite)
        await separate.settle()
        assert await stop_worker(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert job.status == JobStatus.COMPLETED and job.worker_name == "gpu0"
    message = separate.message(result.response.id)
    assert message.embeds[0].title == "a lighthouse"
    assert {field.name: field.value for field in message.embeds[0].fields}["Seeds"] == "9, 10"
    grid = await attachment_image(message)
    assert grid.size == (128, 64)
