"""Prompt embeddings the way A1111 makes them, for a stock diffusers pipeline.

diffusers encodes a prompt as one 77-token window, cut at 75 tokens, with every token at
weight 1. A1111 (modules/sd_hijack_clip.py FrozenCLIPEmbedderWithCustomWords, and
prompt_parser.get_learned_conditioning) instead:

1. schedules the prompt (prompt editing, alternation: inference.common.prompt_parser) and encodes
   every text of the schedule together, as one batch;
2. parses attention weights, tokenizes each run, and cuts the tokens into 75-token chunks
   (inference.common.prompt_chunks), padding the batch's shorter texts with empty chunks;
3. encodes each chunk through CLIP (the last hidden state), multiplies every token's vector by
   its weight, then rescales the batch so its mean is what it was before weighting
   (``z * (original_mean / new_mean)``, the mean over the whole batch tensor);
4. concatenates the chunks along the sequence: 77, 154, 231... tokens;
5. pads the shorter of cond and uncond with the empty prompt's encoding so that classifier-free
   guidance can batch them (A1111's pad_cond_uncond).

A plain prompt (weights 1, one chunk) comes out exactly as diffusers' own encoding.

SDXL's two encoders, its pooled vector and its empty negative prompt are
inference.conditioning_xl's; the Conditioning then carries a pooled schedule beside the
embeddings, and everything below applies to it alike.

The pipelines get the step-0 embeddings as ``prompt_embeds``/``negative_prompt_embeds`` and the
step callback swaps them when the schedule moves on (``Conditioning.callback_embeds``).

AND (composable diffusion, A1111's MulticondLearnedConditioning): each part of the positive
prompt has its own schedule and chunks, shorter parts are padded with their last token vector
(A1111's reconstruct_multicond_batch), and the noise predictions combine as A1111's
combine_denoised, ``uncond + cfg * sum_i w_i (cond_i - uncond)``: the pipeline gets the uncond
and every part packed into one long embedding, and ``and_prompts_unet`` runs the UNet once per
part and hands diffusers ``uncond + sum_i w_i (cond_i - uncond)`` as the conditional
prediction, which its guidance turns into A1111's. A prompt without AND takes none of this.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from inference.common.prompt_chunks import Chunk, chunk_tokens, empty_chunk, weighted_tokens
from inference.common.prompt_parser import composable_prompts, prompt_schedules
from inference.common.protocol import MAX_CLIP_SKIP, GenerateRequest
from inference.conditioning_xl import encode_empty_xl, encode_schedule_xl, is_sdxl, text_encoder_key

log = logging.getLogger(__name__)

# Per text encoder: how many chunks its prompts may have (a model not trained for long
# prompts: 1). Keyed by the encoder, so a model's img2img and inpaint pipelines, which share
# it, share the limit, and an unloaded model's entry goes with it.
_chunk_limits: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


def limit_prompt_chunks(pipe: DiffusionPipeline, max_chunks: int | None) -> None:
    """Cut this model's prompts to ``max_chunks`` chunks of 75 tokens (None: no limit)."""
    if max_chunks is None:
        _chunk_limits.pop(_limit_key(pipe), None)
    elif max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    else:
        _chunk_limits[_limit_key(pipe)] = max_chunks


def prompt_chunk_limit(pipe: DiffusionPipeline) -> int | None:
    return _chunk_limits.get(_limit_key(pipe))


def _limit_key(pipe: DiffusionPipeline) -> torch.nn.Module:
    return text_encoder_key(pipe) if is_sdxl(pipe) else pipe.text_encoder


@dataclass(frozen=True)
class Conditioning:
    """A pass's cond and uncond schedules: (last step, embeddings (rows, 77 * chunks, dim)).

    The uncond has one row; the cond one per AND part, each weighing ``weights[row]`` (one row
    at weight 1: a plain prompt). Every tensor has the same token length, so any cond pairs
    with any uncond. Steps are A1111's: model evaluations of the pass, from 0 (see
    encode_for_pass). ``cut_prompt`` and ``cut_negative_prompt`` are the text a chunk limit
    dropped ("" when nothing was). SDXL: ``cond_pooled`` and ``uncond_pooled`` are the pooled
    vectors' schedules, (rows, dim) each, with the same steps as ``cond`` and ``uncond``;
    empty for other models.
    """

    cond: tuple[tuple[int, torch.Tensor], ...]
    uncond: tuple[tuple[int, torch.Tensor], ...]
    cut_prompt: str = ""
    cut_negative_prompt: str = ""
    weights: tuple[float, ...] = (1.0,)
    cond_pooled: tuple[tuple[int, torch.Tensor], ...] = ()
    uncond_pooled: tuple[tuple[int, torch.Tensor], ...] = ()

    @property
    def composable(self) -> bool:
        """Whether the pipeline must run under and_prompts_unet (AND, or a weighted prompt)."""
        return self.weights != (1.0,)

    def at_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) in force at ``step``: A1111's reconstruct_cond_batch."""
        return _entry_at(self.cond, step)[1], _entry_at(self.uncond, step)[1]

    def pipeline_embeds(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's (prompt_embeds, negative_prompt_embeds) for one image at ``step``.

        Composable: both are the uncond followed by every part along the tokens,
        (1, (1 + parts) * tokens, dim), which and_prompts_unet unpacks.
        """
        cond, uncond = self.at_step(step)
        if not self.composable:
            return cond, uncond
        packed = torch.cat([uncond, cond.reshape(1, -1, cond.shape[-1])], dim=1)
        return packed, packed

    def pooled_at_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL: the (cond, uncond) pooled vectors in force at ``step``."""
        return _entry_at(self.cond_pooled, step)[1], _entry_at(self.uncond_pooled, step)[1]

    def pipeline_pooled(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL: the pipeline's (pooled_prompt_embeds, negative_pooled_prompt_embeds) for one
        image at ``step``; composable: both the uncond's followed by every part's along the
        features, (1, (1 + parts) * dim), which and_prompts_unet unpacks."""
        cond, uncond = self.pooled_at_step(step)
        if not self.composable:
            return cond, uncond
        packed = torch.cat([uncond, cond.reshape(1, -1)], dim=1)
        return packed, packed

    def pipeline_kwargs(self) -> dict:
        """What a pipeline call takes instead of prompt strings: the step-0 embeddings."""
        cond, uncond = self.pipeline_embeds(0)
        kwargs = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
        if self.cond_pooled:
            pooled, negative_pooled = self.pipeline_pooled(0)
            kwargs.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
        return kwargs

    def callback_pooled(self, step: int, tensors: dict) -> torch.Tensor | None:
        """SDXL: the pipeline's ``add_text_embeds`` for evaluation ``step`` when they change
        there (laid out as callback_embeds lays out the embeddings); None: they stay."""
        if not self.cond_pooled or step <= 0 or all(
            now is before
            for now, before in zip(self.pooled_at_step(step), self.pooled_at_step(step - 1))
        ):
            return None
        current = tensors["add_text_embeds"]
        images = tensors["latents"].shape[0]
        cond, uncond = self.pipeline_pooled(step)
        parts = [cond.expand(images, -1)]
        if current.shape[0] == 2 * images:
            parts.insert(0, uncond.expand(images, -1))
        return torch.cat(parts).to(device=current.device, dtype=current.dtype)

    def callback_embeds(self, step: int, tensors: dict) -> torch.Tensor | None:
        """The pipeline's ``prompt_embeds`` for evaluation ``step`` when they change there.

        ``tensors`` is what callback_on_step_end received, with "latents" and "prompt_embeds".
        diffusers holds ``cat([uncond] * n + [cond] * n)`` under guidance (n images, each
        prompt repeated per image by encode_prompt), else ``cat([cond] * n)``; the result has
        that layout, dtype and device. None: the embeddings in force stay.
        """
        if step <= 0 or all(
            now is before for now, before in zip(self.at_step(step), self.at_step(step - 1))
        ):
            return None
        current = tensors["prompt_embeds"]
        images = tensors["latents"].shape[0]
        cond, uncond = self.pipeline_embeds(step)
        parts = [cond.expand(images, -1, -1)]
        if current.shape[0] == 2 * images:
            parts.insert(0, uncond.expand(images, -1, -1))
        return torch.cat(parts).to(device=current.device, dtype=current.dtype)


def _entry_at(schedule: Sequence[tuple[int, torch.Tensor]], step: int):
    # A1111 takes the first entry whose last step is >= step; past the end (which its step
    # counts never reach) the last one is the sensible reading.
    for entry in schedule:
        if step <= entry[0]:
            return entry
    return schedule[-1]


# --- AND: the UNet call ----------------------------------------------------------------------


@contextlib.contextmanager
def and_prompts_unet(pipe: DiffusionPipeline, conditioning: object) -> Iterator[None]:
    """Around a pipeline call: its UNet combines AND parts as A1111 does, for a composable
    Conditioning (for anything else, a plain prompt or a batch, nothing changes).

    Each call of the UNet gets the packed embeddings of Conditioning.pipeline_embeds (in both
    halves under guidance). The conditional half is run once for the uncond and once per part
    (two of them a call), and comes back as ``uncond + sum_i w_i (cond_i - uncond)``, the
    unconditional half as the uncond's prediction; diffusers' ``uncond + cfg * (cond - uncond)``
    then gives A1111's combine_denoised (that is linear, so it holds for noise as for denoised
    predictions). Without guidance (cfg 1 or less) the combination itself is the prediction:
    A1111's at cfg 1. The module's ``forward`` is wrapped for the call only (the pipeline's
    components stay as they are, so offload hooks and compiled code see the same UNet).
    """
    if not isinstance(conditioning, Conditioning) or not conditioning.composable:
        yield
        return
    unet = pipe.unet
    parts = len(conditioning.weights)
    weights = torch.tensor(conditioning.weights, dtype=torch.float32)
    forward = unet.forward
    had_own_forward = "forward" in vars(unet)  # accelerate's hooks set one on the instance

    def combined_forward(sample, timestep, encoder_hidden_states, *args, return_dict=True, **kwargs):
        rows = sample.shape[0]
        guided = pipe.do_classifier_free_guidance
        images = rows // 2 if guided else rows
        segments = 1 + parts  # the uncond, then each part

        def segment_rows(value, first: int, last: int):
            # A per-row input of the conditional half, repeated for segments first..last - 1.
            if isinstance(value, dict):
                return {key: segment_rows(item, first, last) for key, item in value.items()}
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == rows:
                return value[rows - images :].repeat(last - first, *[1] * (value.ndim - 1))
            return value

        packed = encoder_hidden_states[rows - images :]
        embeds = packed.reshape(images, segments, -1, packed.shape[-1]).transpose(0, 1).flatten(0, 1)
        added = kwargs.pop("added_cond_kwargs", None)
        if added is not None:
            # SDXL: the pooled vectors are packed along the features as the embeddings are
            # along the tokens (Conditioning.pipeline_pooled); the size numbers are per row.
            text_embeds = added["text_embeds"][rows - images :]
            pooled = text_embeds.reshape(images, segments, -1).transpose(0, 1).flatten(0, 1)
        outs = []
        # Two segments a call: a plain run's batch, so any number of parts fits in its memory
        # (and a compiled UNet meets the batch size it knows).
        for first in range(0, segments, 2):
            last = min(segments, first + 2)
            outs.append(
                forward(
                    segment_rows(sample, first, last),
                    segment_rows(timestep, first, last),
                    embeds[first * images : last * images],
                    *args,
                    return_dict=False,
                    **{name: segment_rows(value, first, last) for name, value in kwargs.items()},
                    **({} if added is None else {"added_cond_kwargs": {
                        "text_embeds": pooled[first * images : last * images],
                        "time_ids": segment_rows(added["time_ids"], first, last),
                    }}),
                )[0]
            )
        out = torch.cat(outs)
        out = out.unflatten(0, (segments, images))
        uncond = out[0]
        part_weights = weights.to(out.device, out.dtype).view(parts, *[1] * uncond.ndim)
        combined = uncond + (part_weights * (out[1:] - uncond)).sum(0)
        result = torch.cat([uncond, combined]) if guided else combined
        return UNet2DConditionOutput(sample=result) if return_dict else (result,)

    unet.forward = combined_forward
    try:
        yield
    finally:
        # Offload's end-of-call hook reset may already have put another forward in place.
        if vars(unet).get("forward") is combined_forward:
            if had_own_forward:
                unet.forward = forward
            else:
                del unet.forward


# --- encoding ------------------------------------------------------------------------------

def effective_clip_skip(pipe: DiffusionPipeline, clip_skip: int) -> int:
    """The clip skip this pipeline's encoder is read with, as A1111 treats each family.

    SD 1.x (OpenAI's CLIP ViT-L, "quick_gelu") takes it as asked. SD 2.x (OpenCLIP ViT-H,
    "gelu") ignores it: A1111's FrozenOpenCLIPEmbedder always reads the penultimate layer,
    which diffusers' SD 2 text encoder already ends with. SDXL reads fixed layers too
    (its conditioning passes 1 here). Beyond the encoder's layers, its first layer is read.
    """
    if not 1 <= clip_skip <= MAX_CLIP_SKIP:
        raise ValueError(f"clip_skip must be between 1 and {MAX_CLIP_SKIP}, got {clip_skip}")
    if is_sdxl(pipe):
        return 1
    config = pipe.text_encoder.config
    if getattr(config, "hidden_act", "quick_gelu") != "quick_gelu":
        return 1
    return min(clip_skip, config.num_hidden_layers)


def evaluations_per_step(pipe: DiffusionPipeline) -> int:
    """Model evaluations per sampling step of the pipeline's scheduler (Heun, DPM2: 2).

    A1111 counts prompt-editing steps in evaluations (its schedules are made for
    steps * 2 with second-order samplers, and its denoiser counts calls), and the pipeline's
    step callback runs once per evaluation, so both count alike.
    """
    return int(getattr(pipe.scheduler, "order", 1) or 1)


def encode_for_pass(
    pipe: DiffusionPipeline,
    request: GenerateRequest,
    steps: int,
    hires_steps: int | None = None,
    evaluations: int | None = None,
) -> Conditioning:
    """The request's prompts encoded for one diffusion pass; call it once the pass's sampler
    is set. ``evaluations``: model evaluations a step (A1111 counts 2 for the samplers its
    catalog flags second order); None reads the pipeline's scheduler.

    ``steps`` is A1111's step count for the schedule: the request's steps for txt2img and
    img2img (img2img runs only the last part of them, and A1111 still schedules over all of
    them, so ``[a:b:0.5]`` at strength 0.5 stays ``a``). For the hires fix's second pass,
    ``steps`` is the first pass's and ``hires_steps`` the second's (see prompt_schedules).
    Text cut by the model's chunk limit is logged.
    """
    order = evaluations or evaluations_per_step(pipe)
    conditioning = encode_conditioning(
        pipe,
        request.prompt,
        request.negative_prompt,
        steps * order,
        hires_steps=None if hires_steps is None else hires_steps * order,
        max_chunks=prompt_chunk_limit(pipe),
        clip_skip=effective_clip_skip(pipe, request.clip_skip),
    )
    cuts = {"prompt": conditioning.cut_prompt, "negative prompt": conditioning.cut_negative_prompt}
    for what, text in cuts.items():
        if text:
            log.warning("job %s: the %s was cut; dropped: %r", request.job_id, what, text)
    return conditioning


def encode_conditioning(
    pipe: DiffusionPipeline,
    prompt: str,
    negative_prompt: str,
    steps: int,
    hires_steps: int | None = None,
    max_chunks: int | None = None,
    clip_skip: int = 1,
) -> Conditioning:
    """Both prompts' schedules, padded to one chunk count: A1111's get_learned_conditioning
    for the cond and the uncond, then pad_cond_uncond.

    ``steps`` and ``hires_steps`` are evaluations, as prompt_schedules takes them;
    ``max_chunks`` None leaves prompts whole; ``clip_skip`` is the CLIP layer read, counted
    from the end (see _encode_rows; effective_clip_skip says what a model takes).
    """
    parts = composable_prompts(prompt)
    if len(parts) == 1 and parts[0][1] == 1.0 and parts[0][0] == prompt.rstrip():
        parts = [(prompt, 1.0)]  # no AND, no weight: the prompt exactly as written
    encoded = [
        _encode_any_schedule(pipe, prompt_schedules(text, steps, hires_steps), max_chunks, clip_skip)
        for text, _ in parts
    ]
    if len(encoded) == 1:
        cond, cond_pooled = encoded[0][0], encoded[0][1]
    else:
        cond = _stack_parts([schedule for schedule, _, _ in encoded])
        cond_pooled = _stack_parts([pooled for _, pooled, _ in encoded]) if encoded[0][1] else []
    cut_prompt = next((cut for _, _, cut in encoded if cut), "")
    uncond, uncond_pooled, cut_negative = _encode_any_schedule(
        pipe, prompt_schedules(negative_prompt, steps, hires_steps), max_chunks, clip_skip
    )
    if cond[0][1].shape[1] != uncond[0][1].shape[1]:
        length = max(cond[0][1].shape[1], uncond[0][1].shape[1])
        # A1111's cond_stage_model_empty_prompt
        empty = encode_empty_xl(pipe, _empty) if is_sdxl(pipe) else _encode_rows(pipe, [_empty(pipe)], clip_skip)
        cond, uncond = _pad_schedule(cond, length, empty), _pad_schedule(uncond, length, empty)
    weights = tuple(weight for _, weight in parts)
    return Conditioning(
        tuple(cond), tuple(uncond), cut_prompt, cut_negative, weights,
        tuple(cond_pooled), tuple(uncond_pooled),
    )


def _encode_any_schedule(
    pipe: DiffusionPipeline, schedule: list[tuple[int, str]], max_chunks: int | None, clip_skip: int = 1
):
    """(embeddings schedule, pooled schedule (SDXL; else empty), cut text) of one prompt.
    SDXL reads its fixed layers, as A1111 does, whatever ``clip_skip`` says."""
    if is_sdxl(pipe):
        return encode_schedule_xl(
            pipe, schedule, max_chunks, chunks=_chunks, empty=_empty, emphasis=_emphasis
        )
    encoded, cut = _encode_schedule(pipe, schedule, max_chunks, clip_skip)
    return encoded, [], cut


def _stack_parts(schedules: list[list[tuple[int, torch.Tensor]]]) -> list[tuple[int, torch.Tensor]]:
    """AND parts' schedules as one: at each step, every part's tensor in force, one row each.

    Parts shorter than the longest are padded with their last token vector, as A1111's
    reconstruct_multicond_batch pads them. Steps where no part changes share one tensor.
    """
    length = max(schedule[0][1].shape[1] for schedule in schedules)

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        missing = length - tensor.shape[1]
        return torch.cat([tensor, tensor[:, -1:].repeat(1, missing, 1)], dim=1) if missing else tensor

    stacked: dict[tuple[int, ...], torch.Tensor] = {}
    result = []
    for end in sorted({end for schedule in schedules for end, _ in schedule}):
        tensors = [_entry_at(schedule, end)[1] for schedule in schedules]
        key = tuple(id(tensor) for tensor in tensors)
        if key not in stacked:
            stacked[key] = torch.cat([padded(tensor) for tensor in tensors])
        result.append((end, stacked[key]))
    return result


def encode_prompt(
    pipe: DiffusionPipeline, text: str, max_chunks: int | None = None, clip_skip: int = 1
) -> tuple[torch.Tensor, str]:
    """One text (no scheduling) as (embeddings (1, 77 * chunks, dim), the text cut off)."""
    [(_, embeds)], _, cut = _encode_any_schedule(pipe, [(1, text)], max_chunks, clip_skip)
    return embeds, cut


def _pad_schedule(schedule, length: int, empty: torch.Tensor):
    """Each entry padded with empty-prompt chunks to ``length`` tokens (A1111's pad_cond),
    every row of it (an AND prompt's parts).

    The entries of one schedule already share a length (_encode_schedule pads its batch).
    """
    padded = []
    for end, tensor in schedule:
        missing = (length - tensor.shape[1]) // empty.shape[1]
        if missing:
            tensor = torch.cat([tensor, empty.repeat(tensor.shape[0], missing, 1)], dim=1)
        padded.append((end, tensor))
    return tuple(padded)


def _special_ids(pipe: DiffusionPipeline) -> tuple[int | None, int, int, int]:
    """(comma, start, end, padding) token ids of the pipeline's tokenizer."""
    tokenizer = pipe.tokenizer
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    if comma == tokenizer.unk_token_id:
        comma = None  # not a CLIP vocabulary: no comma rule
    return comma, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id


def _empty(pipe: DiffusionPipeline) -> Chunk:
    _, bos, eos, pad = _special_ids(pipe)
    return empty_chunk(bos, eos, pad)


def _chunks(pipe: DiffusionPipeline, text: str) -> list[Chunk]:
    """A1111's tokenize_line: attention runs tokenized (after diffusers expands multi-vector
    textual-inversion tokens, as its own encode_prompt does), then chunked."""
    tokenizer = pipe.tokenizer
    convert = getattr(pipe, "maybe_convert_prompt", None)

    def tokenize(part: str) -> list[int]:
        if convert is not None:
            part = convert(part, tokenizer)
        return tokenizer(part, add_special_tokens=False, truncation=False).input_ids

    comma, bos, eos, pad = _special_ids(pipe)
    return chunk_tokens(weighted_tokens(text, tokenize), comma, bos, eos, pad)


def _encode_schedule(
    pipe: DiffusionPipeline, schedule: list[tuple[int, str]], max_chunks: int | None, clip_skip: int = 1
) -> tuple[list[tuple[int, torch.Tensor]], str]:
    """Every text of one prompt's schedule, encoded as A1111 encodes them: as one batch.

    The batch matters because A1111 restores the mean over the whole batch, and its batch
    holds each schedule entry, repeated ones included (alternation repeats texts). Each
    distinct text is encoded once here and counted as often as it occurs.
    """
    counts = Counter(text for _, text in schedule)
    texts = list(counts)
    chunked = {text: _chunks(pipe, text) for text in texts}
    cut = ""
    if max_chunks is not None:
        for text in texts:
            dropped = [t for chunk in chunked[text][max_chunks:] for t in chunk.tokens]
            if dropped and not cut:
                cut = pipe.tokenizer.decode(dropped).strip()
            chunked[text] = chunked[text][:max_chunks]
    chunk_count = max(len(chunks) for chunks in chunked.values())
    empty = _empty(pipe)
    per_text: dict[str, list[torch.Tensor]] = {text: [] for text in texts}
    for index in range(chunk_count):
        rows = [chunked[t][index] if index < len(chunked[t]) else empty for t in texts]
        weighted = _weighted_batch(pipe, rows, [counts[t] for t in texts], clip_skip)
        for text, z in zip(texts, weighted):
            per_text[text].append(z)
    encoded = {text: torch.cat(parts, dim=1) for text, parts in per_text.items()}
    return [(end, encoded[text]) for end, text in schedule], cut


def _weighted_batch(
    pipe: DiffusionPipeline, rows: list[Chunk], counts: list[int], clip_skip: int = 1
) -> list[torch.Tensor]:
    """A1111's EmphasisOriginal on one chunk position of a batch: each row's token vectors
    times their weights, then the batch rescaled to its unweighted mean.

    The means are A1111's ``z.mean()`` over the batch with each row ``counts`` times. The
    arithmetic is float32 (A1111 promotes to float32 the same way, multiplying by float32
    weights); the result has the text encoder's dtype. With all weights 1 A1111's rescale is
    by exactly 1, so it is skipped and z comes back as CLIP gave it.
    """
    return _emphasis(_encode_rows(pipe, rows, clip_skip), rows, counts, pipe.text_encoder.dtype)


def _emphasis(
    z: torch.Tensor, rows: list[Chunk], counts: list[int], dtype: torch.dtype
) -> list[torch.Tensor]:
    """_weighted_batch's weighting and mean restore on encoded rows ``z``; rows in ``dtype``."""
    z = z.float()
    weights = torch.tensor([row.weights for row in rows], dtype=torch.float32, device=z.device)
    weighted = z * weights.unsqueeze(-1)
    if any(weight != 1.0 for row in rows for weight in row.weights):
        share = torch.tensor(counts, dtype=torch.float32, device=z.device) / sum(counts)
        original_mean = (z.mean(dim=(1, 2)) * share).sum()
        new_mean = (weighted.mean(dim=(1, 2)) * share).sum()
        weighted = weighted * (original_mean / new_mean)
    return [row.unsqueeze(0).to(dtype) for row in weighted]


def _execution_device(pipe: DiffusionPipeline) -> torch.device:
    """Where the text encoder runs: ``pipe._execution_device`` without its search of every
    module of every component for group-offloading hooks, which the worker never installs
    (a walk over every module, twice per job, whatever the model's size). Under model
    CPU offload the encoder carries accelerate's hook, and diffusers' answer is asked."""
    encoder = pipe.text_encoder
    return pipe._execution_device if hasattr(encoder, "_hf_hook") else encoder.device


@torch.no_grad()
def _encode_rows(pipe: DiffusionPipeline, rows: list[Chunk], clip_skip: int = 1) -> torch.Tensor:
    """CLIP's last hidden state for each chunk, exactly as diffusers' encode_prompt calls it;
    with ``clip_skip`` above 1, A1111's encode_with_transformers for SD 1.x: the hidden state
    ``clip_skip`` layers from the end, through CLIP's final layer norm.

    Identical rows are encoded once.
    """
    unique = list(dict.fromkeys(row.ids for row in rows))
    encoder = pipe.text_encoder
    device = _execution_device(pipe)
    ids = torch.tensor(unique, dtype=torch.long, device=device)
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        # The tokenizer's mask: ones up to the first end token, zeros on the padding after.
        eos = pipe.tokenizer.eos_token_id
        ends = torch.tensor([row.index(eos) for row in unique], device=device)
        mask = (torch.arange(ids.shape[1], device=device)[None] <= ends[:, None]).long()
    if clip_skip > 1:
        hidden = encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        # transformers 5 keeps the layers on the model itself, 4.x under .text_model.
        z = getattr(encoder, "text_model", encoder).final_layer_norm(hidden[-clip_skip])
    else:
        z = encoder(ids, attention_mask=mask)[0]
    index = {row: position for position, row in enumerate(unique)}
    return z[[index[row.ids] for row in rows]]
