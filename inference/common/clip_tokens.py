"""CLIP's tokenizer in pure Python, for counting prompt tokens on the bot side.

The bot never imports torch or transformers (they take seconds and gigabytes to load), yet it
shows each prompt's token count the way AUTOMATIC1111 does, and warns when a model reads only
the first 75 tokens. This module reproduces `transformers.CLIPTokenizer` over the vocabulary
bundled in inference/assets/clip_tokenizer (the one SD 1.x/2.x and SDXL's first encoder use);
tests/test_clip_tokens.py checks it gives the same ids on a corpus of prompts.

What CLIPTokenizer does, step by step (tokenizers' normalizer, pre-tokenizer and BPE model):
1. the special tokens `<|startoftext|>` / `<|endoftext|>`, written as they are, are their ids;
2. NFC, every run of Unicode white space becomes one space, then each character is lowercased;
3. the text is split into words by CLIP's pattern `'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|
   [^\\s\\p{L}\\p{N}]+` (white space between words is dropped);
4. each word's UTF-8 bytes become GPT-2's printable byte characters, the last one gets `</w>`,
   and the merges are applied lowest rank first.
`re` has no \\p{L}, so step 3 is a small scanner over Unicode categories instead of a regex.

count_prompt_tokens follows A1111's token counter (modules/ui.py update_token_counter): LoRA
and other <name:...> tags are taken out, every text of the prompt's [from:to:when] and [a|b]
schedules is counted, and the largest count wins, chunked 75 tokens at a time with BREAK and
comma backtracking (inference.common.prompt_chunks). AND is not split off: the worker encodes it as
text, so it is counted as text.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from functools import cache, lru_cache
from pathlib import Path

from inference.common.prompt_chunks import CHUNK_LENGTH, chunk_tokens, count_tokens, weighted_tokens
from inference.common.prompt_parser import prompt_schedules

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# A1111's extra-network tags (<lora:name:1>, <hypernet:...>), which are not encoded as text.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
# Unicode's White_Space property, which the tokenizers library's \s means; Python's str.isspace
# differs (it counts U+001C..U+001F and not U+0085's neighbours the same way).
_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


class ClipTokenizer:
    """CLIPTokenizer's ids for a text, and the text of ids (to say which words a cut drops)."""

    def __init__(self, folder: Path = ASSETS) -> None:
        self.vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        self.ranks: dict[tuple[str, ...], int] = {pair: rank for rank, pair in enumerate(merges)}
        self.bos_id, self.eos_id = self.vocab[BOS], self.vocab[EOS]
        self.comma_id = self.vocab[",</w>"]
        self.id_to_token = {token_id: token for token, token_id in self.vocab.items()}
        self.byte_chars = _bytes_to_unicode()
        self.char_bytes = {char: byte for byte, char in self.byte_chars.items()}
        self._bpe = lru_cache(maxsize=65536)(self._bpe_word)

    def encode(self, text: str) -> list[int]:
        """Ids with the start and end tokens, as `CLIPTokenizer(text).input_ids`."""
        return [self.bos_id, *self.tokenize(text), self.eos_id]

    def tokenize(self, text: str) -> list[int]:
        """Ids without the start and end tokens (`add_special_tokens=False`), as A1111 asks."""
        ids: list[int] = []
        for piece, special in _split_special(text):
            if special:
                ids.append(self.vocab[piece])
                continue
            for word in _words(_normalize(piece)):
                encoded = "".join(self.byte_chars[b] for b in word.encode("utf-8"))
                ids.extend(self.vocab[token] for token in self._bpe(encoded))
        return ids

    def decode(self, ids: list[int]) -> str:
        """The (lowercased) text of ids: a word ends where a token ends in `</w>`."""
        data = bytearray()
        for token in (self.id_to_token[i] for i in ids if i not in (self.bos_id, self.eos_id)):
            word = token.removesuffix("</w>")
            data.extend(self.char_bytes[c] for c in word)
            if word != token:
                data.extend(b" ")
        return data.decode("utf-8", errors="replace").strip()

    def _bpe_word(self, word: str) -> tuple[str, ...]:
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, math.inf))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)


def _split_special(text: str) -> list[tuple[str, bool]]:
    """The text around the special tokens written verbatim (tokenizers matches them first)."""
    pieces: list[tuple[str, bool]] = []
    start = i = 0
    while i < len(text):
        special = next((s for s in (BOS, EOS) if text.startswith(s, i)), None)
        if special is None:
            i += 1
            continue
        if start < i:
            pieces.append((text[start:i], False))
        pieces.append((special, True))
        i = start = i + len(special)
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    for char in text:
        if char in _WHITE_SPACE:
            if not out or out[-1] != " ":
                out.append(" ")
        else:
            # Character by character, as tokenizers' Lowercase: no final-sigma rule.
            out.append(char.lower())
    return "".join(out)


def _kind(char: str) -> str:
    if char in _WHITE_SPACE:
        return "space"
    category = unicodedata.category(char)[0]
    return {"L": "letter", "N": "number"}.get(category, "other")


def _words(text: str) -> list[str]:
    """CLIP's split pattern, leftmost match first, alternatives tried in order."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        for special in (BOS, EOS):  # the pattern's first alternatives (after lowercasing)
            if text.startswith(special, i):
                # One word to CLIP's pattern, which the byte-level step splits again by
                # GPT-2's pattern into "<|", the letters and "|>" (an identity on every other word).
                words.extend(("<|", special[2:-2], "|>"))
                i += len(special)
                break
        else:
            char = text[i]
            if char == "'":
                contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i + 1)), None)
                if contraction is not None:
                    words.append("'" + contraction)
                    i += 1 + len(contraction)
                    continue
            kind = _kind(char)
            if kind == "space":
                i += 1
                continue
            end = i + 1
            if kind == "letter":
                while end < n and _kind(text[end]) == "letter":
                    end += 1
            elif kind == "other":
                while end < n and _kind(text[end]) == "other":
                    end += 1
            words.append(text[i:end])
            i = end
    return words


@cache
def tokenizer() -> ClipTokenizer:
    """The bundled tokenizer, loaded once (about a fifth of a second)."""
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
