"""The GPU fast path and the low-memory mode, checked for correctness on the CPU.

Each option is applied for real (inference.acceleration.place_pipeline) to a tiny pipeline of
the test's own, and must give the image the plain pipeline gives, within float tolerance; LoRA
and textual inversion must still apply on fused projections. CUDA-only options are switched
off on the CPU by Acceleration.for_device, and torch.compile is off by default.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor
from safetensors.torch import save_file

from bot.config import WorkerSettings, load_settings
from inference import acceleration
from inference.acceleration import Acceleration, attention_processors, place_pipeline
from inference.generate import generate
from inference.jobs import JobRunner
from inference.models import load_pipeline, read_pipeline
from inference.common.protocol import JobCompleted, ModelSpec, WorkerConfig
from tests.inference_fixtures import tiny_request
from tests.test_inference_networks import image, make_runner, write_kohya_lora

CPU = torch.device("cpu")
# Float rounding differs between fused and separate matmuls, sliced and whole attention.
TOLERANCE = 2.0  # mean absolute difference, in 0..255 pixel values


class CountingBackend:
    """A torch.compile backend that stands in for inductor, so compile tests run on the CPU:
    the same dynamo graphs and guards, run as traced, without generating kernels. ``compiled``
    holds each graph's input shapes, one entry per compile."""

    def __init__(self) -> None:
        self.compiled: list[tuple] = []

    def __call__(self, graph, example_inputs):  # type: ignore[no-untyped-def]
        self.compiled.append(tuple(getattr(value, "shape", ()) for value in example_inputs))
        return graph.forward


def own_pipe(tiny_model_dir, plan: Acceleration = Acceleration()):
    return load_pipeline(ModelSpec("tiny", str(tiny_model_dir)), CPU, torch.float32, plan)


def pixels(pipe, **overrides) -> np.ndarray:
    images = generate(pipe, tiny_request(**overrides))
    return np.stack([np.asarray(img, dtype=np.float64) for img in images])


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def plain_pixels(tiny_model_dir):
    return pixels(own_pipe(tiny_model_dir), seeds=(3, 4))


def test_sdpa_attention_is_what_runs_and_nothing_replaces_it(tiny_model_dir):
    pipe = own_pipe(tiny_model_dir)
    assert attention_processors(pipe) == {"AttnProcessor2_0"}
    # A pipeline with an older processor gets SDPA back when placed.
    pipe = read_pipeline(ModelSpec("tiny", str(tiny_model_dir)), torch.float32)
    pipe.unet.set_attn_processor(AttnProcessor())
    assert attention_processors(place_pipeline(pipe, CPU)) == {"AttnProcessor2_0"}


def test_fused_qkv_and_channels_last_give_the_same_images(tiny_model_dir, plain_pixels):
    fast = own_pipe(tiny_model_dir, Acceleration(fuse_qkv=True, channels_last=True))
    assert attention_processors(fast) == {"LoraAwareFusedAttnProcessor"}
    conv = fast.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert distance(pixels(fast, seeds=(3, 4)), plain_pixels) < TOLERANCE


def test_lora_and_embeddings_still_apply_on_fused_projections(tiny_model_dir, tmp_path):
    plain = own_pipe(tiny_model_dir)
    fused = own_pipe(tiny_model_dir, Acceleration(fuse_qkv=True))
    lora_dir, emb_dir = tmp_path / "loras", tmp_path / "embeddings"
    write_kohya_lora(plain, lora_dir / "Style.safetensors", seed=1)
    emb_dir.mkdir()
    width = plain.text_encoder.get_input_embeddings().weight.shape[-1]
    save_file({"emb_params": torch.randn(1, width, generator=torch.Generator().manual_seed(9))},
              emb_dir / "Sparkle.safetensors")
    networks = {"lora_dirs": (str(lora_dir),), "embedding_dirs": (str(emb_dir),)}
    runners = {
        "plain": make_runner(plain, tmp_path / "plain", **networks),
        "fused": make_runner(fused, tmp_path / "fused", **networks),
    }
    made = {
        (name, prompt): image(runner, prompt=prompt)
        for name, runner in runners.items()
        for prompt in ("a cat", "a cat <lora:Style:1>", "a cat <lora:Style:0:1>", "a Sparkle cat")
    }
    for prompt in ("a cat", "a cat <lora:Style:1>", "a cat <lora:Style:0:1>", "a Sparkle cat"):
        assert distance(made["fused", prompt], made["plain", prompt]) < TOLERANCE, prompt
    # The UNet-only LoRA changes the image as much on fused projections as on plain ones:
    # diffusers' own fused processor would skip it (to_q/to_k/to_v are not what it calls).
    base = made["fused", "a cat"]
    assert distance(made["fused", "a cat <lora:Style:0:1>"], base) > 1
    assert distance(made["fused", "a Sparkle cat"], base) > 0
    # And once the LoRA is off again the fused path gives the image it gave before.
    assert np.array_equal(image(runners["fused"], prompt="a cat"), base)


def test_slicing_gives_the_same_images(tiny_model_dir, plain_pixels):
    sliced = own_pipe(tiny_model_dir, Acceleration(low_memory="slicing"))
    assert attention_processors(sliced) >= {"SlicedAttnProcessor"}  # on the CPU only
    assert sliced.vae.use_slicing and sliced.vae.use_tiling
    assert sliced.vae.tile_sample_min_size == acceleration.VAE_TILE_SIDE
    assert distance(pixels(sliced, seeds=(3, 4)), plain_pixels) < TOLERANCE


def test_vae_tiling_only_for_images_over_the_tile_side(tiny_model_dir, monkeypatch):
    pipe = own_pipe(tiny_model_dir, Acceleration(low_memory="slicing", vae_tile_side=64))
    tiled = []
    tiled_decode = pipe.vae.tiled_decode
    monkeypatch.setattr(pipe.vae, "tiled_decode", lambda z, **kw: tiled.append(z.shape) or tiled_decode(z, **kw))
    generate(pipe, tiny_request(steps=1))
    assert tiled == []  # 64 px: decoded whole, unchanged
    images = generate(pipe, tiny_request(steps=1, width=128, height=128))
    assert tiled == [(1, 4, 16, 16)] and images[0].size == (128, 128)


def test_cuda_options_are_off_on_the_cpu_and_compile_off_by_default(tiny_model_spec, tmp_path, caplog):
    config = WorkerConfig(models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path))
    assert config.torch_compile == "off" and WorkerSettings().torch_compile == "off"
    assert config.channels_last and config.fuse_qkv and config.warmup  # meant for GPUs...
    assert Acceleration.for_device(config, CPU) == Acceleration()  # ...and nothing on the CPU
    asked = WorkerConfig(
        models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path),
        torch_compile="max-autotune-no-cudagraphs", low_memory="offload",
    )
    with caplog.at_level(logging.WARNING):
        plan = Acceleration.for_device(asked, CPU)
    assert plan == Acceleration(low_memory="slicing")
    assert "needs a CUDA GPU" in caplog.text and "ignored on cpu" in caplog.text


def test_the_worker_starts_with_its_options_and_reports_timings(tiny_model_spec, tmp_path):
    config = WorkerConfig(
        models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path), device="cpu",
        low_memory="slicing", model_memory_budget_mb=64, preview_interval_s=0.0,
    )
    runner = JobRunner.start(config)
    ready = runner.ready_event()
    assert set(ready.timings) == {"load:tiny"}  # no warm-up on the CPU
    assert runner.cache.memory_budget_bytes == 64 * 2**20
    assert runner.cache.get("tiny").vae.use_slicing
    sent = []
    runner.run(tiny_request(), lambda: False, sent.append)
    assert isinstance(sent[-1], JobCompleted)


def test_warm_up_runs_each_preloaded_model_and_times_it(tiny_model_spec, tmp_path):
    from inference.models import PipelineCache

    cache = PipelineCache([tiny_model_spec], CPU, torch.float32)
    cache.get("tiny")
    timings = acceleration.warm_up_models(cache, ["tiny"], Acceleration(warmup=True), (64, 64, 2))
    assert set(timings) == {"load:tiny", "warmup:tiny"}
    assert all(isinstance(value, float) for value in timings.values())
    assert acceleration.warm_up_models(cache, ["tiny"], Acceleration(), (64, 64, 2)).keys() == {"load:tiny"}


def test_compile_keeps_its_cache_by_default_and_an_empty_folder_leaves_torchs(tmp_path):
    assert Path(load_settings(None, environ={}).worker_config().compile_cache_dir).is_absolute()
    assert WorkerSettings().compile_cache_dir == "cache/torch-compile"
    config = tmp_path / "config.toml"
    config.write_text('[worker]\ncompile_cache_dir = ""\n', encoding="utf-8")
    assert load_settings(config, environ={}).worker_config().compile_cache_dir == ""


def test_on_a_gpu_the_plan_compiles_into_the_cache_folder(tiny_model_spec, tmp_path):
    """Acceleration.for_device reads only the device's type, so a CUDA plan is checked here."""
    cuda = torch.device("cuda")
    settings = dict(models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path))
    folder = str(tmp_path / "compiled")
    plan = Acceleration.for_device(WorkerConfig(**settings, torch_compile="default", compile_cache_dir=folder), cuda)
    assert (plan.compile_mode, plan.compile_cache_dir) == ("default", folder)
    assert plan.channels_last and plan.fuse_qkv and plan.warmup
    # Nothing compiles, so nothing is cached: the folder is not even made.
    plan = Acceleration.for_device(WorkerConfig(**settings, compile_cache_dir=folder), cuda)
    assert (plan.compile_mode, plan.compile_cache_dir) == ("off", "")


@pytest.mark.parametrize(
    ("mode", "tuning", "decoder_mode"),
    [
        ("default", False, "default"),
        ("reduce-overhead", False, "default"),
        ("max-autotune-no-cudagraphs", True, "max-autotune-no-cudagraphs"),
        ("max-autotune", True, "max-autotune-no-cudagraphs"),
    ],
)
def test_compile_settings_by_mode(tiny_model_dir, tmp_path, monkeypatch, mode, tuning, decoder_mode):
    """Tuning every kernel's variants costs minutes of compile on SD 1.5 (the H200 run's
    compile did not end in 6 minutes): only a mode that asks for it gets it. The UNet gets
    the mode as asked; the VAE decoder the same without CUDA graphs, whose replays would
    overwrite the slices and tiles low-memory mode decodes one after the other."""
    import torch._dynamo
    import torch._inductor.config as inductor

    # Put back after the test (monkeypatch deletes a config module's attribute on undo).
    before = inductor.save_config()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before")))
    pipe = own_pipe(tiny_model_dir)
    modes = {}

    def recording(name, compile_module):  # type: ignore[no-untyped-def]
        def compile_and_record(**options) -> None:  # type: ignore[no-untyped-def]
            modes[name] = options["mode"]
            compile_module(**options)

        return compile_and_record

    for name, module in (("unet", pipe.unet), ("decoder", pipe.vae.decoder)):
        monkeypatch.setattr(module, "compile", recording(name, module.compile))
    try:
        acceleration.compile_models(pipe, mode, str(tmp_path / "compiled"))  # wraps; compiles at the first run
        assert modes == {"unet": mode, "decoder": decoder_mode}
        assert inductor.coordinate_descent_tuning is tuning
        assert inductor.coordinate_descent_check_all_directions is tuning
        assert inductor.conv_1x1_as_mm  # the guides' other settings, in every mode
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "compiled").resolve())
    finally:
        inductor.load_config(before)
        torch._dynamo.reset()


def test_a_restart_loads_what_was_compiled_from_the_cache_folder(tmp_path, monkeypatch):
    """inductor on the CPU, for real, on a small module: the first compile writes its graph
    into the folder; after dynamo forgets everything (as a new process would), the same
    module compiles from the cache (bench.compile_cache measures it on the model)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torchs-own"))
    folder = tmp_path / "compiled"
    acceleration.use_compile_cache(str(folder))

    def compiled_run() -> torch.Tensor:
        torch.manual_seed(0)
        block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU())
        block.compile()
        return block(torch.ones(1, 3, 8, 8))

    torch._dynamo.reset()
    counters.clear()
    try:
        first = compiled_run()
        assert counters["inductor"]["fxgraph_cache_miss"] == 1 and not counters["inductor"]["fxgraph_cache_hit"]
        assert (folder / "fxgraph").is_dir() and not (tmp_path / "torchs-own").exists()
        torch._dynamo.reset()
        again = compiled_run()
        assert counters["inductor"]["fxgraph_cache_hit"] == 1
        torch.testing.assert_close(again, first)
    finally:
        torch._dynamo.reset()
        counters.clear()


def test_with_compile_a_lora_job_runs_eagerly_instead_of_compiling_again(tiny_model_dir, tmp_path):
    """Each new LoRA, and the first change of a LoRA's weight, would recompile the UNet: a
    minute or more on a GPU with the whole queue waiting. A job without LoRA compiles once more
    after the first LoRA is loaded (peft has wrapped the layers), then never again."""
    import torch._dynamo

    counting_backend = CountingBackend()
    compiled = counting_backend.compiled
    pipe = own_pipe(tiny_model_dir, Acceleration(fuse_qkv=True))
    loras = tmp_path / "loras"
    write_kohya_lora(pipe, loras / "Ink.safetensors", seed=1)
    write_kohya_lora(pipe, loras / "Chalk.safetensors", seed=2)
    runner = make_runner(pipe, tmp_path, lora_dirs=(str(loras),))
    torch._dynamo.reset()
    try:
        pipe.unet.compile(backend=counting_backend)

        def compiles(prompt: str) -> int:
            before = len(compiled)
            sent: list = []
            runner.run(tiny_request(prompt=prompt, steps=2), lambda: False, sent.append)
            assert isinstance(sent[-1], JobCompleted), sent[-1]
            return len(compiled) - before

        assert compiles("a cat") == 1
        for prompt in ("a cat <lora:Ink:0.8>", "a cat <lora:Ink:0.5>", "a cat <lora:Chalk:1>"):
            assert compiles(prompt) == 0, prompt
        assert compiles("a cat") == 1  # the layers peft wrapped
        for prompt in ("a cat <lora:Ink:0.8> <lora:Chalk:0.4>", "a cat", "a cat <lora:Chalk:0.7>", "a cat"):
            assert compiles(prompt) == 0, prompt
    finally:
        torch._dynamo.reset()


def test_good_worker_settings_reach_the_worker(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[worker]\ntorch_compile = "reduce-overhead"\npreview_method = "taesd"\n'
        'taesd_source = "madebyollin/taesd"\nlow_memory = "offload"\nmodel_memory_budget_mb = 6000\n'
        'fuse_qkv = false\ncompile_cache_dir = "state/compiled"\n[limits]\ndefault_count = 2\n',
        encoding="utf-8",
    )
    worker = load_settings(config, environ={}).worker_config()
    # A folder read from the config file's folder, as the outputs folder is, so the worker
    # finds it whatever its cwd.
    assert worker.compile_cache_dir == str((tmp_path / "state/compiled").resolve())
    assert (worker.torch_compile, worker.preview_method, worker.taesd_source) == (
        "reduce-overhead", "taesd", "madebyollin/taesd",
    )
    assert (worker.low_memory, worker.model_memory_budget_mb, worker.fuse_qkv) == ("offload", 6000, False)
    assert worker.warmup_shape == (512, 512, 2)  # the default model's base size and count


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"torch_compile": "fast"}, "torch_compile must be one of"),
        ({"preview_method": "vae"}, "preview_method must be one of"),
        ({"preview_method": "taesd"}, "needs taesd_source"),
        ({"low_memory": "tiny"}, "low_memory must be one of"),
        ({"model_memory_budget_mb": -5}, "model_memory_budget_mb must be an int >= 0"),
        ({"warmup_shape": (500, 512, 1)}, "warmup_shape must be"),
    ],
)
def test_the_worker_checks_its_settings_too(tiny_model_spec, tmp_path, change, message):
    config = WorkerConfig(models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path), **change)
    with pytest.raises(ValueError, match=message):
        Acceleration.for_device(config, CPU)


def test_a_compile_that_fails_runs_the_model_uncompiled_and_says_so(tiny_model_spec, tmp_path, monkeypatch, caplog):
    """Inductor raising (here as Triton does on a machine without a C compiler) must not fail
    start-up or a member's job: the warm-up reports that nothing compiled, and jobs run."""
    import torch._dynamo
    import torch._inductor.compile_fx
    import torch._inductor.config as inductor

    from inference.models import PipelineCache

    def no_compiler(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    # What compile_models sets, put back after (load_config of all of dynamo's would also set
    # its deprecated options, each with a warning).
    dynamo_before = {name: getattr(torch._dynamo.config, name) for name in ("suppress_errors", "recompile_limit")}
    inductor_before = inductor.save_config()
    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", no_compiler)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before")))
    torch._dynamo.reset()
    cache = PipelineCache([tiny_model_spec], CPU, torch.float32)
    pipe = cache.get("tiny")
    try:
        acceleration.compile_models(pipe, "default", str(tmp_path / "compiled"))
        plan = Acceleration(compile_mode="default", warmup=True)
        with caplog.at_level(logging.WARNING, logger="inference.acceleration"):
            timings = acceleration.warm_up_models(cache, ["tiny"], plan, (64, 64, 1))
        assert timings["graphs:tiny"] == 0
        assert "compiled nothing for model 'tiny'" in caplog.text and "runs uncompiled" in caplog.text
        images = generate(pipe, tiny_request(width=96, steps=2))  # a new size: compiles again, fails again
        assert [image.size for image in images] == [(96, 64)]
    finally:
        for name, value in dynamo_before.items():
            setattr(torch._dynamo.config, name, value)
        inductor.load_config(inductor_before)
        torch._dynamo.reset()


def test_with_batching_the_warm_up_compiles_every_batch_size_once(tiny_model_spec):
    """torch.compile with cross-user batching: after the warm-up no pass of 1 to
    max_batch_images images compiles again. A counting backend stands in for inductor (the
    same dynamo graphs and guards, without generating kernels), so this runs on the CPU."""
    import torch._dynamo

    from inference.models import PipelineCache

    counting_backend = CountingBackend()
    compiled = counting_backend.compiled
    torch._dynamo.reset()
    cache = PipelineCache([tiny_model_spec], CPU, torch.float32)
    pipe = cache.get("tiny")
    try:
        pipe.unet.compile(backend=counting_backend)
        pipe.vae.decoder.compile(backend=counting_backend)
        plan = Acceleration(compile_mode="max-autotune-no-cudagraphs", warmup=True)
        timings = acceleration.warm_up_models(cache, ["tiny"], plan, (64, 64, 1), batch_images=4)
        assert {"warmup:tiny", "compile:tiny", "compile_batches:tiny"} <= set(timings)
        assert compiled, "the warm-up compiled"
        assert timings["graphs:tiny"] == 2  # the UNet's and the decoder's, at the first run
        after_warm_up = len(compiled)
        for count in (2, 3, 4, 1):
            generate(pipe, tiny_request(seeds=tuple(range(count)), steps=2))
        assert len(compiled) == after_warm_up, "a pass of 1 to 4 images compiled after the warm-up"
        # What made that so: after the graphs of one image, the warm-up traced the UNet and the
        # decoder again at the largest pass (4 images, 8 latents with the unconditional half),
        # which dynamo recompiles with the batch dimension dynamic. Without that pass, the
        # first member's batch would have waited for those compiles.
        unet, decoder = compiled[-2:]
        assert (8, 4, 8, 8) in unet and (4, 4, 8, 8) in decoder, compiled[-2:]
        assert all((8, 4, 8, 8) not in graph and (4, 4, 8, 8) not in graph for graph in compiled[:-2])
    finally:
        torch._dynamo.reset()
