"""`sdbot worker`: a worker started on its own, for one GPU, claiming from the database.

It runs the same Dispatcher and worker process as `sdbot run`, with three differences: its
claims carry its name and a lease token and take only models it can load (ClaimingWorker);
it writes its images to its own folder under the shared outputs_dir; and it reports to the bot
through the database instead of to Discord: the job rows are the record (status, images,
progress and preview), and on PostgreSQL a NOTIFY wakes the bot at once (bot.jobs.db_events).

Every heartbeat it writes its row (bot.jobs.leases), hands back the jobs of workers that
stopped heartbeating, and checks that the jobs it runs are still its own: one canceled, or
whose lease expired while this worker was frozen or cut off and that went back to the queue,
is stopped and its images dropped. SIGTERM or Ctrl-C hands its jobs back uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from bot.config import Settings, without_password
from bot.jobs.db_events import JOBS_CHANNEL, WAKE_CHANNEL, Listener, notify
from bot.jobs.dispatcher import Dispatcher, WorkerStartError
from bot.jobs.leases import WorkerNameInUse, WorkerRegistry
from bot.jobs.queue import JobQueue, QueueEntry
from bot.jobs.routing import ClaimingWorker
from bot.model_catalog import model_files
from bot.model_hashes import FileHashes
from bot.service import StopSignals
from db.migrate import schema_revisions
from db.models import Job, JobStatus
from db.session import Database, DatabaseUnavailable, ensure_reachable
from inference.common.protocol import JobProgress, ModelLoading

log = logging.getLogger(__name__)

# A job's progress row is written at most this often (its last step always): a hundred GPUs
# stepping 20 times a second would otherwise be the database's busiest writers.
PROGRESS_INTERVAL_S = 0.5
# Separate workers on SQLite (one machine) look for new jobs this often; PostgreSQL wakes them.
SQLITE_POLL_S = 0.25


class AgentRefused(Exception):
    """The worker cannot start here; the message is one line for the admin."""


@dataclass(frozen=True)
class AgentOptions:
    name: str
    device: str  # "" keeps [worker] device
    models: tuple[str, ...]  # the models it may load; () every configured one


class DatabaseEvents:
    """The dispatcher's events, as rows and notifications for the bot (JobEvents)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress_written: dict[int, float] = {}

    def _schedule(self, work) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reporting to the database failed", exc_info=task.exception())

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _changed(self, job: Job) -> None:
        self._schedule(notify(self.db, JOBS_CHANNEL, str(job.id)))

    def job_started(self, job: Job) -> None:
        self._changed(job)

    def job_progress(self, job: Job, progress: JobProgress) -> None:
        now = time.monotonic()
        last = progress.step >= progress.total_steps
        if not last and now - self._progress_written.get(job.id, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._progress_written[job.id] = now
        self._schedule(self._write_progress(job, progress))

    async def _write_progress(self, job: Job, progress: JobProgress) -> None:
        async with self.db.session() as session, session.begin():
            # Fenced like every write about the job: a worker that lost it writes nothing.
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.RUNNING, Job.lease_token == job.lease_token)
                .values(progress_step=progress.step, progress_total=progress.total_steps, progress_preview=progress.preview_jpeg)
            )
        await notify(self.db, JOBS_CHANNEL, str(job.id))

    def model_loading(self, job: Job, loading: ModelLoading) -> None:
        pass  # the member sees "starting" until the first step

    def job_finished(self, job: Job) -> None:
        self._progress_written.pop(job.id, None)
        self._changed(job)

    def job_requeued(self, job: Job, reason: str) -> None:
        self._changed(job)

    def queue_moved(self, waiting: list[QueueEntry]) -> None:
        pass  # the bot works positions out from the rows


def check_writable(folder: Path) -> None:
    """The worker's images folder exists (made) and takes a file, or AgentRefused says why."""
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise AgentRefused(
            f"Cannot write images to {folder}: {error.strerror or error}. Every worker writes to the "
            "shared outputs_dir (a folder all workers and the bot mount at the same path): make it "
            "writable by this user."
        ) from None


async def check_schema(db: Database) -> None:
    """A worker never migrates (the bot, or `sdbot migrate`, does): it refuses an older schema."""
    current, head = await schema_revisions(db.engine)
    if current != head:
        raise AgentRefused(
            f"The database at {without_password(db.url)} is at schema revision {current or 'none'}; this "
            f"worker needs {head}. Run `sdbot migrate` (or start the bot, which migrates) first."
        )


class WorkerAgent:
    def __init__(self, settings: Settings, options: AgentOptions) -> None:
        self.settings = settings
        self.options = options
        self.db = Database(settings.database_url)
        self.queue = JobQueue(self.db, settings.queue)
        self.registry = WorkerRegistry(self.queue, settings.worker.lease_timeout_s)
        self.events = DatabaseEvents(self.db)
        self.outputs = Path(settings.outputs_dir).resolve() / options.name
        configured = [model.name for model in settings.models]
        unknown = sorted(set(options.models) - set(configured))
        if unknown:
            raise AgentRefused(f"--models names {', '.join(unknown)}, not configured here: {', '.join(configured)}")
        self.loadable = options.models or tuple(configured)
        self.dispatcher: Dispatcher | None = None

    async def prepare(self) -> Dispatcher:
        """Checks (database, schema, storage, name), then the worker process loaded."""
        await ensure_reachable(self.db.engine)
        await check_schema(self.db)
        check_writable(self.outputs)
        hashes = FileHashes(self.db)
        await hashes.load()
        full = self.settings.worker_config(hashes.known(model_files(self.settings)))
        # Only the models it may load; it preloads the default one only if that is among them.
        config = replace(
            full, outputs_dir=str(self.outputs),
            models=tuple(spec for spec in full.models if spec.name in self.loadable),
            default_model=full.default_model if full.default_model in self.loadable else self.loadable[0],
            preload=tuple(name for name in full.preload if name in self.loadable),
        )
        if self.options.device:
            config = replace(config, device=self.options.device)
        device = config.device
        await self.registry.register(self.options.name, socket.gethostname(), device, (), self.loadable)
        dispatcher = Dispatcher(
            self.queue, config, startup_timeout_s=self.settings.worker.startup_timeout_s,
            start_method=self.settings.worker.start_method,
        )
        dispatcher.claiming = ClaimingWorker(
            self.options.name, self.loadable, (), self.settings.worker.lease_timeout_s
        )
        self.dispatcher = dispatcher
        return dispatcher

    def loaded(self) -> tuple[str, ...]:
        assert self.dispatcher is not None
        ready = self.dispatcher.ready.models if self.dispatcher.ready else ()
        last = (self.dispatcher.last_model,) if self.dispatcher.last_model else ()
        return tuple(dict.fromkeys(ready + last))

    async def heartbeat(self) -> None:
        """The worker's row, the leases of the gone, and whether its own jobs are still its own."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        await self._write_row()
        dispatcher.claiming = replace(dispatcher.claiming, loaded=self.loaded())  # type: ignore[arg-type]
        for job, recovery in await self.registry.expire_leases():
            log.warning("job %s: its worker stopped heartbeating (%s)", job.id, recovery)
            await notify(self.db, JOBS_CHANNEL, str(job.id))
        if dispatcher.running:
            # Only the jobs held before the read: one claimed during it is not in its answer.
            held = dict(dispatcher.running)
            tokens = await self.registry.lease_tokens(list(held))
            for job_id, job in held.items():
                if dispatcher.running.get(job_id) is job and tokens.get(job_id) != job.lease_token:
                    log.warning("job %s is no longer this worker's (canceled, or its lease expired): stopping it", job_id)
                    dispatcher.interrupt(job_id)

    async def serve(self, stop: StopSignals) -> int:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        listener = Listener(self.db, WAKE_CHANNEL)
        await listener.open()
        async with self._beating():
            ready = await stop.unless_stopped(dispatcher.start_worker())
        if ready is None:
            await listener.close()
            return 0
        print(f"worker {self.options.name} ready on {ready.device}; models {', '.join(self.loadable)}; "
              f"images to {self.outputs}", flush=True)
        running = dispatcher.run(self.events)
        poll_s = SQLITE_POLL_S if self.db.dialect == "sqlite" else self.settings.worker.heartbeat_s
        next_beat = 0.0
        try:
            while not stop.requested.is_set() and not running.done():
                if time.monotonic() >= next_beat:
                    try:
                        await self.heartbeat()
                    except (SQLAlchemyError, OSError) as error:  # the database restarting: try again
                        log.error("heartbeat failed (%s); trying again", error)
                    next_beat = time.monotonic() + self.settings.worker.heartbeat_s
                dispatcher.wake()
                await stop.unless_stopped(listener.wait(min(poll_s, max(0.0, next_beat - time.monotonic()))))
        finally:
            async with self._beating():  # the grace may outlast the lease: the job stays ours
                await dispatcher.stop(self.settings.worker.shutdown_grace_s if stop.requested.is_set() else 0.0)
            await self.events.drain()
            await self.registry.stopped(self.options.name)
            await notify(self.db, JOBS_CHANNEL, "")
            await listener.close()
        if running.done() and not running.cancelled() and running.exception() is not None:
            log.error("the dispatcher stopped", exc_info=running.exception())
            return 1
        return 0

    async def _write_row(self) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        current = dispatcher.current
        await self.registry.heartbeat(self.options.name, current.id if current else None, self.loaded(), dispatcher.jobs_done)

    @contextlib.asynccontextmanager
    async def _beating(self) -> AsyncIterator[None]:
        """The row kept alive while the loop that heartbeats is not running: loading the
        models (minutes), and the grace a stopping worker gives its job."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.settings.worker.heartbeat_s)
                await self._write_row()

        task = asyncio.create_task(beat(), name="sdbot-worker-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.db.close()


async def run_worker_agent(settings: Settings, options: AgentOptions) -> int:
    """`sdbot worker`: 0 stopped, 1 the worker process failed, 2 refused (said why)."""
    with StopSignals() as stop:
        try:
            agent = WorkerAgent(settings, options)
        except (AgentRefused, DatabaseUnavailable) as error:
            print(error, file=sys.stderr)
            return 2
        try:
            await agent.prepare()
            return await agent.serve(stop)
        except (AgentRefused, DatabaseUnavailable, WorkerNameInUse) as error:
            print(error, file=sys.stderr)
            return 2
        except WorkerStartError as error:
            print(f"Cannot start the image worker: {error}", file=sys.stderr)
            return 1
        finally:
            await agent.close()
