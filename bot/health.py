"""`sdbot check`: is this installation ready to run? One line per check and an exit status
(0: all passed, 1: not), for the admin after a change and for health checks.

It changes nothing: the Discord token is tried with the one cheap request `sdbot run` makes
before anything else (bot.discord_token), the database is inspected, never migrated (and never
created), models are looked for on disk and in the Hugging Face cache, never downloaded. The worker check starts a
worker and loads the default model, as `sdbot run` would; `--no-worker` skips it, which a
health check beside a running bot wants (a second worker would share its GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bot.config import Settings
from bot.discord_token import TokenProblem, check_token
from bot.jobs.dispatcher import Dispatcher, WorkerStartError
from bot.jobs.leases import WorkerRegistry
from bot.jobs.queue import JobQueue
from bot.service import sqlite_file
from db.migrate import schema_revisions
from db.session import Database, DatabaseUnavailable, ensure_reachable
from inference.common.sources import SourceKind, classify_source, find_source_problem

MIGRATE_HINT = "run `sdbot migrate` (or `sdbot run`, which migrates first)"


@dataclass(frozen=True)
class Outcome:
    check: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'}  {self.check}: {self.detail}"


async def run_checks(settings: Settings, config_path: str, *, with_worker: bool, report: Callable[[str], None]) -> bool:
    """Every check, each reported as it ends (the worker's takes a while); True when all pass."""
    config_note = "" if Path(config_path).is_file() else f" ({config_path} not found: defaults and environment)"
    outcomes = [Outcome("config", True, f"{len(settings.models)} model(s), default {settings.default_model!r}{config_note}")]
    report(outcomes[0].line())
    for check in (check_discord_token(settings), check_database(settings), check_models(settings)):
        outcome = await check
        outcomes.append(outcome)
        report(outcome.line())
    if with_worker:
        if all(outcome.passed for outcome in outcomes):
            outcome = await check_worker(settings)
        else:
            outcome = Outcome("worker", False, "not started: fix the checks above first")
        outcomes.append(outcome)
        report(outcome.line())
    return all(outcome.passed for outcome in outcomes)


async def check_discord_token(settings: Settings) -> Outcome:
    try:
        account = await check_token(settings.discord.token)
    except TokenProblem as problem:
        return Outcome("discord token", False, str(problem))
    return Outcome("discord token", True, f"Discord accepts it: the bot logs in as {account}")


async def check_database(settings: Settings) -> Outcome:
    database_file = sqlite_file(settings.database_url)
    if database_file is not None and not database_file.is_file():
        return Outcome("database", False, f"{database_file} does not exist: {MIGRATE_HINT}")
    try:
        db = Database(settings.database_url)
    except DatabaseUnavailable as error:
        return Outcome("database", False, str(error))
    try:
        await ensure_reachable(db.engine)
        current, head = await schema_revisions(db.engine)
    except DatabaseUnavailable as error:
        return Outcome("database", False, str(error))
    except (SQLAlchemyError, OSError) as error:
        return Outcome("database", False, f"cannot read it: {error}")
    finally:
        await db.close()
    if current != head:
        return Outcome("database", False, f"schema at revision {current or 'none'}, this version needs {head}: {MIGRATE_HINT}")
    return Outcome("database", True, f"reachable, schema up to date ({head})")


async def check_models(settings: Settings) -> Outcome:
    from huggingface_hub import constants

    problems = []
    for spec in settings.worker_config().models:
        for inpaint in (False, True) if spec.inpaint_source else (False,):
            source = spec.inpaint_source if inpaint else spec.source
            problem = find_source_problem(spec, offline=True, cache_dir=constants.HF_HUB_CACHE, inpaint=inpaint)
            if problem is not None and classify_source(source) is SourceKind.HUB_ID:
                problem = f"hub id not in the local cache ({constants.HF_HUB_CACHE}): `sdbot run` downloads it unless HF_HUB_OFFLINE is set"
            if problem is not None:
                problems.append(f"{spec.name!r} ({source}): {problem}")
    if problems:
        return Outcome("models", False, "; ".join(problems))
    return Outcome("models", True, ", ".join(model.name for model in settings.models) + " present")


async def check_worker(settings: Settings) -> Outcome:
    if not settings.worker.builtin:
        return await check_separate_workers(settings)
    db = Database(settings.database_url)
    dispatcher = Dispatcher(
        JobQueue(db, settings.queue),
        settings.worker_config(),
        startup_timeout_s=settings.worker.startup_timeout_s,
        start_method=settings.worker.start_method,
    )
    try:
        ready = await dispatcher.start_worker()
    except WorkerStartError as error:
        return Outcome("worker", False, str(error))
    finally:
        await dispatcher.stop()
        await db.close()
    return Outcome("worker", True, f"started on {ready.device} ({ready.dtype}), models loaded: {', '.join(ready.models)}")


async def check_separate_workers(settings: Settings) -> Outcome:
    """[worker] builtin = false: the bot starts none; are the separate ones (`sdbot worker`) alive?"""
    db = Database(settings.database_url)
    try:
        statuses = await WorkerRegistry(JobQueue(db, settings.queue), settings.worker.lease_timeout_s).workers()
    except (SQLAlchemyError, OSError) as error:
        return Outcome("worker", False, f"cannot read the workers: {error}")
    finally:
        await db.close()
    live = [worker for worker in statuses if worker.live]
    if not live:
        return Outcome("worker", False, "builtin = false and no separate worker heartbeats: start one per GPU with `sdbot worker --name NAME`")
    return Outcome("worker", True, "separate workers: " + ", ".join(f"{worker.name} ({worker.device})" for worker in live))
