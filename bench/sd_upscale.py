"""SD upscale: the worker's detailed upscale (inference.sd_upscale) against the bare calls it is
made of, the upscaler once and one plain diffusers img2img call per tile.

- ``bare``: ``Upscalers.upscale_to`` (Lanczos), then diffusers' StableDiffusionImg2ImgPipeline
  (``from_pipe`` of the same weights, Euler) on each tile of the same grid; no blending.
- ``sd_upscale``: ``run_sd_upscale``, as an SD upscale job runs (A1111's k-diffusion Euler,
  seed per tile, progress and cancel checks, the tiles blended back).

The difference is what the workflow adds: its prompt encoding and noise per tile, the
callbacks, and the blend. On a GPU the real setting is SD 1.5 (random weights), 512 -> 1024
px: nine 512 px tiles overlapping by 64. The CPU default is the tiny model, 64 -> 128 px
(nine 64 px tiles), the same workflow at a size a small CPU runs in seconds.

    python -m bench.sd_upscale                     # CPU: tiny model
    python -m bench.sd_upscale --device cuda       # SD 1.5 shapes, fp16
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.models import MODEL_KINDS, cached_model

PATHS = ("bare", "sd_upscale")
PROMPT = "a lighthouse on a cliff, detailed"
SEED = 1234


def parse_args(argv: list[str] | None):
    parser = common.base_parser("sd_upscale", __doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_KINDS, help="default: sd15 on cuda, tiny on cpu")
    parser.add_argument("--size", type=int, help="source side in pixels (default: the model's base size)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default %(default)s)")
    parser.add_argument("--strength", type=float, default=0.3, help="denoising strength (default %(default)s)")
    parser.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--repeats", type=int, help="timed calls per path (default 3 on cuda, 1 on cpu)")
    parser.add_argument("--model-cache", type=Path, help="where built models are kept (default: a temp folder)")
    args = parser.parse_args(argv)
    cuda = common.fill_device_defaults(args, cuda_repeats=3, cpu_repeats=1)
    args.model = args.model or ("sd15" if cuda else "tiny")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    from inference import images
    from inference.common.protocol import LANCZOS, GenerateRequest, ImageInput, JobKind, ModelSpec, UpscaleOptions
    from inference.models import PipelineCache
    from inference.sd_upscale import run_sd_upscale, split_grid, tile_overlap, tile_size
    from inference.upscale import Upscalers

    device, dtype = common.torch_device(args)
    folder = cached_model(args.model, args.model_cache)
    cache = PipelineCache((ModelSpec(args.model, str(folder)),), device, dtype)
    pipe = cache.get(args.model)
    upscalers = Upscalers((), device, dtype)
    side = args.size or int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    work = tempfile.TemporaryDirectory(prefix="sdbot-bench-sd-upscale-")
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    source_path = images.save_png(source, Path(work.name) / "source.png", "")
    request = GenerateRequest(
        job_id=1, kind=JobKind.SD_UPSCALE, model=args.model, prompt=PROMPT, negative_prompt="", width=side * 2,
        height=side * 2, steps=args.steps, cfg_scale=7.0, sampler="Euler", seeds=(SEED,),
        image=ImageInput(str(source_path), args.strength), upscale=UpscaleOptions(2.0, LANCZOS),
    )
    tile_w, tile_h = tile_size(pipe, request)
    overlap = tile_overlap(tile_w, tile_h)
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    img2img.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    img2img.set_progress_bar_config(disable=True)

    def bare() -> Image.Image:
        upscaled = upscalers.upscale_to(source, side * 2, side * 2, LANCZOS)
        grid = split_grid(upscaled, tile_w, tile_h, overlap)
        for index, (_y, _h, row) in enumerate(grid.tiles):
            for cell in row:
                generator = torch.Generator("cpu").manual_seed(SEED + index)
                cell[2] = img2img(
                    prompt=PROMPT, image=cell[2], strength=args.strength, num_inference_steps=args.steps,
                    guidance_scale=7.0, generator=generator,
                ).images[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return upscaled

    def workflow() -> Image.Image:
        [image] = run_sd_upscale(cache, upscalers, request, lambda *_: None, lambda: False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return image

    calls = {"bare": bare, "sd_upscale": workflow}
    memory = common.PeakMemory(device)
    # Warm-up on the CPU too: the img2img pipeline's first call is much slower than the rest.
    timings, peaks, _images = common.time_paths(calls, args.repeats, memory, warm_up=True)
    tiles = split_grid(source.resize((side * 2, side * 2)), tile_w, tile_h, overlap).count
    per_path, medians = common.against_baseline(
        timings, peaks, "slowdown_vs_bare", lambda stats: {"seconds_per_tile": round(stats["p50"] / tiles, 4)}
    )
    results: dict[str, Any] = {"memory_kind": memory.kind, "tiles": tiles, **per_path}
    rows = []
    for path in PATHS:
        shown = results[path]
        rows.append([path, medians[path], shown["seconds_per_tile"], shown["slowdown_vs_bare"], common.mib(peaks[path])])
    settings = {
        "model": f"{args.model} (random weights)", "input": f"{side}x{side}", "output": f"{side * 2}x{side * 2}",
        "tile": f"{tile_w}x{tile_h}", "overlap": overlap, "steps": args.steps, "strength": args.strength, "sampler": "Euler",
        "dtype": str(dtype).removeprefix("torch."), "repeats": args.repeats,
    }
    common.write_result("sd_upscale", args.device, settings, results, args.output_dir)
    common.print_table(
        f"sd_upscale: {side} -> {side * 2} px, {tiles} tiles of {tile_w}x{tile_h}, {args.steps} steps at "
        f"{args.strength:g} on {args.device} (median of {args.repeats})",
        ["path", "s/call", "s/tile", "x bare", f"peak MiB ({results['memory_kind']})"],
        rows,
    )
    work.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
