"""Benchmark 2, bot overhead: one job through the whole bot against the bare pipeline call.

The bot is tests/harness.py's: simulated Discord (simcord), the real cogs, queue, SQLite
database, dispatcher, worker process, PNG files and upload. One member runs ``/imagine`` with a
single image, repeatedly, one job at a time; between two jobs this process makes the same
image with a bare diffusers call on the same tiny model (same size, steps, sampler, CFG, seed),
so both see the same machine load. For each job:

- ``to_upload``: from the slash command to the result's upload reaching Discord (the edit that
  carries the image), minus the bare call: the overhead the issue's 30 ms target is about
  (the upload itself excluded).
- ``total``: to the upload's end (the bot's delivery drained), minus the bare call.
- ``bot_side``: to the upload, minus the seconds the worker reports for the job
  (generation and PNGs): queue, database, dispatch, pipes, encoding, Discord edits.
- ``bot_side_less_simulation``: the same less the time the simulated Discord ran on the
  loop before the job started and after it finished (simulated.SimulationTime: its handling
  of the bot's requests, which real Discord does a network away, and the member's sending).
  What it ran while the worker generated (the "running" edit, previews) overlaps the
  worker's seconds, already taken off, so it stays in.
- ``worker_side``: the worker's seconds minus the bare call: its own work around generate()
  (infotext, PNG writing, previews).
- ``acknowledged``: from the slash command to its answer.

    python -m bench.bot_overhead --repeats 20 --steps 10
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import common, simulated

PROMPT = "a lighthouse at dusk"
SEED = 1234


def parse_args(argv: list[str] | None):
    parser = common.base_parser("bot_overhead", __doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps (default %(default)s)")
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=20, help="timed jobs (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed jobs first (default %(default)s)")
    parser.add_argument("--model-cache", type=Path, help="where built models are kept (default: a temp folder)")
    common.add_worker_start(parser)
    args = parser.parse_args(argv)
    if args.device != "cpu":
        # The bot's worker runs on the settings' device; the tiny model measures the bot, not a GPU.
        parser.error("bot_overhead measures the bot around a tiny model: use --device cpu")
    return args


def bare_pipeline(folder: Path, sampler: str):
    import torch

    from bench.pipeline import plain_pipeline

    return plain_pipeline(folder, torch.device("cpu"), torch.float32, sampler)


async def run(args) -> dict[str, Any]:
    import torch

    from bench.models import cached_model

    simulated.quiet_logs()
    folder = cached_model("tiny", args.model_cache)
    pipe = bare_pipeline(folder, args.sampler)

    def bare() -> float:
        generator = torch.Generator("cpu").manual_seed(SEED)
        seconds, _ = common.timed(
            lambda: pipe(
                prompt=PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps,
                guidance_scale=args.cfg, generator=generator,
            )
        )
        return seconds

    work = simulated.workdir("sdbot-bench-overhead-")
    settings = simulated.tiny_settings(Path(work.name), model_cache=args.model_cache, worker_start=args.worker_start)
    harness = await simulated.started_harness(settings)
    simulation = simulated.SimulationTime()
    simulation.install(harness)
    clock = simulated.RequestClock(harness.env, simulation)
    member = harness.member("alice")

    finished = asyncio.Event()
    report_started, report_finished = harness.bot.delivery.job_started, harness.bot.delivery.job_finished
    simulated_while_running = [0.0, 0.0]  # the simulation's total when the job started, finished

    def job_started(job) -> None:  # type: ignore[no-untyped-def]
        simulated_while_running[0] = simulation.total
        report_started(job)

    def job_finished(job) -> None:  # type: ignore[no-untyped-def]
        simulated_while_running[1] = simulation.total
        report_finished(job)
        finished.set()

    # The dispatcher calls these when the job's row is running, then final; the upload follows in a task.
    harness.bot.delivery.job_started = job_started  # type: ignore[method-assign]
    harness.bot.delivery.job_finished = job_finished  # type: ignore[method-assign]

    rows: dict[str, list[float]] = {
        k: [] for k in ("bare", "worker", "acknowledged", "to_upload", "to_upload_less_simulation", "total")
    }
    try:
        for index in range(args.warmup + args.repeats):
            bare_seconds = bare()
            finished.clear()
            started, started_bot = time.perf_counter(), simulation.bot_clock()
            result = await simulation.members_side(member.slash(
                harness.channel, "imagine", prompt=PROMPT, width=args.size, height=args.size,
                steps=args.steps, cfg=args.cfg, sampler=args.sampler, seed=SEED, count=1,
            ))
            acknowledged = clock.acknowledgements()[simulated.interaction_id(result)]
            await finished.wait()
            await harness.bot.delivery.drain()
            done = time.perf_counter()
            # The result is the edit of the status message that carries the image.
            uploaded = clock.last_since(started, "PATCH", "/messages/@original")
            uploaded_bot = clock.last_since(started, "PATCH", "/messages/@original", bot_clock=True)
            await harness.settle()
            job = await harness.latest_job(member.id)
            if job.status != "completed" or uploaded is None:
                raise RuntimeError(f"job #{job.id} ended {job.status} ({job.error}); no result to measure")
            if index < args.warmup:
                continue
            rows["bare"].append(bare_seconds)
            rows["worker"].append(job.seconds)
            rows["acknowledged"].append(acknowledged - started)
            rows["to_upload"].append(uploaded - started)
            during = simulated_while_running[1] - simulated_while_running[0]
            rows["to_upload_less_simulation"].append(uploaded_bot - started_bot + during)
            rows["total"].append(done - started)
    finally:
        simulation.uninstall()
        await harness.stop()
        work.cleanup()

    overhead = {
        "to_upload": [t - b for t, b in zip(rows["to_upload"], rows["bare"])],
        "total": [t - b for t, b in zip(rows["total"], rows["bare"])],
        "bot_side": [t - w for t, w in zip(rows["to_upload"], rows["worker"])],
        "bot_side_less_simulation": [t - w for t, w in zip(rows["to_upload_less_simulation"], rows["worker"])],
        "worker_side": [w - b for w, b in zip(rows["worker"], rows["bare"])],
    }
    return {
        "overhead_ms": {name: common.scaled(common.summary(values), 1000, 2) for name, values in overhead.items()},
        "measured_ms": {name: common.scaled(common.summary(values), 1000, 2) for name, values in rows.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    settings = {
        "model": "tiny", "size": args.size, "steps": args.steps, "sampler": args.sampler, "cfg": args.cfg,
        "count": 1, "repeats": args.repeats, "warmup": args.warmup,
        "discord": "simcord (in-process simulation)", "worker_preview_interval_s": 1.5,
    }
    common.write_result("bot_overhead", args.device, settings, results, args.output_dir)
    rows = [[name, s["p50"], s["p95"], s["max"]] for name, s in results["measured_ms"].items()]
    common.print_table(f"bot_overhead: measured (ms, {args.repeats} jobs)", ["what", "p50", "p95", "max"], rows)
    rows = [[name, s["p50"], s["p95"], s["max"]] for name, s in results["overhead_ms"].items()]
    common.print_table("bot_overhead: overhead per job (ms)", ["overhead", "p50", "p95", "max"], rows)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
