"""AND (composable diffusion) as A1111 1.10 does it: the parse, the bot's refusal of a weight
that is not a number, token counts, and the worker's combination of noise predictions.

A1111's get_multicond_prompt_list splits the positive prompt at each whole uppercase AND and
reads a ":number" at the end of each part as its weight; combine_denoised then takes
uncond + sum_i w_i * cfg * (cond_i - uncond).
"""

from __future__ import annotations

import random
import re

import pytest

from bot.errors import InvalidOption
from bot.prompts.checks import check_prompt_texts
from bot.prompts.tokens import longest_and_part
from inference.common.prompt_parser import and_weight_problem, composable_prompts, is_composable
from tests.test_bot_prompt_tools import fields_of, refused

# A1111 1.10 modules/prompt_parser.py, verbatim: the reference the parser is checked against.
A1111_RE_AND = re.compile(r"\bAND\b")
A1111_RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def a1111_multicond(prompt: str) -> list[tuple[str, float]]:
    """A1111's get_multicond_prompt_list for one prompt, as (text, weight) pairs."""
    parts = []
    for subprompt in A1111_RE_AND.split(prompt):
        match = A1111_RE_WEIGHT.search(subprompt)
        text, weight = match.groups() if match is not None else (subprompt, 1.0)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


# --- the parse -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a AND b", [("a", 1.0), (" b", 1.0)]),
        ("a AND b :0.5", [("a", 1.0), (" b", 0.5)]),
        ("a AND b:-1", [("a", 1.0), (" b", -1.0)]),
        ("a AND", [("a", 1.0), ("", 1.0)]),
        ("a and b", [("a and b", 1.0)]),  # lowercase: text
        ("ANDROID AND BANDAGE", [("ANDROID", 1.0), (" BANDAGE", 1.0)]),  # whole words only
        ("a cat AND a dog : 0.5  ", [("a cat", 1.0), (" a dog", 0.5)]),  # spaces around the weight
        ("a AND b :+.5 AND c:2.", [("a", 1.0), (" b", 0.5), (" c", 2.0)]),
        ("a AND b :x", [("a", 1.0), (" b :x", 1.0)]),  # not a number: A1111 keeps it as text
        ("a AND b :1e3", [("a", 1.0), (" b :1e3", 1.0)]),  # no exponent in A1111's number
        ("(cat:1.2) AND [a:b:0.5]", [("(cat:1.2)", 1.0), (" [a:b:0.5]", 1.0)]),
        ("a cat :0.5", [("a cat", 0.5)]),  # no AND: still A1111's weight of the whole prompt
        ("a cat", [("a cat", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_composable_prompts_follow_a1111(prompt, expected):
    assert composable_prompts(prompt) == expected == a1111_multicond(prompt)


def test_composable_prompts_equal_a1111s_regexes_on_fuzzed_prompts():
    alphabet = list("ab :.-+1 05\n\tAND()[]\u00a0e")
    rng = random.Random(28)
    for _ in range(20000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert composable_prompts(prompt) == a1111_multicond(prompt), repr(prompt)


def test_long_whitespace_does_not_stall_the_parse():
    # A1111's lazy regex backtracks over whitespace runs; ours reads the same meaning directly.
    prompt = "a" + " " * 20000 + "b AND c" + "\n" * 20000 + ":0.5"
    assert composable_prompts(prompt) == [("a" + " " * 20000 + "b", 1.0), (" c", 0.5)]


def test_only_and_or_a_weight_makes_a_prompt_composable():
    assert not is_composable("a cat, (fluffy:1.2), [day:night:0.5]")
    assert not is_composable("a cat :1")
    assert is_composable("a cat AND a dog")
    assert is_composable("a cat :0.5")


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("a cat AND a dog :high", "the weight `high` of `a dog :high` is not a number"),
        ("a cat :x AND a dog", "the weight `x` of `a cat :x` is not a number"),
        ("a cat AND a dog :0.5.5", "the weight `0.5.5`"),
        ("a cat AND a dog :1e3", "the weight `1e3`"),
        ("a cat AND a dog:", "`a dog:` ends in `:` and no weight"),
    ],
)
def test_a_weight_that_is_not_a_number_is_named(prompt, named):
    assert named in and_weight_problem(prompt)
    with pytest.raises(InvalidOption, match="AND can't be read in this prompt: " + re.escape(named)):
        check_prompt_texts(_no_networks(), prompt, "")


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat :x",  # no AND: A1111's plain text
        "a cat AND a dog :0.5",
        "a cat AND a (dog:1.3)",
        "a cat AND [a dog:a wolf:0.5]",
        "a cat AND a dog, style: watercolor",  # a word after ": ": text
        "a cat AND a dog : high",
        "a cat AND",
    ],
)
def test_weights_and_text_that_are_fine(prompt):
    assert and_weight_problem(prompt) is None


def test_and_is_checked_in_the_positive_prompt_only():
    check_prompt_texts(_no_networks(), "a cat", "blurry AND ugly :x")  # a negative is plain text


def _no_networks():
    from bot.config import PromptSettings

    return PromptSettings()


def test_tokens_count_the_longest_part():
    long_part = " a castle on a hill with a moat and towers"
    assert longest_and_part("a cat AND" + long_part + " :0.5", 20) == long_part
    assert longest_and_part("a cat <lora:x:1> :0.5 AND a dog", 20) == "a cat"  # tag gone, weight read
    assert longest_and_part("a cat :0.5", 20) == "a cat :0.5"  # no AND: counted as today


# --- through the bot -------------------------------------------------------------------------


async def test_the_bot_refuses_a_bad_and_weight_privately_and_counts_the_longest_part(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a cat AND a dog :heavy", count=1, steps=1)
    await refused(harness, result, "AND can't be read in this prompt: the weight `heavy` of `a dog :heavy` is not a number")
    assert await harness.job_count() == 0

    prompt = "a cat AND a castle on a hill with a moat :0.5"
    result = await alice.slash(harness.channel, "imagine", prompt=prompt, count=1, steps=1)
    assert result.acknowledged and not result.ephemeral
    assert fields_of(harness.first_response()["embeds"][0])["Tokens"] == "9 (1 chunk)"  # the whole prompt: 16
    job = await harness.latest_job(alice.id)
    assert job.prompt == prompt
    await harness.wait_for_job(job.id)
