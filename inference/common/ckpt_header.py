"""The tensor names and shapes of a ``.ckpt`` (torch's zip format), read without torch and
without running its pickle.

A ``.ckpt`` is a zip holding ``data.pkl`` (a pickle of the state dict, its tensors stored
apart under ``data/<key>``). Unpickling it normally may run any code the file names, which is
why torch's ``weights_only`` loader (the one diffusers uses) accepts only a short list of
globals. This reader accepts the same kind of list and turns each tensor into its dtype and
shape, so the family is told from the file without torch and a file that needs anything else
(a PyTorch Lightning callback, a custom class) is refused naming what it asked for. Only the
small ``data.pkl`` is read, never the weights.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from inference.common.checkpoints import CheckpointError, TensorHeader

__all__ = ["read_ckpt_header", "read_ckpt_pickle"]

# torch's typed storages, by the names the pickle gives them, as safetensors' dtype names.
_STORAGE_DTYPES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}


def _rebuild_tensor(storage: Any, offset: int, size: tuple[int, ...], *args: Any) -> TensorHeader:
    return TensorHeader(str(storage), tuple(int(n) for n in size))


def _rebuild_parameter(data: Any, *args: Any) -> Any:
    return data


def _value(*args: Any, **_kwargs: Any) -> Any:
    """Stand-in for the harmless values torch's weights-only loader also rebuilds (a size, a
    device, a set, bytes): only tensors matter here, so these are kept as their arguments."""
    return args[0] if len(args) == 1 else args


# What torch's weights-only unpickler allows in a state dict, with stand-ins that record shapes.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    **{(module, name): _value for module, name in (
        ("torch", "Size"), ("torch", "device"), ("torch.serialization", "_get_layout"), ("_codecs", "encode"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    )},
    **{("torch", name): dtype for name, dtype in _STORAGE_DTYPES.items()},
}


class _HeaderUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, name: str, stored: set[str]):
        super().__init__(file)
        self.name = name
        self.stored = stored

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.name} needs an unsafe pickle to load (it names {module}.{name}), so it is not "
                "loaded: save it as .safetensors (A1111's checkpoint merger, or any converter)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", storage type, key, location, element count): the tensor bytes live in data/<key>.
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"{self.name} is corrupt: an unknown storage reference in its pickle")
        if str(pid[2]) not in self.stored:
            raise CheckpointError(f"{self.name} is truncated or corrupt: tensor data {pid[2]} is missing")
        return pid[1]


def read_ckpt_header(path: Path) -> dict[str, TensorHeader]:
    """Every tensor's dtype and shape in a ``.ckpt``; CheckpointError saying why it cannot be read
    (truncated, the old pre-zip format, or a pickle that needs more than weights)."""
    loaded = read_ckpt_pickle(path)
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # training checkpoints nest it, as diffusers also unwraps
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path.name} holds no state dict")
    return {str(key): value for key, value in loaded.items() if isinstance(value, TensorHeader)}


def read_ckpt_pickle(path: Path) -> Any:
    """What a torch-saved file (``.ckpt``, ``.pt``, ``.bin``) holds, each tensor as its
    TensorHeader, nested as saved (an A1111 embedding's {"string_to_param": {"*": tensor}});
    CheckpointError as read_ckpt_header."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
            if not pickles:
                raise CheckpointError(f"{path.name} is a zip but not a torch checkpoint (no data.pkl)")
            folder = pickles[0].split("/")[0]
            stored = {n.removeprefix(f"{folder}/data/") for n in names if n.startswith(f"{folder}/data/")}
            with archive.open(pickles[0]) as file:
                loaded = _HeaderUnpickler(file, path.name, stored).load()
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path.name} is truncated, corrupt, or a .ckpt in torch's old format (before 1.6): "
            "download it again, or save it as .safetensors"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path.name} is corrupt: its pickle cannot be read ({exc})") from exc
    return loaded
