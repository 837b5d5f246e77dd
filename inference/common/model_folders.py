"""Finding the checkpoints of an AUTOMATIC1111 models folder, as A1111 lists them, without torch.

A1111 walks ``models/Stable-diffusion`` recursively and shows each checkpoint by its path
under that folder; the bot uses the same path without its suffix, with "/" on every system
("sdxl/ponyV6"), as the name members pick. Every file is inspected from its header alone
(inference.common.checkpoints): a 7 GB file costs a few hundred kilobytes of reading, and
a rescan re-inspects only the files whose size or modification time changed.

A file the bot cannot serve is never an error that stops anything: it is skipped with the
reason (truncated, not a checkpoint, a family not supported, a ``.ckpt`` needing an unsafe
pickle, a name already taken), and ``sdbot models`` lists those reasons for the admin.

``.ckpt`` files are pickles. The worker loads them with ``torch.load(weights_only=True)``,
which refuses any global outside a small allow-list; the same rule is applied here with a
restricted ``pickle.Unpickler`` over the archive's ``data.pkl``, which also records every
tensor's name and shape (through ``persistent_load``, never reading the weights), so the
family of a ``.ckpt`` is told as a ``.safetensors`` one's is.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from inference.common.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    TensorHeader,
    family_of,
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
    "inspect_ckpt",
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
                inspect_ckpt(path) if path.suffix.lower() == ".ckpt" else inspect_checkpoint(path)
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


# --- .ckpt: what torch.load(weights_only=True) accepts, decided without torch ----------------

# The globals torch's weights-only unpickler allows that a state dict uses: containers, the
# tensor and parameter rebuilders, and the storage types (their names give the dtype).
_STORAGE_DTYPES = {
    "HalfStorage": "F16", "FloatStorage": "F32", "DoubleStorage": "F64", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
_ALLOWED_CALLS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch.nn.parameter", "Parameter"),
    ("torch", "device"), ("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "bytearray"), ("builtins", "complex"), ("torch.serialization", "_get_layout"),
}


@dataclass(frozen=True, slots=True)
class _Storage:
    """A storage type (torch.HalfStorage) and the storages of that type: only the dtype counts."""

    dtype: str


class _UnsafePickle(Exception):
    pass


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's data.pkl into TensorHeaders; any global the weights-only
    loader would refuse raises _UnsafePickle naming it."""

    def find_class(self, module: str, name: str) -> object:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(name, str) and name.endswith("Storage"):
            return _Storage(name.removesuffix("Storage").upper())
        if (module, name) not in _ALLOWED_CALLS:
            raise _UnsafePickle(f"{module}.{name}")
        return _STAND_INS.get((module, name), _anything)

    def persistent_load(self, pid: object) -> object:
        if isinstance(pid, tuple) and len(pid) > 1 and pid[0] == "storage" and isinstance(pid[1], _Storage):
            return pid[1]
        raise _UnsafePickle(f"persistent id {pid!r:.60}")


def _rebuild_tensor(storage: object, _offset: object, size: object, *_rest: object) -> TensorHeader:
    dtype = storage.dtype if isinstance(storage, _Storage) else "?"
    return TensorHeader(dtype, tuple(int(n) for n in size) if isinstance(size, tuple | list) else ())


def _rebuild_parameter(data: object, *_rest: object) -> object:
    return data


def _anything(*args: object, **_kwargs: object) -> object:
    """Stand-in for an allowed container or value: a dict when it is one, else its arguments."""
    if len(args) == 1 and isinstance(args[0], Mapping | list):
        return dict(args[0]) if isinstance(args[0], Mapping) else args[0]
    return dict() if not args else args


_STAND_INS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): lambda sizes=(): tuple(sizes),
    ("collections", "OrderedDict"): lambda *items: dict(*items),
}


def inspect_ckpt(path: Path) -> CheckpointInfo:
    """The family of a ``.ckpt`` that torch's weights-only loader accepts; CheckpointError
    saying why the bot will not load it otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pickled is None:
                raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (its archive has no data.pkl)")
            with archive.open(pickled) as stream:
                loaded = _ShapeUnpickler(stream).load()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            f"{path.name} is truncated or corrupt, or in PyTorch's legacy (pre-1.6) format: "
            "download it again, or convert it to .safetensors"
        ) from exc
    except _UnsafePickle as exc:
        raise CheckpointError(
            f"{path.name} needs an unsafe pickle to load ({exc}, which could run code): "
            "convert it to .safetensors, or use a .safetensors download of this model"
        ) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: its pickle cannot be read ({type(exc).__name__})") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name} holds no state dict")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, TensorHeader)}
    return family_of(tensors, path.name)
