"""Model switching: what a job on another model costs, one model at a time against a memory budget.

Two workers (``JobRunner``) in this process, each configured with two models of the same
architecture (two folders) and preloading the first, as the worker does:

- ``one_at_a_time``: ``model_memory_budget_mb = 0``, the default: the model in use is unloaded
  before the next is read, so every switch reads, places and accelerates a model again (from
  the operating system's file cache after the first time: a cold disk adds its read time).
- ``budget``: a budget that holds both (``--budget-mb``, default twice the model's size and a
  half more): after each model's first load a switch finds it loaded.

Per repeat, interleaved across the two workers: a switch to the second model (``cache.get``,
the very call a job on that model makes first), a job on it, a switch back, a job on the
first model, and a job on it again (no switch): the first job after a switch against a job
on a model already in use shows what a switch leaves to the job (a GPU's first call on a new
model's weights). Reported: switch seconds (median, p95), the first load of each model, job
seconds after a switch and without, the models each worker holds and their size, and the
LoadRecords (inference.models) of every load.

With ``--sdxl-file`` the two models are SDXL single files (A1111's ``.safetensors``, as
bench.single_file_load builds them: SDXL base's full architecture, random weights, float16,
about 6.5 GB each; ``--tiny`` the test SDXL instead), read through the worker's single-file
path; ``--budget-mb`` then names a budget for one of them, say 8000.

Each switch is made as a job makes it: watched (PipelineCache.reporting_loads), so the files
are read ahead with progress reports (inference.load_progress) before diffusers builds the
pipeline; ``--unwatched`` times the bare load instead (what a preload costs).

    python -m bench.model_switch                 # CPU: the "small" model, 128 px, 8 steps
    python -m bench.model_switch --device cuda   # SD 1.5 architecture (two folders), 512 px, 20 steps, fp16
    python -m bench.model_switch --sdxl-file --tiny                              # CPU, the tiny SDXL files
    python -m bench.model_switch --device cuda --sdxl-file --budget-mb 8000 --size 1024 --steps 30
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.models import cached_model, cached_second_model
from bench.pipeline import FIRST_SEED, NEGATIVE_PROMPT, PROMPT, finish_generation_args, generation_parser
from bench.pipeline import generation_settings, generation_title
from inference.common.protocol import ModelSpec  # torch-free

MODES = ("one_at_a_time", "budget")
FIRST, SECOND = "first", "second"


def parse_args(argv: list[str] | None):
    parser = generation_parser("model_switch", __doc__.splitlines()[0], "switches each way per mode")
    parser.add_argument("--images", type=int, default=1, help="images per job (default 1)")
    parser.add_argument("--budget-mb", type=int, help="the budget mode's model_memory_budget_mb (default: fits both)")
    parser.add_argument("--sdxl-file", action="store_true", help="two SDXL single files instead of two folders")
    parser.add_argument("--tiny", action="store_true", help="with --sdxl-file: the tiny test SDXL (a CPU's size)")
    parser.add_argument("--unwatched", action="store_true", help="switch without progress reports (no read-ahead)")
    args = parser.parse_args(argv)
    if args.sdxl_file:  # the SDXL files set the model; its size and steps unless given
        args.model = "sdxl-tiny" if args.tiny else "sdxl"
        args.size = args.size or (64 if args.tiny else 1024)
        args.steps = args.steps or (4 if args.tiny else 30)
    return finish_generation_args(args)


def sdxl_files(args) -> dict[str, ModelSpec]:  # type: ignore[no-untyped-def]
    """Two SDXL single files of the same weights (a copy: a switch reads another file), built once."""
    from bench.single_file_load import build_checkpoint

    cache = Path(args.model_cache or Path(tempfile.gettempdir()) / "sdbot-bench-single-file")
    cache.mkdir(parents=True, exist_ok=True)
    first, config = build_checkpoint(cache, args.tiny)
    second = first.with_name(f"{first.stem}-second{first.suffix}")
    if not second.is_file():
        shutil.copyfile(first, second.with_suffix(".partial"))
        second.with_suffix(".partial").rename(second)
    original_config = str(config) if config else ""
    return {FIRST: ModelSpec(FIRST, str(first), original_config=original_config),
            SECOND: ModelSpec(SECOND, str(second), original_config=original_config)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    from inference.jobs import JobRunner
    from inference.models import pipeline_bytes
    from inference.common.protocol import GenerateRequest, JobCompleted, JobKind, WorkerConfig

    if args.sdxl_file:
        specs = sdxl_files(args)
    else:
        specs = {FIRST: ModelSpec(FIRST, str(cached_model(args.model, args.model_cache))),
                 SECOND: ModelSpec(SECOND, str(cached_second_model(args.model, args.model_cache)))}
    outputs = tempfile.TemporaryDirectory(prefix="sdbot-bench-outputs-")

    def config(budget_mb: int) -> WorkerConfig:
        return WorkerConfig(
            models=tuple(specs.values()), default_model=FIRST,
            outputs_dir=outputs.name, device=args.device, dtype=args.dtype, model_memory_budget_mb=budget_mb,
            warmup_shape=(args.size, args.size, args.images), max_batch_images=args.images,
        )

    runners = {"one_at_a_time": JobRunner.start(config(0))}
    model_mib = pipeline_bytes(runners["one_at_a_time"].cache.get(FIRST)) / 2**20
    budget_mb = args.budget_mb or math.ceil(2.5 * model_mib)
    runners["budget"] = JobRunner.start(config(budget_mb))

    job_ids = iter(range(1, 1_000_000))

    def job(mode: str, model: str) -> float:
        request = GenerateRequest(
            job_id=next(job_ids), kind=JobKind.TXT2IMG, model=model, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
            width=args.size, height=args.size, steps=args.steps, cfg_scale=args.cfg, sampler=args.sampler,
            seeds=tuple(range(FIRST_SEED, FIRST_SEED + args.images)),
        )
        events: list = []
        seconds, _ = common.timed(lambda: runners[mode].run(request, lambda: False, events.append))
        if not isinstance(events[-1], JobCompleted):
            raise RuntimeError(f"{mode}: the job on {model} did not complete: {events[-1]!r}")
        return seconds

    reports: list[tuple[str, int, int]] = []

    def switch(mode: str, model: str) -> float:
        cache = runners[mode].cache
        if args.unwatched:
            return common.timed(lambda: cache.get(model))[0]
        with cache.reporting_loads(lambda *report: reports.append(report)):  # as a job's load is
            return common.timed(lambda: cache.get(model))[0]

    # Each worker's first round loads the second model for the first time (its folder from
    # disk) and pays each model's first-call costs; the timed rounds follow.
    first_loads: dict[str, float] = {}
    for mode in MODES:
        first_loads[mode] = switch(mode, SECOND)
        job(mode, SECOND)
        switch(mode, FIRST)
        job(mode, FIRST)
    figures: dict[str, dict[str, list[float]]] = {
        mode: {"switch": [], "job_after_switch": [], "job_without_switch": []} for mode in MODES
    }
    for _ in range(args.repeats):
        for mode in MODES:
            for model in (SECOND, FIRST):
                figures[mode]["switch"].append(switch(mode, model))
                figures[mode]["job_after_switch"].append(job(mode, model))
            figures[mode]["job_without_switch"].append(job(mode, FIRST))

    results: dict[str, Any] = {
        "model_mib": round(model_mib, 1), "budget_mb": budget_mb, "modes": {}, "progress_reports": len(reports),
    }
    rows = []
    for mode in MODES:
        cache = runners[mode].cache
        entry: dict[str, Any] = {
            name: common.scaled(common.summary(values), 1, 4) for name, values in figures[mode].items()
        }
        entry.update({
            "first_load_of_second_model_seconds": round(first_loads[mode], 4),
            "loaded_at_end": list(cache.loaded_names),
            "loaded_mib": common.mib(cache.loaded_bytes),
            "loads": [
                {"model": r.name, "seconds": round(r.seconds, 4), "megabytes": round(r.megabytes, 1), "evicted": list(r.evicted)}
                for r in cache.loads
            ],
            "startup_seconds": dict(runners[mode].startup_timings),
        })
        results["modes"][mode] = entry
        rows.append([
            mode, entry["switch"]["p50"], entry["switch"]["p95"], entry["job_after_switch"]["p50"],
            entry["job_without_switch"]["p50"], len(cache.loads), entry["loaded_mib"],
        ])

    settings = {
        **generation_settings(args, Path(specs[FIRST].source), config(0), runners["budget"].cache.dtype),
        "images": args.images, "second_model_folder": specs[SECOND].source, "modes": list(MODES),
        "watched": not args.unwatched,
    }
    name = "model_switch" + ("_sdxl_file" + ("-tiny" if args.tiny else "") if args.sdxl_file else "")
    common.write_result(name, args.device, settings, results, args.output_dir)
    common.print_table(
        generation_title("model_switch", args, settings) + f", model {model_mib:.0f} MiB, budget {budget_mb} MB",
        ["mode", "switch s (p50)", "switch s (p95)", "job after switch s", "job without switch s", "loads",
         "loaded MiB"],
        rows,
    )
    outputs.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
