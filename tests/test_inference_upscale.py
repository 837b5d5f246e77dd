"""Upscaling with random-weight Real-ESRGAN files in the official layout, on the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from inference import images, upscale
from inference.generate import InvalidRequestError, JobCancelledError
from inference.jobs import JobRunner
from inference.models import PipelineCache
from inference.common.protocol import (
    LANCZOS,
    ImageInput,
    JobCompleted,
    JobKind,
    ModelSpec,
    UpscaleOptions,
    WorkerConfig,
)
from inference.upscale import Upscalers, UpscalerLoadError, run_upscale, upscale_infotext
from inference.common.upscaler_files import upscaler_files
from tests.inference_fixtures import tiny_request

MODEL = "RealESRGAN_x4plus"
SOURCE_INFOTEXT = (
    "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 64x64"
)


def official_rrdbnet(in_channels: int = 3, features: int = 16, blocks: int = 1) -> dict:
    """A random RRDBNet x4 state dict with the keys and shapes of xinntao's Real-ESRGAN files.

    The shapes are basicsr's RRDBNet: 3x3 convs with biases; each residual dense block's conv k
    sees the features plus the growth channels of the convs before it. The growth stays at 32,
    as in the released models (spandrel assumes it). ``in_channels`` 12 is RealESRGAN_x2plus:
    the x4 network behind a 2x pixel unshuffle.
    """
    grow = 32
    generator = torch.Generator().manual_seed(0)
    state = {}

    def conv(name: str, inputs: int, outputs: int) -> None:
        # Uniform with variance 1/fan_in: the signal keeps its scale through the layers, so the
        # output has detail (PyTorch's default init fades it to a flat grey).
        bound = (3 / (inputs * 9)) ** 0.5
        weight = torch.rand(outputs, inputs, 3, 3, generator=generator) * 2 - 1
        state[f"{name}.weight"] = weight * bound
        state[f"{name}.bias"] = (torch.rand(outputs, generator=generator) * 2 - 1) * 0.01

    conv("conv_first", in_channels, features)
    for block in range(blocks):
        for dense in (1, 2, 3):
            for k in range(1, 6):
                outputs = grow if k < 5 else features
                conv(f"body.{block}.rdb{dense}.conv{k}", features + (k - 1) * grow, outputs)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", features, 3)
    # Outputs centred on mid-grey, so clamping to [0, 1] hides no differences in the tests.
    state["conv_last.bias"] += 0.5
    return state


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("upscalers")
    # Saved as basicsr saves its releases: the EMA weights under "params_ema".
    torch.save({"params_ema": official_rrdbnet()}, folder / f"{MODEL}.pth")
    torch.save({"params_ema": official_rrdbnet(in_channels=12)}, folder / "RealESRGAN_x2plus.pth")
    return folder


@pytest.fixture(scope="module")
def source() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def upscalers(folder, tile: int = 0, overlap: int = 0) -> Upscalers:
    return Upscalers([str(folder)], torch.device("cpu"), torch.float32, tile, overlap)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_official_real_esrgan_file_loads_and_upscales_4x(model_dir, source):
    ups = upscalers(model_dir)
    result = ups.upscale_to(source, 256, 256, MODEL)
    assert result.size == (256, 256) and result.mode == "RGB"
    model = ups._model(MODEL)
    assert (model.architecture.id, model.scale, model.dtype) == ("ESRGAN", 4, torch.float32)
    assert not model.model.training
    # Not saturated: clamping did not flatten the comparisons the tiling test makes.
    assert 40 < pixels(result).std() and (pixels(result) == 255).mean() < 0.1


def test_safetensors_variant_gives_the_same_result(model_dir, source, tmp_path):
    save_file(official_rrdbnet(), tmp_path / "flat.safetensors")
    from_pth = upscalers(model_dir).upscale_to(source, 256, 256, MODEL)
    from_safetensors = upscalers(tmp_path).upscale_to(source, 256, 256, "flat")
    assert np.array_equal(pixels(from_pth), pixels(from_safetensors))


def test_tiled_result_matches_untiled(model_dir, source):
    untiled = pixels(upscalers(model_dir).upscale_to(source, 256, 256, MODEL))
    progress = []
    tiled_image = upscalers(model_dir, tile=32, overlap=16).upscale_to(
        source, 256, 256, MODEL, on_progress=lambda done, total: progress.append((done, total))
    )
    # 64 px in 32 px tiles overlapping by 16: three tiles a side.
    assert progress == [(done, 9) for done in range(1, 10)]
    difference = np.abs(pixels(tiled_image) - untiled)
    # Equal but for float rounding, which may flip a value across a quantisation step.
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    # The same tiles without overlap show their seams: the comparison can fail.
    seamed = upscalers(model_dir, tile=32, overlap=0).upscale_to(source, 256, 256, MODEL)
    seams = np.abs(pixels(seamed) - untiled)
    assert seams.max() > 50


def test_blend_weights_sum_to_one_and_skip_each_inner_edge():
    starts = upscale._axis_tiles(64, 32, 16)
    assert starts == [0, 16, 32]
    weights = upscale._axis_weights(starts, 32, 64, scale=4, overlap=16)
    total = torch.zeros(256)
    for start, weight in zip(starts, weights):
        total[start * 4 : start * 4 + 128] += weight
    assert torch.allclose(total, torch.ones(256))
    # A quarter of the overlap (4 px, 16 output px) along an inner edge gets no weight.
    assert weights[1][:16].abs().max() == 0 and weights[1][-16:].abs().max() == 0
    assert weights[0][:64].min() == 1 and weights[0][-16:].abs().max() == 0
    # Uneven lengths: every tile full size, neighbours overlapping by at least the overlap.
    starts = upscale._axis_tiles(100, 32, 16)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(32 - (b - a) >= 16 for a, b in zip(starts, starts[1:]))


def test_scale_two_with_a_4x_model_is_the_4x_result_lanczos_downscaled(model_dir, source):
    ups = upscalers(model_dir)
    half = ups.upscale_to(source, 128, 128, MODEL)
    assert half.size == (128, 128)
    full = ups.upscale_to(source, 256, 256, MODEL)
    assert np.array_equal(pixels(half), pixels(full.resize((128, 128), Image.Resampling.LANCZOS)))


def test_a_2x_model_runs_twice_for_a_4x_target(model_dir, source):
    progress = []
    result = upscalers(model_dir).upscale_to(
        source, 256, 256, "RealESRGAN_x2plus", on_progress=lambda *args: progress.append(args)
    )
    assert result.size == (256, 256)
    assert progress == [(1, 2), (2, 2)]  # one whole-image pass at 64 px, one at 128 px
    assert upscale._pass_sizes((64, 64), (256, 256), 2) == [(64, 64), (128, 128)]
    assert upscale._pass_sizes((64, 64), (64, 64), 1) == [(64, 64)]  # a 1x model still runs
    assert len(upscale._pass_sizes((8, 8), (4096, 4096), 2)) == upscale.MAX_PASSES


def test_lanczos_needs_no_model_and_converts_to_rgb(tmp_path):
    ups = Upscalers([str(tmp_path / "missing")], torch.device("cpu"), torch.float32)
    assert ups.names() == [LANCZOS] and ups.has(LANCZOS) and not ups.has(MODEL)
    result = ups.upscale_to(Image.new("RGBA", (10, 20), (200, 10, 10, 128)), 25, 50, LANCZOS)
    assert (result.size, result.mode) == ((25, 50), "RGB")


def test_unknown_upscaler_lists_the_available_names(model_dir, source):
    ups = upscalers(model_dir)
    assert ups.names() == [LANCZOS, "RealESRGAN_x2plus", MODEL]
    with pytest.raises(InvalidRequestError) as error:
        ups.upscale_to(source, 128, 128, "4x-UltraSharp")
    assert "'4x-UltraSharp'" in str(error.value)
    assert f"{LANCZOS}, RealESRGAN_x2plus, {MODEL}" in str(error.value)


def test_files_that_are_not_image_models_fail_naming_the_file(tmp_path, source):
    (tmp_path / "garbage.pth").write_bytes(b"not a model at all")
    save_file({"encoder.weight": torch.zeros(4, 4)}, tmp_path / "unknown.safetensors")
    ups = upscalers(tmp_path)
    for name, file in (("garbage", "garbage.pth"), ("unknown", "unknown.safetensors")):
        with pytest.raises(UpscalerLoadError, match="could not be loaded") as error:
            ups.upscale_to(source, 128, 128, name)
        assert str(tmp_path / file) in str(error.value)


class _RunsCode:
    """Unpickling this calls open(), as a malicious .pth would call anything it likes."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pth_that_would_run_code_is_refused_before_it_runs(tmp_path, source):
    marker = tmp_path / "ran"
    torch.save({"params_ema": {"conv_first.weight": _RunsCode(marker)}}, tmp_path / "evil.pth")
    with pytest.raises(UpscalerLoadError, match="evil.pth"):
        upscalers(tmp_path).upscale_to(source, 128, 128, "evil")
    assert not marker.exists()


def test_cancel_stops_between_tiles(model_dir, source):
    progress = []
    with pytest.raises(JobCancelledError):
        upscalers(model_dir, tile=32, overlap=16).upscale_to(
            source,
            256,
            256,
            MODEL,
            is_cancelled=lambda: len(progress) >= 2,
            on_progress=lambda *args: progress.append(args),
        )
    assert progress == [(1, 9), (2, 9)]


def test_upscaler_files_lists_model_files_directly_in_each_folder(tmp_path):
    first, second = tmp_path / "ESRGAN", tmp_path / "RealESRGAN"
    (first / "sub").mkdir(parents=True)
    second.mkdir()
    for path in (
        first / "x.pth",
        first / "y.safetensors",
        first / "notes.txt",
        first / "sub" / "z.pth",
        second / "x.safetensors",
        second / "w.pt",
    ):
        path.write_bytes(b"")
    found = upscaler_files([str(first), str(tmp_path / "missing"), str(second)])
    assert list(found) == ["w", "x", "y"]
    assert found["x"] == first / "x.pth"  # the first folder wins


def test_model_dtype_follows_the_device_and_the_architecture():
    both = SimpleNamespace(supports_half=True, supports_bfloat16=True)
    half_only = SimpleNamespace(supports_half=True, supports_bfloat16=False)
    neither = SimpleNamespace(supports_half=False, supports_bfloat16=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert upscale._model_dtype(both, cpu, torch.float16) == torch.float32
    assert upscale._model_dtype(both, cuda, torch.float16) == torch.float16
    assert upscale._model_dtype(both, cuda, torch.bfloat16) == torch.bfloat16
    assert upscale._model_dtype(half_only, cuda, torch.bfloat16) == torch.float16
    assert upscale._model_dtype(neither, cuda, torch.float16) == torch.float32


def upscale_request(source_path: Path, upscaler: str = MODEL, scale: float = 4, **overrides):
    fields = dict(
        job_id=42,
        kind=JobKind.UPSCALE,
        image=ImageInput(path=str(source_path)),
        upscale=UpscaleOptions(scale, upscaler),
        width=int(64 * scale),
        height=int(64 * scale),
    )
    return tiny_request(**{**fields, **overrides})


def test_run_upscale_and_its_infotext(model_dir, source, tmp_path):
    source_path = images.save_png(source, tmp_path / "source.png", SOURCE_INFOTEXT)
    request = upscale_request(source_path)
    steps = []
    made = run_upscale(
        upscalers(model_dir, 32, 16), request, lambda *args: steps.append(args), lambda: False
    )
    assert [image.size for image in made] == [(256, 256)]
    assert steps[-1] == (9, 9, None)
    assert upscale_infotext(request) == (
        SOURCE_INFOTEXT + ", Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4plus"
    )
    bare = tmp_path / "bare.png"
    source.save(bare)
    lanczos = upscale_request(bare, LANCZOS, 2.5, width=160, height=160)
    expected = "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"
    assert upscale_infotext(lanczos) == expected


def test_run_upscale_rejects_bad_requests(model_dir, source, tmp_path):
    source_path = images.save_png(source, tmp_path / "source.png", "")
    ups = upscalers(model_dir)
    with pytest.raises(InvalidRequestError, match="available: Lanczos, "):
        run_upscale(ups, upscale_request(source_path, "nope"), lambda *a: None, lambda: False)
    too_large = upscale_request(source_path, LANCZOS, width=8200, height=64)
    with pytest.raises(InvalidRequestError, match="8192"):
        run_upscale(ups, too_large, lambda *a: None, lambda: False)


def test_job_runner_saves_an_upscale_with_its_infotext(model_dir, source, tmp_path):
    config = WorkerConfig(
        models=(ModelSpec("tiny", str(tmp_path / "no-model")),),
        default_model="tiny",
        outputs_dir=str(tmp_path / "outputs"),
        upscaler_dirs=(str(model_dir),),
        upscale_tile=32,
        upscale_tile_overlap=16,
    )

    def no_pipelines(*args):
        raise AssertionError("an upscale job loads no SD model")

    cache = PipelineCache(config.models, torch.device("cpu"), torch.float32, loader=no_pipelines)
    ups = Upscalers(
        config.upscaler_dirs,
        torch.device("cpu"),
        torch.float32,
        config.upscale_tile,
        config.upscale_tile_overlap,
    )
    source_path = images.save_png(source, tmp_path / "source.png", SOURCE_INFOTEXT)
    sent = []
    JobRunner(config, cache, ups).run(upscale_request(source_path), lambda: False, sent.append)
    completed = sent[-1]
    assert isinstance(completed, JobCompleted), sent[-1]
    (result,) = completed.images
    assert (result.width, result.height, completed.grid_path) == (256, 256, None)
    assert os.path.exists(result.path)
    with Image.open(result.path) as saved:
        assert saved.size == (256, 256)
    assert images.read_infotext(result.path) == result.infotext
    assert result.infotext.startswith(SOURCE_INFOTEXT + ", Postprocess upscale by: 4")
