"""The inpainting mask's blur: the sliding-window product against the tap-by-tap loop it replaced.

Both blur the same mask (an ellipse with a ragged edge, the shape a member paints) at each
radius; the benchmark checks they give the same pixels, then times each (best of --repeats).
The tap-by-tap blur is read from git at BASE_COMMIT, the last commit that had it.

    python -m bench.mask_blur [--size 1024] [--radii 4 16 64] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from bench import common
from inference import masks

BASE_COMMIT = "3698801"
_OLD_PATH = "inference/masks.py"


def painted_mask(size: int, seed: int = 6) -> Image.Image:
    """A size x size mask: a filled ellipse whose edge wanders, white on black."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size] / size - 0.5
    angle = np.arctan2(rows, columns)
    edge = 0.3 + 0.03 * np.sin(5 * angle + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(angle.shape)
    return Image.fromarray(np.where(np.hypot(rows, columns * 1.3) < edge, 255, 0).astype(np.uint8), mode="L")


def best_seconds(blur: Callable[[Image.Image, int], Image.Image], mask: Image.Image, radius: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        blur(mask, radius)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser("mask_blur", __doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="the square mask's side (default %(default)s)")
    parser.add_argument("--radii", type=int, nargs="+", default=[4, 16, 64], help="blur radii (default 4 16 64)")
    parser.add_argument("--repeats", type=int, default=3, help="best of how many runs (default %(default)s)")
    args = parser.parse_args(argv)
    load_average = common.load_average()
    old = common.module_at_commit(_OLD_PATH, BASE_COMMIT, "old_masks")
    mask = painted_mask(args.size)
    results: dict[str, Any] = {}
    for radius in args.radii:
        before = best_seconds(old.blur_mask, mask, radius, args.repeats)
        after = best_seconds(masks.blur_mask, mask, radius, args.repeats)
        same = np.array_equal(np.asarray(old.blur_mask(mask, radius)), np.asarray(masks.blur_mask(mask, radius)))
        results[str(radius)] = {
            "tap_by_tap_s": round(before, 4), "sliding_window_s": round(after, 4),
            "speedup": round(before / after, 2), "same_pixels": bool(same),
        }
    settings = {
        "size": args.size, "radii": args.radii, "repeats": args.repeats, "old_from_commit": BASE_COMMIT,
        "load_average_at_start": load_average,  # other processes on the machine slow both sides
    }
    common.write_result("mask_blur", args.device, settings, results, args.output_dir)
    common.print_table(
        f"mask blur, {args.size}x{args.size} (seconds, best of {args.repeats})",
        ["radius", "tap_by_tap_s", "sliding_window_s", "speedup", "same_pixels"],
        [[radius, *entry.values()] for radius, entry in results.items()],
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
