"""SDXL's prompt embeddings the way A1111 makes them, over both text encoders.

SDXL reads a prompt through two CLIPs: CLIP-L (``text_encoder``) and OpenCLIP bigG
(``text_encoder_2``); the refiner through bigG alone. A1111 (modules/sd_hijack_clip.py,
sd_hijack_open_clip.py, sd_models_xl.py) runs its whole prompt machinery once per encoder:

- each encoder tokenizes, chunks (75 tokens, BREAK, the comma rule) and weights the prompt
  on its own (the same chunks: both share CLIP's vocabulary; CLIP-L pads with the end token,
  bigG with "!"), and restores its own batch mean after the weighting (EmphasisOriginal);
- each encoder's penultimate hidden states (without the final layer norm) are concatenated
  along the features, 768 + 1280 = 2048 for SDXL, chunk by chunk;
- the pooled vector (bigG's projected end token, what SDXL's added embedding reads beside
  the size numbers) comes from the first chunk alone, before any weighting;
- a negative prompt that is empty is all zeros, embeddings and pooled vector alike
  (get_learned_conditioning's force_zero_negative_prompt).

The size numbers (original size = target size = the image's width x height, crop 0,0, and
the refiner's aesthetic scores 6 and 2.5) are diffusers' defaults for the SDXL pipelines, so
they are left to the pipeline (see sdxl_size_kwargs).

Everything else (prompt scheduling, AND, padding cond and uncond to one length) is
inference.conditioning's, which calls encode_schedule_xl for an SDXL pipeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from transformers import CLIPTextModelWithProjection

from inference.common.prompt_chunks import Chunk

# A1111's opts.sdxl_refiner_high_aesthetic_score / low_aesthetic_score: the refiner's cond is
# scored 6.0, its uncond 2.5 (diffusers' defaults too).
REFINER_AESTHETIC_SCORE = 6.0
REFINER_NEGATIVE_AESTHETIC_SCORE = 2.5


@dataclass(frozen=True, eq=False)
class EncoderView:
    """One text encoder with its tokenizer: what chunking and encoding read of a pipeline
    (the attributes inference.conditioning's helpers ask a pipeline for)."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    maybe_convert_prompt: Callable[[str, Any], str] | None
    # Where the encoder runs: its own device, or under model CPU offload (accelerate's hook
    # on it) the pipeline's execution device, where the hook moves it for the call.
    device: torch.device


def is_sdxl(pipe: object) -> bool:
    """Whether the pipeline is one of SDXL's (base, refiner, img2img, inpaint)."""
    return hasattr(pipe, "text_encoder_2") and hasattr(pipe, "tokenizer_2")


def encoder_views(pipe: DiffusionPipeline) -> list[EncoderView]:
    """The pipeline's text encoders in A1111's concatenation order (CLIP-L, then bigG)."""
    convert = getattr(pipe, "maybe_convert_prompt", None)
    pairs = ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
    return [
        EncoderView(tok, enc, convert, pipe._execution_device if hasattr(enc, "_hf_hook") else enc.device)
        for tok, enc in pairs
        if enc is not None
    ]


def text_encoder_key(pipe: DiffusionPipeline) -> torch.nn.Module:
    """The encoder that stands for the model (its first): the refiner has no CLIP-L."""
    return pipe.text_encoder if pipe.text_encoder is not None else pipe.text_encoder_2


@torch.no_grad()
def encode_rows_xl(view: EncoderView, rows: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(penultimate hidden states (n, 77, dim), the pooled vectors (n, dim) or None for an
    encoder without a projection) for each chunk, as diffusers' SDXL encode_prompt calls the
    encoders. Identical rows are encoded once."""
    unique = list(dict.fromkeys(row.ids for row in rows))
    encoder = view.text_encoder
    ids = torch.tensor(unique, dtype=torch.long, device=view.device)
    out = encoder(ids, output_hidden_states=True)
    order = [dict(zip(unique, range(len(unique))))[row.ids] for row in rows]
    hidden = out.hidden_states[-2][order]
    pooled = out.text_embeds[order] if isinstance(encoder, CLIPTextModelWithProjection) else None
    return hidden, pooled


def encode_schedule_xl(
    pipe: DiffusionPipeline,
    schedule: list[tuple[int, str]],
    max_chunks: int | None,
    *,
    chunks: Callable[[EncoderView, str], list[Chunk]],
    empty: Callable[[EncoderView], Chunk],
    emphasis: Callable[[torch.Tensor, list[Chunk], list[int], torch.dtype], list[torch.Tensor]],
) -> tuple[list[tuple[int, torch.Tensor]], list[tuple[int, torch.Tensor]], str]:
    """A prompt's schedule as (embeddings schedule, pooled schedule, the text cut off): every
    text encoded as one batch per encoder, as A1111 does (see the module doc).

    ``chunks``, ``empty`` and ``emphasis`` are inference.conditioning's chunking, empty chunk
    and weighting, applied per encoder.
    """
    counts = Counter(text for _, text in schedule)
    texts = list(counts)
    views = encoder_views(pipe)
    chunked = [{text: chunks(view, text) for text in texts} for view in views]
    cut = ""
    if max_chunks is not None:
        for by_text in chunked:
            for text in texts:
                dropped = [t for chunk in by_text[text][max_chunks:] for t in chunk.tokens]
                if dropped and not cut:
                    cut = views[0].tokenizer.decode(dropped).strip()
                by_text[text] = by_text[text][:max_chunks]
    chunk_count = max(len(c) for by_text in chunked for c in by_text.values())
    dtype = views[-1].text_encoder.dtype
    per_text: dict[str, list[torch.Tensor]] = {text: [] for text in texts}
    pooled: dict[str, torch.Tensor] = {}
    for index in range(chunk_count):
        columns = []
        for view, by_text in zip(views, chunked):
            blank = empty(view)
            rows = [by_text[t][index] if index < len(by_text[t]) else blank for t in texts]
            hidden, view_pooled = encode_rows_xl(view, rows)
            columns.append(emphasis(hidden, rows, [counts[t] for t in texts], dtype))
            if index == 0 and view_pooled is not None:
                # A1111 keeps the first chunk's pooled vector, unweighted.
                pooled = {text: view_pooled[k : k + 1].to(dtype) for k, text in enumerate(texts)}
        for k, text in enumerate(texts):
            per_text[text].append(torch.cat([column[k] for column in columns], dim=-1))
    encoded = {text: torch.cat(parts, dim=1) for text, parts in per_text.items()}
    if all(text == "" for text in texts):
        encoded = {text: torch.zeros_like(z) for text, z in encoded.items()}
        pooled = {text: torch.zeros_like(p) for text, p in pooled.items()}
    return (
        [(end, encoded[text]) for end, text in schedule],
        [(end, pooled[text]) for end, text in schedule],
        cut,
    )


def encode_empty_xl(
    pipe: DiffusionPipeline, empty: Callable[[EncoderView], Chunk]
) -> torch.Tensor:
    """The empty prompt's embeddings (1, 77, dim), what shorter prompts are padded with
    (A1111's cond_stage_model_empty_prompt; not zeroed: it is not a negative prompt)."""
    views = encoder_views(pipe)
    dtype = views[-1].text_encoder.dtype
    return torch.cat([encode_rows_xl(view, [empty(view)])[0].to(dtype) for view in views], dim=-1)


def sdxl_size_kwargs(pipe: DiffusionPipeline, width: int, height: int) -> dict:
    """SDXL's size conditioning as A1111 sets it (original = target = the image's size, crop
    0,0; the refiner's aesthetic scores); {} for other pipelines."""
    if not is_sdxl(pipe):
        return {}
    size = (height, width)
    kwargs: dict = {"original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}
    if getattr(pipe.config, "requires_aesthetics_score", False):
        kwargs["aesthetic_score"] = REFINER_AESTHETIC_SCORE
        kwargs["negative_aesthetic_score"] = REFINER_NEGATIVE_AESTHETIC_SCORE
    return kwargs


def sdxl_time_ids(pipe: DiffusionPipeline, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SDXL's size conditioning of one (cond, uncond) row pair, (1, n) each, as A1111's
    sd_models_xl.get_learned_conditioning sets it (and diffusers' _get_add_time_ids lays it
    out): original size and target size both the image's (height, width), crop 0,0; the
    refiner's original size, crop and aesthetic score, 6.0 for the cond and 2.5 for the
    uncond. None for a pipeline without added conditioning."""
    if not is_sdxl(pipe):
        return None
    crop = [0, 0]
    if _reads_aesthetic_score(pipe):
        cond = [height, width, *crop, REFINER_AESTHETIC_SCORE]
        uncond = [height, width, *crop, REFINER_NEGATIVE_AESTHETIC_SCORE]
    else:
        cond = uncond = [height, width, *crop, height, width]
    return torch.tensor([cond], dtype=torch.float32), torch.tensor([uncond], dtype=torch.float32)


# The refiner's time ids: original size (2), crop (2) and the aesthetic score; the base's six
# have the target size (2) instead of the score.
REFINER_TIME_IDS = 5


def _reads_aesthetic_score(pipe: DiffusionPipeline) -> bool:
    """Whether the UNet is conditioned on an aesthetic score (the refiner), read from what its
    added embedding takes: one Fourier embedding per time id beside the pooled vector."""
    config = pipe.unet.config
    pooled = pipe.text_encoder_2.config.projection_dim
    time_ids = (config.projection_class_embeddings_input_dim - pooled) // config.addition_time_embed_dim
    return time_ids == REFINER_TIME_IDS
