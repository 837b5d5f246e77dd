"""The bot's CLIP tokenizer (built with `tokenizers`) against transformers' CLIPTokenizer, and A1111's
token count built on it."""

from __future__ import annotations

import pytest

from inference.common.clip_tokens import ASSETS, ClipTokenizer, count_prompt_tokens, words_past_first_chunk

CORPUS = [
    "a lighthouse at dusk",
    "masterpiece, best quality, (ultra detailed:1.2), 8k uhd, [blurry], \\(escaped\\)",
    "A Photo Of A CAT's hat, isn't it? It's    fine\n\tyes, we'll see; they'd've",
    "café naïve résumé Ångström e\u0301cole (NFC)",
    "日本語のプロンプト、猫と犬。한국어 프롬프트",
    "🐱🐶 emoji 👩‍👩‍👧 family ❤️ flags 🇫🇷 skin 👍🏽",
    "[[red:blue:0.5]] {a|b} <lora:foo_bar:0.8> BREAK AND",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ İstanbul ß ẞ Ǆ ﬁne",
    "123456 3.14 1,000,000 x²³ ½ ⅷ ٣",
    "...!!!???  ''s 'S 'LL don't",
    "<|startoftext|>hi<|endoftext|> <|ENDOFTEXT|>!x <|startoftext|",
    "tab\x1cfs\x85nel\u3000ideographic a\u00a0b\u2003c\u200bzero\u200dwidth",
    "@#$%^&*_+=~`|\\/<>",
    "𝕳𝖊𝖑𝖑𝖔 ﾊﾝｶｸ عربى текст ελληνικά a-b_c/d.e",
    "",
    "   ",
    "portrait of a woman, by greg rutkowski and alphonse mucha, trending on artstation, "
    "highly detailed, sharp focus, octane render, volumetric lighting, 35mm, f/1.8",
]


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(ASSETS))


def test_same_ids_as_transformers(reference):
    ours = ClipTokenizer()
    for text in CORPUS:
        assert ours.encode(text) == reference(text).input_ids, text
        assert ours.tokenize(text) == reference(text, add_special_tokens=False).input_ids, text
    ids = ours.tokenize("masterpiece, a very detailed café 🐱")
    assert ours.decode(ids) == reference.decode(ids) == "masterpiece , a very detailed café 🐱"


def test_a1111_token_counts():
    assert count_prompt_tokens("a lighthouse at dusk", 20) == (4, 1)
    assert count_prompt_tokens("", 20) == (0, 1)
    # LoRA tags are not text; BREAK ends a chunk, and the padding it leaves counts.
    assert count_prompt_tokens("<lora:style:0.8> a lighthouse", 20) == (2, 1)
    assert count_prompt_tokens("a BREAK b", 20) == (76, 2)
    # Prompt editing: the longest of the schedule's texts.
    assert count_prompt_tokens("a [cat:very fluffy orange cat:0.5] sitting", 20) == (6, 1)
    # A comma near the end of a full chunk ends it there: the words after it move on.
    phrase = "a very detailed castle on a hill"  # 7 tokens, and the comma: 8
    long = ", ".join([phrase] * 12)
    tokens, chunks = count_prompt_tokens(long, 20)
    assert chunks == 2 and tokens == 75 + (8 * 12 - 1 - 72)
    assert words_past_first_chunk(long, 20) == ", ".join([phrase] * 3)
    assert words_past_first_chunk("a lighthouse", 20) == ""
