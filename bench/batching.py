"""Cross-user batching: several members' jobs run as one pass, against the same jobs one by one.

The issue's target is at least 2x the images per second at batch 8 with cross-user batching
against running the same 8 jobs one by one. ``bench.pipeline``'s batches are one job's images
(one prompt); here each job is another member's: its own prompt, negative prompt and seed, as
the queue claims them together (bot.jobs.queue.JobQueue.claim_batch). Two paths, through the
worker's own code on the pipeline ``JobRunner`` loaded, both with PNGs, infotext and previews:

- ``one_by_one``: ``JobRunner.run`` for each job in turn, as the worker runs jobs that cannot
  share a pass.
- ``batched``: ``inference.batching.run_batch`` on all of them, as the worker runs a
  ``RunBatch``: one pipeline call, then each job's images saved and reported on their own.

Both save through the worker's background saver, as the worker does: a job's PNGs are written
while the next job generates; a set's time ends when its last file is written.

Per number of jobs: seconds for the set, images per second, the batched path's speed-up, peak
memory, and the largest pixel difference between a job's image batched and alone (batched
matrix products round differently: a level or two of 8-bit colour). The repeats interleave the
paths, so machine noise hits them alike.

    python -m bench.batching                  # CPU: the "small" model, 128 px, 8 steps
    python -m bench.batching --device cuda    # SD 1.5 architecture, 512 px, 20 steps, fp16
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from bench import common, pipeline
from bench.models import cached_model

PATHS = ("one_by_one", "batched")
# Eight members' prompts: different lengths and weights, each within one 75-token chunk (jobs
# whose prompts need more chunks run as separate passes; inference/batching.py says why).
PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting, dramatic sky",
    "portrait of an old fisherman, (detailed face:1.2), soft light",
    "a red fox in the snow",
    "cyberpunk street market at night, neon signs, rain, cinematic",
    "a bowl of ramen, studio photo",
    "watercolor map of an imaginary island, [mountains:castles:0.5]",
    "a cat astronaut floating above the earth, digital art",
    "(isometric:1.3) cozy library room, warm lamps, tiny details",
)
NEGATIVE_PROMPTS = ("blurry, low quality", "", "ugly, deformed")
FIRST_SEED = 4321


def parse_args(argv: list[str] | None):
    # The same options and defaults by device as bench.pipeline, so the two benchmarks' figures compare.
    parser = pipeline.generation_parser("batching", __doc__.splitlines()[0], "timed sets per path")
    parser.add_argument("--jobs", default="2,4,8", help="members' jobs per pass, comma-separated (default %(default)s)")
    parser.add_argument("--images-per-job", type=int, default=1, help="each job's image count (default 1)")
    args = pipeline.finish_generation_args(parser.parse_args(argv))
    args.jobs = [int(n) for n in args.jobs.split(",") if n.strip()]
    return args


def requests_for(args, count: int, first_job_id: int) -> list:  # type: ignore[no-untyped-def]
    """``count`` members' jobs that may share one pass: same model, size, steps, sampler, CFG."""
    from inference.common.protocol import GenerateRequest, JobKind

    return [
        GenerateRequest(
            job_id=first_job_id + i, kind=JobKind.TXT2IMG, model=args.model,
            prompt=PROMPTS[i % len(PROMPTS)], negative_prompt=NEGATIVE_PROMPTS[i % len(NEGATIVE_PROMPTS)],
            width=args.size, height=args.size, steps=args.steps, cfg_scale=args.cfg, sampler=args.sampler,
            seeds=tuple(FIRST_SEED + i * 100 + k for k in range(args.images_per_job)),
        )
        for i in range(count)
    ]


def completed_paths(events: list, requests: list) -> dict[int, list[str]]:
    """Each job's PNG paths; a job without its JobCompleted is a failed run, not a figure."""
    from inference.common.protocol import JobCompleted

    done = {event.job_id: [image.path for image in event.images] for event in events if isinstance(event, JobCompleted)}
    missing = [r.job_id for r in requests if r.job_id not in done]
    if missing:
        raise RuntimeError(f"jobs {missing} did not complete: {events[-1]!r}")
    return done


def max_pixel_difference(one: list[str], other: list[str]) -> int:
    """The largest difference between the PNGs of two lists, pair by pair."""
    from PIL import Image

    worst = 0
    for a, b in zip(one, other, strict=True):
        with Image.open(a) as first, Image.open(b) as second:
            worst = max(worst, common.max_pixel_difference(first, second))
    return worst


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from inference.batching import run_batch
    from inference.jobs import JobRunner, Saver
    from inference.models import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    found, folder = common.timed(lambda: cached_model(args.model, args.model_cache))
    print(f"model {args.model} at {folder} ({found:.1f} s to find or build)")
    outputs = tempfile.TemporaryDirectory(prefix="sdbot-bench-outputs-")
    largest = max(args.jobs) * args.images_per_job
    config = pipeline.worker_config(args, folder, outputs.name, largest)
    saver = Saver(background=config.background_saving)
    load_worker, runner = common.timed(lambda: JobRunner.start(config, saver=saver))
    memory = common.PeakMemory(device)
    job_ids = iter(range(1, 1_000_000, 1000))

    def run(path: str, count: int) -> tuple[list, dict[int, list[str]]]:
        requests = requests_for(args, count, next(job_ids))
        events: list = []
        if path == "one_by_one":
            for request in requests:
                runner.run(request, is_cancelled=lambda: False, send=events.append)
        else:
            run_batch(runner, requests, stopping=lambda: False, cancelled=lambda job_id: False, send=events.append)
        saver.wait()
        return requests, completed_paths(events, requests)

    # First calls pay one-time costs (kernel selection, allocator growth), which the timed sets
    # must not include: on a GPU at every size, on the CPU once.
    for count in args.jobs if device.type == "cuda" else args.jobs[:1]:
        for path in PATHS:
            run(path, count)

    timings: dict[int, dict[str, list[float]]] = {n: {p: [] for p in PATHS} for n in args.jobs}
    peaks: dict[int, dict[str, int]] = {n: {p: 0 for p in PATHS} for n in args.jobs}
    differences: dict[int, int] = {}
    for _ in range(args.repeats):
        for count in args.jobs:
            made: dict[str, list[list[str]]] = {}
            for path in PATHS:
                memory.start()
                seconds, (requests, paths) = common.timed(lambda: run(path, count))
                timings[count][path].append(seconds)
                peaks[count][path] = max(peaks[count][path], memory.peak())
                made[path] = [paths[r.job_id] for r in requests]  # in the jobs' order
            difference = max(max_pixel_difference(a, b) for a, b in zip(made["one_by_one"], made["batched"]))
            differences[count] = max(differences.get(count, 0), difference)

    results: dict[str, Any] = {
        "load_seconds": round(load_worker, 3),
        "startup_seconds": dict(runner.startup_timings),
        "memory_kind": memory.kind,
        "jobs": {},
    }
    rows = []
    for count in args.jobs:
        images = count * args.images_per_job
        entry: dict[str, Any] = {"images": images}
        for path in PATHS:
            stats = common.summary(timings[count][path])
            entry[path] = {
                "seconds": common.scaled(stats, 1, 4),
                "images_per_second": round(images / stats["p50"], 4),
                "peak_memory_mib": common.mib(peaks[count][path]),
            }
            rows.append([count, images, path, stats["p50"], images / stats["p50"], common.mib(peaks[count][path])])
        entry["batched_speedup"] = round(entry["batched"]["images_per_second"] / entry["one_by_one"]["images_per_second"], 3)
        entry["max_pixel_difference"] = differences[count]
        results["jobs"][str(count)] = entry

    settings = {
        **pipeline.generation_settings(args, folder, config, resolve_dtype(args.dtype, device)),
        "jobs": args.jobs, "images_per_job": args.images_per_job, "max_batch_images": largest,
    }
    common.write_result("batching", args.device, settings, results, args.output_dir)
    common.print_table(
        pipeline.generation_title("batching", args, settings) + f", {args.images_per_job} image(s) a job",
        ["jobs", "images", "path", "s/set", "images/s", f"peak MiB ({results['memory_kind']})"],
        rows,
    )
    for count in args.jobs:
        entry = results["jobs"][str(count)]
        print(
            f"{count} jobs: batched {entry['batched_speedup']}x one by one; "
            f"max pixel difference batched vs alone {entry['max_pixel_difference']}"
        )
    saver.close()
    outputs.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
