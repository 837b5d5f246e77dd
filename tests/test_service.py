"""`sdbot run` as a service: SIGTERM stops the real process in order, one bot per database.

These tests start the real `python -m bot run` process, with its real worker and database.
Discord cannot be reached from a test, so discord.py in that process talks to the fake Discord
of tests/discord_wire.py (tests/test_bot_over_the_wire.py drives commands through it). A job
queued before the start runs, as after any restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from bot import cli
from bot.actions import RESTARTING
from bot.errors import Restarting
from bot.jobs.params import GenerationOptions, resolve_parameters
from bot.jobs.queue import JobQueue, Requester
from db.migrate import schema_revisions, upgrade_database
from db.models import Job, JobStatus
from db.session import Database
from tests.discord_wire import START_TIMEOUT_S, FakeDiscord, start_bot, stop_with_sigterm
from tests.harness import private_answer
from tests.test_startup_and_cli import write_config

SLOW_JOB = GenerationOptions(prompt="a long night", steps=60, count=4, width=128, height=128)
SHORT_JOB = GenerationOptions(prompt="a short day", steps=20, count=1)


def service_config(tmp_path: Path, settings, grace_s: float) -> Path:
    config = write_config(tmp_path / "config.toml", settings)
    with config.open("a", encoding="utf-8") as file:
        file.write(f"shutdown_grace_s = {grace_s}\n")  # under [worker], the file's last table
    return config


async def queue_job(settings, options: GenerationOptions) -> int:
    db = Database(settings.database_url)
    try:
        await upgrade_database(db.engine)
        job = await JobQueue(db, settings.queue).enqueue(resolve_parameters(options, settings), Requester(1, "alice"))
        return job.id
    finally:
        await db.close()


async def job_row(settings, job_id: int) -> Job:
    db = Database(settings.database_url)
    try:
        job = await JobQueue(db, settings.queue).get(job_id)
        assert job is not None
        return job
    finally:
        await db.close()


async def wait_until_running(settings, job_id: int, bot: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (await job_row(settings, job_id)).status != JobStatus.RUNNING:
        if bot.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(f"job #{job_id} never ran (bot exit code {bot.returncode})\n{log.read_text()}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def discord_address():
    discord = FakeDiscord()
    yield await discord.start()
    await discord.close()


async def sigterm_while_running(tmp_path: Path, settings, address: str, options: GenerationOptions, *,
                                grace_s: float, meanwhile=None) -> tuple[Job, int, str]:  # type: ignore[no-untyped-def]
    """Start `sdbot run` with one job queued and SIGTERM it once the job runs (after
    `meanwhile(config, bot)`); the job's row after the exit, the exit status, the output."""
    job_id = await queue_job(settings, options)
    config = service_config(tmp_path, settings, grace_s=grace_s)
    log = tmp_path / "bot.log"
    bot = await start_bot(config, address, log)
    try:
        await wait_until_running(settings, job_id, bot, log)
        if meanwhile is not None:
            await meanwhile(config, bot)
        code, output = await stop_with_sigterm(bot, log)
    finally:
        if bot.returncode is None:
            bot.kill()
    return await job_row(settings, job_id), code, output


async def test_sigterm_hands_the_running_job_back_without_counting_an_attempt(tmp_path, settings, discord_address):
    """The grace is too short for the job: it goes back to the queue as it was (attempts 0),
    the process exits 0; a second `sdbot run` on the same database meanwhile is refused."""

    async def start_a_second_bot(config: Path, bot: asyncio.subprocess.Process) -> None:
        second_log = tmp_path / "second.log"
        second = await start_bot(config, discord_address, second_log)
        assert await asyncio.wait_for(second.wait(), START_TIMEOUT_S) == 1
        assert f"Another sdbot process (pid {bot.pid})" in second_log.read_text()

    job, code, output = await sigterm_while_running(
        tmp_path, settings, discord_address, SLOW_JOB, grace_s=0.1, meanwhile=start_a_second_bot
    )
    assert code == 0, output
    assert "SIGTERM received: stopping" in output
    assert job.status == JobStatus.PENDING and job.attempts == 0, output


async def test_sigterm_lets_the_running_job_finish_within_the_grace(tmp_path, settings, discord_address):
    job, code, output = await sigterm_while_running(tmp_path, settings, discord_address, SHORT_JOB, grace_s=600)
    assert code == 0, output
    assert job.status == JobStatus.COMPLETED and job.attempts == 1, output
    assert job.images and all(Path(image.path).is_file() for image in job.images)


async def test_a_stopping_bot_answers_restarting_privately_and_queues_nothing(harness):
    """Through the bot: between the signal and the exit, a command and a button get the
    private "restarting" answer and change nothing, while the running job still finishes."""
    alice, bob = harness.member("alice"), harness.member("bob")
    started = await alice.slash(harness.channel, "imagine", prompt="a long night", steps=30, count=1)
    job = await harness.wait_for_job((await harness.latest_job()).id, statuses=(JobStatus.RUNNING,))

    stopping = asyncio.create_task(harness.bot.shut_down(grace_s=600))
    await harness.wait_for(lambda: asyncio.sleep(0, harness.bot.stopping), "the bot to begin stopping")
    clicked = await alice.click(harness.message(started.response.id), label="Cancel")
    assert private_answer(clicked) == RESTARTING
    refused = await bob.slash(harness.channel, "imagine", prompt="one more")
    assert private_answer(refused) == RESTARTING
    assert [type(error) for error in harness.expect_user_errors()] == [Restarting]
    assert await harness.job_count() == 1

    await stopping
    finished = await harness.queue.get(job.id)
    assert finished is not None and finished.status == JobStatus.COMPLETED


def test_sigterm_during_the_migration_lets_it_finish_and_exits_before_the_worker(tmp_path, settings, monkeypatch, caplog):
    """A migration is one transaction: the signal is taken once it is committed, and the bot
    then exits 0 without starting its worker. (In-process: the signal must land exactly
    during the migration, which the wrapper below makes certain.)"""

    async def migrate_while_signalled(engine):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGTERM)  # caught by `sdbot run`'s handler, installed by now
        await upgrade_database(engine)

    async def token_accepted(token):  # type: ignore[no-untyped-def]
        return "sdbot#0001"  # Discord's answer to the token check, which comes before the migration

    monkeypatch.setattr(cli, "upgrade_database", migrate_while_signalled)
    monkeypatch.setattr("bot.discord_token.check_token", token_accepted)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    config = service_config(tmp_path, settings, grace_s=30)
    # On the logger itself: a benchmark's smoke test earlier in the run may have quietened "bot".
    caplog.set_level(logging.INFO, logger="bot")
    assert cli.main(["--config", str(config), "run"]) == 0
    assert "SIGTERM received: stopping" in caplog.text and "worker process" not in caplog.text

    async def revisions() -> tuple[str | None, str | None]:
        db = Database(settings.database_url)
        try:
            return await schema_revisions(db.engine)
        finally:
            await db.close()

    current, head = asyncio.run(revisions())
    assert current == head


async def test_sigterm_while_the_worker_loads_its_models_exits_0_and_leaves_no_worker(tmp_path, settings, discord_address):
    config = service_config(tmp_path, settings, grace_s=30)
    log = tmp_path / "bot.log"
    # The tiny model loads fast: the worker's loading is made slow enough for SIGTERM to land in it.
    bot = await start_bot(config, discord_address, log, SDBOT_TEST_SLOW_WORKER_START_S="60")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "worker process 1 started (pid" not in log.read_text():
            assert bot.returncode is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        worker_pid = int(log.read_text().split("worker process 1 started (pid ")[1].split(")")[0])
        code, output = await stop_with_sigterm(bot, log)
    finally:
        if bot.returncode is None:
            bot.kill()
    assert code == 0, output
    assert "worker ready" not in output  # stopped while starting, not after
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


# Discord's errors for a bulk overwrite of the commands, as it words them: the command's index,
# the field, what it takes. The second, on the list of options itself, is what 27 options got;
# discord.py 2.7 raises AttributeError while wording it.
REFUSALS = {
    "Must be between 1 and 100 in length": {
        "0": {"description": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100 in length."}]}}
    },
    "Must be 25 or fewer in length": {
        "0": {"options": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 25 or fewer in length."}]}}
    },
}


@pytest.mark.parametrize("said", REFUSALS)
async def test_a_refused_command_sync_ends_the_bot_with_one_clear_line(tmp_path, settings, said):
    """Discord refuses the bulk overwrite of the commands (400, 50035, as for a description
    over 100 characters): the bot cannot serve, so it exits non-zero with what Discord said and what to
    do, in one line, and no traceback (that is for --debug)."""
    discord = FakeDiscord(refuse_sync=REFUSALS[said])
    address = await discord.start()
    log = tmp_path / "bot.log"
    bot = await start_bot(write_config(tmp_path / "config.toml", settings), address, log)
    try:
        code = await asyncio.wait_for(bot.wait(), START_TIMEOUT_S)
    finally:
        if bot.returncode is None:
            bot.kill()
        await discord.close()
    output = log.read_text()
    assert code == 1, output
    assert "Traceback" not in output and " ERROR " not in output, output
    refusal = [line for line in output.splitlines() if "Discord refused the bot's slash commands" in line]
    assert len(refusal) == 1, output
    assert "HTTP 400, error 50035" in refusal[0] and said in refusal[0], refusal
    assert "sdbot --debug run" in refusal[0]
