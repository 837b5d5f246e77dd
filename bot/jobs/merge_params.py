"""/admin merge: a checkpoint merge checked in full and made into a job, before anything queues.

Everything a merge can fail on is known before it runs (inference.common.merge_plan reads
the files' headers): unknown models, files the merger cannot read, families that do not mix,
shapes, the multiplier, a name taken, the disk. Each becomes the admin's private answer here,
and only a merge that will work is queued, as a JobKind.MERGE job whose MergeOptions ride in
the row (merge_json). The new file goes into the first [a1111] checkpoints folder, where the
model scan (bot.model_catalog) finds it under the name given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from bot.jobs.job_rows import merge_json, merge_summary
from bot.jobs.model_checks import settings_vae_files
from bot.jobs.params import JobParameters, random_seed
from inference.common.merge_options import MergeMethod, MergeOptions, MergeSource
from inference.common.merge_plan import (
    MergeError,
    a1111_default_name,
    check_free_space,
    check_new_file,
    check_output_name,
    plan_merge,
)
from inference.common.protocol import JobKind
from inference.common.vae_files import find_vae, unknown_vae_message

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = ["MERGE_METHODS", "MergeJob", "merge_job"]

# The methods as /admin merge offers them (A1111's radio buttons, its labels).
MERGE_METHODS = tuple(method.value for method in MergeMethod)


@dataclass(frozen=True, slots=True)
class MergeJob:
    params: JobParameters
    options: MergeOptions
    name: str  # the merged model's name, as the lists will show it
    size: int  # the new file's size in bytes, about

    @property
    def recipe(self) -> str:
        return merge_summary(self.options)


def merge_job(
    settings: Settings,
    known_hashes: dict[str, str],
    *,
    model_a: str,
    model_b: str | None,
    model_c: str | None,
    method: str,
    multiplier: float,
    vae: str | None,
    name: str | None,
) -> MergeJob:
    """The merge job for these /admin merge options; InvalidOption saying what is wrong.

    Reads the checkpoints' headers and looks at the disk: call it off the event loop.
    """
    try:
        chosen = MergeMethod(method)
    except ValueError:
        raise InvalidOption(f"Unknown merge method `{method}`: pick one of {', '.join(MERGE_METHODS)}.") from None
    if not 0.0 <= multiplier <= 1.0:
        raise InvalidOption(f"The multiplier (M) must be between 0 and 1, got {multiplier:g}.")
    folders = settings.a1111.folders("checkpoint_dirs")
    if not folders:
        raise InvalidOption(
            "Merging needs the bot's `[a1111] root`: the merged model is saved in its checkpoints "
            "folder, where the model list finds it. Ask the bot's admin to set it."
        )
    if chosen != MergeMethod.NO_INTERPOLATION and not model_b:
        raise InvalidOption(f"{chosen.value} needs a model B.")
    if chosen == MergeMethod.ADD_DIFFERENCE and not model_c:
        raise InvalidOption("Add difference needs a model C: the result is A + (B - C) x M.")
    primary = _source(settings, known_hashes, model_a)
    secondary = _source(settings, known_hashes, model_b) if model_b and chosen != MergeMethod.NO_INTERPOLATION else None
    tertiary = _source(settings, known_hashes, model_c) if model_c and chosen == MergeMethod.ADD_DIFFERENCE else None
    vae_path, vae_name = _vae(settings, vae)
    folder = Path(folders[0])
    draft = MergeOptions(chosen, primary, "", secondary, tertiary, multiplier, vae_path, vae_name)
    try:
        plan = plan_merge(draft)
        model_name = check_output_name(name) if name else check_output_name(a1111_default_name(draft, plan))
        if any(m.name.casefold() == model_name.casefold() for m in settings.models):
            raise MergeError(f"a model named `{model_name}` exists already: pick another name")
        output = folder / f"{model_name}.safetensors"
        check_new_file(output)
        folder.mkdir(parents=True, exist_ok=True)
        check_free_space(folder, plan.estimated_bytes)
    except MergeError as error:
        message = str(error)
        raise InvalidOption(message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")) from None
    options = MergeOptions(chosen, primary, str(output), secondary, tertiary, multiplier, vae_path, vae_name)
    params = JobParameters(
        kind=JobKind.MERGE, prompt="", negative_prompt="", model=primary.name,
        # A merge makes no image: the size and steps only give the queue a cost to weigh it by.
        width=512, height=512, steps=1, cfg_scale=1.0, sampler="Euler", count=1, seed=random_seed(),
        vae=vae_name, merge_json=merge_json(options),
    )
    return MergeJob(params, options, model_name, plan.estimated_bytes)


def _source(settings: Settings, known_hashes: dict[str, str], name: str) -> MergeSource:
    model = next((m for m in settings.models if m.name == name), None)
    if model is None:
        raise InvalidOption(f"There is no model `{name}`: pick one from the list.")
    if Path(model.source).suffix.lower() != ".safetensors":
        raise InvalidOption(
            f"`{name}` is not a single .safetensors checkpoint: the merger reads only those "
            "(a hub id, a diffusers folder or a .ckpt cannot be merged)."
        )
    return MergeSource(model.name, model.source, known_hashes.get(model.source, ""))


def _vae(settings: Settings, choice: str | None) -> tuple[str, str]:
    """(path, name) of the VAE to bake in; ("", "") for none."""
    if not choice or choice.casefold() in ("none", "automatic"):
        return "", ""
    files = settings_vae_files(settings)
    found = find_vae(choice, files)
    if found is None:
        raise InvalidOption(unknown_vae_message(choice, files))
    return str(files[found]), found
