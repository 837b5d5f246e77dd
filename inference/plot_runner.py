"""A1111's X/Y plot and prompt matrix scripts: one job, many cells, one labelled grid.

A plot job (JobKind.PLOT) is a txt2img request plus PlotOptions: each cell is made as a job of
its own (the request with the cell's overrides and the cell's one seed) through the worker's
usual path, so LoRAs, samplers, the hires fix and model switching behave exactly as in a plain
job. Progress runs over all cells as one count, and the grid is drawn as A1111's
draw_grid_annotations draws it: column labels above, row labels on the left.

Label lines written ``~~like this~~`` (Discord's strikethrough) are drawn as A1111 draws an
inactive annotation, grey and struck through: the prompt matrix marks the parts a column or
row leaves out that way (bot.jobs.plot_params).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFont, ImageOps

from inference.generate import InvalidRequestError, IsCancelled, JobCancelledError, OnStep
from inference.img2img import exact_steps_schedule
from inference.common.protocol import GenerateRequest, JobKind, PlotOptions

# make(request, on_step, is_cancelled) -> images: the worker's way of running any one job.
Make = Callable[[GenerateRequest, OnStep, IsCancelled], list]

# A1111's draw_grid_annotations colours.
ACTIVE_COLOUR = (0, 0, 0)
INACTIVE_COLOUR = (153, 153, 153)
BACKGROUND = "white"
# A1111 sizes the font from the cell, (width + height) // 25; tiny cells would get unreadable
# text, so it never goes below this.
MIN_FONT_SIZE = 10
STRIKE = "~~"


# --- the cells -----------------------------------------------------------------------------


def check_plot(plot: PlotOptions | None, count: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a valid plot; InvalidRequestError naming what is wrong otherwise.

    ``count`` is the number of images the grid is drawn from, when it must match the cells.
    """
    if plot is None:
        raise InvalidRequestError("a plot job needs its plot options")
    cells = len(plot.cells)
    if not cells:
        raise InvalidRequestError("a plot needs at least one cell")
    columns = plot.columns
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= cells:
        raise InvalidRequestError(f"plot columns must be 1 to {cells} (the cells), got {columns!r}")
    # The last row may be short: A1111 leaves empty spots rather than refusing.
    rows = math.ceil(cells / columns)
    if len(plot.x_labels) not in (0, columns):
        raise InvalidRequestError(f"a plot of {columns} columns needs {columns} X labels, got {len(plot.x_labels)}")
    if len(plot.y_labels) not in (0, rows):
        raise InvalidRequestError(f"a plot of {rows} rows needs {rows} Y labels, got {len(plot.y_labels)}")
    if count is not None and count != cells:
        raise InvalidRequestError(f"a plot of {cells} cells was given {count} images")
    return rows, columns


def cell_requests(request: GenerateRequest) -> list[GenerateRequest]:
    """The job each cell is: the request with the cell's overrides and its own seed.

    Public so that the worker can write each cell's own infotext (inference.jobs._save) from
    the same requests the cells were made with.
    """
    if request.kind != JobKind.PLOT:
        raise InvalidRequestError(f"a {request.kind} job is not a plot")
    plot = request.plot
    check_plot(plot)
    if len(request.seeds) != len(plot.cells):
        raise InvalidRequestError(f"a plot of {len(plot.cells)} cells needs as many seeds, got {len(request.seeds)}")
    requests = []
    for index, cell in enumerate(plot.cells):
        subseeds = (request.subseeds[index],) if request.subseeds else ()
        hires = request.hires
        if cell.denoising_strength is not None:
            # A txt2img cell has one pass from an image: the hires fix's second one.
            if hires is None:
                raise InvalidRequestError("a plot's Denoising values need the hires fix, which this job does not use")
            hires = replace(hires, denoising_strength=cell.denoising_strength)
        overrides = {
            name: value
            for name in (
                "prompt", "negative_prompt", "steps", "cfg_scale", "sampler", "model", "vae", "clip_skip",
                "schedule_type", "eta", "rng",
            )
            if (value := getattr(cell, name)) is not None
        }
        requests.append(
            replace(
                request,
                kind=JobKind.VARIATION if subseeds else JobKind.TXT2IMG,
                seeds=(request.seeds[index] if cell.seed is None else cell.seed,),
                subseeds=subseeds,
                subseed_strength=request.subseed_strength if subseeds else 0.0,
                hires=hires,
                plot=None,
                **overrides,
            )
        )
    return requests


def planned_steps(request: GenerateRequest) -> int:
    """The steps a txt2img request reports: its own, plus the hires fix's second pass."""
    steps = request.steps
    if request.hires is not None:
        hires = request.hires
        steps += exact_steps_schedule(hires.steps or request.steps, hires.denoising_strength).steps
    return steps


@dataclass
class _Progress:
    """One count over all cells: each cell reports into its own slice of the total."""

    on_step: OnStep
    total: int
    offset: int = 0

    def cell(self, planned: int) -> OnStep:
        offset = self.offset
        self.offset += planned

        def report(done: int, cell_total: int, latents) -> None:
            # A cell that counts differently than planned still fills exactly its slice.
            mapped = done if cell_total == planned or cell_total <= 0 else round(done * planned / cell_total)
            self.on_step(offset + min(max(mapped, 0), planned), self.total, latents)

        return report


def run_plot(request: GenerateRequest, make: Make, on_step: OnStep, is_cancelled: IsCancelled) -> list[Image.Image]:
    """Each cell's image, in the cells' order; the whole request is checked before any runs.

    Cells are made grouped by model (in the order the models first appear), as A1111 runs its
    costliest axis outermost: a Model axis along the columns would otherwise load a checkpoint
    for every cell.
    """
    cells = cell_requests(request)
    first_seen = {model: rank for rank, model in reversed(list(enumerate(cell.model for cell in cells)))}
    order = sorted(range(len(cells)), key=lambda index: first_seen[cells[index].model])
    plans = [planned_steps(cell) for cell in cells]
    progress = _Progress(on_step, sum(plans))
    made: dict[int, Image.Image] = {}
    for index in order:
        if is_cancelled():
            raise JobCancelledError
        images = make(cells[index], progress.cell(plans[index]), is_cancelled)
        if len(images) != 1:
            raise RuntimeError(f"a plot cell made {len(images)} images instead of one")
        made[index] = images[0]
    return [made[index] for index in range(len(cells))]


# --- the labelled grid ---------------------------------------------------------------------


@dataclass
class _Line:
    text: str
    active: bool
    width: float = 0
    height: int = 0


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font (no font file to ship); a sized one needs Pillow >= 10.1 and FreeType."""
    try:
        return ImageFont.load_default(size=max(1, size))
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _parse(label: str) -> list[_Line]:
    lines = []
    for text in label.split("\n"):
        text = text.strip()
        inactive = len(text) > 2 * len(STRIKE) and text.startswith(STRIKE) and text.endswith(STRIKE)
        lines.append(_Line(text[len(STRIKE) : -len(STRIKE)] if inactive else text, not inactive))
    return [line for line in lines if line.text]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """A1111's word wrap: words are added while the line fits; a long word gets its own line."""
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line, font=font) <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return [line for line in lines if line]


def _layout(draw: ImageDraw.ImageDraw, label: str, font, width: int) -> list[_Line]:
    lines = []
    for line in _parse(label):
        for text in _wrap(draw, line.text, font, width):
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            lines.append(_Line(text, line.active, right - left, bottom - top))
    return lines


def _block_height(lines: list[_Line], spacing: int) -> int:
    return sum(line.height + spacing for line in lines) - spacing if lines else 0


def _draw_block(draw, centre_x: float, top: float, lines, width: int, size: int, spacing: int) -> None:
    """Lines centred on centre_x from top down; one still too wide (a long word) gets a
    smaller font until it fits, as A1111 does."""
    for line in lines:
        font, font_size = _font(size), size
        while draw.textlength(line.text, font=font) > width and font_size > 1:
            font_size -= 1
            font = _font(font_size)
        colour = ACTIVE_COLOUR if line.active else INACTIVE_COLOUR
        middle = top + line.height / 2
        draw.text((centre_x, middle), line.text, font=font, fill=colour, anchor="mm")
        if not line.active:
            half = min(line.width, width) / 2
            draw.line((centre_x - half, middle, centre_x + half, middle), fill=INACTIVE_COLOUR, width=max(1, size // 10))
        top += line.height + spacing


def _fitted(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An image of another size (another model's, a hires cell's) inside the first cell's size,
    its shape kept and centred: the grid stays regular and nothing is stretched."""
    image = image.convert("RGB")
    if image.size == size:
        return image
    return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=BACKGROUND)


def labelled_grid(images: Sequence[Image.Image], plot: PlotOptions) -> Image.Image:
    """The cells in plot.columns columns, with A1111's annotations around them.

    Sizes follow A1111's draw_grid_annotations: the font is (cell width + height) / 25 px,
    row labels get a margin of 3/4 of a cell's width, column labels a band as tall as the
    tallest label plus a line's spacing above and below; axis titles, when given, take one
    more line above the column labels (X) and the top-left corner (Y).
    """
    rows, columns = check_plot(plot, len(images))
    cell_width, cell_height = images[0].size
    size = max(MIN_FONT_SIZE, (cell_width + cell_height) // 25)
    spacing = size // 2
    font = _font(size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    has_rows = any(_parse(label) for label in plot.y_labels) or bool(plot.y_title.strip())
    pad_left = cell_width * 3 // 4 if has_rows else 0
    x_blocks = [_layout(draw, label, font, cell_width) for label in plot.x_labels] or [[] for _ in range(columns)]
    y_blocks = [_layout(draw, label, font, pad_left) for label in plot.y_labels] or [[] for _ in range(rows)]
    x_title = _layout(draw, plot.x_title, font, cell_width * columns)
    y_title = _layout(draw, plot.y_title, font, pad_left) if pad_left else []

    label_height = max(_block_height(block, spacing) for block in x_blocks)
    title_height = max(_block_height(x_title, spacing), _block_height(y_title, spacing))
    pad_top = 0
    if label_height or title_height:
        pad_top = label_height + spacing * 2
        if title_height:
            pad_top += title_height + spacing

    grid = Image.new("RGB", (pad_left + columns * cell_width, pad_top + rows * cell_height), BACKGROUND)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(_fitted(image, (cell_width, cell_height)), (pad_left + column * cell_width, pad_top + row * cell_height))

    draw = ImageDraw.Draw(grid)
    labels_top = pad_top - spacing - label_height  # the column labels sit just above the cells
    if title_height:
        _draw_block(draw, pad_left + columns * cell_width / 2, spacing, x_title, cell_width * columns, size, spacing)
        _draw_block(draw, pad_left / 2, spacing, y_title, pad_left, size, spacing)
    for column, block in enumerate(x_blocks):
        centre = pad_left + column * cell_width + cell_width / 2
        top = labels_top + (label_height - _block_height(block, spacing)) / 2
        _draw_block(draw, centre, top, block, cell_width, size, spacing)
    for row, block in enumerate(y_blocks):
        top = pad_top + row * cell_height + (cell_height - _block_height(block, spacing)) / 2
        _draw_block(draw, pad_left / 2, top, block, pad_left, size, spacing)
    return grid

