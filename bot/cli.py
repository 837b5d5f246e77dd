"""The command line: run the bot, migrate, generate locally, build a tiny test model.

    sdbot run                     migrate the database, start the worker, connect to Discord
    sdbot migrate                 bring the database schema up to date
    sdbot backup PATH [--force]   a consistent copy of the database, safe while the bot runs
    sdbot check [--no-worker]     is everything ready to run? (exit status 0 or 1)
    sdbot generate "a prompt"     one job through the same queue and worker, no Discord
    sdbot make-tiny-model DIR     a tiny random-weight model folder, for smoke tests
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings, load_settings, without_password
from bot.errors import UserError
from bot.health import run_checks
from bot.jobs.dispatcher import Dispatcher, WorkerStartError
from bot.jobs.params import ASPECT_RATIOS, GenerationOptions, resolve_parameters
from bot.jobs.queue import JobQueue, QueueEntry, Requester
from db.backup import BackupError, backup_database
from bot.service import AlreadyRunning, InstanceLock, StopSignals
from db.migrate import upgrade_database
from db.models import Job, JobStatus
from db.session import Database
from inference.common.protocol import JobProgress

log = logging.getLogger("sdbot")

NO_TOKEN_HELP = """\
No Discord bot token is configured.

1. Open https://discord.com/developers/applications, create an application (or pick yours),
   open "Bot" and press "Reset Token" to get a token.
2. Give it to the bot, either in the environment:
       export DISCORD_TOKEN=your-token
   or in config.toml (keep that file private):
       [discord]
       token = "your-token"
3. Invite the bot: "OAuth2" > "URL Generator", scopes "bot" and "applications.commands",
   permissions "Send Messages", "Embed Links", "Attach Files".
"""

CONSOLE_USER = Requester(user_id=0, user_name="console")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "make-tiny-model":
        # The model is built by inference/ in its own process: bot/ never imports torch.
        return subprocess.call([sys.executable, "-m", "inference.tiny", args.folder])
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        if args.command == "check":
            print(f"FAIL  config: {error}")
            return 1
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        passed = asyncio.run(run_checks(settings, args.config, with_worker=not args.no_worker, report=print))
        return 0 if passed else 1
    if args.command == "backup":  # a reader: it runs beside the bot, outside the lock below
        return _backup(settings, args)
    if args.command == "run" and not settings.discord.token:
        print(NO_TOKEN_HELP, file=sys.stderr)
        return 2
    try:
        with InstanceLock(settings.database_url):
            return _locked_command(settings, args)
    except AlreadyRunning as error:
        print(error, file=sys.stderr)
        return 1


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    try:
        written = backup_database(settings.database_url, args.path, force=args.force)
    except BackupError as error:
        print(f"Backup failed: {error}", file=sys.stderr)
        return 2
    print(f"Database backed up to {written}.")
    return 0


def _locked_command(settings: Settings, args: argparse.Namespace) -> int:
    """The commands that write to the database, one process at a time."""
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print(f"Database at {without_password(settings.database_url)} is up to date.")
        return 0
    if args.command == "run":
        return asyncio.run(_run_bot(settings))
    return asyncio.run(_generate(settings, args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdbot", description="A Stable Diffusion bot for Discord communities.")
    parser.add_argument("--config", default="config.toml", help="TOML settings file (default: config.toml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="migrate the database, start the worker and connect to Discord")
    commands.add_parser("migrate", help="bring the database schema up to date")
    backup = commands.add_parser("backup", help="copy the database consistently, even while the bot runs (SQLite)")
    backup.add_argument("path", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    check = commands.add_parser("check", help="check config, database, models and worker; exit status 0 when all pass")
    check.add_argument("--no-worker", action="store_true", help="skip starting the worker (health checks beside a running bot)")
    generate = commands.add_parser("generate", help="generate images locally, through the queue and worker")
    generate.add_argument("prompt")
    generate.add_argument("--negative-prompt")
    generate.add_argument("--aspect", choices=list(ASPECT_RATIOS))
    generate.add_argument("--width", type=int)
    generate.add_argument("--height", type=int)
    generate.add_argument("--steps", type=int)
    generate.add_argument("--cfg", type=float)
    generate.add_argument("--sampler")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--count", type=int)
    generate.add_argument("--model")
    tiny = commands.add_parser("make-tiny-model", help="write a tiny random-weight model folder (tests, smoke runs)")
    tiny.add_argument("folder")
    return parser


async def _migrate(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        await upgrade_database(db.engine)
    finally:
        await db.close()


async def _start(settings: Settings, stop: StopSignals | None = None) -> tuple[Database, JobQueue, Dispatcher] | None:
    """The database migrated and the worker ready; None when either failed (said why) or a
    stop was requested in the meantime."""
    db = Database(settings.database_url)
    # A signal does not interrupt the migration (one transaction): it is checked after it.
    await upgrade_database(db.engine)
    if stop is not None and stop.requested.is_set():
        await db.close()
        return None
    queue = JobQueue(db, settings.queue)
    dispatcher = Dispatcher(
        queue,
        settings.worker_config(),
        startup_timeout_s=settings.worker.startup_timeout_s,
        start_method=settings.worker.start_method,
    )
    try:
        if stop is None:
            await dispatcher.start_worker()
        elif await stop.unless_stopped(dispatcher.start_worker()) is None:
            await db.close()  # start_worker stopped the half-started worker as it was cancelled
            return None
    except WorkerStartError as error:
        print(f"Cannot start the image worker: {error}", file=sys.stderr)
        await db.close()
        return None
    return db, queue, dispatcher


async def _run_bot(settings: Settings) -> int:
    import discord

    from bot.client import SDBot

    with StopSignals() as stop:
        started = await _start(settings, stop)
        if started is None:
            return 0 if stop.requested.is_set() else 1
        db, queue, dispatcher = started
        bot = SDBot(settings, queue, dispatcher)
        try:
            async with bot:
                serving = asyncio.create_task(bot.start(settings.discord.token or ""), name="sdbot-discord")
                await stop.unless_stopped(asyncio.shield(serving))
                if not serving.done():
                    await bot.shut_down(settings.worker.shutdown_grace_s)
                    # Closed mid-login, start() may end in an error about its closed session.
                    await asyncio.gather(serving, return_exceptions=True)
                else:
                    await serving
        except discord.LoginFailure:
            print("Discord refused the token: check DISCORD_TOKEN or [discord] token.", file=sys.stderr)
            return 2
        finally:
            await dispatcher.stop()
            await db.close()
        log.info("stopped")
    return 0


class ConsoleEvents:
    """The dispatcher's events, printed; `done` is set when the console's job ends."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.job: Job | None = None

    def job_started(self, job: Job) -> None:
        print(f"job #{job.id} started")

    def job_progress(self, job: Job, progress: JobProgress) -> None:
        print(f"job #{job.id}: step {progress.step}/{progress.total_steps}")

    def job_finished(self, job: Job) -> None:
        self.job = job
        self.done.set()

    def job_requeued(self, job: Job, reason: str) -> None:
        print(f"job #{job.id} re-queued: {reason}")

    def queue_moved(self, waiting: list[QueueEntry]) -> None:
        pass  # the console runs one job


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    options = GenerationOptions(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        aspect=args.aspect,
        width=args.width,
        height=args.height,
        steps=args.steps,
        cfg_scale=args.cfg,
        sampler=args.sampler,
        seed=args.seed,
        count=args.count,
        model=args.model,
    )
    try:
        params = resolve_parameters(options, settings)
    except UserError as error:
        print(error.message, file=sys.stderr)
        return 2
    started = await _start(settings)
    if started is None:
        return 1
    db, queue, dispatcher = started
    events = ConsoleEvents()
    try:
        job = await queue.enqueue(params, CONSOLE_USER)
        print(f"job #{job.id} queued")
        dispatcher.run(events)
        while events.job is None or events.job.id != job.id:
            events.done.clear()
            await events.done.wait()
        finished = events.job
    finally:
        await dispatcher.stop()
        await db.close()
    if finished.status != JobStatus.COMPLETED:
        print(f"job #{finished.id} {finished.status}: {finished.error or ''}", file=sys.stderr)
        return 1
    for image in finished.images:
        print(f"image {image.index + 1}: seed {image.seed} -> {image.path}")
    if finished.grid_path:
        print(f"grid -> {finished.grid_path}")
    return 0
