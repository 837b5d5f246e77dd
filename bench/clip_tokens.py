"""The bot's CLIP token counting: the `tokenizers` pipeline against the pure-Python BPE it replaced.

Both tokenize the same few hundred prompts (generated from a fixed seed: English tags with
weights, schedules, LoRA tags, BREAK and AND, odd white space, and one tag in ten in other
scripts: accents, CJK, emoji); the benchmark checks they give the
same ids (and transformers' CLIPTokenizer's, where transformers is installed), then times
loading each tokenizer, tokenizing every prompt once from a fresh tokenizer (cold: the old BPE
cached each word it merged) and again (warm), and A1111's count of every prompt.

The pure-Python tokenizer is read from git at BASE_COMMIT, the last commit that had it.

    python -m bench.clip_tokens [--prompts 500] [--repeats 5]
"""

from __future__ import annotations

import random
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from bench import common
from inference.common import clip_tokens

BASE_COMMIT = "3698801"
_OLD_PATH = "inference/common/clip_tokens.py"
_ENGLISH = (
    "masterpiece", "best quality", "ultra detailed", "8k uhd", "a lighthouse at dusk", "portrait of a woman",
    "by greg rutkowski", "trending on artstation", "volumetric lighting", "35mm", "f/1.8", "octane render",
    "a cat's hat", "isn't it", "they'd've", "3.14", "1,000,000", "a-b_c/d.e", "sharp focus", "highly detailed",
    "cyberpunk city at night", "watercolor", "photorealistic", "RAW photo", "film grain", "HDR", "bokeh",
    "tab\tline\nbreak", "(escaped\\)", "BREAKfast", "<|endoftext|>",
)
# Text beyond English, drawn for one tag in ten.
_INTERNATIONAL = (
    "café", "naïve résumé", "Ångström", "日本語のプロンプト", "猫と犬", "한국어 프롬프트", "🐱🐶", "👩‍👩‍👧", "❤️",
    "🇫🇷", "ΟΔΟΣ ΣΊΣΥΦΟΣ", "İstanbul", "ß ẞ", "x²³ ½", "текст", "عربى", "a\u00a0b", "ﬁne",
)
_DECORATIONS = (
    lambda tag, rng: tag,
    lambda tag, rng: f"({tag}:{rng.choice((0.8, 1.1, 1.2, 1.5))})",
    lambda tag, rng: f"[{tag}]",
    lambda tag, rng: f"[{tag}:{_tag(rng)}:0.5]",
    lambda tag, rng: f"<lora:{tag.split()[0]}:0.8> {tag}",
    lambda tag, rng: tag.upper(),
)


def _tag(rng: random.Random) -> str:
    return rng.choice(_INTERNATIONAL if rng.random() < 0.1 else _ENGLISH)


def make_prompts(count: int, seed: int = 26) -> list[str]:
    """`count` prompts of 1 to 40 decorated tags, comma-separated, some with BREAK or AND."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        tags = [rng.choice(_DECORATIONS)(_tag(rng), rng) for _ in range(rng.randint(1, 40))]
        if rng.random() < 0.1:
            tags.insert(rng.randrange(len(tags) + 1), rng.choice(("BREAK", "AND")))
        prompts.append(", ".join(tags))
    return prompts


def _best_seconds(function: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def measure(module: types.ModuleType, prompts: list[str], repeats: int) -> dict[str, float]:
    """Seconds (best of `repeats`) to load, tokenize every prompt cold and warm, and count them."""
    load = _best_seconds(module.ClipTokenizer, repeats)
    cold = float("inf")
    for _ in range(repeats):
        fresh = module.ClipTokenizer()
        start = time.perf_counter()
        for prompt in prompts:
            fresh.tokenize(prompt)
        cold = min(cold, time.perf_counter() - start)
    warm = _best_seconds(lambda: [fresh.tokenize(prompt) for prompt in prompts], repeats)
    module.tokenizer()  # loaded once, as the bot does at start-up
    count = module.count_prompt_tokens.__wrapped__  # without the per-prompt result cache
    counting = _best_seconds(lambda: [count(prompt, 20) for prompt in prompts], repeats)
    return {
        "load_s": round(load, 4),
        "tokenize_cold_s": round(cold, 4),
        "tokenize_warm_s": round(warm, 4),
        "count_prompt_tokens_s": round(counting, 4),
        "tokenize_cold_us_per_prompt": round(cold / len(prompts) * 1e6, 1),
    }


def compare_ids(old: types.ModuleType, prompts: list[str]) -> dict[str, Any]:
    """How many prompts both tokenizers (and transformers', where installed) encode alike."""
    new_tokenizer, old_tokenizer = clip_tokens.ClipTokenizer(), old.ClipTokenizer()
    new_ids = [new_tokenizer.encode(prompt) for prompt in prompts]
    same_as_old = sum(ids == old_tokenizer.encode(prompt) for ids, prompt in zip(new_ids, prompts))
    counts_agree = sum(
        clip_tokens.count_prompt_tokens(prompt, 20) == old.count_prompt_tokens(prompt, 20)
        and clip_tokens.words_past_first_chunk(prompt, 20) == old.words_past_first_chunk(prompt, 20)
        for prompt in prompts
    )
    result: dict[str, Any] = {"prompts": len(prompts), "same_ids_as_old": same_as_old, "same_counts_as_old": counts_agree}
    try:
        from transformers import CLIPTokenizer
    except ImportError:
        result["same_ids_as_transformers"] = None
    else:
        reference = CLIPTokenizer.from_pretrained(str(clip_tokens.ASSETS))
        result["same_ids_as_transformers"] = sum(
            ids == reference(prompt).input_ids for ids, prompt in zip(new_ids, prompts)
        )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser("clip_tokens", __doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500, help="how many prompts (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="best of how many runs (default %(default)s)")
    args = parser.parse_args(argv)
    load_average = common.load_average()
    prompts = make_prompts(args.prompts)
    old = common.module_at_commit(_OLD_PATH, BASE_COMMIT, "old_clip_tokens")
    results: dict[str, Any] = {"agreement": compare_ids(old, prompts)}
    results["pure_python"] = measure(old, prompts, args.repeats)
    results["tokenizers"] = measure(clip_tokens, prompts, args.repeats)
    results["speedup"] = {
        key: round(results["pure_python"][key] / results["tokenizers"][key], 2)
        for key in ("load_s", "tokenize_cold_s", "tokenize_warm_s", "count_prompt_tokens_s")
    }
    settings = {
        "prompts": args.prompts, "repeats": args.repeats, "seed": 26, "old_from_commit": BASE_COMMIT,
        "load_average_at_start": load_average,  # other processes on the machine slow both sides
    }
    common.write_result("clip_tokens", args.device, settings, results, args.output_dir)
    common.print_table(
        f"CLIP token counting, {args.prompts} prompts (seconds, best of {args.repeats})",
        ["implementation", *results["tokenizers"]],
        [[name, *results[name].values()] for name in ("pure_python", "tokenizers")],
    )
    print(f"agreement: {results['agreement']}\nspeedup: {results['speedup']}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
