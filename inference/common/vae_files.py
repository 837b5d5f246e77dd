"""Finding VAE files and choosing a job's VAE as AUTOMATIC1111 does, without torch.

The bot imports this module to offer and check VAE names (autocomplete, /settings, refusing an
unknown VAE before anything is queued) and to resolve "Automatic"; inference/vae.py uses the
same lookup to load the file, so both sides agree on what a name means.

As in A1111 (modules/sd_vae.py):
- a VAE's name is its file name, suffix included ("vae-ft-mse-840000-ema-pruned.safetensors"),
  which is what the infotext's "VAE" says; members may also write it without the suffix;
- VAEs are the files of the VAE folders (walked recursively), and "<checkpoint>.vae.pt",
  ".vae.safetensors" or ".vae.ckpt" files beside a single-file checkpoint;
- "Automatic" is the model's configured VAE, else a VAE named after the checkpoint
  (find_vae_near_checkpoint), else the VAE baked into the checkpoint; "None" is the baked one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from inference.common.network_files import LISTED_NAME_LIMIT, MAX_LISTED_NAMES, _excerpt, _find_files

# A1111's VAE folder takes .ckpt, .pt and .safetensors; the worker reads pickles with
# torch.load(weights_only=True). Earlier wins when one folder holds a name twice.
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# The two choices that are not files, as A1111's "SD VAE" setting names them.
AUTOMATIC = "Automatic"
NONE = "None"
# Single-file checkpoints' suffixes: a model source with one of them is a file whose stem is
# the checkpoint's name; any other source (a diffusers folder, a hub id) is named by its last part.
_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


class UnknownVaeError(ValueError):
    """A VAE name that no file has; the message lists what there is, for the member."""


def vae_files(vae_dirs: Iterable[str | Path], checkpoint_sources: Iterable[str] = ()) -> dict[str, Path]:
    """VAE name (the file name) -> file, sorted by name: the VAE folders' files, then the
    "<checkpoint>.vae.*" files beside single-file checkpoints (``checkpoint_sources``, the
    models' sources). The first found wins a name."""
    found = {path.name: path for path in _find_files(vae_dirs, VAE_SUFFIXES).values()}
    for source in checkpoint_sources:
        checkpoint = Path(source).expanduser()
        if checkpoint.suffix.lower() not in _CHECKPOINT_SUFFIXES:
            continue
        for suffix in VAE_SUFFIXES:
            beside = checkpoint.with_name(f"{checkpoint.stem}.vae{suffix}")
            if beside.is_file():
                found.setdefault(beside.name, beside)
    return dict(sorted(found.items(), key=lambda item: item[0].casefold()))


def find_vae(name: str, files: Mapping[str, Path]) -> str | None:
    """The VAE a member named: its file name, else the same in another case, else the name
    without its suffix (the first sorted file of that stem); None when no file matches."""
    if name in files:
        return name
    folded = name.strip().casefold()
    for known in files:
        if known.casefold() == folded:
            return known
    return next((known for known, path in files.items() if path.stem.casefold() == folded), None)


def checkpoint_stem(source: str) -> str:
    """A checkpoint's name as A1111 matches VAEs to it: a file's name without its suffix, a
    folder's name, a hub id's last part."""
    path = Path(source.rstrip("/\\"))
    return path.stem if path.suffix.lower() in _CHECKPOINT_SUFFIXES else path.name


def vae_near_checkpoint(source: str, files: Mapping[str, Path]) -> str | None:
    """A1111's find_vae_near_checkpoint: the VAE named after the checkpoint
    ("<stem>.vae.pt" and the like, or "<stem>.safetensors" in the VAE folder), if any."""
    stem = checkpoint_stem(source).casefold()
    if not stem:
        return None
    wanted = {f"{stem}{middle}{suffix}" for middle in (".vae", "") for suffix in VAE_SUFFIXES}
    return next((name for name in files if name.casefold() in wanted), None)


def resolve_vae(choice: str, model_source: str, model_default: str, files: Mapping[str, Path]) -> str:
    """The VAE a job of this model runs with, by name; "" is the model's baked-in VAE.

    ``choice`` is what the member chose ("Automatic", "None" or a VAE's name; "" is
    "Automatic"); ``model_default`` the model's configured VAE for "Automatic" ("": the one
    named after the checkpoint, else the baked one; "None": always the baked one). Raises
    UnknownVaeError for a name no file has.
    """
    choice = choice.strip()
    if choice.casefold() == NONE.casefold():
        return ""
    if choice and choice.casefold() != AUTOMATIC.casefold():
        return _known(choice, files)
    if model_default.strip().casefold() == NONE.casefold():
        return ""
    if model_default.strip():
        return _known(model_default, files)
    return vae_near_checkpoint(model_source, files) or ""


def vae_choices(files: Mapping[str, Path]) -> list[str]:
    """What a member may choose, in the order offered: Automatic, None, then every VAE."""
    return [AUTOMATIC, NONE, *files]


def unknown_vae_message(name: str, files: Mapping[str, Path]) -> str:
    """The refusal of a VAE name: the bot and the worker say the same."""
    names = list(files)
    if not names:
        return f"Unknown VAE `{_excerpt(name)}`: this server has no VAE files; choose {AUTOMATIC} or {NONE}."
    listed = ", ".join(_excerpt(known, LISTED_NAME_LIMIT) for known in names[:MAX_LISTED_NAMES])
    more = f" and {len(names) - MAX_LISTED_NAMES} more" if len(names) > MAX_LISTED_NAMES else ""
    return f"Unknown VAE `{_excerpt(name)}`. Choose {AUTOMATIC}, {NONE} or one of: {listed}{more}."


def _known(name: str, files: Mapping[str, Path]) -> str:
    found = find_vae(name, files)
    if found is None:
        raise UnknownVaeError(unknown_vae_message(name, files))
    return found
