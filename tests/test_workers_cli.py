"""`sdbot worker` refuses what it cannot work with, in one line and before loading anything:
an older schema (naming the command to run), outputs it cannot write, a model it does not
know, a database it cannot reach."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.script import ScriptDirectory

from bot import cli
from db.migrate import alembic_config, upgrade_database
from db.session import Database
from tests.worker_processes import worker_config


def migrate_to(url: str, revision: str) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            await upgrade_database(db.engine, revision)
        finally:
            await db.close()

    asyncio.run(run())


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'sdbot.sqlite3'}"


def test_a_worker_refuses_an_older_schema_naming_the_migration(tmp_path, tiny_model_dir, capsys):
    scripts = ScriptDirectory.from_config(alembic_config(sqlite_url(tmp_path)))
    head = scripts.get_current_head()
    older = scripts.get_revision(head).down_revision  # one migration behind the code
    migrate_to(sqlite_url(tmp_path), older)
    config = worker_config(tmp_path, sqlite_url(tmp_path), tiny_model_dir)
    assert cli.main(["--config", str(config), "worker", "--name", "gpu0"]) == 2
    error = capsys.readouterr().err
    assert f"schema revision {older}" in error and f"needs {head}" in error and "sdbot migrate" in error
    assert "Traceback" not in error


def test_a_worker_refuses_outputs_it_cannot_write(tmp_path, tiny_model_dir, capsys):
    migrate_to(sqlite_url(tmp_path), "head")
    config = worker_config(tmp_path, sqlite_url(tmp_path), tiny_model_dir)
    (tmp_path / "outputs").write_text("a file where the shared folder should be")
    assert cli.main(["--config", str(config), "worker", "--name", "gpu0"]) == 2
    error = capsys.readouterr().err
    assert f"Cannot write images to {tmp_path / 'outputs' / 'gpu0'}" in error and "shared outputs_dir" in error


def test_a_worker_refuses_a_model_it_does_not_know(tmp_path, tiny_model_dir, capsys):
    config = worker_config(tmp_path, sqlite_url(tmp_path), tiny_model_dir)
    assert cli.main(["--config", str(config), "worker", "--name", "gpu0", "--models", "tiny", "sdxl"]) == 2
    assert "--models names sdxl, not configured here: tiny" in capsys.readouterr().err


def test_a_worker_refuses_a_database_it_cannot_reach(tmp_path, tiny_model_dir, capsys):
    url = "postgresql+asyncpg://sdbot:secret@127.0.0.1:9/sdbot"
    config = worker_config(tmp_path, url, tiny_model_dir)
    assert cli.main(["--config", str(config), "worker", "--name", "gpu0"]) == 2
    error = capsys.readouterr().err
    assert "Cannot connect to the database" in error and "secret" not in error


async def test_check_with_separate_workers_reports_the_live_ones(tmp_path, tiny_model_dir):
    from bot.config import load_settings
    from bot.health import check_worker
    from bot.jobs.leases import WorkerRegistry
    from bot.jobs.queue import JobQueue

    await asyncio.to_thread(migrate_to, sqlite_url(tmp_path), "head")
    settings = load_settings(worker_config(tmp_path, sqlite_url(tmp_path), tiny_model_dir))
    none = await check_worker(settings)
    assert not none.passed and "no separate worker heartbeats" in none.detail and "sdbot worker" in none.detail
    db = Database(settings.database_url)
    try:
        await WorkerRegistry(JobQueue(db, settings.queue), 30).register("gpu0", "box", "cuda:0", (), ("tiny",))
    finally:
        await db.close()
    some = await check_worker(settings)
    assert some.passed and some.detail == "separate workers: gpu0 (cuda:0)"
