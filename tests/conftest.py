"""Shared fixtures: a migrated database per test, settings for the tiny model, and the bot
running against simcord with the real worker process (see tests/harness.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.config import Settings, WorkerSettings
from db.migrate import upgrade_database
from db.session import Database
from tests.tiny_settings import DATABASE_FILE, tiny_settings

pytest_plugins = ["tests.inference_fixtures", "tests.checkpoint_fixtures", "tests.postgres_fixtures"]

# One CPU thread per torch process (set before anything imports torch; the worker processes and
# the bots test_service starts inherit it). The tiny model's operations are too small to gain
# from a second thread, and with the bot's process and its worker sharing the cores, OpenMP's
# threads waiting on each other cost far more than they save. An explicit setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Each fresh interpreter the tests start (the worker processes, the CLI's, the separate workers,
# the bots test_service starts) imports the project's modules: where the environment says not
# to write bytecode (PYTHONDONTWRITEBYTECODE, set on the CI machines), each compiled them all
# again, about 2 s a process. The first now writes it for the others (__pycache__, ignored by git).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


@pytest.fixture(scope="session")
def migrated_database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database the migrations brought to head once per session: each test's database starts
    as a copy of it instead of running every migration again (tests/test_migrations.py runs
    them on an empty database)."""
    path = tmp_path_factory.getbasetemp() / "migrated-template.sqlite3"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await upgrade_database(db.engine)
        await db.close()

    # In a thread of its own: a test's event loop may already be set on this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    # Closing the last connection checkpoints the write-ahead log into the file itself.
    assert not path.with_name(path.name + "-wal").exists(), "the template's WAL was not checkpointed"
    return path


def copy_migrated_database(template: Path, folder: Path) -> Path:
    """The migrated template copied to ``folder``'s database file (left alone if one is there)."""
    path = folder / DATABASE_FILE
    if not path.exists():
        shutil.copyfile(template, path)
    return path


@pytest.fixture
def backend(request) -> str:
    """The database a test runs on: SQLite, and PostgreSQL too in a module marked
    both_backends (pytest_generate_tests)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
async def database(tmp_path, migrated_database_file, backend, request):
    if backend == "postgresql":
        db = Database(await request.getfixturevalue("migrated_postgres_database_url")())
    else:
        db = Database(f"sqlite+aiosqlite:///{copy_migrated_database(migrated_database_file, tmp_path)}")
    await upgrade_database(db.engine)  # at head already: checks the copy, as a bot's start does
    yield db
    await db.close()


@pytest.fixture
def settings(tmp_path, tiny_model_dir) -> Settings:
    """Settings for the tiny random-weight model: 64 px images, a few steps."""
    return tiny_settings(
        tmp_path,
        tiny_model_dir,
        # One job per pass, so tests of the queue see jobs wait their turn; the batching tests
        # (tests/test_bot_batching.py) turn batching back on.
        # Workers forked from one server that imported torch once: each test's worker starts
        # without 12 s of imports. bench/ (tests/test_bench_smoke.py) keeps the default, spawn.
        worker=WorkerSettings(
            device="cpu", preview_interval_s=0.0, startup_timeout_s=180.0, max_batch_images=1,
            start_method="forkserver",
        ),
    )


class ErrorLogCollector(logging.Handler):
    """discord.py logs what a handler raises instead of raising it: collect, then fail."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request):
    collector = ErrorLogCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    yield collector
    root.removeHandler(collector)
    if request.node.get_closest_marker("allow_error_logs"):
        return
    errors = [r for r in collector.records if r.name.startswith(("discord", "bot", "asyncio"))]
    if errors:
        pytest.fail("errors were logged:\n" + "\n".join(f"{r.name}: {r.getMessage()}" for r in errors))


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_error_logs: the test expects ERROR log records (a crash test)")
    config.addinivalue_line("markers", "both_backends: the tests that use `database` run on SQLite and PostgreSQL")


# The files that take longest (measured with --durations), in that order, run first: xdist
# hands the files out in collection order (--no-loadscope-reorder in pyproject.toml), so
# the last ones to start are short and the processes finish together, instead of one of them
# starting a long file as the other runs out of work. Only the order depends on this list.
LONGEST_FILES = (
    "test_bench_smoke.py", "test_inference_fastpath.py", "test_faces_inference.py", "test_service.py",
    "test_bot_over_the_wire.py", "test_bot_queue.py", "test_faces_bot.py", "test_workers_proof.py", "test_model_loading_bot.py",
    "test_single_file.py", "test_bot_dms.py", "test_bot_workflows.py", "test_startup_and_cli.py",
    "test_cli_generate.py", "test_inference_workflows.py", "test_sdxl_bot.py", "test_bot_imagine.py",
    "test_worker_imports.py", "test_workers_relay.py", "test_workers_bot.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_backends") and "database" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def harness(settings, tmp_path, migrated_database_file):
    from tests.harness import BotHarness

    copy_migrated_database(migrated_database_file, tmp_path)  # the harness's start migrates no further
    async with BotHarness(settings) as bot:
        yield bot
