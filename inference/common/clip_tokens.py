"""CLIP's tokenizer for counting prompt tokens on the bot side, built with `tokenizers`.

The bot never imports torch or transformers (they take seconds and gigabytes to load), yet it
shows each prompt's token count the way AUTOMATIC1111 does, and warns when a model reads only
the first 75 tokens. `tokenizers` (the Rust library transformers itself runs, and a dependency
of it) needs neither: this module builds, from the vocabulary bundled in
inference/assets/clip_tokenizer (the one SD 1.x/2.x and SDXL's first encoder use), the same
pipeline `transformers.CLIPTokenizer` builds (its converter, CLIPConverter):
1. the special tokens `<|startoftext|>` / `<|endoftext|>`, written as they are, are their ids;
2. NFC, every run of white space becomes one space, then the text is lowercased (what
   CLIPTokenizer does when ftfy is absent);
3. the text is split into words by CLIP's pattern (white space between words is dropped);
4. each word's UTF-8 bytes become GPT-2's printable byte characters, the last one gets `</w>`,
   and the merges are applied lowest rank first; a piece the vocabulary lacks is `<|endoftext|>`.
tests/test_clip_tokens.py checks it gives transformers' ids on a corpus of prompts.

count_prompt_tokens follows A1111's token counter (modules/ui.py update_token_counter): LoRA
and other <name:...> tags are taken out, every text of the prompt's [from:to:when] and [a|b]
schedules is counted, and the largest count wins, chunked 75 tokens at a time with BREAK and
comma backtracking (inference.common.prompt_chunks). AND is not split off: the worker encodes it as
text, so it is counted as text.
"""

from __future__ import annotations

import math
import re
from functools import cache, lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

from inference.common.prompt_chunks import CHUNK_LENGTH, chunk_tokens, count_tokens, weighted_tokens
from inference.common.prompt_parser import prompt_schedules

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's word pattern as CLIPTokenizer writes it: the special tokens (once lowercased text
# spells them), contractions, runs of letters, single digits, runs of anything else.
_CLIP_WORDS = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# A1111's extra-network tags (<lora:name:1>, <hypernet:...>), which are not encoded as text.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def build_clip_tokenizer(folder: Path = ASSETS) -> Tokenizer:
    """The `tokenizers` pipeline transformers' CLIPTokenizer runs, from vocab.json and merges.txt."""
    vocab, merges = BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    model = BPE(
        vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD,
        fuse_unk=False, unk_token=EOS,
    )
    clip = Tokenizer(model)
    clip.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    clip.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    clip.decoder = decoders.ByteLevel()
    clip.add_special_tokens([BOS, EOS])  # matched in the raw text, before normalisation
    return clip


class ClipTokenizer:
    """CLIPTokenizer's ids for a text, and the text of ids (to say which words a cut drops)."""

    def __init__(self, folder: Path = ASSETS) -> None:
        self.clip = build_clip_tokenizer(folder)
        self.bos_id, self.eos_id = self.clip.token_to_id(BOS), self.clip.token_to_id(EOS)
        self.comma_id = self.clip.token_to_id("," + END_OF_WORD)

    def encode(self, text: str) -> list[int]:
        """Ids with the start and end tokens, as `CLIPTokenizer(text).input_ids`."""
        return [self.bos_id, *self.tokenize(text), self.eos_id]

    def tokenize(self, text: str) -> list[int]:
        """Ids without the start and end tokens (`add_special_tokens=False`), as A1111 asks."""
        return self.clip.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """The (lowercased) text of ids, without the start and end tokens: a word ends where
        a token ends in `</w>`."""
        return self.clip.decode(ids, skip_special_tokens=True).replace(END_OF_WORD, " ").strip()


@cache
def tokenizer() -> ClipTokenizer:
    """The bundled tokenizer, loaded once (the bot loads it at start-up, off the event loop)."""
    return ClipTokenizer()


def _longest_text(prompt: str, steps: int) -> tuple[str, int]:
    """The text of the prompt's schedules with the most tokens, and A1111's count of it."""
    text = _EXTRA_NETWORK.sub("", prompt)
    clip = tokenizer()
    counted = [
        (part, count_tokens(weighted_tokens(part, clip.tokenize), clip.comma_id))
        for _, part in prompt_schedules(text, max(1, steps))
    ]
    return max(counted, key=lambda item: item[1])


@lru_cache(maxsize=4096)
def count_prompt_tokens(prompt: str, steps: int) -> tuple[int, int]:
    """A1111's token count of a prompt and how many 75-token chunks encode it.

    The count is 75 for each chunk but the last plus the last one's tokens, as A1111 shows it
    (so a BREAK or a comma that ends a chunk early counts the padding it leaves).
    """
    _, tokens = _longest_text(prompt, steps)
    return tokens, max(1, math.ceil(tokens / CHUNK_LENGTH))


def words_past_first_chunk(prompt: str, steps: int) -> str:
    """What a model that reads one chunk (75 tokens) never sees: the text of the later chunks,
    lowercased as the tokenizer sees it; empty when the prompt fits."""
    text, _ = _longest_text(prompt, steps)
    clip = tokenizer()
    chunks = chunk_tokens(weighted_tokens(text, clip.tokenize), clip.comma_id, clip.bos_id, clip.eos_id)
    words = clip.decode([token for chunk in chunks[1:] for token in chunk.tokens])
    return re.sub(r" ([,.;:!?])", r"\1", words)  # the decoder spaces punctuation off its word
