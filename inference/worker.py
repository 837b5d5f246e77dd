"""The inference worker process: the bot spawns it and talks to it over two one-way pipes.

    ctx = multiprocessing.get_context("spawn")
    commands_recv, commands_send = ctx.Pipe(duplex=False)
    events_recv, events_send = ctx.Pipe(duplex=False)
    ctx.Process(target=run_worker, args=(config, commands_recv, events_send)).start()

A listener thread reads commands so that a CancelJob is seen while a job runs; the main
thread runs jobs one at a time; a saver thread writes a job's PNGs and sends its final event
while the next job runs (inference.jobs.Saver). Both send events, through one lock (a
Connection is not safe to send on from two threads at once). This module imports no torch at
module level: the bot imports it only to name the process target, and must not pay for torch
in its own process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from inference.common.protocol import (
    CancelJob,
    Event,
    GenerateRequest,
    JobCanceled,
    LOG_LEVEL_VARIABLE,
    RunBatch,
    RunJob,
    Shutdown,
    UpdateModels,
    WorkerConfig,
    WorkerStartupFailed,
)
from inference.common.sources import check_worker_config

if TYPE_CHECKING:  # it imports torch
    from inference.jobs import JobRunner

log = logging.getLogger(__name__)

# Libraries that give their own logger a handler (see _one_handler_for_library_logs).
LIBRARY_LOGGERS = ("huggingface_hub", "diffusers", "transformers")

# The worker runs this much "nicer" than the bot: where they share the CPU's cores (a small
# machine, a CPU-only server, the VAE decode and PNG writing on any machine), the bot's event
# loop is scheduled first, so answering Discord never waits for a core behind the worker's
# threads. A GPU-bound worker mostly waits for the GPU and loses nothing.
WORKER_NICENESS = 10


class CancelBook:
    """Job ids cancelled so far, shared by the listener thread and the job loop.

    A cancel may arrive before its job (the bot cancels a queued job that it already sent), so
    ids are remembered until the job comes; the oldest are dropped past ``capacity`` so cancels
    for jobs that never come cannot grow the set forever.
    """

    def __init__(self, capacity: int = 4096):
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def cancel(self, job_id: int) -> None:
        with self._lock:
            self._ids[job_id] = None
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)

    def is_cancelled(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._ids

    def forget(self, job_id: int) -> None:
        with self._lock:
            self._ids.pop(job_id, None)


class _BotGone(Exception):
    """The events pipe is closed: nobody is left to work for."""


def _send(events: Connection, event: Event) -> None:
    try:
        events.send(event)
    except (BrokenPipeError, EOFError, OSError) as exc:
        raise _BotGone from exc


def _listen(
    commands: Connection,
    pending: queue.Queue[GenerateRequest | RunBatch | UpdateModels | None],
    cancels: CancelBook,
    stopping: threading.Event,
) -> None:
    """Read commands until Shutdown or the pipe closes, then wake the job loop to stop."""
    try:
        while True:
            try:
                command = commands.recv()
            except (EOFError, OSError):
                log.info("command pipe closed; stopping")
                return
            except Exception:  # e.g. an object that does not unpickle: skip it, keep serving
                log.exception("unreadable command; ignored")
                continue
            match command:
                case RunJob(request=request):
                    pending.put(request)
                case RunBatch() | UpdateModels():
                    pending.put(command)
                case CancelJob(job_id=job_id):
                    cancels.cancel(job_id)
                case Shutdown():
                    log.info("shutdown requested")
                    return
                case _:
                    log.warning("ignoring unknown command %r", command)
    finally:
        stopping.set()
        pending.put(None)


def run_worker(config: WorkerConfig, commands: Connection, events: Connection) -> None:
    """Entry point of the worker process; returns when told to shut down or the bot is gone.

    Sends WorkerReady once the models are loaded, or WorkerStartupFailed and returns. On
    Shutdown (or a closed command pipe) a running job stops between two steps and no event is
    sent for it: the bot is going away and its database still holds the job to run again.
    """
    _configure_logging()
    _lower_priority()
    # Ctrl-C in a terminal signals the whole process group: the bot stops in order and tells
    # the worker when (Shutdown); a worker killed by the same keypress would lose its job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(config, commands, events)
    except _BotGone:
        log.warning("events pipe closed; the bot is gone, stopping")
    finally:
        events.close()


def _serve(config: WorkerConfig, commands: Connection, events: Connection) -> None:
    try:
        # The cheap checks first: a config mistake is reported before seconds of imports.
        check_worker_config(config)
        # Heavy imports here, not at module level (see the module docstring).
        from inference.jobs import JobRunner, Saver

        _one_handler_for_library_logs()
        with logging_beside_progress_bars():
            runner = JobRunner.start(config, saver=Saver(background=config.background_saving))
    except Exception as exc:
        if isinstance(exc, ValueError):
            # Written for the admin, who reads it where the bot prints it; the how at debug level.
            log.debug("worker start-up failed", exc_info=exc)
        else:
            log.exception("worker start-up failed")
        _send(events, WorkerStartupFailed(_startup_message(exc)))
        return
    ready = runner.ready_event()
    log.info("worker ready on %s (%s) with models %s", ready.device, ready.dtype, ready.models)
    _send(events, ready)

    pending: queue.Queue[GenerateRequest | RunBatch | UpdateModels | None] = queue.Queue()
    cancels = CancelBook()
    stopping = threading.Event()
    listener = threading.Thread(
        target=_listen, args=(commands, pending, cancels, stopping), name="commands", daemon=True
    )
    listener.start()

    sending = threading.Lock()

    def send(event: Event) -> None:
        with sending:
            _send(events, event)

    try:
        _serve_jobs(runner, pending, cancels, stopping, send)
    finally:
        # The last job's PNGs and final event, on shutdown too: no file is left half-written.
        # (A stopping bot has put that job back in its queue: it runs again, to the same paths,
        # and is delivered then; a row marked done while the bot closes would never be.)
        runner.saver.close()


def _serve_jobs(
    runner: JobRunner,
    pending: queue.Queue[GenerateRequest | RunBatch | UpdateModels | None],
    cancels: CancelBook,
    stopping: threading.Event,
    send: Callable[[Event], None],
) -> None:
    from inference.batching import run_batch
    from inference.generate import JobCancelledError

    while (request := pending.get()) is not None:
        if stopping.is_set():
            break
        if isinstance(request, UpdateModels):
            runner.update_models(request.models)
            continue
        if isinstance(request, RunBatch):
            try:
                run_batch(runner, request.requests, stopping.is_set, cancels.is_cancelled, send)
            except JobCancelledError:
                log.info("batch %s: interrupted by shutdown", [r.job_id for r in request.requests])
                break
            finally:
                for job in request.requests:
                    cancels.forget(job.job_id)
            continue
        job_id = request.job_id
        if cancels.is_cancelled(job_id):
            log.info("job %s: cancelled before it started", job_id)
            cancels.forget(job_id)
            send(JobCanceled(job_id))
            continue
        try:
            runner.run(
                request,
                is_cancelled=lambda: stopping.is_set() or cancels.is_cancelled(job_id),
                send=send,
            )
        except JobCancelledError:
            if stopping.is_set():
                log.info("job %s: interrupted by shutdown", job_id)
                break
            log.info("job %s: cancelled", job_id)
            send(JobCanceled(job_id))
        finally:
            cancels.forget(job_id)


def _startup_message(exc: BaseException) -> str:
    # Our own checks raise ValueError subclasses with messages written for the admin; anything
    # else (a broken CUDA install, a corrupt file) needs its type to be understood.
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _lower_priority() -> None:
    """Before torch starts its threads, which inherit the niceness."""
    try:
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError) as exc:  # no os.nice (Windows), or not permitted
        log.info("worker priority left as it is: %s", exc)


def _configure_logging() -> None:
    """A spawned process starts with no logging set up; log to stderr, tagged as the worker, at
    the bot's level (LOG_LEVEL_VARIABLE, which `sdbot --debug` sets)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s",
        )
    # diffusers passes an argument huggingface_hub deprecated: a warning no admin can act on.
    warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")


def _one_handler_for_library_logs() -> None:
    """huggingface_hub, diffusers and transformers each give their logger a handler of its own
    that prints the bare message, and let it propagate to ours too: every retry warning came out
    twice. Only the root's handler is kept, so their lines look like the others."""
    if not logging.getLogger().handlers:
        return
    for library in LIBRARY_LOGGERS:
        logger = logging.getLogger(library)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


@contextlib.contextmanager
def logging_beside_progress_bars() -> Iterator[None]:
    """Log lines written while a download's progress bar is on screen start on a line of their
    own (the bar is redrawn below them), instead of being glued to the unfinished bar's line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
