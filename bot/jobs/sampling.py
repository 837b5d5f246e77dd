"""A1111 1.10's sampling and noise choices checked as members give them: the sampler (an old
combined name such as "DPM++ 2M Karras" split as A1111 reads it), the schedule type, eta, the
random number source, ENSD and "Resize seed from". Each refusal names the value and what is
allowed, in the same words for the commands, /settings, the plot axes and `sdbot generate`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo, listed
from inference.common.protocol import RNG_SOURCES
from inference.common.sampler_catalog import (
    AUTOMATIC as AUTOMATIC_SCHEDULE,
    SAMPLERS,
    ScheduleNotAcceptedError,
    UnknownNameError,
    checked_choice,
    schedule_type_named,
    split_combined_name,
)

if TYPE_CHECKING:
    from bot.config import LimitSettings

# A1111's eta sliders (eta_ancestral, eta_ddim) run from 0 to 1.
MAX_ETA = 1.0
# ENSD is added to a 32-bit seed; kept in the seeds' own range.
MAX_ENSD = 2**32 - 1


def check_sampler(name: str) -> str:
    """A sampler name as A1111 spells it, a combined one ("DPM++ 2M Karras") kept combined:
    what a member's default stores."""
    sampler, schedule_type = check_sampling(name)
    return sampler if schedule_type == AUTOMATIC_SCHEDULE else f"{sampler} {schedule_type}"


def check_sampling(sampler: str, schedule_type: str | None = None) -> tuple[str, str]:
    """(sampler, schedule type) in A1111 1.10's spelling. ``sampler`` may be a combined name
    ("DPM++ 2M Karras"), split as A1111 reads it; given both ways and different, it is refused.
    An unknown name is refused with the closest names, and so is a schedule type the sampler
    cannot use."""
    try:
        named, written = split_combined_name(sampler, convert_automatic=False)
        if schedule_type is not None:
            given = schedule_type_named(schedule_type).label
            if written != AUTOMATIC_SCHEDULE and given != written:
                raise InvalidOption(
                    f"The sampler `{echo(sampler)}` names the schedule type {written} but the schedule_type "
                    f"option is `{echo(schedule_type)}`: give it one way only."
                )
            written = given
        return checked_choice(named, written)
    except UnknownNameError as error:
        hint = f" Did you mean {' or '.join(f'`{s}`' for s in error.suggestions)}?" if error.suggestions else ""
        raise InvalidOption(f"Unknown {error.kind} `{echo(error.name)}`.{hint}") from None
    except ScheduleNotAcceptedError as error:
        raise InvalidOption(
            f"{error.sampler} cannot use the schedule type {error.schedule_type}: it takes "
            f"{listed(SAMPLERS[error.sampler].schedule_types)}."
        ) from None


def check_eta(eta: float | None, sampler: str) -> float | None:
    """Eta for a sampler that takes it (A1111's ancestral, SDE and DDIM samplers), 0 to 1;
    None: the sampler's own default."""
    if eta is None:
        return None
    eta = float(eta)
    if not SAMPLERS[sampler].uses_eta:
        takes = listed(name for name, info in SAMPLERS.items() if info.uses_eta)
        raise InvalidOption(f"{sampler} does not use eta; the samplers that do: {takes}.")
    if not 0.0 <= eta <= MAX_ETA:
        raise InvalidOption(f"eta must be between 0 and {MAX_ETA:g}, got {eta:g}.")
    return eta


def check_rng(source: str) -> str:
    found = next((known for known in RNG_SOURCES if known.casefold() == source.strip().casefold()), None)
    if found is None:
        raise InvalidOption(f"Unknown random number generator source `{echo(source)}`. Sources: {listed(RNG_SOURCES)}.")
    return found


def check_ensd(ensd: int) -> int:
    if not 0 <= ensd <= MAX_ENSD:
        raise InvalidOption(f"ENSD (eta noise seed delta) must be between 0 and {MAX_ENSD}, got {ensd}.")
    return ensd


def check_seed_resize(text: str | None, limits: LimitSettings) -> tuple[int, int] | None:
    """A1111's "Resize seed from" as "WIDTHxHEIGHT" within the size limits; None, "" or "0x0": off."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", text)
    if match is None:
        raise InvalidOption(f"seed_resize_from takes WIDTHxHEIGHT, such as 512x512, got `{echo(text)}`.")
    width, height = int(match[1]), int(match[2])
    if width == 0 and height == 0:
        return None
    for name, value in (("width", width), ("height", height)):
        if value % 8 or not limits.min_size <= value <= limits.max_size:
            raise InvalidOption(
                f"seed_resize_from's {name} must be a multiple of 8 between {limits.min_size} and "
                f"{limits.max_size}, got {value}."
            )
    return width, height
