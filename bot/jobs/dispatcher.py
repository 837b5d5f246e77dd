"""The dispatcher: feeds the worker process one job, or one batch of compatible jobs, at a
time and records what comes back.

It owns the worker process and one asyncio inbox. New jobs only *wake* it (the job itself is
already a pending row); worker events arrive in the same inbox from the reader thread. For
each event it updates the job's row first and then tells the transport (Discord, or the
console) through a `JobEvents` sink, whose methods only schedule work, so a slow Discord edit
never delays the next job.

It knows nothing of Discord. A worker that dies is noticed (its pipe closes), every job it
held is re-queued once or failed with a message, and a new worker is started.

Batching (inference/batching.py): when the worker is free the queue claims the fairest job and
the waiting jobs that may share its pass, up to ``WorkerConfig.max_batch_images`` images; they
go out as one RunBatch. Events stay per job, so each job of ``running`` ends on its own.

The worker is free once every job it holds is ``saving`` (JobSaving: its images are made and
being written on a thread): the next job's GPU work then overlaps those PNGs. A saving job
stays in ``running`` until its final event, so a crash still re-queues it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.jobs.job_rows import generate_request
from bot.jobs.queue import CancelOutcome, JobQueue, QueueEntry, Recovery
from bot.jobs.routing import ClaimingWorker
from bot.jobs.worker_process import WorkerExited, WorkerProcess
from db.base import Base
from db.models import Job
from inference.common.face_restorer_files import face_restoration_status
from inference.common.protocol import (
    CancelJob,
    Event,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobSaving,
    JobStarted,
    ModelLoading,
    ModelSpec,
    RunBatch,
    RunJob,
    UpdateModels,
    WorkerConfig,
    WorkerReady,
    WorkerStartupFailed,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Waiting jobs whose status messages are refreshed when the queue moves: every one of them
# would cost an edit per job started, which Discord's rate limits do not allow at scale.
REFRESHED_POSITIONS = 5
# The longest a new job's answer waits for the dispatcher's claim (wake_and_wait).
WAKE_WAIT_S = 0.5
RESTART_REASON = "The bot restarted while your job was running."
CRASH_REASON = "The image worker stopped unexpectedly while running your job."


class JobEvents(Protocol):
    """What the dispatcher tells the transport. Implementations schedule work and return."""

    def job_started(self, job: Job) -> None: ...

    def job_progress(self, job: Job, progress: JobProgress) -> None: ...

    def model_loading(self, job: Job, loading: ModelLoading) -> None:
        """The job waits on its model's first load (bytes of its files read so far)."""

    def job_finished(self, job: Job) -> None:
        """The job is completed (images loaded), failed (job.error) or canceled."""

    def job_requeued(self, job: Job, reason: str) -> None: ...

    def queue_moved(self, waiting: list[QueueEntry]) -> None:
        """The first waiting jobs, with their new positions, after a job started."""


# A row made from each completed job, written in the completion's own transaction (the bot's
# audit entry of the outcome: one write transaction fewer per job).
CompletionRow = Callable[[Job], Base | None]

# Asked about each claimed job before the worker gets it: why it should not run (its server,
# channel or owner is gone; the bot side reads Discord and audits it), or None to run it.
TargetCheck = Callable[[Job], Awaitable[str | None]]


class WorkerStartError(Exception):
    """The worker could not start: a model cannot be loaded, or the process died."""


@dataclass(frozen=True, slots=True)
class _Wake:
    looked: asyncio.Future[None] | None = None  # done once the dispatcher has looked for work


async def plain_wait(awaitable: Awaitable[T], *, reason: str) -> T:
    return await awaitable


class Dispatcher:
    def __init__(
        self,
        queue: JobQueue,
        worker_config: WorkerConfig,
        *,
        startup_timeout_s: float = 600.0,
        start_method: str = "spawn",
    ) -> None:
        self.queue = queue
        self.worker_config = worker_config
        self.startup_timeout_s = startup_timeout_s
        self.start_method = start_method  # worker_process.START_METHODS
        self.events: JobEvents | None = None
        # How the dispatcher waits for input from outside the event loop (the worker, new jobs).
        # A test harness that must know about such waits (simcord) replaces it.
        self.external_wait: Callable[..., Awaitable[Any]] = plain_wait
        self.target_check: TargetCheck | None = None
        self.completion_row: CompletionRow | None = None
        # A separate worker (`sdbot worker`) claims under its name and a lease, and recovers
        # only its own jobs at start; None: the bot's built-in worker, the only one.
        self.claiming: ClaimingWorker | None = None
        self.jobs_done = 0
        self.last_model: str | None = None  # the model of the last job sent (it is loaded now)
        self.ready: WorkerReady | None = None
        # The jobs the worker holds (one RunJob, or the jobs of a RunBatch), by id, in order.
        self.running: dict[int, Job] = {}
        # Those of them whose images are made and being written (JobSaving): not the GPU's.
        self.saving: set[int] = set()
        # The last claim found nothing more waiting, and nothing that may queue a job (a wake,
        # a job handed back, a new worker) came since: the next claim would come back empty.
        # Skipping it saves a write transaction twice a job (when the worker starts saving,
        # and when the job completes) on a bot that is not busy.
        self._nothing_waits = False
        self._inbox: asyncio.Queue[Event | WorkerExited | _Wake] = asyncio.Queue()
        self._worker: WorkerProcess | None = None
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._restart_delay = 1.0
        self._wakes_handled: list[asyncio.Future[None]] = []
        # Set by stop(): no job is claimed any more, and the running ones are waited for.
        self._stopping = False
        self._nothing_running = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def start_worker(self) -> WorkerReady:
        """Spawn the worker and wait until its models are loaded."""
        self._loop = asyncio.get_running_loop()
        self._spawn()
        try:
            async with asyncio.timeout(self.startup_timeout_s):
                while self.ready is None:
                    item = await self.external_wait(self._inbox.get(), reason="worker start-up")
                    if isinstance(item, WorkerStartupFailed):
                        raise WorkerStartError(item.message)
                    if isinstance(item, WorkerExited) and item.generation == self._generation:
                        raise WorkerStartError(f"The worker process exited during start-up (code {item.exitcode}).")
                    if isinstance(item, WorkerReady):
                        self.ready = item
        except TimeoutError:
            raise WorkerStartError(f"The worker did not start within {self.startup_timeout_s:g} s.") from None
        except BaseException:
            await self._stop_worker()
            raise
        log.info("worker ready on %s (%s); models: %s", self.ready.device, self.ready.dtype, ", ".join(self.ready.models))
        log.info("%s", face_restoration_status(self.worker_config.face_restorer_dirs))
        return self.ready

    def run(self, events: JobEvents) -> asyncio.Task[None]:
        """Start dispatching; call after start_worker, from the task that owns the bot."""
        self.events = events
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="sdbot-dispatcher")
        return self._task

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop dispatching and the worker. The jobs the worker holds may finish (and their
        PNGs be written) within ``grace_s``; those still running then go back to the queue,
        without counting an attempt: a restart is not the job's fault."""
        self._stopping = True
        if grace_s > 0 and self.running and self._task is not None:
            self._nothing_running.clear()
            try:
                async with asyncio.timeout(grace_s):
                    await self._nothing_running.wait()
            except TimeoutError:
                log.info("jobs %s did not finish within %g s; they go back to the queue", list(self.running), grace_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for job_id, job in list(self.running.items()):
            await self.queue.return_to_queue(job_id, job.lease_token)
        self.running.clear()
        self.saving.clear()
        await self._stop_worker()

    def wake(self) -> None:
        self._inbox.put_nowait(_Wake())

    async def wake_and_wait(self, limit_s: float = WAKE_WAIT_S) -> None:
        """Wake the dispatcher and wait (at most ``limit_s``) until it has looked for work:
        claimed jobs for an idle worker, or found it busy. A new job's place in line is then
        read once, without racing the claim for the database, and the claim goes first."""
        if self._task is None or self._task.done():
            self.wake()
            return
        looked = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Wake(looked))
        try:
            # The dispatcher may be busy for longer (a worker restarting): the answer does not wait.
            await asyncio.wait_for(asyncio.shield(looked), limit_s)
        except TimeoutError:
            pass

    async def cancel(self, job_id: int) -> tuple[Job, CancelOutcome]:
        """Cancel a job wherever it is; the caller has checked the user may."""
        job, outcome = await self.queue.request_cancel(job_id)
        if outcome is CancelOutcome.STOPPING and job_id in self.running:
            assert self._worker is not None
            self._worker.send(CancelJob(job_id))
        elif outcome is CancelOutcome.CANCELED and self.events is not None:
            self.events.job_finished(job)
        return job, outcome

    def interrupt(self, job_id: int) -> None:
        """Stop a job the worker runs whose row is no longer this worker's (canceled, or its
        lease expired and the job went back to the queue); its images, if made, are dropped."""
        if job_id in self.running and self._worker is not None:
            self._worker.send(CancelJob(job_id))

    def update_models(self, models: tuple[ModelSpec, ...]) -> None:
        """Serve these models from now on (bot.model_catalog): the worker is told between two
        jobs, and a restarted worker starts with them."""
        self.worker_config = replace(self.worker_config, models=models)
        self._nothing_waits = False
        if self._worker is not None:
            self._worker.send(UpdateModels(models))

    def kill_worker(self) -> None:
        """Kill the worker process as a crash would (for tests and the admin's last resort)."""
        if self._worker is not None:
            self._worker.kill()

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._recover_interrupted()
        while True:
            try:
                await self._dispatch_if_idle()
            finally:
                self._answer_wakes()
            item = await self.external_wait(self._inbox.get(), reason="waiting for jobs and worker events")
            await self._handle(item)
            if not self.running:  # each finished job's row is written by now
                self._nothing_running.set()

    def _answer_wakes(self) -> None:
        wakes, self._wakes_handled = self._wakes_handled, []
        for looked in wakes:
            if not looked.done():
                looked.set_result(None)

    async def _recover_interrupted(self) -> None:
        """Rows left running belong to a bot that died: their worker died with it. (A separate
        worker's: those it held under its name before it died.)"""
        for job_id in await self.queue.running_job_ids(self.claiming.name if self.claiming else None):
            job, recovery = await self.queue.release_interrupted(job_id, RESTART_REASON)
            self._report_recovery(job, recovery, RESTART_REASON)

    @property
    def current(self) -> Job | None:
        """The job the worker generates (the first of its batch); None when it is idle."""
        return next((job for job_id, job in self.running.items() if job_id not in self.saving), None)

    async def _dispatch_if_idle(self) -> None:
        if self.ready is None or self.current is not None or self._stopping or self._nothing_waits:
            return
        jobs: list[Job] = []
        while not jobs:  # each pass claims at least one job, or returns
            claim = await self.queue.claim(max(1, self.worker_config.max_batch_images), self.claiming)
            self._nothing_waits = not claim.more_waiting
            if not claim.jobs:
                return
            jobs = await self._still_deliverable(claim.jobs)
        self.running.update((job.id, job) for job in jobs)
        self.last_model = jobs[0].model
        assert self._worker is not None
        requests = tuple(generate_request(job) for job in jobs)
        # A worker that died a moment ago will not take them; its exit event re-queues them.
        self._worker.send(RunJob(requests[0]) if len(requests) == 1 else RunBatch(requests))
        if len(jobs) > 1:
            log.info("running jobs %s as one batch", [job.id for job in jobs])
        # A separate worker's bot reads the rows. When nothing else waited as the claim took
        # its jobs, no waiting job has moved (one queued since answers with its own place).
        if self.events is not None and self.claiming is None and claim.more_waiting:
            waiting = await self.queue.active_entries(waiting_only=True, first=REFRESHED_POSITIONS)
            self.events.queue_moved(waiting)

    async def _still_deliverable(self, jobs: list[Job]) -> list[Job]:
        """The claimed jobs whose result still has somewhere to go; the others are canceled
        before they cost the GPU anything (Discord may not have told the bot yet, or may never:
        a member's leaving or lost role is seen only here)."""
        if self.target_check is None:
            return jobs
        reasons = await asyncio.gather(*(self.target_check(job) for job in jobs), return_exceptions=True)
        kept = []
        for job, reason in zip(jobs, reasons, strict=True):
            if isinstance(reason, Exception):  # a broken check must not stop the queue: run it
                log.error("checking where job %s goes failed", job.id, exc_info=reason)
            if not isinstance(reason, str):
                kept.append(job)
                continue
            log.info("job %s canceled as it was claimed: %s", job.id, reason)
            canceled = await self.queue.cancel_claimed(job.id)
            if canceled is not None and self.events is not None:
                self.events.job_finished(canceled)
        return kept

    async def _handle(self, item: Event | WorkerExited | _Wake) -> None:
        match item:
            case _Wake(looked=looked):
                self._nothing_waits = False  # a job may have been queued (or a lease expired)
                if looked is not None:
                    self._wakes_handled.append(looked)
                return
            case WorkerReady():
                self.ready = item
                self._nothing_waits = False
                self._restart_delay = 1.0
            case WorkerStartupFailed(message=message):
                log.error("worker failed to start again: %s", message)
            case WorkerExited(generation=generation) if generation == self._generation:
                await self._on_worker_exit(item)
            case WorkerExited():
                return  # a worker we stopped on purpose
            case JobStarted(job_id=job_id) if job_id in self.running:
                assert self.events is not None
                self.events.job_started(self.running[job_id])
            case ModelLoading(job_id=job_id) if job_id in self.running:
                assert self.events is not None
                self.events.model_loading(self.running[job_id], item)
            case JobProgress(job_id=job_id) if job_id in self.running:
                assert self.events is not None
                self.events.job_progress(self.running[job_id], item)
            case JobSaving(job_id=job_id) if job_id in self.running:
                self.saving.add(job_id)  # the loop then sends the next job, if one waits
            case JobCompleted(job_id=job_id) if job_id in self.running:
                completed = await self.queue.complete(item, self._release(job_id), with_row=self.completion_row)
                # Canceled while the last step ran, or (a separate worker) its lease lost and
                # the job run elsewhere: drop its files.
                if completed is None:
                    _remove_files([image.path for image in item.images] + [item.grid_path])
                    await self._report_final(job_id)
                else:
                    self.jobs_done += 1
                    if self.events is not None:
                        self.events.job_finished(completed)  # complete() returns it with its images
            case JobFailed(job_id=job_id, message=message, detail=detail) if job_id in self.running:
                await self.queue.fail(job_id, message, detail, self._release(job_id))
                await self._report_final(job_id)
            case JobCanceled(job_id=job_id) if job_id in self.running:
                lease_token = self._release(job_id)
                if self.claiming is not None:
                    # Stopped as no longer its own: if the row says otherwise after all, the
                    # job goes back to the queue rather than stay "running" on nobody.
                    await self.queue.return_to_queue(job_id, lease_token)
                    self._nothing_waits = False
                await self._report_final(job_id)
            case _:
                log.debug("ignoring %r: not about a running job", item)

    def _release(self, job_id: int) -> str | None:
        """The job leaves the worker's hands; its lease token (None: the built-in worker's)."""
        self.saving.discard(job_id)
        return self.running.pop(job_id).lease_token

    async def _report_final(self, job_id: int) -> None:
        job = await self.queue.get(job_id)
        if job is not None and not job.is_active and self.events is not None:
            self.events.job_finished(job)

    async def _on_worker_exit(self, exited: WorkerExited) -> None:
        self.ready = None
        log.error("worker process exited (code %s); starting a new one", exited.exitcode)
        held, self.running = self.running, {}
        self.saving.clear()
        self._nothing_waits = False  # its jobs go back to the queue
        for job_id, held_job in held.items():
            job, recovery = await self.queue.release_interrupted(job_id, CRASH_REASON, held_job.lease_token)
            self._report_recovery(job, recovery, CRASH_REASON)
        if self._stopping:
            return  # stop() is waiting for nothing now: no new worker for a bot going away
        await asyncio.sleep(self._restart_delay)
        # Back off when the new worker keeps dying too, instead of spinning.
        self._restart_delay = min(self._restart_delay * 2, 60.0)
        self._spawn()

    def _report_recovery(self, job: Job | None, recovery: Recovery, reason: str) -> None:
        if job is None or self.events is None:
            return
        if recovery is Recovery.REQUEUED:
            self.events.job_requeued(job, reason)
        elif recovery is Recovery.FAILED:
            self.events.job_finished(job)

    def _spawn(self) -> None:
        assert self._loop is not None
        self._generation += 1
        loop = self._loop

        def deliver(item: Event | WorkerExited) -> None:  # runs on the reader thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._inbox.put_nowait, item)

        self._worker = WorkerProcess(
            self.worker_config, deliver, generation=self._generation, start_method=self.start_method
        )
        self._worker.start()

    async def _stop_worker(self) -> None:
        worker, self._worker, self.ready = self._worker, None, None
        if worker is not None:
            await asyncio.to_thread(worker.stop)


def _remove_files(paths: list[str | None]) -> None:
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)

