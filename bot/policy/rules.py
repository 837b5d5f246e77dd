"""Blocked terms: which of a server's banned words and regular expressions a text triggers.

Pure functions: no Discord, no database. bot.policy.gate applies them to every prompt,
negative prompt and plot cell, and /style to saved styles; /admin terms uses `compile_term` to
refuse a bad pattern when it is set, so matching itself never meets one.

Kind "word": a whole word or phrase, case-insensitively. A word's edges are letters and digits
only: the underscore counts as a separator, because prompts often write tags as `nude_art`
(Danbooru style), while `cat` still does not match `category` or `cats` (list plurals
separately). A1111's syntax around a word does not hide it: `(nude:1.3)`, `[cat|dog]`,
`\\(cat\\)` and `<lora:x>`-style brackets are all non-letters. The words of a phrase match
across any run of spaces or underscores: "big cat" matches "big  cat" and "big_cat".

Both kinds read the text as it looks (as_read): compatibility forms such as fullwidth letters
("ｇｏｒｅ") read as their plain letters, and invisible format characters (a zero-width
space or a soft hyphen inside a word) are skipped, so neither hides a word from its term.

Kind "regex": a Python regular expression (the `regex` package, compatible with `re`), matched
case-insensitively anywhere in the text (`(?-i:...)` turns that off). A pattern of the kind
that backtracks catastrophically would hang the bot on one prompt, so patterns are bounded in
length and every search runs with a timeout; a search that times out counts as a match
(failing closed: the prompt is refused, naming the pattern so moderators can fix it).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import regex

MAX_PATTERN_LENGTH = 200  # characters of a word, phrase or regex
MATCH_TIMEOUT_S = 0.05  # per pattern and text; a sane pattern takes microseconds
_FLAGS = regex.IGNORECASE | regex.V0  # V0: the semantics of Python's re
_WORD_START = r"(?<![^\W_])"  # not just after a letter or digit (an underscore is an edge)
_WORD_END = r"(?![^\W_])"  # not just before a letter or digit


class TermKind(StrEnum):
    WORD = "word"
    REGEX = "regex"


class TermScope(StrEnum):
    BANNED = "banned"  # everywhere
    NSFW = "nsfw"  # outside age-restricted channels


class InvalidPattern(ValueError):
    """A term that cannot be used; the message says why (the compiler's message for a regex)."""


@dataclass(frozen=True)
class Term:
    scope: TermScope
    kind: TermKind
    pattern: str


@dataclass(frozen=True)
class Hit:
    term: Term
    matched: str  # the text that matched ("" when the search timed out)
    timed_out: bool = False

    def describe(self) -> str:
        if self.timed_out:
            return f"the pattern `{self.term.pattern}` took too long to check (a moderator should simplify it)"
        # A pattern can match a long run of the prompt: quote the start of it.
        matched = self.matched.replace("`", "'")
        matched = matched if len(matched) <= 60 else matched[:59] + "…"
        shown = f"`{matched}`" if self.matched.casefold() != self.term.pattern.casefold() else ""
        what = "word" if self.term.kind == TermKind.WORD else "pattern"
        return f"the {what} `{self.term.pattern}`" + (f" (matched {shown})" if shown else "")


def compile_term(kind: TermKind | str, pattern: str) -> regex.Pattern[str]:
    """The compiled term; InvalidPattern when it is empty, too long or does not compile."""
    kind = TermKind(kind)
    if not pattern.strip() or (kind == TermKind.WORD and not pattern.replace("_", " ").strip()):
        raise InvalidPattern("The term is empty.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"The term is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}.")
    return _compiled(kind, pattern)


@functools.lru_cache(maxsize=1024)
def _compiled(kind: TermKind, pattern: str) -> regex.Pattern[str]:
    if kind == TermKind.WORD:
        words = [regex.escape(word) for word in pattern.replace("_", " ").split()]
        return regex.compile(_WORD_START + r"[\s_]+".join(words) + _WORD_END, _FLAGS)
    try:
        return regex.compile(pattern, _FLAGS)
    except (regex.error, OverflowError, RecursionError) as error:
        raise InvalidPattern(f"This regular expression does not compile: {error}") from None


def applies(term: Term, *, age_restricted: bool) -> bool:
    """NSFW terms are allowed in age-restricted channels; banned terms never are."""
    return term.scope == TermScope.BANNED or not age_restricted


def find_hits(texts: str | Iterable[str], terms: Sequence[Term], *, age_restricted: bool) -> list[Hit]:
    """The terms (one hit each, in the order given) that any of the texts triggers here.

    A stored term that no longer compiles (it was written around /admin) is skipped: a
    moderator's typo must not make every prompt fail."""
    texts = [as_read(text) for text in ([texts] if isinstance(texts, str) else texts) if text]
    hits: list[Hit] = []
    for term in terms:
        if not applies(term, age_restricted=age_restricted):
            continue
        try:
            pattern = compile_term(term.kind, term.pattern)
        except InvalidPattern:
            continue
        hit = _search(term, pattern, texts)
        if hit is not None:
            hits.append(hit)
    return hits


def as_read(text: str) -> str:
    """The text as a reader sees it, for matching (see the module docstring): NFKC, without
    the format characters (Unicode's Cf: zero-width spaces and joiners, soft hyphens...)."""
    return "".join(char for char in unicodedata.normalize("NFKC", text) if unicodedata.category(char) != "Cf")


def _search(term: Term, pattern: regex.Pattern[str], texts: list[str]) -> Hit | None:
    for text in texts:
        try:
            found = pattern.search(text, timeout=MATCH_TIMEOUT_S)
        except TimeoutError:
            return Hit(term, "", timed_out=True)
        if found is not None:
            return Hit(term, found.group(0))
    return None
