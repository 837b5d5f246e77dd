"""Progress of a model load that a member waits on: the bytes of its weight files read so far.

diffusers gives no progress while it builds a pipeline (``from_pretrained`` and
``from_single_file`` read every weight file, then convert and build), and most of a first
load is reading those files from disk: a 7 GB SDXL checkpoint takes a minute from a hard disk,
seconds once it is in the page cache. So before a watched load the weight files are read once
in large chunks (``read_ahead``), reporting bytes read of the total; diffusers then reads them
from memory. The read is skipped (only the start and the end are reported) when the files
would not fit in the memory available, where reading them twice would cost a second full read.

A hub id has no local files to measure: its load reports a total of 0 (unknown). Reports go
only to a load someone watches (PipelineCache.reporting_loads): preloading at start-up reads
nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from inference.common.sources import is_single_file

log = logging.getLogger(__name__)

# (model's display name, bytes read, bytes in all; 0 in all when unknown)
LoadListener = Callable[[str, int, int], None]

# Weight files diffusers reads from a model folder, preferred first within one component.
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CHUNK_BYTES = 16 * 2**20
# At most one report per interval while reading (the first and the last always go).
REPORT_INTERVAL_S = 0.5
# Read ahead only files that take at most this share of the memory available now.
MAX_SHARE_OF_AVAILABLE = 0.5


def weight_files(source: str) -> list[Path]:
    """The files a load of ``source`` reads: the checkpoint itself, or for a diffusers folder
    each component's weights (safetensors where a component has them, else .bin); [] for a
    hub id or anything else not on this disk."""
    path = Path(source).expanduser()
    if is_single_file(source):
        return [path] if path.is_file() else []
    if not path.is_dir():
        return []
    files: list[Path] = []
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        for suffix in WEIGHT_SUFFIXES:
            found = sorted(component.glob(f"*{suffix}"))
            if found:
                files += found
                break
    return files


def read_ahead(
    name: str,
    files: list[Path],
    report: LoadListener,
    *,
    interval_s: float = REPORT_INTERVAL_S,
    available_bytes: int | None = None,
) -> int:
    """Read ``files`` once, reporting (name, bytes read, total) at most every ``interval_s``:
    the first report at 0, the last at the total (what follows is diffusers building the
    pipeline from memory). Returns the total. Files too large for the memory available
    (``available_bytes``, /proc/meminfo's MemAvailable by default) are not read: the load
    then reports 0 of the total only."""
    total = sum(path.stat().st_size for path in files)
    report(name, 0, total)
    if not total:
        return 0
    available = memory_available() if available_bytes is None else available_bytes
    if available is not None and total > available * MAX_SHARE_OF_AVAILABLE:
        log.info("model %r: %.1f GB would not fit in memory twice: loading without reading ahead",
                 name, total / 2**30)
        return total
    done = 0
    last_report = time.monotonic()
    buffer = bytearray(CHUNK_BYTES)
    try:
        for path in files:
            with path.open("rb", buffering=0) as file:
                while read := file.readinto(buffer):
                    done += read
                    now = time.monotonic()
                    if now - last_report >= interval_s and done < total:
                        report(name, done, total)
                        last_report = now
    except OSError as exc:  # only the progress is lost: the load itself says what is wrong
        log.warning("model %r: reading ahead stopped (%s); loading it without", name, exc)
        return total
    report(name, done, total)
    return total


def memory_available() -> int | None:
    """Bytes of memory available for new data without swapping (Linux), or None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
