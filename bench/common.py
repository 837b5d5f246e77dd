"""What every benchmark shares: the machine and versions it ran on, percentiles, memory, JSON.

Each benchmark writes ``bench/results/<benchmark>-<device>.json`` (or into ``--output-dir``):

    {"benchmark": ..., "device": ..., "created": ..., "machine": {...}, "versions": {...},
     "settings": {...}, "results": {...}}

Timings are wall-clock ``time.perf_counter()``: simcord replaces ``time.monotonic`` with its
virtual clock while a simulated bot runs, so nothing here reads ``monotonic``. This module
imports no torch (the load benchmark measures the bot process's memory, which must not include
a torch the bot itself never imports); GPU details are read only when a GPU was asked for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_PACKAGES = ("torch", "diffusers", "transformers", "discord.py", "simcord", "spandrel", "sqlalchemy", "pillow")


# --- statistics --------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile, linearly interpolated between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, min, p50, p95, p99 and max of a list of measurements (in their own unit)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def scaled(stats: dict[str, float], factor: float, digits: int = 3) -> dict[str, float]:
    """The same summary in another unit (seconds -> milliseconds: factor 1000), rounded."""
    return {key: value if key == "n" else round(value * factor, digits) for key, value in stats.items()}


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


# --- memory ------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident memory since the last reset_peak_rss()."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def reset_peak_rss() -> bool:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM); False where impossible,
    and then the peak stays the process's peak since it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def mib(value: float) -> float:
    return round(value / 2**20, 1)


class PeakMemory:
    """Peak memory around one call: CUDA's allocator peak on a GPU, the process's RSS peak on
    the CPU. torch is imported only here, when a benchmark that runs a model asks for one."""

    def __init__(self, device) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.torch, self.device, self.cuda = torch, device, device.type == "cuda"

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.cuda else "process_peak_rss"

    def start(self) -> int:
        """Start a new peak; the memory in use now."""
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
            return self.torch.cuda.memory_allocated(self.device)
        reset_peak_rss()
        return rss_bytes()

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            return self.torch.cuda.max_memory_allocated(self.device)
        return peak_rss_bytes()


def time_paths(
    calls: dict[str, Callable[[], Any]], repeats: int, memory: PeakMemory, *, warm_up: bool
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, Any]]:
    """Each path's seconds per call, its peak memory, and its last result.

    The paths take turns within each repeat, so a machine that slows down or speeds up while
    the benchmark runs shifts every path alike instead of the one measured last. ``warm_up``
    calls each path once first (kernels are chosen and the allocator grows on a first call).
    """
    if warm_up:
        for call in calls.values():
            call()
    timings: dict[str, list[float]] = {path: [] for path in calls}
    peaks = dict.fromkeys(calls, 0)
    outputs: dict[str, Any] = {}
    for _ in range(repeats):
        for path, call in calls.items():
            memory.start()
            seconds, outputs[path] = timed(call)
            timings[path].append(seconds)
            peaks[path] = max(peaks[path], memory.peak())
    return timings, peaks, outputs


def against_baseline(
    timings: dict[str, list[float]],
    peaks: dict[str, int],
    ratio_key: str,
    extra: Callable[[dict[str, float]], dict[str, Any]] = lambda stats: {},
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Each path's JSON entry (seconds, ``extra``, peak MiB, its median over the first path's,
    the baseline's, under ``ratio_key``) and each path's median seconds, unrounded for the table."""
    baseline = percentile(next(iter(timings.values())), 0.5)
    results: dict[str, dict[str, Any]] = {}
    medians: dict[str, float] = {}
    for path, seconds in timings.items():
        stats = summary(seconds)
        medians[path] = stats["p50"]
        results[path] = {
            "seconds": scaled(stats, 1, 4),
            **extra(stats),
            "peak_memory_mib": mib(peaks[path]),
            ratio_key: round(stats["p50"] / baseline, 3),
        }
    return results, medians


def max_pixel_difference(one: Any, other: Any) -> int:
    """The largest difference, in 8-bit levels, between two images (PIL images or uint8
    arrays of the same shape)."""
    import numpy as np

    return int(np.abs(np.asarray(one, dtype=np.int16) - np.asarray(other, dtype=np.int16)).max())


# --- where it ran ------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): other processes on
    the machine slow what a benchmark measures."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores usable by this process, RAM, and the GPU when the benchmark used one."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "ram_gib": round((_total_ram_bytes() or 0) / 2**30, 1),
        "load_average": load_average(),
        "python_reference_ms": python_reference_ms(),
    }
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        properties = torch.cuda.get_device_properties(index)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def python_reference_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 5): how fast this machine ran Python
    when the figures were written. A shared machine's speed drifts by half and more over an
    hour; two runs' figures compare only as far as their references do."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for number in range(200_000):
            total += number * number % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def git_commit() -> str | None:
    """HEAD's commit, with "-dirty" when the working tree has changes (read-only git calls).

    SDBOT_COMMIT names it where the tree is a copy without .git (the GPU machine's)."""
    if os.environ.get("SDBOT_COMMIT"):
        return os.environ["SDBOT_COMMIT"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if changed else commit


def module_at_commit(path: str, commit: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it was at ``commit``, loaded under ``name``: the code a
    before/after benchmark compares against, read from git rather than kept as a copy."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(name)
    module.__file__ = str(REPO_ROOT / path)  # paths the module derives from its file still resolve
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    found["sdbot"] = git_commit()
    return found


# --- command line and output -------------------------------------------------------------


def log_worker_start_up() -> None:
    """Show the worker's start-up lines (model loads, warm-up runs, compiles) as they happen:
    a compile can take minutes, and a device call's log should say where they went."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    for name in ("inference.acceleration", "inference.models"):
        logging.getLogger(name).setLevel(logging.INFO)


def base_parser(name: str, description: str, *, default_device: str = "cpu") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--device", default=default_device, help="cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (default bench/results)"
    )
    return parser


def add_worker_start(parser: argparse.ArgumentParser) -> None:
    """``--worker-start``: how the benchmark's worker processes start. Its figures are taken
    after the workers are ready, so they do not depend on it; forkserver makes the start itself
    cheap where a forkserver has imported torch already (the smoke tests' process)."""
    from bot.jobs.worker_process import START_METHODS

    parser.add_argument(
        "--worker-start", choices=START_METHODS, default="spawn",
        help="spawn (each worker imports torch, as a bot's first start does) or forkserver "
        "(forked from one process that imported it once: [worker] start_method) (default %(default)s)",
    )


def fill_device_defaults(args: argparse.Namespace, *, cuda_repeats: int, cpu_repeats: int) -> bool:
    """Fill in ``--dtype`` and ``--repeats`` where they were left out; whether the run is on a GPU.

    Half precision and more repeats on a GPU, where a call is quick; float32 and few repeats on
    the CPU, where half precision is slow or missing and one call can take minutes.
    """
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("float16" if cuda else "float32")
    args.repeats = args.repeats or (cuda_repeats if cuda else cpu_repeats)
    return cuda


def torch_device(args: argparse.Namespace) -> tuple[Any, Any]:
    """(torch.device, torch.dtype) from ``--device`` and ``--dtype``, as the worker resolves them.

    Imported here, not at the top, so that benchmarks without a model never import torch.
    """
    from inference.models import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    return device, resolve_dtype(args.dtype, device)


def device_label(device: str) -> str:
    """The file name's device part: "cpu" or "cuda" (an index does not change the machine)."""
    return device.split(":", 1)[0]


def write_result(
    benchmark: str,
    device: str,
    settings: dict[str, Any],
    results: dict[str, Any],
    output_dir: Path = RESULTS_DIR,
) -> Path:
    """Write the benchmark's JSON (see the module docstring), say where, and return its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{benchmark}-{device_label(device)}.json"
    document = {
        "benchmark": benchmark,
        "device": device,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    print(f"written to {path}")
    return path


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned table on stdout: the readable summary every benchmark prints."""
    rows = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
