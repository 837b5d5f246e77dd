"""A1111's prompt matrix and X/Y plot scripts as job parameters (no Discord, no torch).

Both build one JobKind.PLOT job whose PlotOptions (stored as plot_json) list the cells in
row-major order, what each changes, and the labels of the grid; the worker makes every cell
and draws the labelled grid (inference.plot_runner). Values are written as in A1111's UI, and every
bad one is refused by name before anything is queued.

Prompt matrix (A1111's scripts/prompt_matrix.py, its defaults): ``a cat|red|wearing a hat``
makes one image per combination of the parts after the first, each appended to the first
with ", "; every image has the same seed. The first half of the optional parts vary along the
columns, the rest along the rows, and a label lists its axis's parts with those left out
struck through (``~~red~~``: see inference.plot_runner).

X/Y plot (A1111's scripts/xyz_grid.py): values are comma-separated, CSV-quoted when they hold
commas; numbers also take A1111's ranges: ``1-5`` (every step), ``1-5 (+2)`` (by 2),
``10-100 [5]`` (5 values evenly spread). A Seed of -1 is a random seed for that value.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.errors import InvalidOption, echo, listed
from bot.jobs.params import MAX_GIVEN_SEED, NO_SERVER_DEFAULTS, GenerationOptions, JobParameters, ServerDefaults, random_seed, resolve_parameters
from bot.jobs.job_rows import plot_json
from bot.jobs.model_checks import check_model, check_vae
from bot.jobs.sampling import MAX_ETA, check_rng, check_sampling
from bot.jobs.workflow_params import hires_parameters
from bot.prompts.checks import check_prompt_texts
from inference.common.protocol import MAX_CLIP_SKIP, JobKind, PlotCell, PlotOptions
from inference.common.sampler_catalog import AUTOMATIC as AUTOMATIC_SCHEDULE
from inference.common.sampler_catalog import SAMPLERS
from inference.common.vae_files import NONE

if TYPE_CHECKING:
    from bot.config import Settings
    from db.models import User

# A1111's axis names, as /xyplot offers them.
SEED, STEPS, CFG, SAMPLER, PROMPT_SR, MODEL, DENOISING, VAE, CLIP_SKIP = (
    "Seed", "Steps", "CFG Scale", "Sampler", "Prompt S/R", "Model", "Denoising", "VAE", "Clip skip",
)
SCHEDULE_TYPE, ETA, RNG = "Schedule type", "Eta", "RNG source"
AXIS_TYPES = (SEED, STEPS, CFG, SAMPLER, SCHEDULE_TYPE, PROMPT_SR, MODEL, DENOISING, VAE, CLIP_SKIP, ETA, RNG)
MATRIX_JOINER = ", "  # A1111's default "comma" joining
STRIKE = "~~"  # an inactive label line (inference.plot_runner draws it grey and struck through)
# Where the "|" of a prompt matrix does not split: inside A1111's [a|b] alternation, and inside
# {a|b} (the variants syntax of dynamic prompts), both of which the prompt itself means.
_OPENING, _CLOSING = "[{", "]}"


# --- prompt matrix -------------------------------------------------------------------------


def split_matrix(prompt: str) -> list[str]:
    """The prompt split on its top-level ``|``; a backslash escapes the next character."""
    parts, current, depth, escaped = [], [], 0, False
    for char in prompt:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _OPENING:
            depth += 1
        elif char in _CLOSING:
            depth = max(0, depth - 1)
        elif char == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _matrix_label(parts: list[str], on: int) -> str:
    return "\n".join(part if on & (1 << bit) else f"{STRIKE}{part}{STRIKE}" for bit, part in enumerate(parts))


def prompt_matrix_parameters(
    options: GenerationOptions, settings: Settings, user: User | None, server: ServerDefaults = NO_SERVER_DEFAULTS
) -> JobParameters:
    params = resolve_parameters(replace(options, count=1), settings, user, server)
    parts = [part.strip().strip(",").strip() for part in split_matrix(params.prompt)]
    if len(parts) < 2:
        raise InvalidOption(
            "A prompt matrix needs parts separated by `|`, as `a cat|red|wearing a hat`: the first part is in "
            "every image, the others in every combination."
        )
    for number, part in enumerate(parts, start=1):
        if not part:
            raise InvalidOption(f"Part {number} of the prompt matrix is empty; remove the extra `|`.")
    first, optional = parts[0], parts[1:]
    limit = settings.prompts.max_plot_cells
    cells = 2 ** len(optional)
    if cells > limit:
        raise InvalidOption(
            f"{len(optional)} parts after the first make {cells} images; this server allows at most {limit} "
            f"per plot, so at most {int(math.log2(limit))} parts after the first."
        )
    max_length = settings.limits.max_prompt_length
    prompts = []
    for combination in range(cells):
        prompt = MATRIX_JOINER.join([first, *(part for bit, part in enumerate(optional) if combination & (1 << bit))])
        if len(prompt) > max_length:
            raise InvalidOption(f"A prompt of the matrix is {len(prompt)} characters long; the limit is {max_length}.")
        prompts.append(prompt)
    # A1111: cell i has combination i; its low bits (the first half of the parts) pick the column.
    boundary = math.ceil(len(optional) / 2)
    across, down = optional[:boundary], optional[boundary:]
    plot = PlotOptions(
        cells=tuple(PlotCell(prompt=prompt) for prompt in prompts),
        columns=2 ** len(across),
        x_labels=tuple(_matrix_label(across, column) for column in range(2 ** len(across))),
        y_labels=tuple(_matrix_label(down, row) for row in range(2 ** len(down))) if down else (),
    )
    return replace(params, kind=JobKind.PLOT, count=cells, plot_json=plot_json(plot))


# --- X/Y plot: values ----------------------------------------------------------------------

# A1111's range syntax (scripts/xyz_grid.py): "1-5", "1-5 (+2)", "10-100 [5]".
_NUMBER = r"[+-]?\s*\d+(?:\.\d*)?"
_INT = r"[+-]?\s*\d+"
_RANGE = r"\s*({n})\s*-\s*({n})(?:\s*\(\s*({n})\s*\))?\s*"
_COUNT = r"\s*({n})\s*-\s*({n})\s*\[\s*(\d+)\s*\]\s*"
_INT_RANGE = re.compile(_RANGE.format(n=_INT))
_INT_COUNT = re.compile(_COUNT.format(n=_INT))
_FLOAT_RANGE = re.compile(_RANGE.format(n=_NUMBER))
_FLOAT_COUNT = re.compile(_COUNT.format(n=_NUMBER))


def split_values(text: str) -> list[str]:
    """A1111's csv_string_to_list_strip: comma-separated, "quoted" when a value holds commas."""
    try:
        rows = list(csv.reader(io.StringIO(text.strip()), skipinitialspace=True))
    except csv.Error as error:
        raise InvalidOption(f"Could not read the values `{echo(text)}`: {error}.") from None
    return [value.strip() for row in rows for value in row if value.strip()]


def _number(text: str, kind: type, axis: str) -> float | int:
    try:
        return kind(text.replace(" ", ""))
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidOption(f"{axis} value `{echo(text)}` is not {what} or a range such as `1-5`, `1-5 (+2)`, `1-9 [3]`.") from None


def expand_numbers(values: list[str], kind: type, axis: str, limit: int) -> list[float | int]:
    """Numbers and A1111 ranges to the numbers they mean; more than ``limit`` is refused
    before any range is spelled out, so "1-1000000000" costs nothing."""
    ranges, counts = (_INT_RANGE, _INT_COUNT) if kind is int else (_FLOAT_RANGE, _FLOAT_COUNT)
    expanded: list[float | int] = []
    for value in values:
        found: list[float | int]
        if match := ranges.fullmatch(value):
            start, end = (_number(match[i], kind, axis) for i in (1, 2))
            step = _number(match[3], kind, axis) if match[3] else 1
            if step == 0 or (end - start) * step < 0:
                raise InvalidOption(f"{axis} range `{echo(value)}` never gets from {start:g} to {end:g}.")
            # Both ends included, as A1111 (a float step that overshoots the end stops before it).
            length = int((end - start) / step + 1e-9) + 1
            _check_count(len(expanded) + length, axis, limit)
            found = [_round(start + step * i, kind) for i in range(length)]
        elif match := counts.fullmatch(value):
            start, end = (_number(match[i], kind, axis) for i in (1, 2))
            length = int(match[3])
            if length < 1:
                raise InvalidOption(f"{axis} range `{echo(value)}` asks for no values.")
            _check_count(len(expanded) + length, axis, limit)
            # numpy.linspace's values, as A1111; ints truncated as A1111's int() does.
            found = [start if length == 1 else start + (end - start) * i / (length - 1) for i in range(length)]
            found = [int(x) if kind is int else _round(x, kind) for x in found]
        else:
            found = [_number(value, kind, axis)]
        expanded += found
        _check_count(len(expanded), axis, limit)
    return expanded


def _round(value: float, kind: type) -> float | int:
    # 0.1 + 0.2 is 0.30000000000000004: labels and infotexts should say 0.3.
    return int(value) if kind is int else round(float(value), 6)


def _check_count(count: int, axis: str, limit: int) -> None:
    if count > limit:
        raise InvalidOption(f"The {axis} axis has more than {limit} values; this server allows at most {limit} images per plot.")


def _label(value: float | int | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- X/Y plot: axes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One axis of a plot: its A1111 name, its values resolved, and what each does to a cell."""

    name: str
    values: tuple[object, ...]
    labels: tuple[str, ...]
    apply: Callable[[dict, object], None]  # sets a cell's overrides (a PlotCell's fields)


# The PlotCell field each axis sets (Prompt S/R sets the prompts: _search_replace).
_CELL_FIELDS = {
    SEED: "seed", STEPS: "steps", CFG: "cfg_scale", SAMPLER: "sampler", MODEL: "model", DENOISING: "denoising_strength",
    VAE: "vae", CLIP_SKIP: "clip_skip", SCHEDULE_TYPE: "schedule_type", ETA: "eta", RNG: "rng",
}


def _setter(field: str) -> Callable[[dict, object], None]:
    def apply(cell: dict, value: object) -> None:
        cell[field] = value

    return apply


def _in_range(values: list, axis: str, low: float, high: float) -> None:
    for value in values:
        if not low <= value <= high:
            raise InvalidOption(f"{axis} values must be between {low:g} and {high:g}, got {value:g}.")


def parse_axis(
    name: str, text: str, params: JobParameters, settings: Settings, limit: int
) -> Axis:
    """One axis from what the user typed, every value checked against this server's limits."""
    if name not in AXIS_TYPES:
        raise InvalidOption(f"Unknown axis `{name}`. Axes: {', '.join(AXIS_TYPES)}.")
    raw = split_values(text)
    if not raw:
        raise InvalidOption(f"Give the {name} values, separated by commas.")
    limits = settings.limits
    values: list
    labels: list[str] | None = None
    if name == SEED:
        values = expand_numbers(raw, int, name, limit)
        # A1111's fix_axis_seeds: -1 is a random seed, fixed now so the grid can be remade.
        values = [random_seed() if value == -1 else value for value in values]
        _in_range(values, "Seed", 0, MAX_GIVEN_SEED)
    elif name == STEPS:
        values = expand_numbers(raw, int, name, limit)
        _in_range(values, "Steps", 1, limits.max_steps)
    elif name == CFG:
        values = expand_numbers(raw, float, name, limit)
        _in_range(values, "CFG Scale", 1, limits.max_cfg_scale)
    elif name == DENOISING:
        if params.hires_scale is None:
            raise InvalidOption(
                "Denoising changes the hires fix's second pass: give a hires_scale above 1 with it."
            )
        values = expand_numbers(raw, float, name, limit)
        _in_range(values, "Denoising", 0, 1)
    elif name == SAMPLER:
        # A combined name ("DPM++ 2M Karras") sets the cell's schedule type too; the label
        # stays the name as given, in A1111's spelling.
        values = [check_sampling(value) for value in raw]
        labels = [sampler if schedule == AUTOMATIC_SCHEDULE else f"{sampler} {schedule}" for sampler, schedule in values]
    elif name == SCHEDULE_TYPE:
        values = [check_sampling(params.sampler, value)[1] for value in raw]
    elif name == ETA:
        values = expand_numbers(raw, float, name, limit)
        _in_range(values, "Eta", 0, MAX_ETA)
    elif name == RNG:
        values = [check_rng(value) for value in raw]
    elif name == CLIP_SKIP:
        values = expand_numbers(raw, int, name, limit)
        _in_range(values, "Clip skip", 1, MAX_CLIP_SKIP)
    elif name == VAE:
        # Each value as the job's model resolves it ("Automatic" too); the label is the
        # file's name, or "None" for the model's own VAE.
        model = check_model(settings, params.model)
        values = [check_vae(settings, model, value) for value in raw]
        labels = [value or NONE for value in values]
    elif name == MODEL:
        known = {model.name.casefold(): model.name for model in settings.models}
        values = []
        for value in raw:
            if value.casefold() not in known:
                raise InvalidOption(f"Unknown model `{echo(value)}`. Available models: {listed(known.values())}.")
            values.append(known[value.casefold()])
    else:
        values = raw
    if name == PROMPT_SR:
        apply = _search_replace(raw[0], params)
    elif name == SAMPLER:
        apply = _set_sampler
    else:
        apply = _setter(_CELL_FIELDS[name])
    _check_count(len(values), name, limit)
    return Axis(name, tuple(values), tuple(labels or [_label(value) for value in values]), apply)


def _set_sampler(cell: dict, value: object) -> None:
    sampler, schedule_type = value  # type: ignore[misc]
    cell["sampler"] = sampler
    if schedule_type != AUTOMATIC_SCHEDULE:
        cell["schedule_type"] = schedule_type


def _cell_sampling(params: JobParameters, overrides: dict) -> None:
    """A cell's sampler with the job's schedule type and eta, as A1111's Sampler axis runs
    them: a sampler that cannot use the job's schedule type (a timestep one, DDIM, with
    Karras) or eta ignores it, so its cell runs with Automatic or its own eta."""
    sampler = overrides.get("sampler", params.sampler)
    if "schedule_type" in overrides:
        check_sampling(sampler, overrides["schedule_type"])
    elif not SAMPLERS[sampler].accepts(params.schedule_type):
        overrides["schedule_type"] = AUTOMATIC_SCHEDULE
    if "eta" in overrides and not SAMPLERS[sampler].uses_eta:
        del overrides["eta"]  # A1111 passes eta only to a sampler that takes it


def _search_replace(search: str, params: JobParameters) -> Callable[[dict, object], None]:
    """A1111's Prompt S/R: the first value is searched in the prompt and the negative prompt,
    and each value in turn replaces it (the first so leaves the prompt as it is)."""
    if search not in params.prompt and search not in params.negative_prompt:
        raise InvalidOption(
            f"Prompt S/R: `{echo(search)}` is not in the prompt or the negative prompt. The first value is the text "
            "to replace, and each value (the first too) replaces it in turn."
        )

    def apply(cell: dict, value: object) -> None:
        cell["prompt"] = cell.get("prompt", params.prompt).replace(search, str(value))
        cell["negative_prompt"] = cell.get("negative_prompt", params.negative_prompt).replace(search, str(value))

    return apply


def _cell(params: JobParameters, settings: Settings, overrides: dict) -> PlotCell:
    # A prompt left as the job's is no override: the cell's infotext then reads as the job's.
    for field in ("prompt", "negative_prompt"):
        if field in overrides:
            if overrides[field] == getattr(params, field):
                del overrides[field]
            elif len(overrides[field]) > settings.limits.max_prompt_length:
                raise InvalidOption(
                    f"Prompt S/R makes a prompt of {len(overrides[field])} characters; "
                    f"the limit is {settings.limits.max_prompt_length}."
                )
    if "prompt" in overrides or "negative_prompt" in overrides:
        # Prompt S/R's values are text the prompt checks never saw: a LoRA this server lacks,
        # prompt editing past what is read.
        try:
            check_prompt_texts(settings, overrides.get("prompt"), overrides.get("negative_prompt"))
        except InvalidOption as problem:
            raise InvalidOption(f"Prompt S/R: {problem}") from None
    _cell_sampling(params, overrides)
    return PlotCell(**overrides)


def xy_plot_parameters(
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    x_type: str,
    x_values: str,
    y_type: str | None = None,
    y_values: str | None = None,
    *,
    hires: Mapping[str, Any] | None = None,
    server: ServerDefaults = NO_SERVER_DEFAULTS,
) -> JobParameters:
    """One image per X value (columns) and Y value (rows), the job's seed in every cell unless
    the Seed axis sets it; ``hires``: /imagine's hires fix, as hires_parameters takes it (the
    Denoising axis needs it)."""
    params = resolve_parameters(replace(options, count=1), settings, user, server)
    params = hires_parameters(params, settings, **(hires or {}))
    if (y_type is None) != (y_values is None):
        raise InvalidOption("Give y_type and y_values together, or neither for a single row.")
    limit = settings.prompts.max_plot_cells
    x = parse_axis(x_type, x_values, params, settings, limit)
    y = parse_axis(y_type, y_values, params, settings, limit) if y_type is not None else None
    if y is not None and x.name == y.name and x.name != PROMPT_SR:
        raise InvalidOption(f"X and Y are both {x.name}: pick two different axes (only Prompt S/R may repeat).")
    count = len(x.values) * (len(y.values) if y else 1)
    if count > limit:
        raise InvalidOption(
            f"{len(x.values)} x {len(y.values) if y else 1} values make {count} images; "
            f"this server allows at most {limit} per plot."
        )
    cells = []
    for y_value in y.values if y else (None,):
        for x_value in x.values:
            # As A1111 applies them: X first, then Y (two Prompt S/R axes compose).
            overrides: dict = {}
            x.apply(overrides, x_value)
            if y is not None:
                y.apply(overrides, y_value)
            cells.append(_cell(params, settings, overrides))
    if ETA in (x.name, y.name if y else None) and not any(SAMPLERS[c.sampler or params.sampler].uses_eta for c in cells):
        takes = listed(name for name, info in SAMPLERS.items() if info.uses_eta)
        raise InvalidOption(f"The Eta axis needs a sampler that uses eta, and none of this plot's does; they are: {takes}.")
    plot = PlotOptions(
        cells=tuple(cells),
        columns=len(x.values),
        x_labels=x.labels,
        y_labels=y.labels if y else (),
        x_title=x.name,
        y_title=y.name if y else "",
    )
    return replace(params, kind=JobKind.PLOT, count=count, plot_json=plot_json(plot))


def plot_summary(plot: PlotOptions) -> str:
    """One line for the job's embed: "X/Y plot: Steps × CFG Scale (4 cells)", "Prompt matrix (4 cells)"."""
    cells = f"{len(plot.cells)} cell{'s' if len(plot.cells) != 1 else ''}"
    if not plot.x_title:
        return f"Prompt matrix ({cells})"
    axes = f"{plot.x_title} × {plot.y_title}" if plot.y_title else plot.x_title
    return f"X/Y plot: {axes} ({cells})"
