"""A1111's "Restore faces" on the bot's side: which restorer a job gets, its options checked,
and the answer when the server has no face models.

A generating command's ``restore_faces`` option (or the member's /settings default) turns it on
with the member's restorer, else the server's (images.default_face_restorer); as in A1111's
generation, the restored faces are fully visible. The *Restore faces* button and /upscale are
A1111's Extras tab: they use the member's visibility too. CodeFormer's weight applies to both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo
from inference.common.face_restorer_files import missing_face_models
from inference.common.protocol import CODEFORMER, FACE_RESTORERS

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.jobs.params import MemberDefaults

FACE_OFF = "Off"  # a member's default that turns restoration off on their generating jobs
FACE_CHOICES = (FACE_OFF, *FACE_RESTORERS)
DEFAULT_VISIBILITY = 1.0
DEFAULT_CODEFORMER_WEIGHT = 0.5  # A1111's code_former_weight default
# The columns of a job with no face restoration.
NO_FACE_RESTORATION: dict[str, object] = {"face_restorer": None, "face_visibility": None, "codeformer_weight": None}


def check_face_choice(value: str) -> str:
    """"Off" or a restorer's name, as A1111 spells it (any case accepted)."""
    match = next((choice for choice in FACE_CHOICES if choice.casefold() == value.strip().casefold()), None)
    if match is None:
        raise InvalidOption(f"Unknown face restorer `{echo(value)}`. Choose one of: {', '.join(FACE_CHOICES)}.")
    return match


def check_fraction(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidOption(f"{name} must be between 0 and 1, got {value:g}.")
    return float(value)


def check_face_models(settings: Settings, restorer: str) -> None:
    """InvalidOption saying what an admin must add when the restorer cannot run here."""
    dirs = settings.images.face_restorer_dirs
    missing = missing_face_models(dirs, restorer)
    if missing:
        # The folders as the admin knows them (models/GFPGAN), not the host's whole paths.
        shown = ", ".join("/".join(Path(folder).parts[-2:]) for folder in dirs) or "none configured"
        raise InvalidOption(
            f"Face restoration with {restorer} is not set up on this server: an admin must add {missing} "
            f"to the face restorer folders ({shown}). Nothing was queued."
        )


def face_restoration_columns(
    settings: Settings,
    restore: bool | None,
    *,
    choice: str | None = None,
    visibility: float | None = None,
    codeformer_weight: float | None = None,
    extras: bool = False,
) -> dict[str, object]:
    """A job's face restoration columns. ``restore`` is the command's option (None: the
    member's default ``choice``, off unless it names a restorer); ``extras`` (the button,
    /upscale) applies the member's visibility, which A1111's generation does not have."""
    if restore is None:
        restore = choice is not None and choice != FACE_OFF
    if not restore:
        return dict(NO_FACE_RESTORATION)
    restorer = choice if choice in FACE_RESTORERS else settings.images.default_face_restorer
    check_face_models(settings, restorer)
    weight = DEFAULT_CODEFORMER_WEIGHT if codeformer_weight is None else codeformer_weight
    return {
        "face_restorer": restorer,
        "face_visibility": (DEFAULT_VISIBILITY if visibility is None else visibility) if extras else DEFAULT_VISIBILITY,
        "codeformer_weight": weight if restorer == CODEFORMER else None,
    }


def member_face_columns(settings: Settings, defaults: MemberDefaults, restore: bool | None, *, extras: bool) -> dict[str, object]:
    """face_restoration_columns with the member's stored choices."""
    return face_restoration_columns(
        settings, restore, choice=defaults.face_restorer, visibility=defaults.face_visibility,
        codeformer_weight=defaults.codeformer_weight, extras=extras,
    )
