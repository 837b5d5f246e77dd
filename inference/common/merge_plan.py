"""What a checkpoint merge will do, worked out from the files' headers alone, without torch.

A1111's checkpoint merger (modules/extras.py run_modelmerger) combines the tensors of two or
three single-file checkpoints key by key. Everything that can make it fail is known from the
safetensors headers (the families, every tensor's shape), so the bot checks a merge here
before queuing it (the admin hears at once what is wrong) and the worker checks it again
before writing a byte (inference.merge). The plan also gives the output's exact size, for the
disk-space check, and the tensors' order in the new file.

A1111's rules, kept as they are:
- only keys with "model" in their name are merged: the UNet (``model.diffusion_model.*``), the
  VAE (``first_stage_model.*``) and the text encoders (``cond_stage_model.*``, SDXL's
  ``conditioner.embedders.N.transformer.text_model.*`` and ``...model.*``); any other key
  (a trainer's marker such as ``v_pred``) is A's as it is;
- the text encoder's ``position_ids`` are never merged (checkpoint_dict_skip_on_merge);
- a key of A missing from B stays A's; with Add difference, a key of B missing from C adds
  nothing (A1111 zeroes B - C there);
- an inpainting (9-channel) or instruct-pix2pix (8-channel) A merges with a normal (4-channel)
  B on its first four input channels, and the result is an inpainting / instruct model; the
  other way round is refused, as A1111 refuses it;
- floating tensors are saved as fp16 (A1111's "Save as float16").
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from inference.common.checkpoints import CheckpointError, TensorHeader, family_of, read_safetensors_header
from inference.common.merge_options import MergeMethod, MergeOptions

__all__ = [
    "DISK_MARGIN_BYTES",
    "MergeError",
    "MergePlan",
    "a1111_default_name",
    "check_free_space",
    "check_new_file",
    "check_output_name",
    "plan_merge",
]

# Keys A1111 never merges (modules/sd_models.py checkpoint_dict_skip_on_merge).
SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
# Free space left on the disk after the merged file is written: a full disk breaks the
# database and the images being saved, not only the merge.
DISK_MARGIN_BYTES = 512 * 2**20
# A merged model's name: what A1111 shows and members pick (letters, digits, - _ . and spaces).
_NAME = re.compile(r"^[\w][\w .+-]{0,99}$")
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_VAE_PREFIX = "first_stage_model."


class MergeError(ValueError):
    """The merge cannot be done; the message says why, for the admin who asked."""


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    dtype: str  # safetensors' name of the dtype it is written in
    shape: tuple[int, ...]
    merged: bool  # computed from A and B (and C); else copied from A (or the baked VAE)

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * _DTYPE_BYTES[self.dtype]


@dataclass(frozen=True, slots=True)
class MergePlan:
    tensors: tuple[OutputTensor, ...]  # in the order they are written
    family: str
    # A1111's recipe flags: an inpainting / instruct-pix2pix A merged with a normal B.
    is_inpainting: bool
    is_instruct_pix2pix: bool
    vae_keys: frozenset[str]  # output keys taken from the baked-in VAE file

    @property
    def data_bytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def header(self, metadata: dict[str, str]) -> bytes:
        """The new file's safetensors header (its 8-byte length included), padded to 8 bytes
        as safetensors writes it: the tensors follow in the plan's order."""
        table: dict[str, object] = {"__metadata__": metadata}
        offset = 0
        for tensor in self.tensors:
            end = offset + tensor.nbytes
            table[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, end]}
            offset = end
        text = json.dumps(table, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text

    @property
    def estimated_bytes(self) -> int:
        """The output's size, within the metadata's few kilobytes."""
        return self.data_bytes + len(self.header({})) + 64 * 1024


def is_merged_key(key: str) -> bool:
    """A1111's test: only keys naming a model are merged, and never the skipped ones."""
    return "model" in key and key not in SKIP_ON_MERGE


def _headers(path: str, name: str) -> dict[str, TensorHeader]:
    if Path(path).suffix.lower() != ".safetensors":
        raise MergeError(f"`{name}` is not a .safetensors file: the merger reads only those (convert it first)")
    try:
        tensors, _metadata = read_safetensors_header(Path(path))
        family_of(tensors, f"`{name}`")
    except CheckpointError as error:
        raise MergeError(f"cannot merge: {error}") from None
    return tensors


def _channels(shape: tuple[int, ...]) -> int:
    return shape[1] if len(shape) > 1 else 0


def _same_but_channels(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) > 1 and a[0:1] + a[2:] == b[0:1] + b[2:]


def plan_merge(options: MergeOptions) -> MergePlan:
    """What the merge writes; MergeError saying what is wrong with it (families, shapes,
    the multiplier, a missing model). Does not look at the output path (check_output_name)."""
    method = MergeMethod(options.method)
    if not 0.0 <= options.multiplier <= 1.0:
        raise MergeError(f"the multiplier must be between 0 and 1, got {options.multiplier:g}")
    if method != MergeMethod.NO_INTERPOLATION and options.secondary is None:
        raise MergeError(f"{method} needs a model B")
    if method == MergeMethod.ADD_DIFFERENCE and options.tertiary is None:
        raise MergeError("Add difference needs a model C (B - C is added to A)")
    primary = _headers(options.primary.path, options.primary.name)
    family = family_of(primary, options.primary.name).family
    secondary = tertiary = None
    if method != MergeMethod.NO_INTERPOLATION:
        assert options.secondary is not None
        secondary = _headers(options.secondary.path, options.secondary.name)
        _check_family(family, secondary, options.secondary.name, options.primary.name)
    if method == MergeMethod.ADD_DIFFERENCE:
        assert options.tertiary is not None
        tertiary = _headers(options.tertiary.path, options.tertiary.name)
        _check_family(family, tertiary, options.tertiary.name, options.primary.name)
    vae = _vae_headers(options, primary) if options.vae_path else {}
    inpainting = instruct = False
    planned = []
    for key in sorted(primary):
        a = primary[key]
        merged = secondary is not None and is_merged_key(key) and key in secondary
        if merged:
            assert secondary is not None
            b = secondary[key].shape
            if tertiary is not None and key in tertiary and tertiary[key].shape != b:
                raise MergeError(
                    f"B and C differ in shape at {key} ({_shape(b)} and {_shape(tertiary[key].shape)}): "
                    "they are not the same architecture"
                )
            if a.shape != b:
                channels = _channel_merge(key, a.shape, b, options)
                inpainting |= channels == 9
                instruct |= channels == 8
        dtype = "F16" if a.dtype in _FLOAT_DTYPES else a.dtype
        planned.append(OutputTensor(key, dtype, a.shape, merged))
    return MergePlan(tuple(planned), str(family), inpainting, instruct, frozenset(vae))


def _check_family(family: str, tensors: dict[str, TensorHeader], name: str, primary_name: str) -> None:
    other = family_of(tensors, f"`{name}`").family
    if other != family:
        raise MergeError(
            f"`{primary_name}` is {_family_name(family)} and `{name}` is {_family_name(other)}: "
            "checkpoints of different families cannot be merged"
        )


def _family_name(family: str) -> str:
    return {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl-refiner": "an SDXL refiner"}.get(family, family)


def _channel_merge(key: str, a: tuple[int, ...], b: tuple[int, ...], options: MergeOptions) -> int:
    """A1111's inpainting / instruct-pix2pix rule for an input convolution whose channels
    differ: A's channel count (9 or 8) when A may be merged with B there; else MergeError."""
    primary, secondary = options.primary.name, options.secondary.name if options.secondary else "B"
    if not _same_but_channels(a, b):
        raise MergeError(
            f"`{primary}` and `{secondary}` differ in shape at {key} ({_shape(a)} and {_shape(b)}): "
            "they are not the same architecture"
        )
    if _channels(a) == 4 and _channels(b) == 9:
        raise MergeError("When merging an inpainting model with a normal one, A must be the inpainting model.")
    if _channels(a) == 4 and _channels(b) == 8:
        raise MergeError("When merging an instruct-pix2pix model with a normal one, A must be the instruct-pix2pix model.")
    if _channels(a) in (8, 9) and _channels(b) == 4:
        return _channels(a)
    raise MergeError(f"Bad dimensions for merged layer {key}: A={_shape(a)}, B={_shape(b)}")


def _vae_headers(options: MergeOptions, primary: dict[str, TensorHeader]) -> dict[str, TensorHeader]:
    """The output keys a baked-in VAE replaces (A1111: each VAE key under first_stage_model.
    that A has); MergeError when it fits A nowhere or its shapes differ from A's VAE."""
    name = options.vae_name or Path(options.vae_path).stem
    if Path(options.vae_path).suffix.lower() != ".safetensors":
        return {}  # a pickled VAE (.pt, .ckpt) is read, and checked, by the worker only
    try:
        tensors, _metadata = read_safetensors_header(Path(options.vae_path))
    except CheckpointError as error:
        raise MergeError(f"VAE `{name}`: {error}") from None
    replaced = {}
    for key, header in tensors.items():
        target = _VAE_PREFIX + key.removeprefix(_VAE_PREFIX)
        if target not in primary:
            continue
        if primary[target].shape != header.shape:
            raise MergeError(
                f"VAE `{name}` does not fit `{options.primary.name}`: {key} is {_shape(header.shape)}, "
                f"the model's is {_shape(primary[target].shape)}"
            )
        replaced[target] = header
    if not replaced:
        raise MergeError(f"VAE `{name}` has no weight of `{options.primary.name}`'s VAE: it is not a VAE for it")
    return replaced


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape) or "scalar"


def check_output_name(name: str) -> str:
    """The merged model's name, checked: it becomes ``<name>.safetensors`` in the checkpoints
    folder, so no path and nothing a file system refuses."""
    name = name.strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not _NAME.match(name) or ".." in name:
        raise MergeError(
            f"`{name}` cannot be a model's name: use up to 100 letters, digits, spaces and - _ . +, "
            "starting with a letter or digit"
        )
    return name


def a1111_default_name(options: MergeOptions, plan: MergePlan) -> str:
    """A1111's name for a merge given none: ``A_0.7-B_0.3-Weighted_sum-merged``."""
    primary, multiplier = options.primary.name, options.multiplier
    secondary = options.secondary.name if options.secondary else ""
    method = options.method.value.replace(" ", "_")
    name = f"{primary}_{round(1 - multiplier, 2)}-{secondary}_{round(multiplier, 2)}-{method}-merged"
    name = name.replace("/", "_")
    return name + (".inpainting" if plan.is_inpainting else "")


def check_new_file(path: Path) -> None:
    """A merge never replaces a file: MergeError when ``path`` exists."""
    if path.exists():
        raise MergeError(f"a model file named `{path.name}` exists already: pick another name")


def check_free_space(folder: Path, needed: int, keep_free: int = DISK_MARGIN_BYTES) -> None:
    """MergeError when writing ``needed`` bytes into ``folder`` would leave less than
    ``keep_free`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free - needed < keep_free:
        raise MergeError(
            f"not enough disk space for the merged model: it needs {needed / 2**30:.2f} GB and "
            f"{free / 2**30:.2f} GB are free (the bot keeps {keep_free / 2**30:.2f} GB free)"
        )
