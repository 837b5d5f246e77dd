"""A bot with separate workers, through simulated Discord: /admin workers lists them (GPU,
models, current job, throughput), /queue says how many there are, and the bot starts no
worker of its own."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.jobs.leases import WorkerRegistry
from bot.jobs.worker_relay import WorkerRelay
from db.base import utcnow
from db.models import Worker
from tests.harness import BotHarness
from tests.test_bot_admin import admin_member, private_text
from tests.test_queue import ALICE, params


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
