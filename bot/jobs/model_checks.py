"""The checks of a job's model and what goes with it: the model, its VAE, clip skip and family.

They are the commands' and /settings' own checks (bot.jobs.params resolves a job with them),
kept apart because they read the model list and the VAE folders rather than the limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo, listed
from inference.common.protocol import MAX_CLIP_SKIP
from inference.common.sources import folder_family
from inference.common.vae_files import (
    AUTOMATIC,
    NONE,
    UnknownVaeError,
    find_vae,
    resolve_vae,
    unknown_vae_message,
    vae_files,
)

if TYPE_CHECKING:
    from bot.config import ModelSettings, Settings


def check_model(settings: Settings, name: str) -> ModelSettings:
    model = settings.model(name)
    if model is None:
        known = listed(m.name for m in settings.models)
        raise InvalidOption(f"Unknown model `{echo(name)}`. Available models: {known}.")
    return model


def check_vae(settings: Settings, model: ModelSettings, choice: str) -> str:
    """The VAE file a job of ``model`` runs with for a member's choice ("Automatic", "None" or
    a VAE's name): its name, or "" for the model's own (inference.common.vae_files)."""
    try:
        return resolve_vae(choice, model.source, model.vae, settings_vae_files(settings))
    except UnknownVaeError as error:
        raise InvalidOption(str(error)) from None


def check_vae_choice(settings: Settings, choice: str) -> str:
    """A member's VAE choice as stored: "Automatic", "None" or a VAE file's name."""
    for fixed in (AUTOMATIC, NONE):
        if choice.strip().casefold() == fixed.casefold():
            return fixed
    files = settings_vae_files(settings)
    found = find_vae(choice, files)
    if found is None:
        raise InvalidOption(unknown_vae_message(choice, files))
    return found


def settings_vae_files(settings: Settings) -> dict[str, Path]:
    """The VAE files the worker finds: the VAE folders', and those beside the checkpoints."""
    return vae_files(settings.vae_dirs, [model.source for model in settings.models])


def check_clip_skip(clip_skip: int) -> int:
    if not 1 <= clip_skip <= MAX_CLIP_SKIP:
        raise InvalidOption(f"clip skip must be between 1 and {MAX_CLIP_SKIP} (1: no skip), got {clip_skip}.")
    return clip_skip

def model_family(model: ModelSettings) -> str:
    """The model's family: as configured or found by the [a1111] scan, else read from its
    folder or file ("" when a hub id not downloaded cannot tell)."""
    return model.family or folder_family(model.source)
