"""Preview cost: what the worker's live previews take against the sampling they show.

The issue's budget: previews under 2% of sampling time, and never the full VAE. The worker
logs each pass's preview share (inference.progress.ProgressReporter); this measures it, per
method, on the worker's own pipeline and previewer. In one process, interleaved:

- ``none``: ``generate()`` with the worker's progress reporter, no preview made (the step
  callback still runs, so what remains between paths is the previews alone).
- ``approx`` and ``taesd``: the same call with a preview at every step (interval 0), the
  worst case, made by the worker's ``Previewer`` with that method (TAESD in random weights,
  loaded through ``previews.load_taesd`` as a configured ``taesd_source`` is).

A preview's cost is read two ways: in the run (the time above ``none`` per step, so a GPU
sync a preview forces is counted), and alone (``Previewer.make`` on latents of the run's
shape, median of many); the shares take the larger. ``full_vae`` times what the worker never does: the model's own VAE
(on ``small``, a tenth of SD 1.5's widths) decoding the same latents, made into the same JPEG
sheet. Each method's share of sampling is given at every step, at the configured
``preview_interval_s`` (one preview per interval, or per step where a step takes longer), and
as the worker runs it: a preview that would cost over 2% of its interval is spaced out to
``cost / 2%`` (inference.progress.ProgressReporter), and that interval is reported.

    python -m bench.previews                    # CPU: the "small" model, 128 px, 8 steps, 4 images
    python -m bench.previews --device cuda      # SD 1.5 architecture, 512 px, 20 steps, fp16
"""

from __future__ import annotations

import math
import sys
import tempfile
from typing import Any

from bench import common
from bench.models import cached_model, cached_taesd
from bench.pipeline import FIRST_SEED, NEGATIVE_PROMPT, PROMPT, finish_generation_args, generation_parser
from bench.pipeline import generation_settings, generation_title, worker_config

METHODS = ("approx", "taesd")
PATHS = ("none", *METHODS)


def parse_args(argv: list[str] | None):
    parser = generation_parser("previews", __doc__.splitlines()[0], "timed calls per path")
    parser.add_argument("--images", type=int, default=4, help="images per call (default 4, /imagine's count)")
    parser.add_argument("--alone", type=int, default=20, help="previews timed alone per method (default 20)")
    return finish_generation_args(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    import torch

    from inference import previews
    from inference.generate import generate
    from inference.jobs import JobRunner
    from inference.progress import PREVIEW_BUDGET, ProgressReporter
    from inference.models import resolve_device, resolve_dtype
    from inference.common.protocol import GenerateRequest, JobKind

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    folder = cached_model(args.model, args.model_cache)
    taesd_folder = cached_taesd(args.model, args.model_cache)
    outputs = tempfile.TemporaryDirectory(prefix="sdbot-bench-outputs-")
    config = worker_config(args, folder, outputs.name, args.images)
    runner = JobRunner.start(config)
    pipe = runner.cache.get(args.model)
    previewers = {
        # As JobRunner makes its previewer, with each method.
        "approx": previews.Previewer(previews.APPROX, config.preview_max_side, family=lambda: runner.cache.latent_family),
        "taesd": previews.Previewer(
            previews.TAESD, config.preview_max_side, previews.load_taesd(str(taesd_folder), device, dtype)
        ),
    }

    job_ids = iter(range(1, 1_000_000))
    made: dict[str, list[int]] = {path: [] for path in PATHS}
    in_run: dict[str, list[float]] = {path: [] for path in METHODS}

    def run(path: str) -> None:
        job = GenerateRequest(
            job_id=next(job_ids), kind=JobKind.TXT2IMG, model=args.model, prompt=PROMPT,
            negative_prompt=NEGATIVE_PROMPT, width=args.size, height=args.size, steps=args.steps,
            cfg_scale=args.cfg, sampler=args.sampler, seeds=tuple(range(FIRST_SEED, FIRST_SEED + args.images)),
        )
        every_step = path != "none"
        reporter = ProgressReporter(
            job.job_id, lambda event: None, 0.0 if every_step else math.inf, config.preview_max_side,
            previewers.get(path),
        )
        generate(pipe, job, on_step=reporter)
        _synchronize(torch, device)
        made[path].append(reporter.previews_made)
        if every_step:
            in_run[path].append(reporter.preview_seconds / max(1, reporter.previews_made))

    for path in PATHS:  # first calls pay one-time costs (allocator growth, kernel choice)
        run(path)
    timings: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(args.repeats):
        for path in PATHS:
            timings[path].append(common.timed(lambda: run(path))[0])
    if made["none"][-1] != 0 or any(made[method][-1] != args.steps for method in METHODS):
        raise RuntimeError(f"previews made per call {made}, expected none and one a step ({args.steps})")

    # Alone: the latents of a pass at this size, as the step callback hands them over.
    scale = pipe.vae_scale_factor
    latents = torch.randn(
        (args.images, pipe.unet.config.in_channels, args.size // scale, args.size // scale), device=device,
        dtype=pipe.unet.dtype,
    )
    makers = {**{method: previewers[method].make for method in METHODS},
              "full_vae": lambda lat: full_vae_preview(pipe, lat, config.preview_max_side)}
    alone: dict[str, list[float]] = {name: [] for name in makers}
    for name, make in makers.items():
        make(latents)
        for _ in range(args.alone):
            _synchronize(torch, device)
            alone[name].append(common.timed(lambda: make(latents))[0])

    none_median = common.summary(timings["none"])["p50"]
    step_seconds = none_median / args.steps
    interval = config.preview_interval_s
    results: dict[str, Any] = {
        "step_seconds": round(step_seconds, 5),
        "sampling_seconds": common.scaled(common.summary(timings["none"]), 1, 4),
        "preview_interval_s": interval,
        "budget_share": PREVIEW_BUDGET,
        "methods": {},
    }
    rows = []
    for name in (*METHODS, "full_vae"):
        alone_median = common.summary(alone[name])["p50"]
        entry: dict[str, Any] = {"alone_ms": common.scaled(common.summary(alone[name]), 1000)}
        per_preview = alone_median
        if name in METHODS:
            call_median = common.summary(timings[name])["p50"]
            # The time each preview added to the call, GPU syncs and all. A preview cheaper
            # than the noise between two medians reads as nothing (or less) there: the cost
            # taken is the larger of the two readings.
            added = (call_median - none_median) / args.steps
            per_preview = max(added, alone_median)
            entry.update({
                "call_seconds": common.scaled(common.summary(timings[name]), 1, 4),
                "added_ms_per_preview": round(added * 1000, 3),
                "measured_in_run_ms": round(common.summary(in_run[name])["p50"] * 1000, 3),
            })
        # As ProgressReporter spaces them: never more often than the budget affords.
        spaced = max(interval, per_preview / PREVIEW_BUDGET)
        entry["share_every_step"] = round(per_preview / step_seconds, 5)
        entry["share_at_configured_interval"] = round(per_preview / max(interval, step_seconds), 5)
        entry["worker_interval_s"] = round(spaced, 3)
        entry["share_as_the_worker_runs"] = round(per_preview / max(spaced, step_seconds), 5)
        results["methods"][name] = entry
        rows.append([name, per_preview * 1000, alone_median * 1000, 100 * entry["share_every_step"],
                     100 * entry["share_at_configured_interval"], spaced, 100 * entry["share_as_the_worker_runs"]])

    settings = {
        **generation_settings(args, folder, config, pipe.unet.dtype), "images": args.images,
        "alone_repeats": args.alone, "taesd_folder": str(taesd_folder), "paths": list(PATHS),
        "preview_max_side": config.preview_max_side,
    }
    common.write_result("previews", args.device, settings, results, args.output_dir)
    common.print_table(
        generation_title("previews", args, settings) + f", {args.images} images; a step {step_seconds * 1000:.1f} ms",
        ["method", "ms/preview", "ms alone", "% of a step", f"% at {interval:g} s", "spaced to s",
         "% spaced"],
        rows,
    )
    print("(full_vae: what the worker never runs for a preview, spaced as the others would be)")
    outputs.cleanup()
    return results


def full_vae_preview(pipe, latents, max_side: int) -> bytes:  # type: ignore[no-untyped-def]
    """A preview the way the worker refuses to make one: the model's VAE decoding the latents."""
    import torch

    from inference import previews

    with torch.inference_mode():
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return previews.jpeg_sheet(previews.to_uint8(images.float().permute(0, 2, 3, 1)), max_side, max_scale=1.0)


def _synchronize(torch, device) -> None:  # type: ignore[no-untyped-def]
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main(sys.argv[1:])
