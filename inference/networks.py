"""A1111's extra networks in the worker: textual-inversion embeddings and LoRA, per job.

jobs.py runs every diffusion job (not upscales; a plot's cells one by one) inside
``ExtraNetworks.applied(cache, request)``, which
- refuses malformed <lora:...> tags and unknown LoRA names with a message for the user;
- loads, into the pipeline the job will run, each embedding whose name the prompts use as a
  word, and each LoRA they name (files are found as inference/common/network_files.py finds them);
- turns those LoRAs on at the tags' weights for the job, and off again afterwards, whatever
  happens: a job without LoRA gives exactly the image it gave before any LoRA was loaded;
- yields the request with the tags taken out of its prompts and the embedding names written as
  the tokens they were loaded under. The caller saves the original request's prompts in the
  infotext, so the tags and names stay there, as A1111 writes them.

With torch.compile on, a job with LoRA runs the UNet eagerly where it would recompile: each
new adapter (and the first change of an adapter's weight) would otherwise compile the UNet
again, a minute or more on a GPU with every member's job waiting behind it; jobs without
LoRA keep their compiled graph (inference/acceleration.py).

Embeddings stay loaded (they only add tokens: prompts without them are unchanged). Each one is
registered under a token of its own, ``<name>`` in lower case, and the prompts yielded have the
name replaced by that token wherever it stands as a whole word, in any case. So the name never
clashes with CLIP's vocabulary (diffusers refuses a token the vocabulary has; A1111 allows
"cat.pt"); any case matches, as in A1111, whose tokenizer lower-cases; only whole words match,
A1111's rule, where the tokenizer would find a bare added token inside longer words too; and
``pipe.maybe_convert_prompt``, which looks for the token exactly as registered, expands a
multi-vector embedding into its tokens (diffusers loads them as ``<name>``, ``<name>_1``...).

Nothing here trusts a pickle: .pt/.bin/.ckpt files are read with torch.load(weights_only=True),
which builds tensors and plain containers and refuses anything that could run code, and
diffusers only ever receives tensors.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import re
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import safetensors.torch
import torch
from diffusers import DiffusionPipeline

from inference.conditioning_xl import is_sdxl
from inference.generate import InvalidRequestError
from inference.models import PipelineCache
from inference.common.network_files import (
    LoraUse,
    MalformedNetworkError,
    embedding_files,
    embedding_pattern,
    find_lora,
    find_loras,
    lora_files,
    strip_loras,
    token_text as _token_text,
    unknown_lora_message,
    used_embeddings as _used_embeddings,
)
from inference.common.file_hashes import NETWORK_HASH_LENGTH, file_hash
from inference.common.infotext import network_hashes_entries
from inference.common.protocol import GenerateRequest, JobKind

log = logging.getLogger(__name__)

# LoRAs kept loaded per pipeline (the least recently used beyond this are deleted): a LoRA is
# tens to hundreds of MB of GPU memory, and loading one again takes about a second.
MAX_LORAS_PER_PIPE = 8
# Embeddings are a few KB to 1 MB; a bigger file in the folder is a checkpoint put there by
# mistake, and reading it would cost the worker gigabytes of memory for nothing.
MAX_EMBEDDING_BYTES = 64 * 2**20

# A file's identity: a file replaced under the same name is loaded again.
_Stamp = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class _LoraWeights:
    path: Path
    text_encoder: float
    unet: float


class ExtraNetworks:
    """The worker's embeddings and LoRAs: found in these folders, loaded into pipelines as jobs
    use them, and remembered per pipeline object (a model the PipelineCache loads again is a
    new object and gets them again)."""

    def __init__(
        self,
        embedding_dirs: Sequence[str] = (),
        lora_dirs: Sequence[str] = (),
        max_loras_per_pipe: int = MAX_LORAS_PER_PIPE,
    ):
        if max_loras_per_pipe < 1:
            raise ValueError(f"max_loras_per_pipe must be at least 1, got {max_loras_per_pipe!r}")
        self.embedding_dirs = tuple(embedding_dirs)
        self.lora_dirs = tuple(lora_dirs)
        self.max_loras_per_pipe = max_loras_per_pipe
        # pipe -> embedding name (lower case) -> (file stamp, token it was loaded under)
        self._embeddings: weakref.WeakKeyDictionary[DiffusionPipeline, dict[str, tuple[_Stamp, str]]]
        self._embeddings = weakref.WeakKeyDictionary()
        # pipe -> LoRA file -> (file stamp, adapter name), least recently used first
        self._loras: weakref.WeakKeyDictionary[
            DiffusionPipeline, OrderedDict[str, tuple[_Stamp, str]]
        ] = weakref.WeakKeyDictionary()
        self._adapter_numbers = itertools.count(1)

    @contextmanager
    def applied(self, cache: PipelineCache, request: GenerateRequest) -> Iterator[GenerateRequest]:
        """Run the body with the request's embeddings loaded and its LoRAs on; yields the request
        to run (see the module docstring). Raises InvalidRequestError for what the user must fix.
        """
        prompts = (request.prompt, request.negative_prompt)
        try:
            # A1111 takes extra networks from the negative prompt as well.
            uses = [use for prompt in prompts for use in find_loras(prompt)]
        except MalformedNetworkError as exc:
            raise InvalidRequestError(str(exc)) from None
        loras = self._lora_weights(uses)  # unknown names are refused before any model loads
        prompts = tuple(strip_loras(prompt) for prompt in prompts)
        available = self._embedding_names()
        used = _used_embeddings(prompts, tuple(available)) if available else []
        if not loras and not used:
            yield _with_prompts(request, prompts)
            return
        pipe = job_pipeline(cache, request)
        if used:
            tokens = self._load_embeddings(pipe, request.model, {name: available[name] for name in used})
            prompts = tuple(_write_tokens(prompt, tokens) for prompt in prompts)
        with self._loras_on(pipe, request.model, loras):
            yield _with_prompts(request, prompts)

    def infotext_hashes(self, request: GenerateRequest) -> dict[str, str]:
        """A1111's "Lora hashes" and "TI hashes" for the request's prompts (as written, tags
        and names in them): each LoRA by the name its tag gives and its addnet hash, each
        embedding by its name and its file's sha256, NETWORK_HASH_LENGTH digits. A file
        that cannot be read is left out: a hash never fails a job that ran."""
        prompts = (request.prompt, request.negative_prompt)
        loras: dict[str, str] = {}
        try:
            uses = [use for prompt in prompts for use in find_loras(prompt)]
        except MalformedNetworkError:
            uses = []
        files = lora_files(self.lora_dirs) if uses else {}
        for use in uses:
            path = find_lora(use.name, files)
            if path is not None and (short := _short_hash(path, addnet=True)):
                loras.setdefault(use.name, short)
        embeddings: dict[str, str] = {}
        available = self._embedding_names()
        if available:
            for name in _used_embeddings(tuple(strip_loras(p) for p in prompts), tuple(available)):
                if short := _short_hash(available[name], addnet=False):
                    embeddings[available[name].stem] = short
        return network_hashes_entries(loras, embeddings)

    # --- embeddings ------------------------------------------------------------------------

    def _embedding_names(self) -> dict[str, Path]:
        """Lower-cased name -> file. The folders are read for every job, as A1111 rescans its
        embeddings folder, so a file dropped in is usable at once; two names differing only in
        case are one name here, the first sorted wins."""
        found: dict[str, Path] = {}
        for name, path in embedding_files(self.embedding_dirs).items():
            found.setdefault(_token_text(name), path)
        return found

    def _load_embeddings(
        self, pipe: DiffusionPipeline, model: str, files: Mapping[str, Path]
    ) -> dict[str, str]:
        """Make sure each embedding is in the pipeline; lower-cased name -> its token.

        Every file is read and checked before the pipeline changes, so a bad one leaves it as
        it was.
        """
        if is_sdxl(pipe):
            return self._load_sdxl_embeddings(pipe, model, files)
        loaded = self._embeddings.setdefault(pipe, {})
        width = _embedding_dim(pipe)
        new: dict[str, tuple[Path, _Stamp, torch.Tensor]] = {}
        for name, path in files.items():
            stamp = _stamp(path)
            if name in loaded and loaded[name][0] == stamp:
                continue
            vectors = read_embedding(path, width)
            if vectors.shape[-1] != width:
                raise InvalidRequestError(
                    f"embedding `{path.stem}` does not fit model `{model}`: its vectors have "
                    f"{vectors.shape[-1]} values and this model's text encoder takes {width} "
                    "(it was made for another kind of model)"
                )
            new[name] = (path, stamp, vectors)
        if new:
            # Room for all the new vectors at once: diffusers' own resize per file copies the
            # whole vocabulary's matrix each time, and transformers' default fills new rows from
            # a normal fitted to the vocabulary (a second's work on SD's) that we overwrite.
            # diffusers then finds the size it wants already there and leaves it.
            added = sum(len(vectors) for _, _, vectors in new.values())
            pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer) + added, mean_resizing=False)
        dtype = pipe.text_encoder.get_input_embeddings().weight.dtype
        for name, (path, stamp, vectors) in new.items():
            token = _free_token(pipe, name)
            pipe.load_textual_inversion(vectors.to(dtype), token=token)
            log.info("loaded embedding %r (%d vector(s)) as %s", path.stem, len(vectors), token)
            loaded[name] = (stamp, token)
        return {name: loaded[name][1] for name in files}

    def _load_sdxl_embeddings(
        self, pipe: DiffusionPipeline, model: str, files: Mapping[str, Path]
    ) -> dict[str, str]:
        """_load_embeddings for SDXL: a file's "clip_l" vectors go into CLIP-L, its "clip_g"
        into OpenCLIP-G (the refiner's one encoder), under one token in both tokenizers, as
        A1111 loads SDXL embeddings into each of its embedders."""
        loaded = self._embeddings.setdefault(pipe, {})
        targets = [
            (key, tokenizer, encoder)
            for key, tokenizer, encoder in (
                ("clip_l", pipe.tokenizer, pipe.text_encoder),
                ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2),
            )
            if encoder is not None
        ]
        new: dict[str, tuple[Path, _Stamp, dict[str, torch.Tensor]]] = {}
        for name, path in files.items():
            stamp = _stamp(path)
            if name in loaded and loaded[name][0] == stamp:
                continue
            parts = read_sdxl_embedding(path)
            for key, _, encoder in targets:
                width = int(encoder.get_input_embeddings().weight.shape[-1])
                if parts[key].shape[-1] != width:
                    raise InvalidRequestError(
                        f"embedding `{path.stem}` does not fit model `{model}`: its {key} vectors have "
                        f"{parts[key].shape[-1]} values and this model's encoder takes {width}"
                    )
            new[name] = (path, stamp, parts)
        if new:
            for key, tokenizer, encoder in targets:  # room for every new vector at once
                added = sum(len(parts[key]) for _, _, parts in new.values())
                encoder.resize_token_embeddings(len(tokenizer) + added, mean_resizing=False)
        for name, (path, stamp, parts) in new.items():
            token = _free_token(pipe, name, targets[0][1])
            for key, tokenizer, encoder in targets:
                dtype = encoder.get_input_embeddings().weight.dtype
                pipe.load_textual_inversion(
                    parts[key].to(dtype), token=token, text_encoder=encoder, tokenizer=tokenizer
                )
            log.info("loaded SDXL embedding %r (%d vector(s)) as %s", path.stem, len(parts["clip_g"]), token)
            loaded[name] = (stamp, token)
        return {name: loaded[name][1] for name in files}

    # --- LoRA ------------------------------------------------------------------------------

    def _lora_weights(self, uses: Sequence[LoraUse]) -> list[_LoraWeights]:
        """The job's LoRAs, one entry per file: a LoRA named twice adds up its weights, as A1111
        applies it twice. Those whose weights are all 0 change nothing and are left out."""
        if not uses:
            return []
        files = lora_files(self.lora_dirs)
        merged: dict[Path, _LoraWeights] = {}
        for use in uses:
            path = find_lora(use.name, files)
            if path is None:
                raise InvalidRequestError(unknown_lora_message(use.name, files))
            known = merged.get(path, _LoraWeights(path, 0.0, 0.0))
            merged[path] = replace(
                known,
                text_encoder=known.text_encoder + use.text_encoder,
                unet=known.unet + use.unet,
            )
        return [lora for lora in merged.values() if lora.text_encoder or lora.unet]

    @contextmanager
    def _loras_on(self, pipe: DiffusionPipeline, model: str, loras: list[_LoraWeights]) -> Iterator[None]:
        if not loras:
            yield
            return
        try:
            adapters = []
            for lora in loras:
                adapters.append(self._load_lora(pipe, model, lora, keep=set(adapters)))
            present = pipe.get_list_adapters()  # component -> its adapters
            weights = [
                {
                    component: lora.unet if component == "unet" else lora.text_encoder
                    for component, names in present.items()
                    if adapter in names
                }
                for adapter, lora in zip(adapters, loras)
            ]
            pipe.enable_lora()
            pipe.set_adapters(adapters, adapter_weights=weights)
            with _eager_on_recompile():
                yield
        finally:
            # Disabled LoRA layers call the original layer alone, so the next job is exactly
            # as without LoRA; the adapters stay loaded for the next job that names them.
            # (Loading one also turns it on, so this runs even when a load failed.)
            if pipe.get_list_adapters():
                pipe.disable_lora()

    def _load_lora(self, pipe: DiffusionPipeline, model: str, lora: _LoraWeights, keep: set[str]) -> str:
        """The adapter name of this LoRA in this pipeline, loaded if it is not there yet."""
        loaded = self._loras.setdefault(pipe, OrderedDict())
        key, stamp = str(lora.path), _stamp(lora.path)
        if key in loaded:
            old_stamp, adapter = loaded[key]
            if old_stamp == stamp:
                loaded.move_to_end(key)
                return adapter
            del loaded[key]  # the file changed: load the new one
            pipe.delete_adapters(adapter)
        for old_key in list(loaded):
            if len(loaded) < self.max_loras_per_pipe:
                break
            _, old_adapter = loaded[old_key]
            if old_adapter not in keep:
                del loaded[old_key]
                pipe.delete_adapters(old_adapter)
                log.info("unloaded LoRA adapter %s (least recently used)", old_adapter)
        adapter = f"{_adapter_text(lora.path.stem)}_{next(self._adapter_numbers)}"
        state_dict = read_state_dict(lora.path, what=f"LoRA `{lora.path.stem}`")
        try:
            with warnings.catch_warnings():
                # peft warns whenever a model gets a second adapter: here that is the design.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                pipe.load_lora_weights(state_dict, adapter_name=adapter)
        except Exception as exc:
            log.warning("LoRA %s could not be loaded into %r", lora.path, model, exc_info=True)
            _delete_partial_adapter(pipe, adapter)
            raise InvalidRequestError(
                f"LoRA `{lora.path.stem}` cannot be used with model `{model}` (a format or base "
                "model diffusers cannot load)",
                detail=f"{type(exc).__name__}: {_first_line(exc)}",
            ) from exc
        if not any(adapter in names for names in pipe.get_list_adapters().values()):
            raise InvalidRequestError(f"LoRA `{lora.path.stem}` has no weights model `{model}` can use")
        log.info("loaded LoRA %r as adapter %s", lora.path.stem, adapter)
        loaded[key] = (stamp, adapter)
        return adapter


def job_pipeline(cache: PipelineCache, request: GenerateRequest) -> DiffusionPipeline:
    """The loaded pipeline a job's diffusion runs on (derived img2img/inpaint pipelines share
    its text encoder and UNet, so what is loaded into it serves them too).

    Inpaint and outpaint run on the model's inpainting checkpoint when it has one, and then on
    that alone (see inference.inpaint.inpaint_pipeline): asking the cache for both would evict
    one for the other with the default of one model in memory.
    """
    if request.kind in (JobKind.INPAINT, JobKind.OUTPAINT) and cache.spec(request.model).inpaint_source:
        return cache.get_inpaint(request.model)
    return cache.get(request.model)


# --- reading files -------------------------------------------------------------------------


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A file's tensors, on the CPU; pickles are read with weights_only (no code can run).

    Raises InvalidRequestError naming ``what`` (never the server's path).
    """
    try:
        if path.suffix.lower() == ".safetensors":
            data = safetensors.torch.load_file(path, device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        log.warning("%s (%s) refused: %s", what, path, exc)
        raise InvalidRequestError(
            f"{what} holds Python objects besides tensors, which could run code when read; "
            "it was not loaded (convert it to .safetensors)"
        ) from None
    except Exception as exc:
        log.warning("%s (%s) cannot be read", what, path, exc_info=True)
        detail = f"{type(exc).__name__}: {_first_line(exc)}"
        raise InvalidRequestError(f"{what} cannot be read", detail=detail) from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]  # some trainers wrap the weights
    if isinstance(data, torch.Tensor):
        return {"": data}
    if not isinstance(data, Mapping):
        raise InvalidRequestError(f"{what} is not a file of weights")
    return dict(data)


def read_embedding(path: Path, expected_dim: int | None = None) -> torch.Tensor:
    """An embedding file's vectors as one float tensor of shape (vectors, width).

    Reads A1111's .pt ({"string_to_param": {"*": tensor}}), A1111's .safetensors ("emb_params"),
    diffusers' learned_embeds ({"token": tensor}) and a bare tensor. ``expected_dim`` only
    improves the message for an SDXL embedding (its "clip_l"/"clip_g" pair).
    """
    what = f"embedding `{path.stem}`"
    if path.stat().st_size > MAX_EMBEDDING_BYTES:
        raise InvalidRequestError(f"{what} is too large to be an embedding (is it a checkpoint?)")
    data = read_state_dict(path, what)
    if "string_to_param" in data:
        params = data["string_to_param"]
        tensors = list(params.values()) if isinstance(params, Mapping) else [params]
    elif "emb_params" in data:
        tensors = [data["emb_params"]]
    elif "clip_l" in data or "clip_g" in data:
        raise InvalidRequestError(
            f"{what} is an SDXL embedding (clip_l/clip_g); this model "
            f"{'takes vectors of ' + str(expected_dim) + ' values' if expected_dim else 'is not SDXL'}"
        )
    else:
        tensors = [value for value in data.values() if isinstance(value, torch.Tensor)]
    if len(tensors) != 1 or not isinstance(tensors[0], torch.Tensor):
        raise InvalidRequestError(f"{what} is not in a format we know (A1111 .pt/.safetensors or diffusers)")
    vectors = tensors[0].detach()
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or not vectors.shape[0] or not vectors.is_floating_point():
        raise InvalidRequestError(f"{what} holds a {tuple(vectors.shape)} tensor, not embedding vectors")
    return vectors.float()


def read_sdxl_embedding(path: Path) -> dict[str, torch.Tensor]:
    """An SDXL embedding's {"clip_l": (vectors, 768), "clip_g": (vectors, 1280)} as floats; an
    SD 1.x/2.x embedding is refused, naming the mismatch."""
    what = f"embedding `{path.stem}`"
    if path.stat().st_size > MAX_EMBEDDING_BYTES:
        raise InvalidRequestError(f"{what} is too large to be an embedding (is it a checkpoint?)")
    data = read_state_dict(path, what)
    if not isinstance(data.get("clip_l"), torch.Tensor) or not isinstance(data.get("clip_g"), torch.Tensor):
        raise InvalidRequestError(
            f"{what} was made for SD 1.x/2.x (it has no clip_l/clip_g vectors); this model is SDXL"
        )
    parts = {key: data[key].detach() for key in ("clip_l", "clip_g")}
    for key, vectors in parts.items():
        if vectors.ndim != 2 or not vectors.shape[0] or not vectors.is_floating_point():
            raise InvalidRequestError(f"{what} holds a {tuple(vectors.shape)} {key} tensor, not embedding vectors")
    if parts["clip_l"].shape[0] != parts["clip_g"].shape[0]:
        raise InvalidRequestError(f"{what} has {parts['clip_l'].shape[0]} clip_l but {parts['clip_g'].shape[0]} clip_g vectors")
    return {key: vectors.float() for key, vectors in parts.items()}


# --- helpers -------------------------------------------------------------------------------


def _with_prompts(request: GenerateRequest, prompts: tuple[str, str]) -> GenerateRequest:
    prompt, negative_prompt = prompts
    if (prompt, negative_prompt) == (request.prompt, request.negative_prompt):
        return request
    return replace(request, prompt=prompt, negative_prompt=negative_prompt)


def _short_hash(path: Path, *, addnet: bool) -> str | None:
    try:
        return file_hash(path, addnet=addnet)[:NETWORK_HASH_LENGTH]
    except (OSError, ValueError):
        log.warning("cannot hash %s for the infotext", path, exc_info=True)
        return None


def _stamp(path: Path) -> _Stamp:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _write_tokens(prompt: str, tokens: Mapping[str, str]) -> str:
    """The prompt with each embedding name replaced by its token; nothing else changes (the
    prompt parser needs its upper-case BREAK and AND as written)."""
    if not tokens:
        return prompt
    pattern = embedding_pattern(tuple(sorted(tokens)))
    return pattern.sub(lambda match: tokens[_token_text(match.group(0))], prompt)


def _free_token(pipe: DiffusionPipeline, name: str, tokenizer=None) -> str:  # type: ignore[no-untyped-def]
    """``<name>``, or ``<name#2>``... when an older version of the file holds that one (tokens
    cannot be removed cheaply; the old vectors are a few KB). Characters the prompt parser
    reads as syntax (attention, scheduling, alternation) become "_" in the token.
    ``tokenizer``: the one to look in (default the pipeline's first)."""
    vocab = (tokenizer or pipe.tokenizer).get_vocab()
    base = re.sub(r"[][()<>:|\\]", "_", name)
    for version in itertools.count(1):
        token = f"<{base}>" if version == 1 else f"<{base}#{version}>"
        if token not in vocab and f"{token}_1" not in vocab:
            return token
    raise AssertionError("unreachable")


def _embedding_dim(pipe: DiffusionPipeline) -> int:
    return int(pipe.text_encoder.get_input_embeddings().weight.shape[-1])


def _adapter_text(name: str) -> str:
    # peft keeps adapters in ModuleDicts, whose keys may not contain dots.
    return re.sub(r"[^0-9A-Za-z_]", "_", name)[:48] or "lora"


def _delete_partial_adapter(pipe: DiffusionPipeline, adapter: str) -> None:
    try:
        if any(adapter in names for names in pipe.get_list_adapters().values()):
            pipe.delete_adapters(adapter)
    except Exception:  # cleaning up after a failure must not hide that failure
        log.exception("could not delete the partly loaded adapter %s", adapter)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else ""


@contextmanager
def _eager_on_recompile() -> Iterator[None]:
    """Compiled modules run eagerly where their graphs do not fit (see the module docstring).

    Nothing changes where nothing is compiled; torch before 2.6 has no stances: it recompiles.
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("eager_on_recompile"):
        yield
