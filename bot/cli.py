"""The command line: run the bot, migrate, generate locally, build a tiny test model.

    sdbot run                     check the token, migrate, start the worker, connect to Discord
    sdbot migrate                 bring the database schema up to date
    sdbot backup PATH [--force]   a consistent copy of the database, safe while the bot runs
    sdbot check [--no-worker]     is everything ready to run? (exit status 0 or 1)
    sdbot models [--hash]         the models found and configured, and the files skipped and why
    sdbot generate "a prompt"     one job through the same queue and worker, no Discord
    sdbot worker --name gpu1      a worker on its own (one per GPU, any machine): claims from the database
    sdbot make-tiny-model DIR     a tiny random-weight model folder, for smoke tests

`--config FILE` goes before or after the command; `--debug` logs the tracebacks behind the
one-sentence start-up errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bot.cli_generate import add_generate_options, generate_parameters
from bot.config import ConfigError, Settings, discover, load_settings, without_password
from bot.errors import UserError
from bot.health import run_checks
from bot.jobs.dispatcher import Dispatcher, WorkerStartError
from bot.jobs.network_checks import check_job_networks
from bot.jobs.queue import JobQueue, QueueEntry, Requester
from bot.jobs.worker_agent import AgentOptions, run_worker_agent
from bot.jobs.worker_relay import WorkerRelay
from bot.model_catalog import ModelCatalog, model_files
from bot.model_hashes import FileHashes
from db.backup import BackupError, backup_database
from bot.service import AlreadyRunning, InstanceLock, StopSignals
from db.migrate import upgrade_database
from db.models import Job, JobStatus
from db.session import Database, DatabaseInUse, DatabaseUnavailable
from inference.common.model_folders import SkippedFile
from inference.common.protocol import LOG_LEVEL_VARIABLE, JobProgress, ModelLoading

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
    if args.debug:
        os.environ[LOG_LEVEL_VARIABLE] = "DEBUG"  # the worker process inherits it
    logging.basicConfig(
        level=os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "make-tiny-model":
        # The model is built by inference/ in its own process: bot/ never imports torch.
        code = subprocess.call([sys.executable, "-m", "inference.tiny", args.folder])
        if code == 0:
            print(tiny_model_usage(Path(args.folder).resolve()))
        return code
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
    if args.command == "models" and not args.hash:  # a reader too
        return asyncio.run(_list_models(settings, compute_hashes=False))
    if args.command == "worker":  # one of many: it claims under a lease, not the bot's lock
        return asyncio.run(run_worker_agent(settings, AgentOptions(args.name, args.device, tuple(args.models))))
    if args.command == "run" and not settings.discord.token:
        print(NO_TOKEN_HELP, file=sys.stderr)
        return 2
    try:
        with InstanceLock(settings.database_url):
            return _locked_command(settings, args)
    except (AlreadyRunning, DatabaseInUse) as error:
        print(error, file=sys.stderr)
        return 1
    except DatabaseUnavailable as error:  # a wrong URL, a server down: one line, no traceback
        print(error, file=sys.stderr)
        return 2


def tiny_model_usage(folder: Path) -> str:
    """How to try the tiny model: at its own small size and a few steps it makes an image in
    seconds on a CPU; at the defaults (512 px, 25 steps, 4 images) it takes minutes."""
    return f"""
Wrote a tiny random-weight model to {folder}.
Its images are noise: it checks that the install works, quickly only at its own small size.
Save these lines as smoke.toml (relative paths are read from the file's folder):

default_model = "tiny"
database_url = "sqlite+aiosqlite:///smoke/sdbot.sqlite3"
outputs_dir = "smoke/outputs"

[[models]]
name = "tiny"
source = "{folder.as_posix()}"
base_size = 64

[limits]
min_size = 64
default_steps = 4
default_count = 1

then run:
    sdbot --config smoke.toml generate "a lighthouse"
"""


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
    if args.command == "models":
        return asyncio.run(_list_models(settings, compute_hashes=True))
    return asyncio.run(_generate(settings, args))


MODELS_DESCRIPTION = """\
List every model members can pick: its name, family, file size, A1111's short hash (once
computed: the bot hashes files in the background, or run with --hash) and where it is read
from; then every file of the [a1111] checkpoint folders that was skipped, and why. Needs
neither Discord nor the worker."""
CONFIG_HELP = (
    "the TOML settings file (default: config.toml in the current directory; missing: the defaults "
    "and environment); relative paths in it are read from its folder"
)
RUN_DESCRIPTION = """\
Migrate the database, check the Discord token (one request to Discord, before any model
loads), start the image worker, load the default model, sync the slash commands and connect.
The token comes from DISCORD_TOKEN or [discord] token. Stops in order on Ctrl-C or SIGTERM.
Exit status: 0 stopped, 1 the worker or Discord failed, 2 no token, a refused token or a bad
configuration."""
GENERATE_DESCRIPTION = """\
Run one /imagine job (or, with --image, one /img2img job) on this machine, through the same
queue and worker as the bot, without Discord, and print where its images were written
(outputs_dir). An option left out takes the configured default ([limits] and [images] in
config.toml); values past them are refused, as the bot refuses them. For a quick smoke test
use a tiny model (sdbot make-tiny-model)."""

WORKER_DESCRIPTION = """\
Run one image worker for one GPU, apart from the bot (set [worker] builtin = false in the
bot's config): it claims jobs from the database the bot uses (PostgreSQL for workers on other
machines), writes images under outputs_dir/NAME (a folder shared with the bot), and reports
through the database. It never migrates: it refuses a database whose schema is older than
its code. Stops on Ctrl-C or SIGTERM, handing its job back to the queue. Exit status: 0
stopped, 1 the worker process failed, 2 refused (database, schema, storage, name in use)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdbot", description="A Stable Diffusion bot for Discord communities.")
    parser.add_argument("--config", default="config.toml", help=CONFIG_HELP)
    parser.add_argument(
        "--debug", action="store_true",
        help=f"log at debug level, with the tracebacks behind start-up errors (or set {LOG_LEVEL_VARIABLE}=DEBUG)",
    )
    # --config is also accepted after the command (sdbot generate --config x.toml); SUPPRESS keeps
    # the one given before it when none is given after.
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", parents=[config_after], help="migrate the database, start the worker and connect to Discord",
        description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser("migrate", parents=[config_after], help="bring the database schema up to date")
    backup = commands.add_parser(
        "backup", parents=[config_after], help="copy the database consistently, even while the bot runs (SQLite)"
    )
    backup.add_argument("path", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    check = commands.add_parser(
        "check", parents=[config_after], help="check config, Discord token, database, models and worker; exit status 0 when all pass"
    )
    check.add_argument("--no-worker", action="store_true", help="skip starting the worker (health checks beside a running bot)")
    models = commands.add_parser(
        "models", parents=[config_after], help="list the models (with [a1111], those found) and every file skipped and why",
        description=MODELS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--hash", action="store_true", help="compute the missing sha256 hashes now (minutes for big files)")
    generate = commands.add_parser(
        "generate", parents=[config_after], help="generate images locally, through the queue and worker",
        description=GENERATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_generate_options(generate)
    worker = commands.add_parser(
        "worker", parents=[config_after], help="run a worker on its own: it claims jobs from the database",
        description=WORKER_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--name", default=socket.gethostname(), help="this worker's name, unique among the workers (default: the host name)")
    worker.add_argument("--device", default="", help='its GPU ("cuda:1") or "cpu" (default: [worker] device)')
    worker.add_argument(
        "--models", nargs="+", default=[], metavar="MODEL",
        help="the configured models it may load (default: all); jobs for others go to other workers",
    )
    tiny = commands.add_parser(
        "make-tiny-model", help="write a tiny random-weight model folder (tests, smoke runs)",
        description="Write a tiny random-weight SD-1.5-shaped model (a few MB; its images are noise) and "
        "print the settings to try it with.",
    )
    tiny.add_argument("folder", help="the folder to write (created; replaced if it exists)")
    return parser


async def _list_models(settings: Settings, *, compute_hashes: bool) -> int:
    db = Database(settings.database_url)
    hashes = FileHashes(db)
    catalog = ModelCatalog(settings, hashes)
    try:
        if compute_hashes:
            await upgrade_database(db.engine)
            await catalog.hash_files()
        else:
            await hashes.load()
    except SQLAlchemyError as error:  # no database yet, or not migrated: the hashes are unknown
        log.debug("stored hashes not read", exc_info=error)
    finally:
        await db.close()
    skipped = discover(settings.model_entries, settings.a1111)[2] if settings.a1111.root else []
    print(models_report(settings, catalog.known_hashes(), skipped))
    return 0


def models_report(settings: Settings, hashes: Mapping[str, str], skipped: Sequence[SkippedFile]) -> str:
    """`sdbot models`: one line per model, then the skipped files with their reasons."""
    rows = [("NAME", "FAMILY", "SIZE", "HASH", "WHERE")]
    for model in settings.models:
        path = Path(model.source)
        size = f"{path.stat().st_size / 1e9:.2f} GB" if path.is_file() else "-"
        family = model.family or ("diffusers" if path.is_dir() else "hub")
        marks = " (default)" if model.name == settings.default_model else ""
        marks += " (hidden)" if model.hidden else ""
        inpaint = f" + inpainting {model.inpaint_source}" if model.inpaint_source else ""
        short = hashes.get(model.source, "")[:10] or "-"
        rows.append((model.name + marks, family, size, short, model.source + inpaint))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{len(settings.models)} model(s):"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows]
    if settings.a1111.root:
        lines.append(f"{len(skipped)} file(s) skipped in {', '.join(settings.a1111.folders('checkpoint_dirs'))}:")
        lines += [f"  {file.path}: {file.reason}" for file in skipped] or ["  (none)"]
    return "\n".join(lines)


async def _migrate(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        await upgrade_database(db.engine)
    finally:
        await db.close()


async def _start(
    settings: Settings, stop: StopSignals | None = None
) -> tuple[Database, JobQueue, Dispatcher | WorkerRelay] | None:
    """The database migrated and the worker ready; None when either failed (said why) or a
    stop was requested in the meantime. With [worker] builtin = false no worker starts here:
    the relay of the separate workers' rows (`sdbot worker`) stands for it."""
    db = Database(settings.database_url)
    try:
        await db.take_instance_lock()  # PostgreSQL's one bot per database (SQLite: InstanceLock)
    except DatabaseInUse:
        await db.close()
        raise
    # A signal does not interrupt the migration (one transaction): it is checked after it.
    await upgrade_database(db.engine)
    if stop is not None and stop.requested.is_set():
        await db.close()
        return None
    queue = JobQueue(db, settings.queue)
    if not settings.worker.builtin:
        log.info("[worker] builtin = false: jobs run on separate workers (sdbot worker)")
        return db, queue, WorkerRelay(queue, settings.worker.lease_timeout_s, settings.worker.heartbeat_s)
    hashes = FileHashes(db)
    await hashes.load()  # the worker is told the hashes known, and hashes no file twice
    dispatcher = Dispatcher(
        queue,
        settings.worker_config(hashes.known(model_files(settings))),
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
    import aiohttp
    import discord

    from bot.client import CommandSyncRefused, create_bot
    from bot.discord_token import TokenProblem, check_token

    # The bot has no voice commands: discord.py's warnings about voice packages only mislead.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    with StopSignals() as stop:
        # Before the worker loads models (minutes for a model downloaded on first use).
        try:
            account = await stop.unless_stopped(check_token(settings.discord.token))
        except TokenProblem as problem:
            print(problem, file=sys.stderr)
            return 2 if problem.refused else 1
        if account is None:
            return 0
        log.info("Discord accepted the token of the bot account %s", account)
        started = await _start(settings, stop)
        if started is None:
            return 0 if stop.requested.is_set() else 1
        db, queue, dispatcher = started
        bot = create_bot(settings, queue, dispatcher)
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
        except CommandSyncRefused as refusal:
            log.debug("the command sync failed", exc_info=refusal.__cause__)
            print(refusal, file=sys.stderr)
            return 1
        except (aiohttp.ClientError, OSError, discord.GatewayNotFound, discord.ConnectionClosed) as error:
            log.debug("the connection to Discord failed", exc_info=error)
            print(
                f"Lost the connection to Discord ({error or type(error).__name__}): check this machine's network, "
                "DNS and firewall, then start the bot again (`sdbot --debug run` logs the details).",
                file=sys.stderr,
            )
            return 1
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

    def model_loading(self, job: Job, loading: ModelLoading) -> None:
        print(f"job #{job.id}: {loading.summary}")

    def job_finished(self, job: Job) -> None:
        self.job = job
        self.done.set()

    def job_requeued(self, job: Job, reason: str) -> None:
        print(f"job #{job.id} re-queued: {reason}")

    def queue_moved(self, waiting: list[QueueEntry]) -> None:
        pass  # the console runs one job


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        params = generate_parameters(settings, args)
        check_job_networks(settings, [params])
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
