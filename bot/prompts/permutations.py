"""Midjourney's permutation prompts: `a {red, blue} {car, bike}` is four prompts.

Every combination of every {…} group, the first group varying slowest (red car, red bike,
blue car, blue bike). Options are separated by commas and trimmed; `\\,` is a comma inside an
option, `\\{` and `\\}` are literal braces. Groups nest as in Midjourney: `a {bird, {red, blue}
car}` is "a bird", "a red car", "a blue car". An empty option is allowed (`{, red} car`: "car"
and "red car"). Other backslashes are kept, for A1111's `\\(` escapes.

The number of prompts is computed from the structure first, so a prompt that would expand to
millions is refused without expanding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from bot.errors import InvalidOption

HOW = "Permutations are written {red, blue}; write \\{ and \\} for a literal brace."
# Groups inside groups, at most: counting and expanding recurse once a level, and 700 levels
# (a 1,400-character prompt) passed Python's recursion limit. NovelAI's emphasis is {{{a}}}.
MAX_DEPTH = 50


@dataclass(frozen=True)
class _Group:
    options: tuple[tuple[str | _Group, ...], ...]


_Sequence = tuple["str | _Group", ...]


def _parse(text: str) -> _Sequence:
    """The prompt as text and groups, or InvalidOption for an unbalanced brace."""
    stack: list[tuple[list[_Sequence], list[str | _Group]]] = []  # enclosing groups: options so far, current option
    current: list[str | _Group] = []
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            current.append("".join(buffer))
            buffer.clear()

    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in ",{}":
            buffer.append(text[i + 1])
            i += 2
            continue
        if char == "{":
            if len(stack) == MAX_DEPTH:
                raise InvalidOption(f"The prompt nests {{…}} groups more than {MAX_DEPTH} deep. {HOW}")
            flush()
            stack.append(([], current))
            current = []
        elif char == "," and stack:
            flush()
            stack[-1][0].append(tuple(current))
            current = []
        elif char == "}":
            if not stack:
                raise InvalidOption(f"The prompt has a `}}` with no `{{` before it. {HOW}")
            flush()
            options, outer = stack.pop()
            options.append(tuple(current))
            outer.append(_Group(tuple(options)))
            current = outer
        else:
            buffer.append(char)
        i += 1
    if stack:
        raise InvalidOption(f"The prompt has a `{{` that is never closed with `}}`. {HOW}")
    flush()
    return tuple(current)


def _count(sequence: _Sequence) -> int:
    return prod(sum(_count(option) for option in part.options) for part in sequence if isinstance(part, _Group))


def _expand(sequence: _Sequence) -> list[str]:
    results = [""]
    for part in sequence:
        if isinstance(part, str):
            results = [result + part for result in results]
        else:
            choices = [text.strip() for option in part.options for text in _expand(option)]
            results = [result + choice for result in results for choice in choices]
    return results


def permutation_count(text: str) -> int:
    """How many prompts the text stands for (1 without groups)."""
    return _count(_parse(text))


def expand_permutations(text: str, limit: int) -> list[str]:
    """Every prompt the text stands for, or InvalidOption when there are more than limit."""
    sequence = _parse(text)
    count = _count(sequence)
    if count > limit:
        raise InvalidOption(
            f"This prompt makes {count:,} permutations; this server allows at most {limit} at once. "
            "Use fewer {…} options."
        )
    return _expand(sequence)
