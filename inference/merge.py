"""A1111's checkpoint merger in the worker: two or three single files become a new one.

The arithmetic is A1111's (modules/extras.py run_modelmerger): Weighted sum ``A * (1 - M) +
B * M``, Add difference ``A + (B - C) * M``, No interpolation ``A``, on the keys and with the
inpainting / instruct-pix2pix channel rule inference.common.merge_plan describes, then a VAE
baked in and every float tensor saved as fp16 with A1111's ``sd_merge_recipe`` and
``sd_merge_models`` metadata.

Unlike A1111, nothing is held whole: the plan (from the headers) gives the new file's header
up front, so it is written first and each tensor is read (safetensors' ``safe_open``, one key
of each file at a time), combined and appended in turn. Three SDXL checkpoints merge in the
memory of a few tensors. The file is written under a hidden temporary name beside its final
one and hard-linked into place only when whole, so a crash, a cancel or a full disk leaves no
half file that the model scan would list, and an existing file is never replaced.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from inference.common.checkpoints import read_safetensors_header
from inference.common.file_hashes import file_hash
from inference.common.merge_options import MergeMethod, MergeOptions, MergeSource
from inference.common.merge_plan import (
    DISK_MARGIN_BYTES,
    MergeError,
    MergePlan,
    check_free_space,
    check_new_file,
    plan_merge,
)
from inference.generate import InvalidRequestError, IsCancelled, JobCancelledError
from inference.networks import read_state_dict

__all__ = ["merge_checkpoints", "merge_metadata", "merged_value"]

log = logging.getLogger(__name__)

# (tensors written, tensors in all): the job's progress, as steps.
OnTensor = Callable[[int, int], None]
_VAE_PREFIX = "first_stage_model."


def merged_value(method: MergeMethod, a: torch.Tensor, b: torch.Tensor, multiplier: float) -> torch.Tensor:
    """A1111's theta_func2 on float tensors: ``b`` is B, or B - C for Add difference."""
    if method == MergeMethod.ADD_DIFFERENCE:
        return a + multiplier * b
    return (1 - multiplier) * a + multiplier * b


def merge_checkpoints(
    options: MergeOptions,
    on_tensor: OnTensor,
    is_cancelled: IsCancelled,
    keep_free: int = DISK_MARGIN_BYTES,
) -> MergePlan:
    """Write the merge ``options`` describes to ``options.output``; returns its plan.

    MergeError (an InvalidRequestError for the job) for a merge that cannot be done, checked
    before anything is written; JobCancelledError between two tensors when cancelled, with
    nothing left on disk.
    """
    try:
        plan = plan_merge(options)
        output = Path(options.output)
        check_new_file(output)
        check_free_space(output.parent, plan.estimated_bytes, keep_free)
        vae = _baked_vae(options, plan)
    except MergeError as error:
        raise InvalidRequestError(_sentence(str(error))) from None
    metadata = merge_metadata(options, plan)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with partial.open("xb") as file, _opened(options) as (primary, secondary, tertiary):
            file.write(plan.header(metadata))
            in_tertiary = frozenset(tertiary.keys()) if tertiary is not None else frozenset()
            total = len(plan.tensors)
            for done, planned in enumerate(plan.tensors, start=1):
                if is_cancelled():
                    raise JobCancelledError()
                if planned.name in vae:
                    value = vae[planned.name]
                elif planned.merged:
                    value = _merge_key(options, planned.name, primary, secondary, tertiary, in_tertiary)
                else:
                    value = primary.get_tensor(planned.name)
                _write(file, value, planned.dtype)
                on_tensor(done, total)
            file.flush()
            os.fsync(file.fileno())
        _publish(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    log.info("merged %s into %s (%d tensors, %.2f GB)", _recipe_line(options), output.name, len(plan.tensors),
             output.stat().st_size / 2**30)
    return plan


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@contextmanager
def _opened(options: MergeOptions) -> Iterator[tuple[Any, Any, Any]]:
    """safe_open handles on A, B and C (None where the method reads none): memory-mapped,
    so reading one key reads only its bytes."""
    with ExitStack() as stack:
        handles = [
            stack.enter_context(safe_open(source.path, framework="pt", device="cpu")) if source else None
            for source in _sources(options)
        ]
        yield handles[0], handles[1], handles[2]


def _sources(options: MergeOptions) -> tuple[MergeSource, MergeSource | None, MergeSource | None]:
    method = MergeMethod(options.method)
    secondary = options.secondary if method != MergeMethod.NO_INTERPOLATION else None
    tertiary = options.tertiary if method == MergeMethod.ADD_DIFFERENCE else None
    return options.primary, secondary, tertiary


def _merge_key(
    options: MergeOptions, key: str, primary: Any, secondary: Any, tertiary: Any, in_tertiary: frozenset[str]
) -> torch.Tensor:
    """One merged tensor, in float32 (A1111 computes in the files' dtype; float32 then fp16
    rounds once instead of at each operation)."""
    method = MergeMethod(options.method)
    a = primary.get_tensor(key).float()
    b = secondary.get_tensor(key).float()
    if method == MergeMethod.ADD_DIFFERENCE:
        # A1111 zeroes B - C where C lacks the key: A stays as it is there.
        b = b - tertiary.get_tensor(key).float() if key in in_tertiary else torch.zeros_like(b)
    if a.shape != b.shape:  # an inpainting / instruct A with a normal B: its first 4 channels
        a[:, 0:4] = merged_value(method, a[:, 0:4], b, options.multiplier)
        return a
    return merged_value(method, a, b, options.multiplier)


def _write(file: Any, value: torch.Tensor, dtype: str) -> None:
    if dtype == "F16":
        value = value.to(torch.float16)
    file.write(value.reshape(-1).contiguous().view(torch.uint8).numpy().data)


def _publish(partial: Path, output: Path) -> None:
    """Give the whole file its name, failing if one took the name meanwhile: a hard link
    never replaces a file (os.replace would). A file system without links (FAT, some network
    shares) gets a rename after one more look."""
    try:
        os.link(partial, output)
    except FileExistsError:
        raise InvalidRequestError(f"A model file named `{output.name}` appeared meanwhile: pick another name") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if output.exists():
            raise InvalidRequestError(f"A model file named `{output.name}` appeared meanwhile: pick another name") from None
        os.rename(partial, output)


def _baked_vae(options: MergeOptions, plan: MergePlan) -> dict[str, torch.Tensor]:
    """The VAE's weights under A's key names (A1111: ``first_stage_model.`` + the VAE's key,
    where A has that key), as fp16; empty without one."""
    if not options.vae_path:
        return {}
    name = options.vae_name or Path(options.vae_path).stem
    try:
        state = read_state_dict(Path(options.vae_path), f"VAE `{name}`")
    except InvalidRequestError as error:
        raise MergeError(str(error)) from None
    planned = {tensor.name: tensor for tensor in plan.tensors}
    baked = {}
    for key, value in state.items():
        target = _VAE_PREFIX + key.removeprefix(_VAE_PREFIX)
        if target in planned and isinstance(value, torch.Tensor):
            if tuple(value.shape) != planned[target].shape:
                raise MergeError(f"VAE `{name}` does not fit `{options.primary.name}` at {key}")
            baked[target] = value
    if not baked:
        raise MergeError(f"VAE `{name}` has no weight of `{options.primary.name}`'s VAE: it is not a VAE for it")
    return baked


def merge_metadata(options: MergeOptions, plan: MergePlan) -> dict[str, str]:
    """The new file's safetensors metadata as A1111 writes it: ``format``, ``sd_merge_recipe``
    (the recipe, with each input's sha256) and ``sd_merge_models`` (each input's name and
    legacy hash, and the recipes its inputs were merged by, when they were)."""
    primary, secondary, tertiary = _sources(options)
    models: dict[str, Any] = {}
    hashes = []
    for source in (primary, secondary, tertiary):
        if source is None:
            hashes.append(None)
            continue
        sha256 = source.sha256 or file_hash(source.path)
        hashes.append(sha256)
        metadata = _parsed_metadata(Path(source.path))
        models[sha256] = {
            "name": source.name + Path(source.path).suffix,
            "legacy_hash": legacy_hash(Path(source.path)),
            "sd_merge_recipe": metadata.get("sd_merge_recipe"),
        }
        inherited = metadata.get("sd_merge_models")
        if isinstance(inherited, dict):
            models.update(inherited)
    recipe = {
        "type": "webui",  # A1111's mark for its built-in merger
        "primary_model_hash": hashes[0],
        "secondary_model_hash": hashes[1],
        "tertiary_model_hash": hashes[2],
        "interp_method": MergeMethod(options.method).value,
        "multiplier": options.multiplier,
        "save_as_half": True,
        "custom_name": Path(options.output).stem,
        "config_source": 0,
        "bake_in_vae": options.vae_name or ("None" if not options.vae_path else Path(options.vae_path).name),
        "discard_weights": "",
        "is_inpainting": plan.is_inpainting,
        "is_instruct_pix2pix": plan.is_instruct_pix2pix,
    }
    return {"format": "pt", "sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models)}


def _parsed_metadata(path: Path) -> dict[str, Any]:
    """A file's metadata as A1111 reads it (read_metadata_from_safetensors): JSON objects
    stored as strings are parsed."""
    _tensors, metadata = read_safetensors_header(path)
    parsed: dict[str, Any] = {}
    for key, value in metadata.items():
        parsed[key] = value
        if value.startswith("{"):
            try:
                parsed[key] = json.loads(value)
            except ValueError:
                pass
    return parsed


def legacy_hash(path: Path) -> str:
    """A1111's old 8-digit model hash (sd_models.model_hash): 64 KiB from 1 MiB in."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        file.seek(0x100000)
        digest.update(file.read(0x10000))
    return digest.hexdigest()[0:8]


def _recipe_line(options: MergeOptions) -> str:
    primary, secondary, tertiary = _sources(options)
    names = " + ".join(source.name for source in (primary, secondary, tertiary) if source)
    return f"{names} ({MergeMethod(options.method).value}, M={options.multiplier:g})"
