"""A job's VAE in the worker: the model's own, or a VAE file loaded in its place, as A1111 does.

jobs.py runs every diffusion job inside ``VaeFiles.applied(pipe, request)``: when the request
names a VAE file (``request.vae``, resolved by the bot: inference/common/vae_files.py), its
weights are copied into the pipeline's AutoencoderKL, and when a later job wants the baked-in
VAE, the checkpoint's own weights are copied back (A1111's store_base_vae / load_vae). The
module is never replaced, only its weights, so the img2img and inpaint pipelines derived from
it (from_pipe), the channels_last layout and a compiled decoder all keep working.

VAE files are in the original LDM key layout ("encoder.down.0.block.0.conv1.weight", maybe
under "first_stage_model."), which diffusers' convert_ldm_vae_checkpoint maps onto the
pipeline's own VAE config: no config is read from anywhere, nothing from the hub, and the
scaling factor stays the model's (SD and SDXL differ there, and a VAE file does not say it).
A converted file is kept in CPU memory (the last MAX_CACHED_VAES), so switching back costs a
copy. A file that cannot be read, or made for another family (shapes that do not fit), fails
the job with a message that names it; the pipeline keeps the VAE it had.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from inference.common.file_hashes import MODEL_HASH_LENGTH, file_hash
from inference.common.protocol import GenerateRequest
from inference.common.vae_files import find_vae, unknown_vae_message, vae_files
from inference.generate import InvalidRequestError
from inference.networks import read_state_dict

log = logging.getLogger(__name__)

# Converted VAE files kept in CPU memory: an SD VAE is 320 MB in float32.
MAX_CACHED_VAES = 2
# Keys of an LDM VAE file that are not the autoencoder's weights (A1111's vae_ignore_keys and
# its "loss" filter: training leftovers).
_IGNORED_PREFIXES = ("loss", "model_ema.")

_Stamp = tuple[str, int, int]  # (path, mtime in ns, size): a file replaced is read again

# Per AutoencoderKL, whoever loads into it: its checkpoint's own weights (CPU copies, kept once
# a file is loaded into it) and the file it holds now (None: its own). Kept with the module,
# not with a VaeFiles, so that what a module holds is known whatever loaded it.
_baked: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
_holds: weakref.WeakKeyDictionary[torch.nn.Module, _Stamp] = weakref.WeakKeyDictionary()


class VaeFiles:
    """The worker's VAE files (in ``vae_dirs``, and "<checkpoint>.vae.*" beside the
    ``checkpoint_sources``), loaded into pipelines as jobs ask for them."""

    def __init__(self, vae_dirs: Sequence[str] = (), checkpoint_sources: Sequence[str] = ()):
        self.vae_dirs = tuple(vae_dirs)
        self.checkpoint_sources = tuple(checkpoint_sources)
        self._converted: OrderedDict[_Stamp, dict[str, torch.Tensor]] = OrderedDict()

    def path(self, name: str) -> Path:
        """The file of a VAE name; InvalidRequestError (listing the VAEs) for an unknown one.
        The folders are read for each lookup, so a file dropped in is usable at once."""
        files = vae_files(self.vae_dirs, self.checkpoint_sources)
        found = find_vae(name, files)
        if found is None:
            raise InvalidRequestError(unknown_vae_message(name, files))
        return files[found]

    def short_hash(self, name: str) -> str | None:
        """A1111's "VAE hash" of a VAE: the first 10 hex digits of its file's sha256."""
        if not name:
            return None
        return file_hash(self.path(name))[:MODEL_HASH_LENGTH]

    @contextmanager
    def applied(self, pipe: DiffusionPipeline, request: GenerateRequest) -> Iterator[None]:
        """Run the body with the request's VAE in ``pipe`` (its own when ``request.vae`` is "")."""
        vae = getattr(pipe, "vae", None)
        if vae is None:
            yield
            return
        if request.vae:
            self._load_file(vae, self.path(request.vae), request.vae, request.model)
        elif vae in _holds:
            _copy_into(vae, _baked[vae])
            del _holds[vae]
            log.info("VAE of model %r: its own again", request.model)
        yield

    def _load_file(self, vae: torch.nn.Module, path: Path, name: str, model: str) -> None:
        stamp = _stamp(path)
        if _holds.get(vae) == stamp:
            return
        state = self._read(path, stamp, name, dict(vae.config))
        if vae not in _baked:
            _baked[vae] = {key: value.detach().to("cpu", copy=True) for key, value in vae.state_dict().items()}
        own = vae.state_dict()
        missing = sorted(set(own) - set(state))
        misfit = [key for key in own if key in state and state[key].shape != own[key].shape]
        if missing or misfit:
            log.warning("VAE %s does not fit model %r: missing %s, shapes differ for %s",
                        path, model, missing[:5], misfit[:5])
            raise InvalidRequestError(
                f"VAE `{name}` does not fit model `{model}`: it was made for another kind of model "
                "(choose another VAE, or Automatic)",
                detail=f"{len(missing)} weights missing, {len(misfit)} of another shape",
            )
        _copy_into(vae, state)
        _holds[vae] = stamp
        log.info("VAE of model %r: %s", model, name)

    def _read(self, path: Path, stamp: _Stamp, name: str, config: dict) -> dict[str, torch.Tensor]:
        if stamp in self._converted:
            self._converted.move_to_end(stamp)
            return self._converted[stamp]
        state = read_state_dict(path, f"VAE `{name}`")
        state = {key: value for key, value in state.items() if not key.startswith(_IGNORED_PREFIXES)}
        try:
            converted = convert_ldm_vae_checkpoint(state, config)
        except (KeyError, IndexError, RuntimeError, ValueError) as exc:
            raise InvalidRequestError(
                f"VAE `{name}` is not a VAE in the layout A1111 reads", detail=f"{type(exc).__name__}: {exc}"
            ) from None
        if not converted or not all(isinstance(value, torch.Tensor) for value in converted.values()):
            raise InvalidRequestError(f"VAE `{name}` holds no VAE weights (is it a VAE file?)")
        self._converted[stamp] = converted
        while len(self._converted) > MAX_CACHED_VAES:
            self._converted.popitem(last=False)
        return converted


@torch.no_grad()
def _copy_into(vae: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The weights copied into the module's own tensors (their device, dtype and layout)."""
    vae.load_state_dict(state, strict=False)


def _stamp(path: Path) -> _Stamp:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)
