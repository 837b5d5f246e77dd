"""Midjourney's inline parameters in a prompt: `a castle --ar 3:2 --no people, text --seed 5`.

Parameters go at the end of the prompt, as in Midjourney: the prompt is the text before the
first one, and a parameter's value runs to the next ` --` (so `--sampler DPM++ 2M Karras` and
`--no text, watermark` need no quotes). Phones turn `--` into a dash as it is typed, so `—ar`
and `–ar` work too for the parameters below (only `--` flags an unknown name: a dash before a
word is ordinary text). Values are checked for their form here; their ranges (steps, cfg,
seed, sizes) are checked with the slash-command options by bot.jobs.params, in the same words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from bot.errors import InvalidOption, echo
from bot.jobs.params import GenerationOptions, parse_aspect
from inference.common.sampler_catalog import find_schedule_type, split_combined_name

# Parameter name -> GenerationOptions field (or "no" for the negative prompt).
PARAMETERS = {
    "ar": "aspect",
    "aspect": "aspect",
    "no": "no",
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg_scale",
    "sampler": "sampler",
    "tile": "tiling",
    "model": "model",
    "vae": "vae",
    "clipskip": "clip_skip",
    "clip-skip": "clip_skip",
    "clip_skip": "clip_skip",
    "schedule": "schedule_type",
    "scheduler": "schedule_type",
    "schedule-type": "schedule_type",
    "schedule_type": "schedule_type",
    "eta": "eta",
}
# How each field is named in messages: the slash-command option it fills.
OPTION_NAMES = {
    "aspect": "aspect", "seed": "seed", "steps": "steps", "cfg_scale": "cfg", "sampler": "sampler", "model": "model",
    "vae": "vae", "clip_skip": "clip_skip", "schedule_type": "schedule_type", "eta": "eta",
}
_START = re.compile(r"(?:^|(?<=\s))(--|—|–)([A-Za-z][\w-]*)(?=\s|$)")
_WHOLE_NUMBER = re.compile(r"-?\d{1,20}")
AT_THE_END = "Parameters go at the end of the prompt, each as --name value."


@dataclass(frozen=True)
class InlineParameters:
    """A prompt's own text and the parameters written after it (None: not written)."""

    prompt: str
    aspect: str | None = None
    no: tuple[str, ...] = ()
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    tiling: bool | None = None
    model: str | None = None
    vae: str | None = None
    clip_skip: int | None = None
    schedule_type: str | None = None
    eta: float | None = None


def parse_inline(text: str) -> InlineParameters:
    """The prompt text before the parameters, and the parameters, or InvalidOption naming one."""
    starts = [m for m in _START.finditer(text) if m[1] == "--" or m[2].lower() in PARAMETERS]
    if not starts:
        return InlineParameters(prompt=text.strip())
    values: dict[str, object] = {}
    no: list[str] = []
    for match, following in zip(starts, [*starts[1:], None]):
        name = match[2].lower()
        value = text[match.end() : following.start() if following else len(text)].strip()
        field = PARAMETERS.get(name)
        if field is None:
            known = ", ".join(f"--{p}" for p in PARAMETERS)
            raise InvalidOption(f"Unknown parameter `--{echo(match[2])}` in the prompt. Parameters: {known}.")
        if field == "no":
            if not value:
                raise InvalidOption("`--no` needs what to keep out of the image, e.g. `--no text, watermark`.")
            no.append(value)
            continue
        if field in values:
            raise InvalidOption(f"`--{name}` is given twice in the prompt.")
        values[field] = _value(name, field, value)
    return InlineParameters(prompt=text[: starts[0].start()].strip(), no=tuple(no), **values)  # type: ignore[arg-type]


def _value(name: str, field: str, value: str) -> object:
    if field == "tiling":
        if value:
            raise InvalidOption(f"`--{name}` takes no value, got `{echo(value)}`. {AT_THE_END}")
        return True
    if not value:
        raise InvalidOption(f"`--{name}` needs a value. {AT_THE_END}")
    if field in ("seed", "steps", "clip_skip"):
        if not _WHOLE_NUMBER.fullmatch(value):
            raise InvalidOption(f"`--{name}` takes a whole number, got `{echo(value)}`. {AT_THE_END}")
        return int(value)
    if field in ("cfg_scale", "eta"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InvalidOption(f"`--{name}` takes a number such as 7 or 5.5, got `{echo(value)}`. {AT_THE_END}")
        return number
    if field == "aspect":
        try:
            width, height = parse_aspect(value)
        except InvalidOption:
            raise InvalidOption(f"`--{name}` takes a ratio such as 3:2 or 16:9, got `{echo(value)}`. {AT_THE_END}") from None
        return f"{width}:{height}"
    return value  # sampler, model and VAE names: checked against what exists by resolve_parameters


def apply_inline(options: GenerationOptions, inline: InlineParameters, *, override: bool = False) -> GenerationOptions:
    """The options with the prompt's parameters filled in.

    An inline value fills an option the user did not give; given both ways and different, the
    request is refused, since either guess could be wrong. With override (Remix, where the
    options are the earlier job's and the prompt is what the user just typed) the prompt wins,
    and an aspect ratio replaces the earlier job's width and height.
    """
    changes: dict[str, object] = {"prompt": inline.prompt}
    for field in (
        "aspect", "seed", "steps", "cfg_scale", "sampler", "tiling", "model", "vae", "clip_skip", "schedule_type", "eta",
    ):
        value = getattr(inline, field)
        if value is None:
            continue
        given = getattr(options, field)
        if given is not None and not override and not _same(field, given, value):
            name = next(p for p, f in PARAMETERS.items() if f == field)
            raise InvalidOption(
                f"The prompt says `--{name} {echo(value)}` but the {OPTION_NAMES[field]} option is `{echo(given)}`: "
                "give it one way only."
            )
        changes[field] = value
    if override and inline.aspect is not None:
        changes.update(width=None, height=None)
    return replace(options, **changes)


def _same(field: str, given: object, value: object) -> bool:
    if field == "sampler":
        try:  # "DPM++ 2M Karras" may be written combined on one side
            return split_combined_name(str(given), convert_automatic=False) == split_combined_name(
                str(value), convert_automatic=False
            )
        except ValueError:
            return False
    if field == "schedule_type":
        known = find_schedule_type(str(given))
        return known is not None and known == find_schedule_type(str(value))
    if field == "aspect":  # 3:2 and 6:4 are the same shape
        (w1, h1), (w2, h2) = parse_aspect(str(given)), parse_aspect(str(value))
        return w1 * h2 == w2 * h1
    if field == "vae":
        return str(given).casefold() == str(value).casefold()
    if field in ("cfg_scale", "eta"):
        return math.isclose(float(given), float(value))  # type: ignore[arg-type]
    return given == value


def with_negative(negative: str, additions: tuple[str, ...]) -> str:
    """`--no` values join the negative prompt, comma-separated, as Midjourney's --no does."""
    return ", ".join(part for part in (negative.strip(), *(a.strip() for a in additions)) if part)
