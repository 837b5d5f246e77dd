"""A1111's 75-token chunks of a weighted prompt, torch-free (the bot counts tokens with it).

CLIP reads 77 tokens: a start token, 75 of the prompt, an end token. A1111 lifts that limit by
cutting a prompt into chunks of 75 tokens, encoding each chunk on its own and concatenating
the results (modules/sd_hijack_clip.py, FrozenCLIPEmbedderWithCustomWords.tokenize_line and
process_tokens). This module does the cutting, exactly as A1111 does:

- ``BREAK`` ends the current chunk there (padding the rest);
- when a chunk is full and a comma was among its last 20 tokens, the chunk ends after that
  comma and the tokens after it move on to the next chunk, so phrases stay whole;
- every chunk is padded with the end token to 75 and wrapped in start/end tokens; for models
  whose padding token differs (SD 2.x) everything after the first end token is padding;
- an empty prompt is one chunk of padding.

Usage, with any tokenizer that returns ids without start/end tokens::

    runs = weighted_tokens(prompt_text, tokenize)    # attention runs, tokenized
    chunks = chunk_tokens(runs, comma_id, bos_id, eos_id, pad_id)
    count = count_tokens(runs, comma_id)              # what A1111 shows, e.g. 80 (of 150)

A1111's textual-inversion bookkeeping (keeping a multi-vector embedding inside one chunk) is
not reproduced: here an embedding is ordinary added tokens (diffusers' way) and may straddle
two chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference.common.prompt_parser import is_break, parse_prompt_attention

CHUNK_LENGTH = 75  # prompt tokens per chunk; CLIP's 77 minus start and end
COMMA_PADDING_BACKTRACK = 20  # A1111's default for opts.comma_padding_backtrack

# One attention run as token ids and its weight; ids None marks a BREAK.
Run = tuple[Sequence[int] | None, float]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One encoder input: ``chunk_length + 2`` ids and a weight per id (1.0 where no text)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    length: int  # how many of the ids after the start token are the prompt's, not padding

    @property
    def tokens(self) -> tuple[int, ...]:
        """The prompt's own tokens in this chunk."""
        return self.ids[1 : 1 + self.length]


def weighted_tokens(text: str, tokenize: Callable[[str], Sequence[int]]) -> list[Run]:
    """``text`` parsed for attention (A1111's parse_prompt_attention), each run tokenized.

    ``tokenize`` turns text into token ids without start or end tokens.
    """
    return [
        (None, weight) if is_break(part, weight) else (list(tokenize(part)), weight)
        for part, weight in parse_prompt_attention(text)
    ]


def _split(
    runs: Sequence[Run], comma_id: int | None, chunk_length: int, backtrack: int
) -> tuple[list[tuple[list[int], list[float]]], int]:
    """The chunks' contents before padding, and A1111's token count: A1111's tokenize_line."""
    chunks: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    weights: list[float] = []
    count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal tokens, weights, count, last_comma
        # A full chunk counts 75 even when a comma or BREAK ended it early: the padding is
        # part of what the encoder reads. Only the last chunk counts its own tokens.
        count += len(tokens) if is_last else chunk_length
        chunks.append((tokens, weights))
        tokens, weights, last_comma = [], [], -1

    for ids, weight in runs:
        if ids is None:
            next_chunk()
            continue
        for token in ids:
            if token == comma_id:
                last_comma = len(tokens)
            elif (
                backtrack != 0
                and len(tokens) == chunk_length
                and last_comma != -1
                and len(tokens) - last_comma <= backtrack
            ):
                # Full, and a comma is near the end: cut after the comma, carry the rest over.
                cut = last_comma + 1
                moved_tokens, moved_weights = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                next_chunk()
                tokens, weights = moved_tokens, moved_weights
            if len(tokens) == chunk_length:
                next_chunk()
            tokens.append(token)
            weights.append(weight)

    if tokens or not chunks:
        next_chunk(is_last=True)
    return chunks, count


def _wrap(
    tokens: list[int], weights: list[float], bos_id: int, eos_id: int, pad_id: int | None,
    chunk_length: int,
) -> Chunk:
    fill = chunk_length - len(tokens)
    ids = [bos_id, *tokens, *[eos_id] * fill, eos_id]
    if pad_id is not None and pad_id != eos_id:
        # A1111's process_tokens: for SD 2.x everything after the first end token is padding
        # (the token CLIP was trained with, which diffusers' tokenizer pads with too).
        first_end = ids.index(eos_id)
        ids[first_end + 1 :] = [pad_id] * (len(ids) - first_end - 1)
    return Chunk(tuple(ids), (1.0, *weights, *[1.0] * (fill + 1)), len(tokens))


def chunk_tokens(
    runs: Sequence[Run],
    comma_id: int | None,
    bos_id: int,
    eos_id: int,
    pad_id: int | None = None,
    chunk_length: int = CHUNK_LENGTH,
    backtrack: int = COMMA_PADDING_BACKTRACK,
) -> list[Chunk]:
    """The prompt's chunks, each ``chunk_length + 2`` ids, A1111's exact cut (see module doc).

    ``comma_id`` is the tokenizer's id of "," (CLIP: ``",</w>"``; None turns the comma rule
    off, as does ``backtrack`` 0). ``pad_id`` None or equal to ``eos_id`` pads with the end
    token, as SD 1.x does.
    """
    contents, _ = _split(runs, comma_id, chunk_length, backtrack)
    return [_wrap(t, w, bos_id, eos_id, pad_id, chunk_length) for t, w in contents]


def empty_chunk(
    bos_id: int, eos_id: int, pad_id: int | None = None, chunk_length: int = CHUNK_LENGTH
) -> Chunk:
    """A chunk of nothing (A1111's empty_chunk): what a shorter prompt is padded with."""
    return _wrap([], [], bos_id, eos_id, pad_id, chunk_length)


def count_tokens(
    runs: Sequence[Run],
    comma_id: int | None,
    chunk_length: int = CHUNK_LENGTH,
    backtrack: int = COMMA_PADDING_BACKTRACK,
) -> int:
    """A1111's token count: 75 for every chunk but the last, plus the last one's tokens.

    A1111 shows it as "count/limit", the limit being the next multiple of 75 at or above it
    (at least 75).
    """
    return _split(runs, comma_id, chunk_length, backtrack)[1]
