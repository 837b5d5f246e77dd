"""X/Y plots and prompt matrices in the worker: cells made as jobs of their own, one progress
count over them all, and A1111's labelled grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from inference import plot_runner as plots
from inference.generate import InvalidRequestError, JobCancelledError, generate
from inference.common.protocol import HiresFix, JobKind, PlotCell, PlotOptions
from tests.inference_fixtures import runner_for, tiny_request


def plot_request(cells, columns, seed=1234, **plot_fields):
    plot = PlotOptions(cells=tuple(cells), columns=columns, **plot_fields)
    return tiny_request(kind=JobKind.PLOT, seeds=(seed,) * len(cells), plot=plot)


@pytest.fixture
def make(tiny_pipe):
    """The worker's make for plain txt2img cells, recording what each cell asked for."""

    def run(request, on_step, is_cancelled):
        run.requests.append(request)
        return generate(tiny_pipe, request, on_step, is_cancelled)

    run.requests = []
    return run


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_cells_are_made_with_their_overrides_and_progress_counts_them_all(make):
    request = plot_request([PlotCell(steps=2), PlotCell(steps=3)], columns=2)
    steps = []
    made = plots.run_plot(request, make, lambda step, total, latents: steps.append((step, total, latents is not None)), lambda: False)

    assert len(made) == 2 and all(image.size == (64, 64) for image in made)
    assert [(r.kind, r.steps, r.seeds, r.plot) for r in make.requests] == [
        (JobKind.TXT2IMG, 2, (1234,), None),
        (JobKind.TXT2IMG, 3, (1234,), None),
    ]
    # One count over both cells (2 + 3 steps), latents passed through for previews.
    assert steps == [(1, 5, True), (2, 5, True), (3, 5, True), (4, 5, True), (5, 5, True)]


def test_seed_and_prompt_cells_differ_and_each_cell_is_its_own_job(make, tiny_pipe):
    cells = [
        PlotCell(),
        PlotCell(seed=99),
        PlotCell(prompt="a photo of a dog", negative_prompt="", cfg_scale=5.0, sampler="Euler"),
        PlotCell(),
    ]
    request = plot_request(cells, columns=2)
    made = plots.run_plot(request, make, lambda *args: None, lambda: False)

    assert not np.array_equal(array(made[0]), array(made[1]))  # another seed
    assert not np.array_equal(array(made[0]), array(made[2]))  # same seed, another prompt
    assert np.array_equal(array(made[0]), array(made[3]))  # the same cell twice
    third = plots.cell_requests(request)[2]
    assert (third.prompt, third.negative_prompt, third.cfg_scale, third.sampler) == ("a photo of a dog", "", 5.0, "Euler")
    # A cell remade alone, from its own request, is the same image.
    assert np.array_equal(array(made[2]), array(generate(tiny_pipe, third)[0]))
    assert plots.cell_requests(request)[1].seeds == (99,)


def test_cancel_between_cells(make):
    request = plot_request([PlotCell(), PlotCell()], columns=2)
    cancelled = []

    def make_then_cancel(cell, on_step, is_cancelled):
        images = make(cell, on_step, is_cancelled)
        cancelled.append(True)  # the cancel arrives as the first cell ends
        return images

    with pytest.raises(JobCancelledError):
        plots.run_plot(request, make_then_cancel, lambda *args: None, lambda: bool(cancelled))
    assert len(make.requests) == 1


def test_cells_are_made_grouped_by_model_and_returned_in_order():
    cells = [PlotCell(model=name, seed=seed) for seed, name in enumerate(["b", "a", "b", "a"])]
    request = plot_request(cells, columns=2)
    calls, steps = [], []

    def fake_make(cell, on_step, is_cancelled):
        calls.append((cell.model, cell.seeds[0]))
        for step in range(1, cell.steps + 1):
            on_step(step, cell.steps, None)
        return [solid(COLOURS[cell.seeds[0]])]

    made = plots.run_plot(request, fake_make, lambda step, total, latents: steps.append(step), lambda: False)
    assert calls == [("b", 0), ("b", 2), ("a", 1), ("a", 3)]  # one load per model
    assert [image.getpixel((0, 0)) for image in made] == COLOURS[:4]
    assert steps == list(range(1, 13))


def test_denoising_sets_the_hires_pass_and_counts_its_steps():
    hires = HiresFix(scale=2.0, steps=4, denoising_strength=0.7)
    request = replace(plot_request([PlotCell(denoising_strength=0.3), PlotCell(steps=5)], columns=2), hires=hires)
    first, second = plots.cell_requests(request)
    assert first.hires == replace(hires, denoising_strength=0.3) and first.steps == 3
    assert second.hires == hires and second.steps == 5
    assert [plots.planned_steps(cell) for cell in (first, second)] == [3 + 4, 5 + 4]
    assert plots.planned_steps(replace(first, hires=replace(hires, steps=0))) == 3 + 3


def test_variation_plots_keep_each_cells_subseed():
    request = replace(plot_request([PlotCell(), PlotCell()], columns=1), subseeds=(5, 6), subseed_strength=0.4)
    cells = plots.cell_requests(request)
    assert [(c.kind, c.subseeds, c.subseed_strength) for c in cells] == [
        (JobKind.VARIATION, (5,), 0.4),
        (JobKind.VARIATION, (6,), 0.4),
    ]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (plot_request([], columns=1), "at least one cell"),
        (plot_request([PlotCell()], columns=2), "plot columns must be 1 to 1"),
        (plot_request([PlotCell()] * 4, columns=2, x_labels=("a",)), "needs 2 X labels"),
        (plot_request([PlotCell()] * 4, columns=2, y_labels=("a", "b", "c")), "needs 2 Y labels"),
        (replace(plot_request([PlotCell()] * 2, columns=2), seeds=(1,)), "needs as many seeds"),
        (plot_request([PlotCell(denoising_strength=0.5)], columns=1), "need the hires fix"),
        (replace(plot_request([PlotCell()], columns=1), kind=JobKind.TXT2IMG), "is not a plot"),
    ],
)
def test_bad_plots_are_refused_before_any_cell_runs(make, request_, message):
    with pytest.raises(InvalidRequestError, match=message):
        plots.run_plot(request_, make, lambda *args: None, lambda: False)
    assert make.requests == []


def dark(pixels: np.ndarray) -> np.ndarray:
    """Pixels of black text (anti-aliased: nearly black); grey text never gets this dark."""
    return (pixels < 100).all(axis=2)


def solid(colour, size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def cells_of(grid: Image.Image, left: int, top: int, rows: int, columns: int, size=(64, 64)) -> list[np.ndarray]:
    width, height = size
    return [
        array(grid.crop((left + c * width, top + r * height, left + (c + 1) * width, top + (r + 1) * height)))
        for r in range(rows)
        for c in range(columns)
    ]


def test_labelled_grid_has_label_margins_around_the_cells():
    images = [solid(colour) for colour in COLOURS]
    plot = PlotOptions(
        cells=(PlotCell(),) * 6,
        columns=3,
        x_labels=("2", "3", "a label long enough to be wrapped over several lines"),
        y_labels=("5", "7"),
        x_title="Steps",
        y_title="CFG Scale",
    )
    grid = plots.labelled_grid(images, plot)
    left = 64 * 3 // 4  # A1111: row labels get 3/4 of a cell's width
    top = grid.height - 2 * 64
    assert grid.width == left + 3 * 64 and top > 0
    for cell, image in zip(cells_of(grid, left, top, 2, 3), images, strict=True):
        assert np.array_equal(cell, array(image))
    # Text was drawn in the margins, in black, and the margins are otherwise white.
    margin = array(grid.crop((0, 0, grid.width, top)))
    assert dark(margin).any() and (margin == 255).all(axis=2).mean() > 0.5
    assert dark(array(grid.crop((0, top, left, grid.height)))).any()

    # The long label wraps: the band above the cells is taller than with short labels only.
    short = plots.labelled_grid(images, replace(plot, x_labels=("2", "3", "4")))
    assert short.height < grid.height and short.width == grid.width


def test_unlabelled_grid_is_the_cells_alone_with_empty_spots_white():
    images = [solid(colour) for colour in COLOURS[:5]]
    grid = plots.labelled_grid(images, PlotOptions(cells=(PlotCell(),) * 5, columns=3))
    assert grid.size == (3 * 64, 2 * 64)
    cells = cells_of(grid, 0, 0, 2, 3)
    for cell, image in zip(cells, images, strict=False):
        assert np.array_equal(cell, array(image))
    assert (cells[5] == 255).all()


def test_matrix_labels_strike_the_parts_left_out_in_grey():
    images = [solid(colour) for colour in COLOURS[:4]]
    plot = PlotOptions(
        cells=(PlotCell(),) * 4,
        columns=2,
        x_labels=("~~red~~", "red"),
        y_labels=("~~hat~~", "hat"),
    )
    grid = plots.labelled_grid(images, plot)
    left, top = 64 * 3 // 4, grid.height - 2 * 64
    above_first, above_second = (array(grid.crop((left + c * 64, 0, left + (c + 1) * 64, top))) for c in range(2))
    grey = (above_first == 153).all(axis=2)  # A1111's inactive colour, the strike line solid
    assert grey.any() and not dark(above_first).any()
    assert dark(above_second).any() and not (above_second == 153).all(axis=2).any()


def test_cells_of_another_size_are_fitted_into_the_first_ones():
    images = [solid((200, 30, 30)), solid((30, 30, 200), (128, 64))]
    grid = plots.labelled_grid(images, PlotOptions(cells=(PlotCell(),) * 2, columns=2))
    assert grid.size == (128, 64)
    second = array(grid.crop((64, 0, 128, 64)))
    # Shape kept: the 2:1 image fills the middle band, white above and below.
    assert (second[32, 32] == (30, 30, 200)).all() and (second[2, 32] == 255).all()


def test_the_worker_saves_each_cells_infotext_and_the_labelled_grid(tiny_model_spec, tiny_pipe, tmp_path):
    from inference import images
    from inference.common.infotext import parse_infotext
    from inference.common.protocol import JobCompleted, JobProgress, WorkerConfig

    config = WorkerConfig(models=(tiny_model_spec,), default_model="tiny", outputs_dir=str(tmp_path), preview_interval_s=0)
    runner = runner_for(tiny_pipe, config)
    cells = [PlotCell(steps=2), PlotCell(steps=3, prompt="a photo of a dog")]
    request = replace(plot_request(cells, columns=2, x_labels=("2", "3"), x_title="Steps"), job_id=5)
    sent = []
    runner.run(request, lambda: False, sent.append)

    done = sent[-1]
    assert isinstance(done, JobCompleted), sent[-1]
    assert [(e.step, e.total_steps) for e in sent if isinstance(e, JobProgress)] == [(n, 5) for n in range(1, 6)]
    infos = [parse_infotext(images.read_infotext(result.path)) for result in done.images]
    assert [(i["Prompt"], i["Steps"], i["Seed"]) for i in infos] == [
        ("a photo of a cat", "2", "1234"),
        ("a photo of a dog", "3", "1234"),
    ]
    with Image.open(done.grid_path) as grid:
        assert grid.width == 2 * 64 and grid.height > 64  # labels above, none at the left
    assert images.read_infotext(done.grid_path) == done.images[0].infotext

    # A one-cell plot still gets its labelled grid.
    sent.clear()
    runner.run(replace(plot_request([PlotCell()], columns=1, x_labels=("x",)), job_id=6), lambda: False, sent.append)
    assert sent[-1].grid_path is not None and len(sent[-1].images) == 1
