"""Jobs back to back through the worker process: PNGs written while the next job generates
(``background_saving``, the default) against written before it starts.

Two real worker processes (``inference.worker.run_worker``, as the bot spawns it), one per
mode, on the same model. Each is fed a stream of jobs the way the dispatcher feeds it: the
next job goes out when the last one's JobSaving comes (background) or its final event
(inline). Per mode: images per second over the stream, and the time from a job's last
sampling step to the worker being free (the VAE decode and the checks, and inline the
PNGs too: what the GPU is idle for between jobs, less the decode). The streams
alternate between the modes, so machine noise hits both alike.

    python -m bench.worker_stream                      # CPU: small model, 128 px, 8 steps
    python -m bench.worker_stream --device cuda        # SD 1.5, 512 px, 20 steps, fp16
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from bench import common
from bench.models import cached_model
from bench.pipeline import (
    FIRST_SEED,
    NEGATIVE_PROMPT,
    PROMPT,
    finish_generation_args,
    generation_parser,
    generation_settings,
    generation_title,
    worker_config,
)

MODES = ("background", "inline")
EVENT_LIMIT_S = 1800  # only stops a broken worker from hanging the benchmark


def parse_args(argv: list[str] | None):  # type: ignore[no-untyped-def]
    parser = generation_parser("worker_stream", __doc__.splitlines()[0], "streams per mode")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per stream (default %(default)s)")
    parser.add_argument("--images-per-job", type=int, help="default: 8 on cuda, 4 on cpu")
    common.add_worker_start(parser)
    args = finish_generation_args(parser.parse_args(argv))
    args.images_per_job = args.images_per_job or (8 if args.device.startswith("cuda") else 4)
    return args


class Worker:
    """One worker process and its pipes; ``background``: its config's background_saving."""

    def __init__(self, config, start_method: str) -> None:  # type: ignore[no-untyped-def]
        from bot.jobs.worker_process import process_context
        from inference.worker import run_worker

        self.background = config.background_saving
        context = process_context(start_method)
        commands_recv, self.commands = context.Pipe(duplex=False)
        self.events, events_send = context.Pipe(duplex=False)
        self.process = context.Process(target=run_worker, args=(config, commands_recv, events_send), daemon=True)
        self.process.start()
        commands_recv.close()
        events_send.close()
        self.ready = self.next_event()

    def next_event(self):  # type: ignore[no-untyped-def]
        if not self.events.poll(EVENT_LIMIT_S):
            raise RuntimeError("the worker sent nothing")
        return self.events.recv()

    def stop(self) -> None:
        from inference.common.protocol import Shutdown

        self.commands.send(Shutdown())
        self.process.join(60)
        if self.process.is_alive():
            self.process.kill()


def stream(worker: Worker, requests: list) -> dict[str, Any]:
    """Run the jobs one after another as the dispatcher would; the stream's figures."""
    from inference.common.protocol import JobCompleted, JobFailed, JobProgress, JobSaving, RunJob

    started = time.perf_counter()
    waits: list[float] = []
    done = 0
    worker.commands.send(RunJob(requests[0]))
    sent = 1
    last_step_at = None
    while done < len(requests):
        event = worker.next_event()
        if isinstance(event, JobProgress) and event.step == event.total_steps:
            last_step_at = time.perf_counter()
        elif isinstance(event, JobFailed):
            raise RuntimeError(f"job {event.job_id} failed: {event.message}")
        elif isinstance(event, JobSaving | JobCompleted):
            if isinstance(event, JobCompleted):
                done += 1
            # The worker is free: a JobSaving in background mode, the final event inline.
            free = isinstance(event, JobSaving) or not worker.background
            if free and last_step_at is not None:
                waits.append(time.perf_counter() - last_step_at)
                last_step_at = None
                if sent < len(requests):
                    worker.commands.send(RunJob(requests[sent]))
                    sent += 1
    seconds = time.perf_counter() - started
    images = sum(len(request.seeds) for request in requests)
    return {"seconds": seconds, "images_per_second": images / seconds, "waits": waits}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    from inference.models import resolve_device, resolve_dtype
    from inference.common.protocol import GenerateRequest, JobKind

    dtype = resolve_dtype(args.dtype, resolve_device(args.device))
    folder = cached_model(args.model, args.model_cache)
    outputs = tempfile.TemporaryDirectory(prefix="sdbot-bench-outputs-")
    base = worker_config(args, folder, outputs.name, args.images_per_job)
    workers = {}
    for mode in MODES:
        workers[mode] = Worker(replace(base, background_saving=mode == "background"), args.worker_start)
    job_ids = iter(range(1, 1_000_000))

    def requests() -> list:
        return [
            GenerateRequest(
                job_id=next(job_ids), kind=JobKind.TXT2IMG, model=args.model, prompt=PROMPT,
                negative_prompt=NEGATIVE_PROMPT, width=args.size, height=args.size, steps=args.steps,
                cfg_scale=args.cfg, sampler=args.sampler,
                seeds=tuple(range(FIRST_SEED + i * 100, FIRST_SEED + i * 100 + args.images_per_job)),
            )
            for i in range(args.jobs)
        ]

    try:
        for worker in workers.values():  # the first jobs pay one-time costs, untimed
            stream(worker, requests()[:2])
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                runs[mode].append(stream(workers[mode], requests()))
    finally:
        for worker in workers.values():
            worker.stop()
        outputs.cleanup()

    results: dict[str, Any] = {"modes": {}}
    rows = []
    for mode in MODES:
        rates = common.summary([run["images_per_second"] for run in runs[mode]])
        waits = common.summary([wait for run in runs[mode] for wait in run["waits"]])
        results["modes"][mode] = {
            "images_per_second": common.scaled(rates, 1, 4),
            "last_step_to_free_ms": common.scaled(waits, 1000, 1),
        }
        rows.append([mode, rates["p50"], waits["p50"] * 1000, waits["p95"] * 1000])
    background, inline = (results["modes"][m]["images_per_second"]["p50"] for m in MODES)
    results["background_speedup"] = round(background / inline, 3)
    settings = {
        **generation_settings(args, folder, base, dtype), "jobs": args.jobs, "images_per_job": args.images_per_job,
    }
    common.write_result("worker_stream", args.device, settings, results, args.output_dir)
    common.print_table(
        generation_title("worker_stream", args, settings) + f", {args.jobs} jobs of {args.images_per_job}",
        ["saving", "images/s", "last step to free p50 ms", "p95 ms"],
        rows,
    )
    print(f"background saving {results['background_speedup']}x the images per second of inline")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
