"""Blocked-term matching (bot.policy.rules) and the per-role limits (bot.policy.store)."""

from __future__ import annotations

import pytest

from bot.policy.rules import (
    MAX_PATTERN_LENGTH,
    InvalidPattern,
    Term,
    TermKind,
    TermScope,
    compile_term,
    find_hits,
)
from bot.policy.store import Limits, RoleLimits, effective_limits


def word(pattern: str, scope: str = "banned") -> Term:
    return Term(TermScope(scope), TermKind.WORD, pattern)


def regex(pattern: str, scope: str = "banned") -> Term:
    return Term(TermScope(scope), TermKind.REGEX, pattern)


def matched(text: str, *terms: Term, age_restricted: bool = False) -> list[str]:
    return [hit.term.pattern for hit in find_hits(text, list(terms), age_restricted=age_restricted)]


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("a cat on a mat", True),
        ("a CAT", True),
        ("a (cat:1.3) in [cat|dog]", True),
        ("cat_girl, 1girl", True),  # underscores separate words in Danbooru-style tags
        (r"a \(cat\)", True),
        # Read as it looks: a zero-width space, a soft hyphen or fullwidth letters hid the word.
        ("a c\u200bat", True),
        ("a c\u00adat", True),
        ("a \uff43\uff41\uff54", True),
        ("a ca\u0301t", False),  # an accent makes another word (a term does not strip them)
        ("category, concatenate, cats", False),  # whole words only; plurals are their own term
        ("cat2", False),
        ("", False),
    ],
)
def test_words_match_whole_words_through_a1111_syntax(text, hit):
    assert matched(text, word("cat")) == (["cat"] if hit else [])


def test_phrases_match_across_spaces_and_underscores_in_any_case():
    assert matched("a Big   Cat", word("big cat")) == ["big cat"]
    assert matched("big_cat", word("big cat")) == ["big cat"]
    assert matched("big, cat", word("big cat")) == []


def test_regex_terms_match_anywhere_case_insensitively():
    assert matched("a D0GGG here", regex(r"d[o0]g+")) == [r"d[o0]g+"]
    assert matched("underdog", regex(r"d[o0]g+")) == [r"d[o0]g+"]
    assert matched("a cat", regex(r"d[o0]g+")) == []
    assert matched("a d\u200b0g", regex(r"d[o0]g+")) == [r"d[o0]g+"]
    [hit] = find_hits("a D0GGG here", [regex(r"d[o0]g+")], age_restricted=False)
    assert hit.matched == "D0GGG" and "`D0GGG`" in hit.describe()


def test_nsfw_terms_apply_only_outside_age_restricted_channels():
    terms = [word("nude", "nsfw"), word("gore")]
    assert matched("nude, gore", *terms) == ["nude", "gore"]
    assert matched("nude, gore", *terms, age_restricted=True) == ["gore"]


def test_several_texts_one_hit_per_term():
    hits = find_hits(["a cat", "another cat", "no"], [word("cat"), word("dog")], age_restricted=False)
    assert [(hit.term.pattern, hit.matched) for hit in hits] == [("cat", "cat")]


def test_bad_patterns_are_refused_when_set_with_the_compilers_message():
    with pytest.raises(InvalidPattern, match="does not compile: missing \\)"):
        compile_term("regex", "(unclosed")
    with pytest.raises(InvalidPattern, match="does not compile"):
        compile_term("regex", "a{2,1}")
    with pytest.raises(InvalidPattern, match="empty"):
        compile_term("word", " _ ")
    with pytest.raises(InvalidPattern, match=f"the limit is {MAX_PATTERN_LENGTH}"):
        compile_term("regex", "a" * (MAX_PATTERN_LENGTH + 1))
    # Words are escaped, never compiled as expressions.
    assert matched("c++ code", word("c++")) == ["c++"]
    assert matched("c code", word("c++")) == []


def test_a_stored_pattern_that_does_not_compile_is_skipped_not_raised():
    assert matched("a cat", regex("(unclosed"), word("cat")) == ["cat"]


def test_catastrophic_backtracking_times_out_and_fails_closed():
    slow = regex(r"(\w+\s?)+$")
    text = "a" * 5000 + "!"
    [hit] = find_hits(text, [slow], age_restricted=False)
    assert hit.timed_out and "took too long" in hit.describe()


def test_the_most_generous_role_wins_and_zero_is_no_limit():
    base = Limits(images_per_day=20, cooldown_s=30, max_pending=3)
    overrides = [
        RoleLimits(1, images_per_day=50, cooldown_s=None, max_pending=None),
        RoleLimits(2, images_per_day=0, cooldown_s=60, max_pending=None),
        RoleLimits(3, images_per_day=5, cooldown_s=10, max_pending=1),  # a stricter "newcomer" role
    ]
    assert effective_limits(base, overrides, set()) == base
    assert effective_limits(base, overrides, {1}) == Limits(50, 30, 3)
    assert effective_limits(base, overrides, {1, 2}) == Limits(0, 60, 3)
    assert effective_limits(base, overrides, {3}) == Limits(5, 10, 1)
    assert effective_limits(base, overrides, {2, 3}) == Limits(0, 60, 1)
