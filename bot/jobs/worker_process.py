"""The inference worker as a child process: spawn it, talk to it, notice when it dies.

Two one-way pipes carry the protocol (commands bot -> worker, events worker -> bot). A reader
thread blocks on the event pipe and hands each event to `on_event`, which must be
thread-safe (the dispatcher passes `loop.call_soon_threadsafe`). When the pipe closes, the
process is gone, cleanly or not, and `on_event` receives `WorkerExited`.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from inference.common.protocol import Command, Event, Shutdown, WorkerConfig
from inference.worker import run_worker  # torch is imported inside run_worker, in the child

log = logging.getLogger(__name__)

# How the worker's process is started (Settings.worker.start_method). "spawn": a fresh
# interpreter each time, which imports torch and the rest anew. "forkserver": a server process
# imports them once (inference/worker_imports.py) and every worker is forked from it, so a
# restart skips the imports. Neither inherits the bot's event loop, threads or sockets the way
# a plain fork would, and neither can inherit an initialised CUDA.
START_METHODS = ("spawn", "forkserver")
FORKSERVER_PRELOAD = ["inference.worker_imports"]


def check_start_method(start_method: str) -> None:
    if start_method not in START_METHODS:
        raise ValueError(f"unknown start method {start_method!r}: use {' or '.join(START_METHODS)}")


def process_context(start_method: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context a worker starts in (START_METHODS); never a plain fork,
    whose child would inherit the bot's event loop and threads."""
    check_start_method(start_method)
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Read when the server starts (the first worker's start): later calls change nothing.
        context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


@dataclass(frozen=True, slots=True)
class WorkerExited:
    exitcode: int | None
    generation: int


class WorkerProcess:
    def __init__(
        self,
        config: WorkerConfig,
        on_event: Callable[[Event | WorkerExited], None],
        generation: int = 0,
        start_method: str = "spawn",
    ) -> None:
        check_start_method(start_method)  # at once, not at the first start
        self.config = config
        self.start_method = start_method
        self.generation = generation
        self._on_event = on_event
        self._process: multiprocessing.process.BaseProcess | None = None
        self._commands: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        context = process_context(self.start_method)
        command_recv, command_send = context.Pipe(duplex=False)
        event_recv, event_send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=run_worker,
            args=(self.config, command_recv, event_send),
            name=f"sdbot-worker-{self.generation}",
            daemon=True,  # never outlive the bot
        )
        self._process.start()
        # Close the child's ends here, so the reader sees EOF the moment the child dies.
        command_recv.close()
        event_send.close()
        self._commands = command_send
        self._reader = threading.Thread(
            target=self._read_events, args=(event_recv,), name=f"sdbot-worker-reader-{self.generation}", daemon=True
        )
        self._reader.start()
        log.info("worker process %s started (pid %s)", self.generation, self._process.pid)

    def send(self, command: Command) -> bool:
        """Send a command; False when the worker is already gone (its exit event follows)."""
        if self._commands is None:
            return False
        try:
            self._commands.send(command)
            return True
        except (BrokenPipeError, OSError) as error:
            log.warning("worker %s did not take %r: %s", self.generation, command, error)
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finish, then make sure it has."""
        if self._process is None:
            return
        self._stopping = True
        self.send(Shutdown())
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("worker %s ignored Shutdown; terminating it", self.generation)
            self._process.terminate()
            self._process.join(5)
        self._close()

    def kill(self) -> None:
        """Kill the worker at once, the way a crash or the OOM killer would."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def _close(self) -> None:
        if self._commands is not None:
            self._commands.close()
            self._commands = None

    def _read_events(self, events: Connection) -> None:
        try:
            while True:
                self._on_event(events.recv())
        except (EOFError, OSError):
            pass
        finally:
            events.close()
            assert self._process is not None
            if self._stopping:
                # stop() joins the process itself; joining here too would race it for the exit code.
                log.info("worker process %s stopped", self.generation)
                exitcode = 0
            else:
                self._process.join(10)
                exitcode = self._process.exitcode
                if exitcode is None and self._stopping:
                    # stop() began during the join and reaped the process first (a worker that
                    # failed its start-up is stopped by the dispatcher as it exits): not a death.
                    log.info("worker process %s stopped", self.generation)
                    exitcode = 0
                elif exitcode == 0:
                    log.info("worker process %s exited", self.generation)
                else:
                    log.error("worker process %s died (exit code %s)", self.generation, exitcode)
            self._on_event(WorkerExited(exitcode, self.generation))
