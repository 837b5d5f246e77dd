"""Single-file load: how long an SDXL ``.safetensors`` (A1111's format) takes to load from disk.

The file is SDXL base's full architecture (the shipped config, 2.6 B parameters) with random
weights, saved in float16 in A1111's key layout (inference.single_file_writer), as the files
admins download are; ``--tiny`` uses the tiny test SDXL instead, so the benchmark runs on a
CPU in seconds. Built once into ``--model-cache`` and reused. Measured with perf_counter:

- inspect: reading the header to tell the family (what start-up does for every file);
- read: ``inference.models.read_pipeline`` (the worker's path: inspect, from_single_file with
  the shipped config, offline), the file in the page cache after the first repeat;
- place: moving the read pipeline to ``--device`` (inference.acceleration.place_pipeline);
- from disk, the file's pages first dropped from the page cache (posix_fadvise DONTNEED, no
  root needed; a page another process holds may stay): ``cold_read`` is read_pipeline from
  disk; ``cold_read_ahead`` the read-ahead a watched load does first (inference.load_progress:
  the bytes-read progress members see), then ``read_after_read_ahead`` read_pipeline again,
  from memory. Their sum against cold_read is what showing progress costs a first load;
- with ``--folder-baseline``, the same weights as a diffusers folder (``from_pretrained``).

    python -m bench.single_file_load --device cuda          # full size, float16
    python -m bench.single_file_load --tiny                 # CPU, seconds
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

FULL_CONFIG = "stable-diffusion-xl-base-1.0"


def parse_args(argv: list[str] | None):
    parser = common.base_parser("single_file_load", __doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny test SDXL instead of the full architecture")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on cuda, float32 on cpu), float16, float32")
    parser.add_argument("--repeats", type=int, default=3, help="timed loads (default %(default)s)")
    parser.add_argument("--folder-baseline", action="store_true", help="also time the weights as a diffusers folder")
    parser.add_argument(
        "--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "sdbot-bench-single-file",
        help="where the generated checkpoint is kept between runs (default %(default)s)",
    )
    return parser.parse_args(argv)


def build_checkpoint(folder: Path, tiny: bool) -> tuple[Path, Path | None]:
    """The SDXL file (and, for the tiny one, the config folder of its shapes), built once."""
    from inference.common.checkpoints import Family
    from inference.single_file_writer import build_tiny_pipeline, write_diffusers_configs, write_single_file

    name = "sdxl-tiny" if tiny else "sdxl-full"
    path = folder / f"{name}.safetensors"
    config = folder / f"{name}-config" if tiny else None
    if path.is_file() and (config is None or config.is_dir()):
        return path, config
    if tiny:
        pipe = build_tiny_pipeline(Family.SDXL)
        write_diffusers_configs(pipe, config)
    else:
        pipe = random_full_sdxl()
    write_single_file(pipe, path.with_suffix(".partial"), Family.SDXL, half=True)
    path.with_suffix(".partial").rename(path)  # a run stopped midway leaves no truncated file
    return path, config


def random_full_sdxl() -> Any:
    """SDXL base's networks from the shipped configs, random weights, float32 on the CPU."""
    from types import SimpleNamespace

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from inference.single_file import MODEL_CONFIGS_DIR

    folder = MODEL_CONFIGS_DIR / FULL_CONFIG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SimpleNamespace(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")),
        )


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from disk."""
    with path.open("rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def cold_loads(spec: Any, path: Path, dtype: Any) -> dict[str, float]:
    """A first load from disk, bare and as a watched load (read ahead, then read)."""
    from inference.load_progress import read_ahead
    from inference.models import free_accelerator_memory, read_pipeline

    drop_from_page_cache(path)
    cold_read, pipe = common.timed(lambda: read_pipeline(spec, dtype))
    del pipe
    free_accelerator_memory()
    drop_from_page_cache(path)
    # available_bytes: measure the read itself even where the check would skip it.
    ahead, _ = common.timed(lambda: read_ahead("sdxl", [path], lambda *report: None, available_bytes=2**62))
    after, pipe = common.timed(lambda: read_pipeline(spec, dtype))
    del pipe
    free_accelerator_memory()
    return {"cold_read": cold_read, "cold_read_ahead": ahead, "read_after_read_ahead": after}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.log_worker_start_up()
    import torch

    from inference.acceleration import place_pipeline
    from inference.common.checkpoints import inspect_checkpoint
    from inference.common.protocol import ModelSpec
    from inference.models import free_accelerator_memory, pipeline_bytes, read_pipeline, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    args.model_cache.mkdir(parents=True, exist_ok=True)
    build_seconds, (path, config) = common.timed(lambda: build_checkpoint(args.model_cache, args.tiny))
    spec = ModelSpec("sdxl", str(path), original_config=str(config) if config else "")

    figures: dict[str, list[float]] = {
        "inspect": [], "read": [], "place": [], "cold_read": [], "cold_read_ahead": [], "read_after_read_ahead": [],
        "folder_read": [],
    }
    model_mib = 0.0
    for _ in range(args.repeats):
        figures["inspect"].append(common.timed(lambda: inspect_checkpoint(path))[0])
        seconds, pipe = common.timed(lambda: read_pipeline(spec, dtype))
        figures["read"].append(seconds)
        model_mib = pipeline_bytes(pipe) / 2**20
        seconds, pipe = common.timed(lambda: place_pipeline(pipe, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        figures["place"].append(seconds)
        del pipe
        free_accelerator_memory()
        for name, seconds in cold_loads(spec, path, dtype).items():
            figures[name].append(seconds)
    if args.folder_baseline:
        folder = args.model_cache / f"{path.stem}-diffusers"
        if not folder.is_dir():
            read_pipeline(spec, torch.float16).save_pretrained(folder, safe_serialization=True)
        from diffusers import StableDiffusionXLPipeline

        for _ in range(args.repeats):
            seconds, pipe = common.timed(lambda: StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=dtype))
            figures["folder_read"].append(seconds)
            del pipe
    results = {
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "model_mib": round(model_mib, 1),
        "build_seconds": round(build_seconds, 2),
        **{name: common.scaled(common.summary(values), 1, 4) for name, values in figures.items() if values},
    }
    settings = {"tiny": args.tiny, "dtype": str(dtype).removeprefix("torch."), "repeats": args.repeats, "config": FULL_CONFIG}
    written = common.write_result(
        "single_file_load" + ("-tiny" if args.tiny else ""), args.device, settings, results, args.output_dir
    )
    common.print_table(
        f"Single-file SDXL load ({'tiny' if args.tiny else 'full size'}, {results['file_mib']} MiB file, {settings['dtype']})",
        ("step", "median s", "max s"),
        [(name, results[name]["p50"], results[name]["max"]) for name in figures if name in results],
    )
    print(f"\nwritten to {written}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
