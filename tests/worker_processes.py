"""Separate `sdbot worker` processes for the tests: a config file, starting, stopping, and
reading the rows they write."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from bot.config import Settings
from bot.jobs.params import GenerationOptions, resolve_parameters
from bot.jobs.queue import JobQueue, Requester
from db.models import Job
from db.session import Database

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240.0  # a fresh worker process imports torch: slow on a busy machine


def worker_config(folder: Path, database_url: str, model_dir: Path, **worker: object) -> Path:
    """A config file for the tiny model at its smallest (64 px, 1 step), separate workers."""
    options = {"device": "cpu", "builtin": False, "heartbeat_s": 0.5, "lease_timeout_s": 4.0, **worker}
    lines = "".join(f"{key} = {_toml(value)}\n" for key, value in options.items())
    config = folder / "config.toml"
    config.write_text(
        f'database_url = "{database_url}"\noutputs_dir = "{folder / "outputs"}"\ndefault_model = "tiny"\n'
        f'[[models]]\nname = "tiny"\nsource = "{model_dir}"\nbase_size = 64\n'
        "[limits]\nmin_size = 64\nmax_size = 128\ndefault_steps = 1\n"
        "[queue]\nmax_pending_per_user = 10\nmax_attempts = 3\n"
        f"[worker]\n{lines}",
        encoding="utf-8",
    )
    return config


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def start_worker(config: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    """`sdbot worker --name NAME` in a session of its own (a signal to its group reaches its
    inference process too, as a machine's death or freeze would); its log beside the config."""
    log = (config.parent / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(config), "worker", "--name", name, *extra],
        cwd=config.parent, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def signal_worker(worker: subprocess.Popen[bytes], signum: int) -> None:
    os.killpg(worker.pid, signum)


def worker_log(config: Path, name: str) -> str:
    return (config.parent / f"{name}.log").read_text(errors="replace")


async def stop_worker(worker: subprocess.Popen[bytes], timeout_s: float = 120.0) -> int:
    worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while worker.poll() is None:
        if time.monotonic() > deadline:
            signal_worker(worker, signal.SIGKILL)
            raise AssertionError("the worker did not stop on SIGTERM")
        await asyncio.sleep(0.1)
    return worker.returncode


async def queue_jobs(db: Database, settings: Settings, members: int, per_member: int, **options: object) -> list[int]:
    """``per_member`` jobs of each member, queued in rounds (member 1's first, member 2's first...)."""
    queue = JobQueue(db, settings.queue)
    ids = []
    for number in range(per_member):
        for member in range(1, members + 1):
            chosen = {"prompt": f"m{member} #{number}", "steps": 1, "count": 1, **options}
            params = resolve_parameters(GenerationOptions(**chosen), settings)
            ids.append((await queue.enqueue(params, Requester(member, f"member{member}"))).id)
    return ids


async def jobs_where(db: Database, *conditions: object) -> list[Job]:
    async with db.session() as session:
        return list(await session.scalars(select(Job).where(*conditions).order_by(Job.id)))


async def wait_for(check, what: str, timeout_s: float = START_TIMEOUT_S, logs=lambda: ""):  # type: ignore[no-untyped-def]
    """Poll ``check()`` (async) until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        await asyncio.sleep(0.1)
    return value
