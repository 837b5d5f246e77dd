"""Build the CLIP BPE tokenizer files that transformers' CLIPTokenizer loads.

The tiny test model needs a real CLIP tokenizer, and the test machines have no internet, so the
files are built offline from the BPE merges that open_clip ships inside its wheel (MIT). The
vocabulary is laid out exactly as OpenAI's CLIP ``simple_tokenizer`` does it, which is what
Stable Diffusion's tokenizer on the hub holds, so token ids match the real thing.

Usage: python inference/assets/build_clip_tokenizer.py WHEEL [OUT_DIR]
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps 49152 - 256 byte tokens - 2 special tokens merges; line 0 is a version header.
MERGE_COUNT = 49152 - 256 - 2
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (same order as simple_tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    char_codes = printable[:]
    shifted = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            char_codes.append(256 + shifted)
            shifted += 1
    return dict(zip(byte_values, (chr(code) for code in char_codes)))


def read_merges(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(BPE_MEMBER)).decode("utf-8")
    merges = text.split("\n")[1 : MERGE_COUNT + 1]
    if len(merges) != MERGE_COUNT:
        raise ValueError(f"{wheel}: expected {MERGE_COUNT} merges, found {len(merges)}")
    return merges


def build_vocab(merges: list[str]) -> dict[str, int]:
    tokens = list(bytes_to_unicode().values())
    tokens += [token + "</w>" for token in tokens]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer(wheel: Path, out_dir: Path) -> None:
    merges = read_merges(wheel)
    vocab = build_vocab(merges)
    if len(vocab) != 49408:
        raise ValueError(f"expected 49408 vocabulary entries, built {len(vocab)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # CLIPTokenizer skips the first line of merges.txt, as CLIP does with the .gz file.
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special_tokens = {
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        # Stable Diffusion 1.x pads with the end token (2.x uses "!"); the 1.x choice is kept.
        "pad_token": END_TOKEN,
    }
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special_tokens, indent=2) + "\n", encoding="utf-8"
    )
    config = {
        **special_tokens,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wheel = Path(argv[1])
    out_dir = Path(argv[2]) if len(argv) == 3 else Path(__file__).parent / "clip_tokenizer"
    write_tokenizer(wheel, out_dir)
    print(f"wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
