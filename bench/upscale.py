"""Benchmark 4, upscale: Real-ESRGAN x4 through the worker, untiled and tiled, against the bare
model call.

The model is RealESRGAN_x4plus's architecture (RRDBNet: 64 features, 23 blocks, growth 32) in
random weights, saved as a .pth in xinntao's layout (the EMA weights under "params_ema") and
loaded through spandrel by ``inference.upscale.load_upscaler``, as the worker loads a real one.

- ``bare``: the spandrel model called once on the whole image tensor (no PIL, no tiles).
- ``worker_untiled``: ``Upscalers.upscale_to`` with tiles off (``upscale_tile = 0``), PIL in
  and out, as an upscale job runs.
- ``worker_tiled``: the same with the worker's default tiles (256 px, 32 px overlap).

A 512 px input (2048 px out) is the GPU setting. RRDBNet costs about 36 MFLOP per input pixel,
so 512 px is ~10 TFLOP per call: many minutes on a small CPU (a 48 px input took 20 s on the
shared 2-core machine the committed CPU results come from). The CPU default is therefore a
64 px input (256 px out, 64x less work than 512, same layers) and a 32 px tile with 8 px
overlap, so the tiled path still blends several tiles; ``--size 512 --tile 256 --overlap 32``
is the real setting. Warm-up runs every path once on a 32 px image (loading the models).

    python -m bench.upscale                         # CPU: 64 -> 256 px
    python -m bench.upscale --device cuda           # 512 -> 2048 px, fp16
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

MODEL_NAME = "RealESRGAN_x4plus"
PATHS = ("bare", "worker_untiled", "worker_tiled")


def parse_args(argv: list[str] | None):
    parser = common.base_parser("upscale", __doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="input side in pixels (default 512 on cuda, 64 on cpu)")
    parser.add_argument("--tile", type=int, help="tile side (default 256 on cuda, 32 on cpu)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default 32 on cuda, 8 on cpu)")
    parser.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--repeats", type=int, help="timed calls per path (default 5 on cuda, 1 on cpu)")
    args = parser.parse_args(argv)
    cuda = common.fill_device_defaults(args, cuda_repeats=5, cpu_repeats=1)
    args.size = args.size or (512 if cuda else 64)
    args.tile = args.tile or (256 if cuda else 32)
    args.overlap = args.overlap if args.overlap is not None else (32 if cuda else 8)
    return args


def rrdbnet_x4plus_state(features: int = 64, blocks: int = 23, grow: int = 32, seed: int = 0) -> dict:
    """A random state dict with the keys and shapes of RealESRGAN_x4plus.pth (basicsr's RRDBNet).

    Weights are uniform with variance 1/fan_in, so activations keep their scale through the 23
    blocks (no overflow in fp16, and no denormals slowing a CPU down).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name: str, inputs: int, outputs: int) -> None:
        bound = (3 / (inputs * 9)) ** 0.5
        state[f"{name}.weight"] = (torch.rand(outputs, inputs, 3, 3, generator=generator) * 2 - 1) * bound
        state[f"{name}.bias"] = (torch.rand(outputs, generator=generator) * 2 - 1) * 0.01

    conv("conv_first", 3, features)
    for block in range(blocks):
        for dense in (1, 2, 3):
            for k in range(1, 6):
                conv(f"body.{block}.rdb{dense}.conv{k}", features + (k - 1) * grow, grow if k < 5 else features)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", features, 3)
    state["conv_last.bias"] += 0.5  # mid-grey output, as the tests' model
    return state


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from inference.upscale import Upscalers, load_upscaler

    device, dtype = common.torch_device(args)
    folder = tempfile.TemporaryDirectory(prefix="sdbot-bench-upscalers-")
    model_file = Path(folder.name) / f"{MODEL_NAME}.pth"
    torch.save({"params_ema": rrdbnet_x4plus_state()}, model_file)

    bare_model = load_upscaler(model_file, device, dtype)
    untiled = Upscalers([folder.name], device, dtype, tile=0, tile_overlap=0)
    tiled = Upscalers([folder.name], device, dtype, tile=args.tile, tile_overlap=args.overlap)
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    target = args.size * 4
    pixels = torch.from_numpy(np.asarray(source, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    memory = common.PeakMemory(device)

    @torch.inference_mode()
    def bare() -> Any:
        result = bare_model(pixels.to(device, bare_model.dtype))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    calls = {
        "bare": bare,
        "worker_untiled": lambda: untiled.upscale_to(source, target, target, MODEL_NAME),
        "worker_tiled": lambda: tiled.upscale_to(source, target, target, MODEL_NAME),
    }
    # Warm-up: loads the worker's copies of the model and picks kernels, on a small image; on
    # a GPU also at full size (kernels are chosen per shape).
    small = source.resize((32, 32))
    with torch.inference_mode():
        bare_model(pixels[..., :32, :32].to(device, bare_model.dtype))
    for upscalers in (untiled, tiled):
        upscalers.upscale_to(small, 128, 128, MODEL_NAME)
    timings, peaks, outputs = common.time_paths(calls, args.repeats, memory, warm_up=device.type == "cuda")

    bare_image = (outputs["bare"][0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    difference = {
        path: common.max_pixel_difference(outputs[path], bare_image)
        for path in ("worker_untiled", "worker_tiled")
    }
    per_path, medians = common.against_baseline(
        timings, peaks, "slowdown_vs_bare",
        lambda stats: {"megapixels_out_per_second": round(target * target / 1e6 / stats["p50"], 4)},
    )
    results: dict[str, Any] = {
        "memory_kind": memory.kind,
        "max_pixel_difference_vs_bare": difference,
        **per_path,
    }
    rows = []
    for path in PATHS:
        rows.append([path, medians[path], results[path]["slowdown_vs_bare"], common.mib(peaks[path])])
    settings = {
        "model": "RRDBNet x4plus (64 features, 23 blocks), random weights, via spandrel",
        "input": f"{args.size}x{args.size}", "output": f"{target}x{target}", "tile": args.tile,
        "overlap": args.overlap, "dtype": str(bare_model.dtype).removeprefix("torch."), "repeats": args.repeats,
    }
    common.write_result("upscale", args.device, settings, results, args.output_dir)
    common.print_table(
        f"upscale: {args.size} -> {target} px, {settings['dtype']} on {args.device} (median of {args.repeats}; "
        f"tiles {args.tile}/{args.overlap})",
        ["path", "s/call", "x bare", f"peak MiB ({results['memory_kind']})"],
        rows,
    )
    print(f"max pixel difference against the bare call: {difference}")
    folder.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
