"""The worker's fast path and low-memory mode: what is done to a pipeline when it is placed.

inference.models reads a model into CPU memory, makes room for it under the memory budget,
then calls ``place_pipeline``, which applies an ``Acceleration`` (the [worker] settings,
resolved for the device by ``Acceleration.for_device``):

- PyTorch's scaled-dot-product attention (diffusers' AttnProcessor2_0) everywhere: diffusers
  picks it by default; anything else found is replaced, with a log line.
- Fused QKV projections (CUDA): query, key and value in one matmul. diffusers' fused processor
  reads only the fused copy (``to_qkv``/``to_kv``), so a LoRA loaded later by peft into
  ``to_q``/``to_k``/``to_v`` would silently do nothing. ``LoraAwareFusedAttnProcessor`` runs
  the fused projection while no LoRA adapter is active on a layer, and the separate, LoRA-
  wrapped projections while one is: images with and without LoRA stay right, and jobs without
  LoRA keep the fused speed. Textual inversion only touches the text encoder, never fused.
  The fused weights are a copy (some 100 MB for SD 1.5 in fp16), counted in the model's size.
- channels_last memory layout for the UNet and the VAE (CUDA): faster convolutions.
- torch.compile of the UNet and the VAE decoder (CUDA, off by default): modules are compiled
  in place (``Module.compile``), so they stay what diffusers and peft expect; each new shape
  (size, image count) compiles once, and ``warm_up_models`` pays the default one at start-up,
  and with batching on the largest batch too, after which any batch size runs compiled.
  The decoder is compiled without CUDA graphs (see ``decoder_compile_mode``).
  What is compiled is kept in ``compile_cache_dir`` (inductor's FX graph and kernel caches,
  Triton's binaries, autotuning results), so a restart loads it instead of compiling again.
  Coordinate-descent tuning of each kernel, which costs minutes of compile time, is left to
  the max-autotune modes: the modes that ask to spend compile time for speed.
- Low-memory mode: "slicing" turns on VAE slicing (one image of a batch decoded at a time),
  VAE tiling of images with a side over VAE_TILE_SIDE px (smaller images are decoded whole,
  so they do not change), and attention slicing except on CUDA, where SDPA's memory-efficient
  kernels need less memory than sliced attention (which would replace them) and are faster.
  "offload" adds diffusers' model CPU offload (CUDA only): each model moves to the GPU only
  while it runs.

Everything CUDA-only is switched off on other devices (a log line says so when it was asked
for), so one config.toml serves a GPU server and a CPU test machine alike.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import (
    Attention,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)

from inference.common.protocol import COMPILE_MODES, LOW_MEMORY_MODES, PREVIEW_METHODS, WorkerConfig

log = logging.getLogger(__name__)

# Images with a side over this many pixels are decoded by the VAE in tiles of this size in
# low-memory mode: a 1024 px tile decodes in about 2 GB in fp16; smaller images stay whole.
VAE_TILE_SIDE = 1024
# Steps of a warm-up run: enough for the compiler, cuDNN and CUDA graphs to see every kernel.
WARMUP_STEPS = 3
# torch.compile recompiles for every new shape; past dynamo's limit (8) it silently runs
# uncompiled. A bot sees a few sizes times a few image counts, LoRAs on and off.
COMPILE_RECOMPILE_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Acceleration:
    """What ``place_pipeline`` does to a pipeline; the default changes nothing."""

    channels_last: bool = False
    fuse_qkv: bool = False
    compile_mode: str = "off"  # "off" or a torch.compile mode (protocol.COMPILE_MODES)
    low_memory: str = "off"  # protocol.LOW_MEMORY_MODES
    vae_tile_side: int = VAE_TILE_SIDE
    warmup: bool = False
    compile_cache_dir: str = ""  # "": torch's own (TORCHINDUCTOR_CACHE_DIR, else under /tmp)

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"torch_compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.low_memory not in LOW_MEMORY_MODES:
            raise ValueError(f"low_memory must be one of {', '.join(LOW_MEMORY_MODES)}, got {self.low_memory!r}")
        if self.vae_tile_side < 64 or self.vae_tile_side % 64:
            raise ValueError(f"vae_tile_side must be a multiple of 64, got {self.vae_tile_side!r}")

    @classmethod
    def for_device(cls, config: WorkerConfig, device: torch.device) -> Acceleration:
        """The config's settings for this device; raises ValueError for a bad value."""
        check_acceleration_config(config)
        cuda = device.type == "cuda"
        low_memory = config.low_memory
        if low_memory == "offload" and not cuda:
            log.warning('low_memory = "offload" needs a CUDA GPU; on %s "slicing" is used', device)
            low_memory = "slicing"
        if low_memory == "offload" and importlib.util.find_spec("accelerate") is None:
            raise ValueError('low_memory = "offload" needs the accelerate package: pip install accelerate')
        compile_mode = config.torch_compile
        if compile_mode != "off" and not cuda:
            log.warning("torch_compile = %r is for CUDA GPUs; ignored on %s", compile_mode, device)
            compile_mode = "off"
        if compile_mode != "off" and low_memory == "offload":
            log.warning("torch_compile is ignored with low_memory = \"offload\" (models move every step)")
            compile_mode = "off"
        return cls(
            channels_last=config.channels_last and cuda,
            # Sliced attention replaces the fused processor; there is nothing to fuse for.
            fuse_qkv=config.fuse_qkv and cuda and low_memory == "off",
            compile_mode=compile_mode,
            low_memory=low_memory,
            warmup=config.warmup and cuda,
            compile_cache_dir=config.compile_cache_dir if compile_mode != "off" else "",
        )


def check_acceleration_config(config: WorkerConfig) -> None:
    """The [worker] speed and memory settings, checked without loading anything."""
    for name, value, choices in (
        ("torch_compile", config.torch_compile, COMPILE_MODES),
        ("preview_method", config.preview_method, PREVIEW_METHODS),
        ("low_memory", config.low_memory, LOW_MEMORY_MODES),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if config.preview_method == "taesd" and not config.taesd_source:
        raise ValueError('preview_method = "taesd" needs taesd_source (a hub id or a folder)')
    if not isinstance(config.model_memory_budget_mb, int) or config.model_memory_budget_mb < 0:
        raise ValueError(f"model_memory_budget_mb must be an int >= 0, got {config.model_memory_budget_mb!r}")
    width, height, count = config.warmup_shape
    if width % 8 or height % 8 or min(width, height) < 64 or count < 1:
        raise ValueError(f"warmup_shape must be (width, height, images) in multiples of 8, got {config.warmup_shape!r}")


# --- placing a pipeline --------------------------------------------------------------------


def place_pipeline(
    pipe: DiffusionPipeline, device: torch.device, plan: Acceleration = Acceleration()
) -> DiffusionPipeline:
    """Apply ``plan`` to a pipeline read into CPU memory and put it on ``device``."""
    models = [model for model in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)) if model is not None]
    for model in models:
        use_sdpa(model)
    if plan.fuse_qkv:
        for model in models:
            fuse_qkv(model)
    if plan.channels_last:
        for model in models:
            model.to(memory_format=torch.channels_last)
    if plan.low_memory != "off":
        save_memory(pipe, device, plan.vae_tile_side)
    if device.type == "cuda":
        # cuDNN picks the fastest convolution algorithm per shape (once per shape).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if plan.low_memory == "offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if plan.compile_mode != "off":
        compile_models(pipe, plan.compile_mode, plan.compile_cache_dir)
    return pipe


def use_sdpa(model: torch.nn.Module) -> None:
    """Make sure every attention runs PyTorch's SDPA (AttnProcessor2_0 or its fused form)."""
    processors = getattr(model, "attn_processors", {})
    wanted = (AttnProcessor2_0, FusedAttnProcessor2_0, LoraAwareFusedAttnProcessor)
    others = {type(processor).__name__ for processor in processors.values() if not isinstance(processor, wanted)}
    if others:
        log.info("%s: attention %s replaced by SDPA (AttnProcessor2_0)", type(model).__name__, sorted(others))
        model.set_attn_processor(AttnProcessor2_0())


def attention_processors(pipe: DiffusionPipeline) -> set[str]:
    """The attention processor classes the UNet and VAE run, for logs, tests and benchmarks."""
    return {
        type(processor).__name__
        for model in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))
        if model is not None
        for processor in getattr(model, "attn_processors", {}).values()
    }


class LoraAwareFusedAttnProcessor:
    """SDPA attention on fused QKV projections, except while a LoRA adapter is active on the
    separate projections (see the module docstring): then diffusers' unfused processor, which
    calls them, LoRA included. The check is a few attribute reads per attention call."""

    def __init__(self) -> None:
        self.fused = FusedAttnProcessor2_0()
        self.unfused = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        processor = self.unfused if _lora_active(attn) else self.fused
        return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def _lora_active(attn: Attention) -> bool:
    for projection in (attn.to_q, attn.to_k, attn.to_v):
        # peft's LoRA layers: disable_adapters is pipe.disable_lora(); lora_A holds the
        # adapters this layer has (a LoRA may leave some projections alone).
        if getattr(projection, "disable_adapters", True):
            continue
        adapters = getattr(projection, "lora_A", {})
        if any(name in adapters for name in projection.active_adapters):
            return True
    return False


def fuse_qkv(model: torch.nn.Module) -> bool:
    """Fuse the model's QKV projections behind LoraAwareFusedAttnProcessor; False where the
    model has none or diffusers cannot fuse them (added KV projections)."""
    if not hasattr(model, "fuse_qkv_projections") or not getattr(model, "attn_processors", None):
        return False
    try:
        model.fuse_qkv_projections()
    except ValueError as exc:
        log.info("%s: QKV projections not fused: %s", type(model).__name__, exc)
        return False
    model.set_attn_processor(LoraAwareFusedAttnProcessor())
    return True


def save_memory(pipe: DiffusionPipeline, device: torch.device, tile_side: int = VAE_TILE_SIDE) -> None:
    """Low-memory mode's slicing (see the module docstring); images are unchanged up to
    float rounding, except images over ``tile_side`` px, decoded in blended tiles."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if vae is not None and hasattr(vae, "enable_tiling") and hasattr(vae, "tile_latent_min_size"):
        vae.enable_tiling()
        # diffusers tiles anything past the VAE's training size (512 px for SD 1.5), which
        # would change ordinary images; only big ones need it.
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.tile_sample_min_size = tile_side
        vae.tile_latent_min_size = tile_side // factor
    unet = getattr(pipe, "unet", None)
    if device.type != "cuda" and unet is not None and hasattr(unet, "set_attention_slice"):
        unet.set_attention_slice("auto")


def compile_models(pipe: DiffusionPipeline, mode: str, cache_dir: str = "") -> None:
    """Compile the UNet and the VAE decoder in place; the compilation itself happens at the
    first run of each shape (see warm_up_models), and is kept in ``cache_dir``."""
    import torch._dynamo.config
    import torch._inductor.config as inductor

    use_compile_cache(cache_dir)
    # The settings PyTorch's and diffusers' guides use for diffusion UNets.
    inductor.conv_1x1_as_mm = True
    inductor.epilogue_fusion = False
    # Coordinate descent benchmarks variants of every generated kernel: minutes more of
    # compile for a few percent. The guides pair it with max-autotune, which asks for that
    # trade; "default" and "reduce-overhead" are chosen for a compile that ends soon.
    tuning = mode.startswith("max-autotune")
    inductor.coordinate_descent_tuning = tuning
    inductor.coordinate_descent_check_all_directions = tuning
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), COMPILE_RECOMPILE_LIMIT))
    # A compile that fails (Triton finding no C compiler, an inductor bug at a new size) runs
    # that code uncompiled, dynamo's warning and traceback in the log, instead of failing the
    # member's job and every later one at that size. warm_up_models says when nothing compiled.
    torch._dynamo.config.suppress_errors = True
    pipe.unet.compile(mode=mode, fullgraph=False)
    decoder, decoder_mode = getattr(pipe.vae, "decoder", None), decoder_compile_mode(mode)
    if decoder is not None:
        decoder.compile(mode=decoder_mode)
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's default folder")
    log.info("compiling the UNet (%s) and the VAE decoder (%s) at their first run; cache in %s",
             mode, decoder_mode, cache)


def decoder_compile_mode(mode: str) -> str:
    """The VAE decoder's compile mode: ``mode`` without CUDA graphs.

    A CUDA graph's outputs are overwritten by its next replay. Low-memory mode decodes a batch
    one image at a time and a large image in tiles, keeping each output until all are stitched:
    under a graph those would fail ("accessing tensor output of CUDAGraphs that has been
    overwritten"). And the graph would save little: the decoder runs once a job and its kernels
    are large, while the UNet runs 20 times a job with small kernels at batch 1, where CUDA graphs
    take away the host's launch time.
    """
    return {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)


def use_compile_cache(folder: str) -> None:
    """Keep torch.compile's on-disk caches in ``folder`` ("": leave torch's choice).

    Torch's default is a folder under /tmp, which a reboot or a new container empties: then
    every start compiles again. With the cache kept, a restart traces the model and loads the
    compiled code instead of compiling it (bench.compile_cache measures both). Triton's cache
    follows, unless TRITON_CACHE_DIR is set.
    """
    if not folder:
        return
    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    # Read by inductor each time it looks for its cache, and passed on to its compile workers.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


# --- warm-up -------------------------------------------------------------------------------


def warm_up(pipe: DiffusionPipeline, width: int, height: int, count: int, runs: int = 1) -> list[float]:
    """Run txt2img ``runs`` times at this size and image count; the seconds of each run.

    The first run pays compilation, cuDNN's algorithm search and CUDA's lazy set-up; a second
    one shows what is left (so compile time is the difference).
    """
    from inference.generate import generate
    from inference.common.protocol import GenerateRequest, JobKind

    request = GenerateRequest(
        job_id=0,
        kind=JobKind.TXT2IMG,
        model="warm-up",
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        width=width,
        height=height,
        steps=WARMUP_STEPS,
        cfg_scale=7.0,
        sampler="Euler a",
        seeds=tuple(range(count)),
    )
    seconds = []
    for _ in range(runs):
        _synchronize()
        started = time.perf_counter()
        generate(pipe, request)
        _synchronize()
        seconds.append(time.perf_counter() - started)
        # As it happens: a first run that compiles can take minutes, and the log shows why.
        log.info("warm-up run %d of %d at %dx%d x%d: %.1f s", len(seconds), runs, width, height, count, seconds[-1])
    return seconds


def warm_up_models(
    cache, names: Iterable[str], plan: Acceleration, shape: tuple[int, int, int], batch_images: int = 1
) -> dict[str, float]:
    """Warm up each preloaded model (when the plan says so) and return the start-up timings
    WorkerReady reports: "load:<model>", "warmup:<model>", "compile:<model>" and
    "compile_batches:<model>" in seconds, and with compile on "graphs:<model>", the graphs
    dynamo made at the first run (0: compiling failed, and the model runs uncompiled).

    With torch.compile and cross-user batching (``batch_images``, the largest pass, above the
    shape's count), a second image count is warmed up too: the largest batch. A second shape
    makes dynamo recompile with the batch dimension dynamic (its automatic dynamic shapes), so
    that one graph then serves every pass from 2 images to the largest, and no member's batch
    waits for a compile. Sizes other than the default still compile on first use.
    """
    timings = {f"load:{record.name}": round(record.seconds, 3) for record in cache.loads}
    if not plan.warmup:
        return timings
    width, height, count = shape
    compiling = plan.compile_mode != "off"
    for name in names:
        pipe = cache.get(name)
        graphs_before = _compiled_graphs()
        runs = warm_up(pipe, width, height, count, runs=2 if compiling else 1)
        timings[f"warmup:{name}"] = round(runs[0], 3)
        message = "warmed up model %r at %dx%d x%d in %.1f s"
        arguments: list = [name, width, height, count, runs[0]]
        if compiling:
            timings[f"graphs:{name}"] = graphs = _compiled_graphs() - graphs_before
            if not graphs:
                log.warning("torch_compile = %r compiled nothing for model %r (the error is logged above): "
                            "it runs uncompiled", plan.compile_mode, name)
            timings[f"compile:{name}"] = round(max(0.0, runs[0] - runs[1]), 3)
            message += " (compile about %.1f s; a warm run takes %.2f s)"
            arguments += [runs[0] - runs[1], runs[1]]
        if compiling and batch_images > count:
            [batches] = warm_up(pipe, width, height, batch_images)
            timings[f"compile_batches:{name}"] = round(batches, 3)
            message += "; batches of up to %d images compiled in %.1f s"
            arguments += [batch_images, batches]
        log.info(message, *arguments)
    return timings


def _compiled_graphs() -> int:
    """The graphs a torch.compile backend has compiled in this process (cache hits included)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()

