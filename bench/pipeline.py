"""Benchmark 1, pipeline speed: the worker's generation path against a plain diffusers call.

Both run in this process on the same model folder, size, steps, sampler, CFG and dtype, each
on its own copy of the model (so that whatever the worker does to its pipeline at load time,
attention processors, channels_last, compile, does not reach the plain one). Three paths,
and a fourth on request:

- ``plain``: ``StableDiffusionPipeline.from_pretrained(...)(prompt, ...)`` with the sampler's
  scheduler and one CPU generator per image, as a diffusers user would write it.
- ``worker_generate``: ``inference.generate.generate`` on the pipeline the worker's
  ``JobRunner`` loaded, with the worker's progress reporter (previews at its interval).
- ``worker_job``: ``JobRunner.run``, everything the worker does for a job: generate, then the
  PNGs with their infotext and the grid.
- ``worker_generate_unaccelerated`` (with ``--ablate``): ``generate`` on a third copy placed
  with no fast-path option (SDPA only: no channels_last, fused QKV or compile), to tell what
  those options do apart from what generate() itself costs against the plain call.

Per batch size: seconds per call, seconds per image, images per second, and peak memory (CUDA's
peak allocation on a GPU, the process's peak RSS on the CPU). The repeats interleave the paths,
so machine noise hits them alike. Batch 1 also reports how far the worker's image (A1111's sampler)
is from the plain call's (a diffusers scheduler), and checks that the unaccelerated copy makes the worker's.

``--compile MODE`` turns on the worker's torch.compile of the UNet and VAE decoder (CUDA only;
the worker ignores it elsewhere) and ``--low-memory MODE`` its low-memory mode; the results
then go to ``pipeline_compile-<device>.json`` or ``pipeline_low_memory-<device>.json``, beside
the default run's. The worker warms up at the benchmark's size and largest batch, so
``startup_seconds`` holds what compiling cost (``compile:``, ``compile_batches:``), or loading
it from ``--compile-cache`` when bench.compile_cache has filled that folder.

    python -m bench.pipeline                       # CPU: the "small" model, 128 px, 8 steps
    python -m bench.pipeline --device cuda         # SD 1.5 architecture, 512 px, 20 steps, fp16
    python -m bench.pipeline --device cuda --compile max-autotune-no-cudagraphs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.models import DEFAULT_SIZE, DEFAULT_STEPS, MODEL_KINDS, cached_model
from inference.common.protocol import COMPILE_MODES, LOW_MEMORY_MODES

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"
NEGATIVE_PROMPT = "blurry, low quality"
PATHS = ("plain", "worker_generate", "worker_job")
ABLATION_PATH = "worker_generate_unaccelerated"
FIRST_SEED = 1234


def generation_parser(name: str, description: str, repeats_help: str):  # type: ignore[no-untyped-def]
    """The options every generation benchmark shares (model, size, steps, sampler, CFG, dtype,
    repeats, model cache); finish_generation_args fills in their defaults by device."""
    parser = common.base_parser(name, description)
    parser.add_argument("--model", choices=MODEL_KINDS, help="default: sd15 on cuda, small on cpu")
    parser.add_argument("--size", type=int, help="width and height (default: the model's, 512 for sd15)")
    parser.add_argument("--steps", type=int, help="default: 20 for sd15, 8 for small, 4 for tiny")
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--repeats", type=int, help=f"{repeats_help} (default 5 on cuda, 2 on cpu)")
    parser.add_argument("--model-cache", type=Path, help="where built models are kept (default: a temp folder)")
    return parser


def finish_generation_args(args):  # type: ignore[no-untyped-def]
    cuda = common.fill_device_defaults(args, cuda_repeats=5, cpu_repeats=2)
    args.model = args.model or ("sd15" if cuda else "small")
    args.size = args.size or DEFAULT_SIZE[args.model]
    args.steps = args.steps or DEFAULT_STEPS[args.model]
    return args


def parse_args(argv: list[str] | None):
    parser = generation_parser("pipeline", __doc__.splitlines()[0], "timed calls per path and batch")
    parser.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes (default %(default)s)")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES, help="the worker's torch_compile (default off)")
    parser.add_argument(
        "--compile-cache", default="", help="the worker's compile_cache_dir (default: torch's own folder)"
    )
    parser.add_argument("--ablate", action="store_true", help=f"add the {ABLATION_PATH} path")
    parser.add_argument("--low-memory", default="off", choices=LOW_MEMORY_MODES, help="the worker's low_memory (default off)")
    args = finish_generation_args(parser.parse_args(argv))
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    return args


def result_name(args) -> str:  # type: ignore[no-untyped-def]
    """The JSON's name: the default run's, or the variant's, so one never overwrites the other."""
    if "sdxl" in args.model:  # pipeline_sdxl, pipeline_tiny-sdxl: beside SD 1.5's
        return f"pipeline_{args.model}"
    if args.compile != "off":
        return "pipeline_compile"
    return "pipeline_low_memory" if args.low_memory != "off" else "pipeline"


def worker_config(args, folder: Path, outputs_dir: str, max_batch_images: int, **options):  # type: ignore[no-untyped-def]
    """The worker's settings for a benchmark of generation: this run's model, device and dtype,
    warmed up (on a GPU) at this run's size, so that one-time costs stay out of the timings."""
    from inference.common.protocol import ModelSpec, WorkerConfig

    return WorkerConfig(
        models=(ModelSpec(args.model, str(folder)),), default_model=args.model, outputs_dir=outputs_dir,
        device=args.device, dtype=args.dtype, warmup_shape=(args.size, args.size, 1),
        max_batch_images=max_batch_images, **options,
    )


def generation_settings(args, folder: Path, config, dtype) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The settings a generation benchmark's JSON records, whatever else it adds; ``dtype`` is
    the one the worker resolved (float16 asked for on a CPU runs as float32)."""
    return {
        "model": args.model, "model_folder": str(folder), "size": args.size, "steps": args.steps,
        "sampler": args.sampler, "cfg": args.cfg, "dtype": str(dtype).removeprefix("torch."), "repeats": args.repeats,
        "preview_interval_s": config.preview_interval_s, "png_compress_level": config.png_compress_level,
    }


def generation_title(name: str, args, settings: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    return (
        f"{name}: {args.model} {args.size}x{args.size}, {args.steps} steps, {args.sampler}, "
        f"CFG {args.cfg:g}, {settings['dtype']} on {args.device} (median of {args.repeats})"
    )


def plain_pipeline(folder: Path, device, dtype, sampler: str):
    """The model as a plain diffusers user loads it, with the sampler's scheduler."""
    import diffusers
    from diffusers import DiffusionPipeline

    from inference.common.samplers import SAMPLERS
    from inference.diffusers_versions import dtype_keyword  # torch_dtype or dtype, by diffusers version

    sdxl = "XL" in DiffusionPipeline.load_config(folder)["_class_name"]
    # No safety checker (SD) and no invisible watermark (SDXL): neither does the worker.
    options = {"add_watermarker": False} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    pipe = DiffusionPipeline.from_pretrained(folder, **{dtype_keyword(): dtype}, **options)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    spec = SAMPLERS[sampler]
    pipe.scheduler = getattr(diffusers, spec.scheduler_class).from_config(pipe.scheduler.config, **spec.options)
    return pipe


def unaccelerated_pipeline(args, folder: Path, device, dtype):  # type: ignore[no-untyped-def]
    """The model as the worker loads it, with the sampler's settings but no fast-path option."""
    from inference.acceleration import Acceleration
    from inference.models import load_pipeline
    from inference.common.protocol import ModelSpec

    return load_pipeline(ModelSpec(args.model, str(folder)), device, dtype, Acceleration())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    import torch

    from inference.generate import generate
    from inference.jobs import JobRunner
    from inference.progress import ProgressReporter
    from inference.models import resolve_device, resolve_dtype
    from inference.common.protocol import GenerateRequest, JobCompleted, JobKind

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    started, folder = common.timed(lambda: cached_model(args.model, args.model_cache))
    print(f"model {args.model} at {folder} ({started:.1f} s to find or build)")

    outputs = tempfile.TemporaryDirectory(prefix="sdbot-bench-outputs-")
    # The warm-up (on a GPU) at this run's size and largest batch: with compile on, the
    # compiles happen there and are reported, not inside the timed calls.
    config = worker_config(
        args, folder, outputs.name, max(args.batches), torch_compile=args.compile, low_memory=args.low_memory,
        compile_cache_dir=args.compile_cache,
    )
    load_worker, runner = common.timed(lambda: JobRunner.start(config))
    load_plain, plain = common.timed(lambda: plain_pipeline(folder, device, dtype, args.sampler))
    worker_pipe = runner.cache.get(args.model)
    paths = PATHS + ((ABLATION_PATH,) if args.ablate else ())
    unaccelerated = unaccelerated_pipeline(args, folder, device, dtype) if args.ablate else None
    memory = common.PeakMemory(device)

    def request(batch: int, job_id: int) -> GenerateRequest:
        return GenerateRequest(
            job_id=job_id, kind=JobKind.TXT2IMG, model=args.model, prompt=PROMPT,
            negative_prompt=NEGATIVE_PROMPT, width=args.size, height=args.size, steps=args.steps,
            cfg_scale=args.cfg, sampler=args.sampler, seeds=tuple(range(FIRST_SEED, FIRST_SEED + batch)),
        )

    job_ids = iter(range(1, 1_000_000))

    def run(path: str, batch: int) -> list:
        if path == "plain":
            generators = [torch.Generator("cpu").manual_seed(FIRST_SEED + i) for i in range(batch)]
            return plain(
                prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=args.size, height=args.size,
                num_inference_steps=args.steps, guidance_scale=args.cfg, num_images_per_prompt=batch,
                generator=generators,
            ).images
        job = request(batch, next(job_ids))
        if path in ("worker_generate", ABLATION_PATH):
            reporter = ProgressReporter(job.job_id, lambda event: None, config.preview_interval_s, config.preview_max_side)
            return generate(worker_pipe if path == "worker_generate" else unaccelerated, job, on_step=reporter)
        events: list = []
        runner.run(job, is_cancelled=lambda: False, send=events.append)
        completed = [event for event in events if isinstance(event, JobCompleted)]
        if not completed:
            raise RuntimeError(f"the worker did not complete the job: {events[-1]!r}")
        return list(completed[0].images)

    # Warm-up: first calls pay one-time costs (kernel selection, allocator growth; compile per
    # shape when the worker turns it on), which the timed calls must not include.
    warm_batches = args.batches if device.type == "cuda" else args.batches[:1]
    for batch in warm_batches:
        for path in paths:
            run(path, batch)

    timings: dict[int, dict[str, list[float]]] = {b: {p: [] for p in paths} for b in args.batches}
    peaks: dict[int, dict[str, int]] = {b: {p: 0 for p in paths} for b in args.batches}
    bases: dict[int, dict[str, int]] = {b: {p: 0 for p in paths} for b in args.batches}
    batch1_images: dict[str, list] = {}
    for _ in range(args.repeats):
        for batch in args.batches:
            for path in paths:
                base = memory.start()
                seconds, images = common.timed(lambda: run(path, batch))
                timings[batch][path].append(seconds)
                peaks[batch][path] = max(peaks[batch][path], memory.peak())
                bases[batch][path] = base
                if batch == 1 and path != "worker_job":
                    batch1_images[path] = images

    results: dict[str, Any] = {
        "load_seconds": {"worker": round(load_worker, 3), "plain": round(load_plain, 3)},
        # The worker's own start-up: load, warm-up and (with --compile) compile seconds.
        "startup_seconds": dict(runner.startup_timings),
        "memory_kind": memory.kind,
        "batches": {},
    }
    rows = []
    for batch in args.batches:
        entry: dict[str, Any] = {}
        for path in paths:
            stats = common.summary(timings[batch][path])
            median = stats["p50"]
            entry[path] = {
                "seconds": common.scaled(stats, 1, 4),
                "seconds_per_image": round(median / batch, 4),
                "images_per_second": round(batch / median, 4),
                "peak_memory_mib": common.mib(peaks[batch][path]),
                "memory_before_mib": common.mib(bases[batch][path]),
                "peak_over_before_mib": common.mib(peaks[batch][path] - bases[batch][path]),
            }
            rows.append([batch, path, median, median / batch, batch / median, common.mib(peaks[batch][path])])
        plain_median = entry["plain"]["seconds"]["p50"]
        for path in paths[1:]:
            entry[f"{path}_speedup_vs_plain"] = round(plain_median / entry[path]["seconds"]["p50"], 3)
        results["batches"][str(batch)] = entry
    if {"plain", "worker_generate"} <= batch1_images.keys():
        # The worker runs A1111's sampler (k-diffusion over A1111's sigmas), the plain call a
        # diffusers scheduler: how far apart they are is reported, not expected to be 0. The
        # unaccelerated copy runs the worker's algorithm, so it must make the worker's image.
        worker_image = batch1_images["worker_generate"][0]
        results["batch1_max_pixel_difference"] = common.max_pixel_difference(batch1_images["plain"][0], worker_image)
        if ABLATION_PATH in batch1_images:
            results[f"batch1_max_pixel_difference_{ABLATION_PATH}"] = common.max_pixel_difference(
                worker_image, batch1_images[ABLATION_PATH][0]
            )

    settings = {
        **generation_settings(args, folder, config, dtype),
        "batches": args.batches, "warm_batches": warm_batches,
        "torch_compile": args.compile, "compile_cache_dir": args.compile_cache, "low_memory": args.low_memory,
        "paths": list(paths),
    }
    common.write_result(result_name(args), args.device, settings, results, args.output_dir)
    common.print_table(
        generation_title("pipeline", args, settings),
        ["batch", "path", "s/call", "s/image", "images/s", f"peak MiB ({results['memory_kind']})"],
        rows,
    )
    for batch in args.batches:
        entry = results["batches"][str(batch)]
        print(
            f"batch {batch}: " + ", ".join(f"{path} {entry[f'{path}_speedup_vs_plain']}x plain" for path in paths[1:])
        )
    if results["startup_seconds"]:
        print("worker start-up (s): " + ", ".join(f"{k} {v}" for k, v in results["startup_seconds"].items()))
    if "batch1_max_pixel_difference" in results:
        print(f"batch 1, worker vs plain image: max pixel difference {results['batch1_max_pixel_difference']}")
    outputs.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
