"""Finding the checkpoints of an AUTOMATIC1111 models folder, as A1111 lists them, without torch.

A1111 walks ``models/Stable-diffusion`` recursively and shows each checkpoint by its path
under that folder; the bot uses the same path without its suffix, with "/" on every system
("sdxl/ponyV6"), as the name members pick. Every file is inspected from its header alone
(inference.common.checkpoints): a 7 GB file costs a few hundred kilobytes of reading, and
a rescan re-inspects only the files whose size or modification time changed.

A file the bot cannot serve is never an error that stops anything: it is skipped with the
reason (truncated, not a checkpoint, a family not supported, a ``.ckpt`` needing an unsafe
pickle, a name already taken), and ``sdbot models`` lists those reasons for the admin.

``.ckpt`` files are pickles: only those whose pickle holds nothing but weights are served,
as torch's weights-only loader decides, told without torch by inference.common.ckpt_header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from inference.common.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    inspect_checkpoint,
)
from inference.common.network_files import walk_files

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "INPAINTING_SUFFIXES",
    "CheckpointInspector",
    "CheckpointScan",
    "FoundCheckpoint",
    "SkippedFile",
    "scan_checkpoints",
]

# Earlier wins when one folder holds the same name twice: safetensors cannot carry code.
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# A1111's naming of an inpainting variant: "<base>-inpainting" (sd-v1-5-inpainting); the
# underscore and dot spellings are common on Civitai.
INPAINTING_SUFFIXES = ("-inpainting", "_inpainting", ".inpainting")


@dataclass(frozen=True, slots=True)
class FoundCheckpoint:
    """A checkpoint file the bot can serve, under A1111's name for it."""

    name: str  # the path under its folder without suffix, "/"-separated: what A1111 shows
    path: Path
    family: str  # inference.common.checkpoints.Family values
    inpainting: bool
    prediction_type: str  # "" when the file does not say
    size: int
    mtime_ns: int
    # A1111 reads "<file without suffix>.yaml" beside a checkpoint as its config.
    original_config: str = ""
    # For a base model: the inpainting checkpoint paired with it by name ("" none).
    inpaint_path: str = ""

    @property
    def stem(self) -> str:
        """A1111's ``name_for_extra``: the file name without suffix, written as "Model"."""
        return self.path.stem


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: Path
    reason: str  # one sentence for the admin: what is wrong and what to do


@dataclass(frozen=True, slots=True)
class CheckpointScan:
    """One walk of the checkpoint folders: what can be served, and what was skipped and why.

    ``models`` holds the checkpoints members pick (inpainting ones paired with their base are
    not among them: they serve their base's inpaint and outpaint jobs); ``inpainting`` holds
    every inpainting checkpoint by name, paired or not, so that a [[models]] entry can name
    one as its ``inpaint_source``.
    """

    models: tuple[FoundCheckpoint, ...] = ()
    inpainting: tuple[FoundCheckpoint, ...] = ()
    skipped: tuple[SkippedFile, ...] = ()

    def find(self, source: str) -> FoundCheckpoint | None:
        """The checkpoint a config entry's source names: its A1111 name (with or without the
        suffix) or its file's path."""
        wanted = source.strip().replace("\\", "/")
        for found in (*self.models, *self.inpainting):
            if wanted in (found.name, f"{found.name}{found.path.suffix}", str(found.path)):
                return found
        return None


class CheckpointInspector:
    """Inspects checkpoint files, remembering each result by (size, mtime_ns): a rescan of a
    folder of 500 files then reads only the headers of the files that changed."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int, CheckpointInfo | str]] = {}

    def inspect(self, path: Path, size: int, mtime_ns: int) -> CheckpointInfo | str:
        """The file's CheckpointInfo, or the reason it cannot be served."""
        known = self._seen.get(path)
        if known is not None and known[:2] == (size, mtime_ns):
            return known[2]
        try:
            result: CheckpointInfo | str = (
                inspect_checkpoint(path)
            )
        except CheckpointError as exc:
            result = str(exc)
        self._seen[path] = (size, mtime_ns, result)
        return result


def scan_checkpoints(dirs: Iterable[str | Path], inspector: CheckpointInspector | None = None) -> CheckpointScan:
    """Every checkpoint under ``dirs`` (walked recursively, links followed, hidden files
    skipped), named as A1111 names them; a missing folder holds none.

    When two files get the same name (the same path in two folders, or x.safetensors beside
    x.ckpt), the first folder listed wins, then .safetensors; the others are skipped.
    """
    inspector = inspector or CheckpointInspector()
    servable: dict[str, FoundCheckpoint] = {}
    skipped: list[SkippedFile] = []
    for folder in dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        files = sorted(
            (path for path in walk_files(folder) if path.suffix.lower() in CHECKPOINT_SUFFIXES),
            key=lambda path: (path.with_suffix("").as_posix(), CHECKPOINT_SUFFIXES.index(path.suffix.lower())),
        )
        for path in files:
            name = path.relative_to(folder).with_suffix("").as_posix()
            if name in servable:
                skipped.append(SkippedFile(path, f"the name {name!r} is taken by {servable[name].path}: rename one of them"))
                continue
            found = _found(path, name, inspector)
            if isinstance(found, str):
                skipped.append(SkippedFile(path, found))
            else:
                servable[name] = found
    return _paired(servable, skipped)


def _found(path: Path, name: str, inspector: CheckpointInspector) -> FoundCheckpoint | str:
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    info = inspector.inspect(path, stat.st_size, stat.st_mtime_ns)
    if isinstance(info, str):
        return info
    config = path.with_suffix(".yaml")
    return FoundCheckpoint(
        name, path, str(info.family), info.inpainting, info.prediction_type, stat.st_size, stat.st_mtime_ns,
        original_config=str(config) if config.is_file() else "",
    )


def _paired(servable: Mapping[str, FoundCheckpoint], skipped: list[SkippedFile]) -> CheckpointScan:
    """Inpainting checkpoints joined to the base their name points at (A1111's convention)."""
    models = {name: found for name, found in servable.items() if not found.inpainting}
    inpainting = [found for found in servable.values() if found.inpainting]
    for found in inpainting:
        base = next((found.name[: -len(s)] for s in INPAINTING_SUFFIXES if found.name.lower().endswith(s)), None)
        if base is None or base not in models:
            continue  # usable through a [[models]] entry's inpaint_source; reported by the catalog otherwise
        partner = models[base]
        if partner.family != found.family:
            skipped.append(SkippedFile(found.path, f"an inpainting {found.family} checkpoint, but its base {base!r} is {partner.family}"))
            continue
        models[base] = replace(partner, inpaint_path=str(found.path))
    return CheckpointScan(tuple(sorted(models.values(), key=lambda f: f.name.casefold())), tuple(inpainting), tuple(skipped))

