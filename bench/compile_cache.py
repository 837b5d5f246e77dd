"""Compile cost: what the worker's torch.compile costs at start-up, the first time and after a
restart that finds the cache (``WorkerConfig.compile_cache_dir``).

Each start is a fresh process, as a restart is (nothing compiled in memory), and does what the
worker does: load the model, place it with ``inference.acceleration`` in the compile mode
(UNet and VAE decoder), then ``warm_up`` at the benchmark's size and image count, whose first
run pays the compile (or the cache's load) and whose second is an ordinary compiled run.
Three starts, one after another:

- ``uncompiled``: the same two runs without compile (what a run costs without it);
- ``cold``: compiled, with an empty cache folder;
- ``warm``: compiled again, with the folder the cold start filled.

``compile_seconds`` is a start's first run less its second. The worker compiles only on CUDA
(``Acceleration.for_device``); this benchmark calls ``compile_models`` itself so the cache can
be measured on any machine (on the CPU inductor writes C++, on a GPU Triton kernels).

    python -m bench.compile_cache                                  # CPU: tiny model, 64 px
    python -m bench.compile_cache --device cuda --mode reduce-overhead   # SD 1.5, 512 px, fp16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.models import DEFAULT_SIZE, MODEL_KINDS, cached_model
from inference.common.protocol import COMPILE_MODES

STARTS = ("uncompiled", "cold", "warm")
# The child prints its result on one line starting with this, among library noise.
RESULT_PREFIX = "compile-cache-result "


def parse_args(argv: list[str] | None):  # type: ignore[no-untyped-def]
    parser = common.base_parser("compile_cache", __doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_KINDS, help="default: sd15 on cuda, tiny on cpu")
    parser.add_argument("--size", type=int, help="width and height (default: the model's, 512 for sd15)")
    parser.add_argument("--images", type=int, default=1, help="images per warm-up run (default 1)")
    parser.add_argument("--dtype", help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--mode", default="default", choices=COMPILE_MODES[1:], help="torch.compile mode")
    parser.add_argument("--model-cache", type=Path, help="where built models are kept (default: a temp folder)")
    parser.add_argument("--compile-cache", type=Path, help="the cache folder (default: a new temp folder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one start may take")
    parser.add_argument("--child", choices=STARTS, help=argparse.SUPPRESS)  # one start, in this process
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.model = args.model or ("sd15" if cuda else "tiny")
    args.size = args.size or DEFAULT_SIZE[args.model]
    args.dtype = args.dtype or ("float16" if cuda else "float32")
    return args


def child(args) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One start, in this process: load, place (compiled unless uncompiled), warm up twice."""
    import torch
    from diffusers import StableDiffusionPipeline

    from inference.acceleration import Acceleration, place_pipeline, warm_up
    from inference.diffusers_versions import dtype_keyword
    from inference.models import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    folder = cached_model(args.model, args.model_cache)
    load_seconds, pipe = common.timed(
        lambda: StableDiffusionPipeline.from_pretrained(folder, **{dtype_keyword(): dtype}, safety_checker=None)
    )
    pipe.set_progress_bar_config(disable=True)
    compiling = args.child != "uncompiled"
    plan = Acceleration(
        channels_last=device.type == "cuda", fuse_qkv=device.type == "cuda",
        compile_mode=args.mode if compiling else "off",
        compile_cache_dir=str(args.compile_cache) if compiling else "",
    )
    place_pipeline(pipe, device, plan)
    first, second = warm_up(pipe, args.size, args.size, args.images, runs=2)
    from torch._dynamo.utils import counters

    return {
        "load_seconds": round(load_seconds, 3),
        "first_run_seconds": round(first, 3),
        "run_seconds": round(second, 4),
        "compile_seconds": round(max(0.0, first - second), 3) if compiling else None,
        # 0 where compiling failed: then the worker runs uncompiled (dynamo's error is in the log).
        "graphs": counters["stats"]["unique_graphs"],
        "inductor_counters": dict(counters["inductor"]),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
    }


def start(args, which: str, cache: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run one start in a fresh process and return what it measured."""
    command = [
        sys.executable, "-m", "bench.compile_cache", "--child", which, "--device", args.device,
        "--model", args.model, "--size", str(args.size), "--images", str(args.images), "--dtype", args.dtype,
        "--mode", args.mode, "--compile-cache", str(cache),
    ]
    if args.model_cache:
        command += ["--model-cache", str(args.model_cache)]
    environment = dict(os.environ)
    environment.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the start must use --compile-cache alone
    seconds, finished = common.timed(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=environment)
    )
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if finished.returncode != 0 or not lines:
        raise RuntimeError(f"the {which} start failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    result["process_seconds"] = round(seconds, 3)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    if args.child:
        print(RESULT_PREFIX + json.dumps(child(args)), flush=True)
        return {}
    cached_model(args.model, args.model_cache)  # built once, before the timed starts
    temporary = None
    if args.compile_cache is None:
        temporary = tempfile.TemporaryDirectory(prefix="sdbot-compile-cache-")
        args.compile_cache = Path(temporary.name)
    elif any(args.compile_cache.iterdir() if args.compile_cache.exists() else ()):
        raise SystemExit(f"--compile-cache {args.compile_cache} is not empty: the cold start needs an empty one")
    starts = {}
    for which in STARTS:
        print(f"start {which}...", flush=True)
        starts[which] = start(args, which, args.compile_cache)
        print(f"  {starts[which]}", flush=True)
    cold, warm = starts["cold"], starts["warm"]
    results: dict[str, Any] = {
        "starts": starts,
        "cache_speedup_of_first_run": round(cold["first_run_seconds"] / warm["first_run_seconds"], 2),
        "compiled_run_speedup": round(starts["uncompiled"]["run_seconds"] / warm["run_seconds"], 3),
        "cache_mib": round(sum(f.stat().st_size for f in args.compile_cache.rglob("*") if f.is_file()) / 2**20, 1),
    }
    settings = {
        "model": args.model, "size": args.size, "images": args.images, "dtype": cold["dtype"],
        "mode": args.mode, "warm_up_steps": _warm_up_steps(),
    }
    common.write_result("compile_cache", args.device, settings, results, args.output_dir)
    common.print_table(
        f"compile_cache: {args.model} {args.size}x{args.size} x{args.images}, torch.compile {args.mode!r}, "
        f"{cold['dtype']} on {args.device}",
        ["start", "first run s", "compile s", "run s", "process s", "graphs"],
        [[w, starts[w]["first_run_seconds"], starts[w]["compile_seconds"], starts[w]["run_seconds"],
          starts[w]["process_seconds"], starts[w]["graphs"]] for w in STARTS],
    )
    print(
        f"first run from the cache {results['cache_speedup_of_first_run']}x faster than compiling; "
        f"compiled run {results['compiled_run_speedup']}x the uncompiled; cache {results['cache_mib']} MiB"
    )
    if temporary is not None:
        temporary.cleanup()
    return results


def _warm_up_steps() -> int:
    from inference.acceleration import WARMUP_STEPS

    return WARMUP_STEPS


if __name__ == "__main__":
    main(sys.argv[1:])
