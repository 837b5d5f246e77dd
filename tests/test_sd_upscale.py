"""A1111's SD upscale (inference.sd_upscale): its grid as A1111 cuts and blends it, and the job
through the worker on the tiny model: tiles, seeds, progress, infotext, cancel, size limit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from inference import images
from inference.common.infotext import parse_infotext
from inference.common.protocol import LANCZOS, ImageInput, JobCanceled, JobCompleted, JobFailed, JobKind, JobProgress, UpscaleOptions
from inference.generate import JobCancelledError
from inference.img2img import img2img_schedule
from inference.sd_upscale import base_tile, combine_grid, overlap_for, split_grid
from tests.inference_fixtures import runner_for, tiny_request, tiny_worker_config

_job_ids = itertools.count(700)
STEPS = 2


def test_the_grid_is_a1111s_tiles_and_combines_back_without_a_seam() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8))
    grid = split_grid(image, 512, 512, 64)
    # A1111: ceil((1024 - 64) / 448) = 3 columns, ceil((768 - 64) / 448) = 2 rows, the last flush.
    assert [[x for x, _w, _t in row] for _y, _h, row in grid.tiles] == [[0, 256, 512]] * 2
    assert [y for y, _h, _row in grid.tiles] == [0, 256]
    assert grid.count == 6 and all(t.size == (512, 512) for _y, _h, row in grid.tiles for _x, _w, t in row)
    # Unchanged tiles give the image back exactly: the blend only mixes equal pixels.
    assert np.array_equal(np.asarray(combine_grid(grid)), np.asarray(image))
    # Two tiles that disagree: the overlap fades linearly from the left one into the right one.
    flat = split_grid(Image.new("RGB", (960, 512)), 512, 512, 64)
    (_y, _h, row), = flat.tiles
    row[0][2], row[1][2] = Image.new("RGB", (512, 512), (0, 0, 0)), Image.new("RGB", (512, 512), (255, 255, 255))
    seam = np.asarray(combine_grid(flat))[100, 448:512, 0].astype(int)
    assert row[1][0] == 448 and seam[0] == 0 and np.all(np.diff(seam) >= 0) and 120 <= seam[32] <= 135
    assert overlap_for(512) == 64 and overlap_for(1024) == 128 and overlap_for(64) == 8


@pytest.fixture
def runner(tiny_model_spec, tiny_pipe, tmp_path):
    return runner_for(tiny_pipe, tiny_worker_config(tiny_model_spec, tmp_path / "outputs", preview_interval_s=0.0))


@pytest.fixture
def source(tmp_path) -> str:
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return str(images.save_png(Image.fromarray(pixels), tmp_path / "source.png", "a lighthouse\nSteps: 3"))


def sd_upscale_request(source: str, **overrides):
    fields = dict(
        job_id=next(_job_ids), kind=JobKind.SD_UPSCALE, width=128, height=128, steps=STEPS, sampler="Euler",
        seeds=(1000,), image=ImageInput(source, denoising_strength=0.5),
        upscale=UpscaleOptions(scale=2.0, upscaler=LANCZOS),
    )
    return tiny_request(**{**fields, **overrides})


def test_sd_upscale_redraws_every_tile_with_its_own_seed(runner, tiny_pipe, source) -> None:
    tile = base_tile(tiny_pipe)
    sent: list = []
    runner.run(sd_upscale_request(source), lambda: False, sent.append)
    completed = sent[-1]
    assert isinstance(completed, JobCompleted), completed
    (result,) = completed.images
    assert (result.width, result.height) == (128, 128)
    # ceil((128 - overlap) / (tile - overlap)) tiles a side, each its img2img steps at 0.5.
    overlap = overlap_for(tile)
    side = -(-(128 - overlap) // (tile - overlap))
    assert side > 1, "the tiny model's tiles must cut the image for this test"
    total = side * side * img2img_schedule(STEPS, 0.5, True).steps
    diffusion = [e for e in sent if isinstance(e, JobProgress) and e.total_steps == total]
    assert diffusion and diffusion[-1].step == total
    fields = parse_infotext(result.infotext)
    assert fields["Size"] == f"{tile}x{tile}" and fields["Seed"] == "1000"
    assert fields["Denoising strength"] == "0.5"
    assert (fields["SD upscale overlap"], fields["SD upscale upscaler"]) == (str(overlap), LANCZOS)
    assert images.read_infotext(result.path) == result.infotext
    with Image.open(result.path) as made, Image.open(source) as original:
        upscaled = np.asarray(original.convert("RGB").resize((128, 128), Image.LANCZOS)).astype(int)
        drawn = np.asarray(made.convert("RGB")).astype(int)
    assert np.abs(drawn - upscaled).mean() > 1  # the model redrew the tiles
    # Each tile is the img2img of its piece of the upscaled image, tile i with seed + i (A1111
    # adds one after each tile): where no later tile overlaps it, it shows as it was drawn.
    grid = split_grid(Image.fromarray(upscaled.astype(np.uint8)), tile, tile, overlap)
    (_y, _h, first_row), *_ = grid.tiles
    (x0, _w, piece0), (x1, _w, piece1), *_ = first_row
    y1 = grid.tiles[1][0]
    alone0 = _img2img_alone(runner, piece0, 1000, tile)
    alone1 = _img2img_alone(runner, piece1, 1001, tile)
    assert np.array_equal(drawn[:y1, :x1], alone0[:y1, :x1])
    x2 = first_row[2][0] if len(first_row) > 2 else 128
    assert np.array_equal(drawn[:y1, x1 + overlap : x2], alone1[:y1, overlap : x2 - x1])


def _img2img_alone(runner, piece: Image.Image, seed: int, tile: int) -> np.ndarray:
    path = images.save_png(piece, runner.config.outputs_dir + f"/piece-{seed}.png", "")
    sent: list = []
    request = tiny_request(
        job_id=next(_job_ids), kind=JobKind.IMG2IMG, width=tile, height=tile, steps=STEPS, sampler="Euler", seeds=(seed,),
        image=ImageInput(str(path), denoising_strength=0.5),
    )
    runner.run(request, lambda: False, sent.append)
    with Image.open(sent[-1].images[0].path) as made:
        return np.asarray(made.convert("RGB")).astype(int)


def test_sd_upscale_cancels_between_tiles_and_refuses_too_large_sizes(runner, source) -> None:
    sent: list = []
    steps = itertools.count()
    with pytest.raises(JobCancelledError):
        runner.run(sd_upscale_request(source), lambda: next(steps) > 3, sent.append)
    assert not any(isinstance(e, (JobCompleted, JobCanceled)) for e in sent)
    refused: list = []
    runner.run(sd_upscale_request(source, width=4104, height=128), lambda: False, refused.append)
    assert isinstance(refused[-1], JobFailed) and "at most 4096 px" in refused[-1].message


def test_the_sd_upscale_benchmark_times_both_paths_and_writes_its_json(tmp_path) -> None:
    """bench.sd_upscale on the tiny model, one denoising step a tile over a 2x2 grid (48 -> 96 px
    in 64 px tiles): both paths, same tiles."""
    import json

    from bench import sd_upscale as bench

    results = bench.main(
        ["--steps", "2", "--strength", "0.5", "--size", "48", "--output-dir", str(tmp_path), "--model-cache", str(tmp_path / "models")]
    )
    assert results["tiles"] == 4 and set(bench.PATHS) <= results.keys()
    written = json.loads((tmp_path / "sd_upscale-cpu.json").read_text())
    assert written["results"]["sd_upscale"]["slowdown_vs_bare"] > 0


def test_sd_upscale_on_sdxl_uses_its_base_size_tiles(tiny_sdxl_dir, tiny_sdxl_pipe, source, tmp_path) -> None:
    """SDXL's tiles go through its own img2img (both encoders, size conditioning) at its base size."""
    from inference.common.protocol import ModelSpec

    spec = ModelSpec("tiny-xl", str(tiny_sdxl_dir))
    runner = runner_for(tiny_sdxl_pipe, tiny_worker_config(spec, tmp_path / "xl-outputs", preview_interval_s=0.0))
    sent: list = []
    runner.run(sd_upscale_request(source, model="tiny-xl"), lambda: False, sent.append)
    assert isinstance(sent[-1], JobCompleted), sent[-1]
    (result,) = sent[-1].images
    tile = base_tile(tiny_sdxl_pipe)
    assert tile < 128, "the tiny SDXL's tiles must cut the image for this test"
    assert (result.width, result.height) == (128, 128)
    assert parse_infotext(result.infotext)["Size"] == f"{tile}x{tile}"
