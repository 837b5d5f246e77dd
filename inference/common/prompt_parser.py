"""AUTOMATIC1111's prompt language: attention weights and prompt editing, torch-free.

A port of A1111's modules/prompt_parser.py, behaviour for behaviour, so that a prompt copied
from A1111 or Civitai means the same here:

- ``parse_prompt_attention``: ``(word)`` x1.1, ``[word]`` /1.1, ``(word:1.3)``, nesting
  multiplies, unclosed brackets weigh to the end, ``\\(`` and friends are literals, ``BREAK``
  ends a 75-token chunk.
- ``prompt_schedules``: prompt editing ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and
  alternation ``[a|b]``: which text is in force at which sampling step.
- ``composable_prompts``: composable diffusion, ``a cat AND a dog :0.5``: sub-prompts with the
  weight of their noise prediction (the positive prompt only; each sub-prompt then has its own
  schedule and its own chunks).

The bot imports this module to count tokens, so it must never import torch. The schedule
grammar is A1111's own lark grammar (Earley, as A1111 runs it): ambiguous and broken prompts
resolve exactly as they do there, which a hand-written parser would only approximate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import lark

# --- attention -----------------------------------------------------------------------------

# A1111's tokenizer regex, unchanged: escapes first, then brackets, a ":weight)" closing, a run
# of plain text, and a lone colon (plain text too).
_RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)

_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# How parse_prompt_attention marks a BREAK: this text with this weight (A1111's convention).
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0


def is_break(text: str, weight: float) -> bool:
    """Whether a parsed (text, weight) pair is a BREAK (not the word "BREAK" in brackets)."""
    return text == BREAK_TEXT and weight == BREAK_WEIGHT


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """The prompt as runs of text with their attention weight, A1111's exact result.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]

    Weights multiply by position: an opening bracket remembers where it opened, and its
    closing multiplies every run since then (so a ``(x:w)`` inside unclosed brackets is
    multiplied by those too when they close at the end). Runs of equal weight are merged,
    BREAK runs being (BREAK_TEXT, BREAK_WEIGHT), and an empty prompt is [("", 1.0)].
    """
    runs: list[list] = []  # [text, weight], mutable while brackets close
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for run in runs[start:]:
            run[1] *= multiplier

    for match in _RE_ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            runs.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(runs))
        elif token == "[":
            square_brackets.append(len(runs))
        elif weight is not None and round_brackets:
            multiply_from(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_from(round_brackets.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_from(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            # Plain text, a stray closing bracket or an unmatched ":w)": all literal text.
            for index, part in enumerate(_RE_BREAK.split(token)):
                if index > 0:
                    runs.append([BREAK_TEXT, BREAK_WEIGHT])
                runs.append([part, 1.0])

    # Unclosed brackets close at the end, in the order they opened (as A1111 iterates them).
    for start in round_brackets:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_brackets:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not runs:
        runs = [["", 1.0]]

    index = 0
    while index + 1 < len(runs):
        if runs[index][1] == runs[index + 1][1]:
            runs[index][0] += runs[index + 1][0]
            runs.pop(index + 1)
        else:
            index += 1
    return [(text, weight) for text, weight in runs]


# --- AND (composable diffusion) -----------------------------------------------------------

# A1111's re_AND: uppercase, a whole word ("and", "ANDROID" and "BANDAGE" stay text).
_RE_AND = re.compile(r"\bAND\b")
# The number of A1111's re_weight, ``^((?:\s|.)*?)(?:\s*:\s*(NUMBER))?\s*$``: no exponent, no
# second dot. composable_prompts reads the regex's meaning without running it, as the lazy
# group backtracks over every whitespace run (cubic in a run's length, on the bot's loop).
_RE_AND_WEIGHT = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")
# What after AND looks like a weight but is not a number: a ":" and one word with no bracket
# or tag in it (so "(cat:1.2)", "[a:b:0.5]" and "<lora:x:0.5>" are not weights), written
# against the ":" or with a digit.
_RE_WORD_AFTER_COLON = re.compile(r"[^\s:()\[\]<>]*")


def _split_and_weight(subprompt: str) -> tuple[str, float | None]:
    """A1111's re_weight on one sub-prompt: (text, weight written after its last ":") or
    (text, None); the text loses its trailing whitespace and the weight."""
    body = subprompt.rstrip()  # re's \s and str.isspace are the same characters
    colon = body.rfind(":")  # a weight holds no ":", so only the last one can open it
    if colon >= 0 and _RE_AND_WEIGHT.fullmatch(body[colon + 1 :].lstrip()):
        return body[:colon].rstrip(), float(body[colon + 1 :])
    return body, None


def composable_prompts(prompt: str) -> list[tuple[str, float]]:
    """The prompt's sub-prompts and their weights: A1111's get_multicond_prompt_list.

    >>> composable_prompts("a cat AND a dog :0.5")
    [('a cat', 1.0), (' a dog', 0.5)]

    Split at each uppercase whole word AND; a sub-prompt ending in ":number" has that weight,
    others 1. A prompt without AND is one sub-prompt, and it too loses a final ":number" (A1111
    then weighs its whole guidance by it). Text that is not a number after the ":" stays text,
    as in A1111 (the bot refuses it: and_weight_problem).
    """
    parts = []
    for subprompt in _RE_AND.split(prompt):
        text, weight = _split_and_weight(subprompt)
        parts.append((text, 1.0 if weight is None else weight))
    return parts


def is_composable(prompt: str) -> bool:
    """Whether the prompt needs composable diffusion: AND, or a weight on the whole prompt.
    Otherwise it is encoded as one prompt, as it always was."""
    parts = composable_prompts(prompt)
    return len(parts) > 1 or parts[0][1] != 1.0


def and_weight_problem(prompt: str) -> str | None:
    """What is wrong with a weight after AND, in words fit for a member; None when nothing is.

    A1111 keeps ``a AND b :high`` as the text "b :high" at weight 1, silently; a member who
    wrote it meant a weight, so the bot refuses it and names the word.
    """
    subprompts = _RE_AND.split(prompt)
    if len(subprompts) < 2:
        return None
    for subprompt in subprompts:
        text, weight = _split_and_weight(subprompt)
        colon = text.rfind(":")
        if weight is not None or colon < 0:
            continue
        after = text[colon + 1 :]
        word, part = after.strip(), text.strip()
        # "a dog :high" and "a dog: 0.5.5" meant a weight; "a dog, style: watercolor" is text.
        meant_weight = not after[:1].isspace() or any(char.isdigit() for char in word)
        if meant_weight and _RE_WORD_AFTER_COLON.fullmatch(word):
            if word:
                problem = f"the weight `{word}` of `{part}` is not a number"
            else:
                problem = f"`{part}` ends in `:` and no weight"
            return f"{problem}; after AND, each part of the prompt may end in a weight such as `:0.5`"
    return None


# --- prompt editing ------------------------------------------------------------------------

# A1111's grammar, verbatim. "when" is any signed number; the square brackets that do not
# form editing or alternation stay text (emphasized), and stray brackets at the top level are
# accepted as they are.
_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@functools.cache
def _schedule_parser() -> lark.Lark:
    # Built on first use: compiling the grammar costs tens of milliseconds at import otherwise.
    # maybe_placeholders gives a missing [optional] a None child, which the code below counts
    # on (it is lark's default since 1.0; A1111 relies on it the same way).
    return lark.Lark(_GRAMMAR, maybe_placeholders=True)


def prompt_schedules(
    prompt: str,
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[tuple[int, str]]:
    """(last step, text) pairs: the text in force up to and including each step.

    A1111's get_learned_conditioning_prompt_schedules for one prompt:

    >>> prompt_schedules("a [b:c:0.5] d", 10)
    [(5, 'a b d'), (10, 'a c d')]

    The sampler's step counter starts at 0 and uses the first pair whose last step is >= it;
    A1111 counts model evaluations, so callers pass steps times the sampler's evaluations per
    step. ``when`` written with a "." is a fraction of the steps, without one a step number
    (A1111's rule since 1.6; ``use_old_scheduling`` is its option for the earlier rule,
    "below 1 is a fraction"). For a hires fix second pass, ``steps`` is the first pass's and
    ``hires_steps`` the second's: numbers then count on from the first pass (a fraction of 1.5
    is the middle of the second pass, step 25 of 20 + 10 is its step 5). Alternation
    ``[a|b|c]`` switches text every step. A prompt the grammar refuses is used as it is.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, float_offset = 0, 0.0
    else:
        int_offset, float_offset = steps, 1.0
        steps = hires_steps
    if "[" not in prompt:
        # Editing and alternation both open with "[": without one the grammar gives the
        # prompt back whole (or refuses it, which also means the prompt as it is). The bot
        # counts every new job's tokens on its event loop, where an Earley parse of every
        # plain prompt showed in bench/load.py's profile.
        return [(steps, prompt)]
    if not reads_by_groups(prompt) and sum(char in _SPECIALS for char in prompt) <= MAX_WHOLE_PROMPT_SPECIALS:
        # Stray or crossed brackets, or a colon against one: the grammar's Earley resolution
        # then depends on the whole prompt, so it reads the whole prompt. Past the bound such a
        # prompt is read group by group below, which is A1111's reading of nearly all of them.
        schedule = _parsed_schedules(prompt, steps, int_offset, float_offset, use_old_scheduling)
        return schedule if schedule is not None else [(steps, prompt)]
    pieces = bracket_groups(prompt)
    if schedule_problem(prompt, pieces):
        return [(steps, prompt)]  # past what is read; the bot refuses such prompts
    schedules = []
    for is_group, text in pieces:
        if not is_group:
            if not _TOP_LEVEL_TEXT.fullmatch(text):
                return [(steps, prompt)]  # the grammar refuses the prompt: A1111 uses it as it is
            schedules.append([(steps, text)])
            continue
        schedule = _simple_group_schedule(text, steps, int_offset, float_offset, use_old_scheduling)
        if schedule is None:
            schedule = _parsed_schedules(text, steps, int_offset, float_offset, use_old_scheduling)
        if schedule is None:
            return [(steps, prompt)]
        schedules.append(schedule)
    ends = sorted({end for schedule in schedules for end, _ in schedule})
    return [(end, "".join(_text_until(schedule, end) for schedule in schedules)) for end in ends]


# The grammar's work on one prompt grows with the brackets, parentheses, colons and bars in
# the groups it reads, faster than linearly (and lark recurses once per nested bracket); the bot reads a prompt and its negative
# on its event loop. Simple groups, and groups without ":", "|" or an escape (no editing or
# alternation can hide in them), are read without it and not counted.
MAX_PARSED_SPECIALS = 32
# A prompt read whole (see reads_by_groups) counts every special it has: an Earley parse of
# 24 took about 140 ms on a 2-core machine, of 32 about 190 ms, on the bot's event loop.
MAX_WHOLE_PROMPT_SPECIALS = 24
_SPECIALS = frozenset("[]():|")
# A colon against a bracket or parenthesis ("[a:b:3]::", "([x]):", "[:x]"): the grammar's
# top level may then take the brackets as stray text, which a group read alone cannot know.
_COLON_AGAINST_BRACKET = re.compile(r"[\])[(]:")
_OPENER_OF = {")": "(", "]": "["}

# What the grammar's top level takes between groups: anything but "|" (alternation's, inside
# a group only) and a backslash escaping nothing (plain's "\\." takes no line end).
_TOP_LEVEL_TEXT = re.compile(r"(?:[^\\|]|\\.)*")
# A group with nothing nested and nothing escaped, which the grammar reads one way only.
_SIMPLE_GROUP = re.compile(r"\[[^][()\\]*\]")
# The grammar's NUMBER (lark's SIGNED_NUMBER), with the whitespace it allows around it.
_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")


def _unescaped(prompt: str) -> Iterator[tuple[int, str]]:
    """The prompt's characters with their index, less those a backslash escapes (and the
    backslash), as the grammar's plain text reads them."""
    index = 0
    while index < len(prompt):
        if prompt[index] == "\\":
            index += 2
            continue
        yield index, prompt[index]
        index += 1


def reads_by_groups(prompt: str) -> bool:
    """Whether each top-level "[...]" group may be read alone, as the grammar reads it within
    the whole prompt: brackets and parentheses nest properly (escapes aside) and, between the
    groups, no colon touches a bracket or parenthesis. Otherwise the grammar's choice among its
    readings depends on the whole prompt ("(a [b:c:3]))" is not edited in A1111, nor is
    "[a:b:3]::"). Fuzzing thousands of prompts against A1111's whole-prompt parse found no
    difference under this rule (tests/test_prompt_parser.py); outside it, hundreds."""
    opened: list[str] = []
    for _, char in _unescaped(prompt):
        if char in "([":
            opened.append(char)
        elif char in ")]":
            if not opened or opened.pop() != _OPENER_OF[char]:
                return False
    if opened:
        return False
    pieces = bracket_groups(prompt)
    for number, (is_group, text) in enumerate(pieces):
        if is_group:
            continue
        after_group = number > 0
        before_group = number + 1 < len(pieces)
        if (
            _COLON_AGAINST_BRACKET.search(text)
            or (after_group and text.startswith(":"))
            or (before_group and text.endswith(":"))
        ):
            return False
    return True


def schedule_problem(prompt: str, pieces: list[tuple[bool, str]] | None = None) -> str | None:
    """Why prompt editing and alternation are not read in this prompt (it is then used as it
    is), in words fit for a member; None for a prompt within MAX_PARSED_SPECIALS."""
    if "[" not in prompt:
        return None
    groups = [text for is_group, text in (bracket_groups(prompt) if pieces is None else pieces) if is_group]
    specials = sum(sum(char in _SPECIALS for char in group) for group in groups if _needs_grammar(group))
    if specials > MAX_PARSED_SPECIALS:
        return (
            f"its [ ] groups that nest or hold parentheses have {specials} brackets, parentheses, colons "
            f"and bars; at most {MAX_PARSED_SPECIALS} (simple groups such as [word], [a:b:0.5] or [a|b] "
            "are not counted)"
        )
    return None


def _needs_grammar(group: str) -> bool:
    return not _SIMPLE_GROUP.fullmatch(group) and any(char in group for char in ":|\\")


def bracket_groups(prompt: str) -> list[tuple[bool, str]]:
    """The prompt cut into its top-level "[...]" groups (True) and the text between (False).

    Only a group can change with the step, and the grammar reads a balanced group alone as it
    reads it inside the prompt; the text between, a "[" that never closes and a stray "]"
    included, it gives back as it is (or refuses, see _TOP_LEVEL_TEXT). So each group is read
    alone: the Earley parse of a whole prompt grows with every bracket, parenthesis and colon
    in it (a long prompt of weighted words with one edit stalls for seconds), a group's with
    its own.
    A backslash escapes the next character, as in the grammar's plain text.
    """
    closing: dict[int, int] = {}
    opened: list[int] = []
    for index, char in _unescaped(prompt):
        if char == "[":
            opened.append(index)
        elif char == "]" and opened:
            closing[opened.pop()] = index
    pieces: list[tuple[bool, str]] = []
    start = 0
    for opening in sorted(closing):
        if opening < start:
            continue  # nested in the group before
        if start < opening:
            pieces.append((False, prompt[start:opening]))
        pieces.append((True, prompt[opening:closing[opening] + 1]))
        start = closing[opening] + 1
    if start < len(prompt):
        pieces.append((False, prompt[start:]))
    return pieces


def _simple_group_schedule(
    group: str, steps: int, int_offset: int, float_offset: float, use_old_scheduling: bool
) -> list[tuple[int, str]] | None:
    """A simple group's schedule (``_SIMPLE_GROUP``) as the grammar reads it, without the
    grammar: "[a|b]" alternates, "[from:to:when]" and "[to:when]" edit, "[word]" stays text.
    A group without ":", "|" or an escape stays text too, whatever it nests. None for any
    other group: the grammar decides those."""
    if not _SIMPLE_GROUP.fullmatch(group):
        return None if _needs_grammar(group) else [(steps, group)]
    inside = group[1:-1]
    if "|" in inside:
        if ":" in inside:
            return None
        options = inside.split("|")
        return [(step, options[(step - 1) % len(options)]) for step in range(1, steps + 1)]
    if ":" not in inside:
        return [(steps, group)]  # emphasis: its weight is read elsewhere; the text stays
    parts = inside.split(":")
    when = _WHEN.fullmatch(parts[-1])
    if len(parts) not in (2, 3) or when is None:
        return None
    before, after = ("", parts[0]) if len(parts) == 2 else (parts[0], parts[1])
    at = _when_step(when.group(1), steps, int_offset, float_offset, use_old_scheduling)
    return [(end, before if end <= at else after) for end in sorted({steps} | ({at} if at >= 1 else set()))]


def _when_step(written: str, steps: int, int_offset: int, float_offset: float, use_old_scheduling: bool) -> int:
    """The last step of an edit's first text, from its "when" as written (A1111's rule)."""
    value = float(written)
    if use_old_scheduling:
        value = value * steps if value < 1 else value
    elif "." in written:
        value = (value - float_offset) * steps
    else:
        value = value - int_offset
    # Clamped before int(): "1e400" is infinity, which int() refuses; past the last step (or
    # before the first) every value means the same.
    return int(max(-1.0, min(float(steps), value)))


def _text_until(schedule: list[tuple[int, str]], step: int) -> str:
    """A piece's text at ``step``: that of the first entry lasting to it."""
    return next((text for end, text in schedule if end >= step), schedule[-1][1])


def _parsed_schedules(
    prompt: str, steps: int, int_offset: int, float_offset: float, use_old_scheduling: bool
) -> list[tuple[int, str]] | None:
    """prompt_schedules by A1111's grammar, for ``steps`` already those of the pass; None
    where the grammar refuses the text."""
    try:
        tree = _schedule_parser().parse(prompt)
    except lark.exceptions.LarkError:
        return None

    ends = {steps}

    class CollectSteps(lark.Visitor):
        # Rewrites each "when" into its step in place, as A1111 does, so AtStep compares ints.
        def scheduled(self, tree):
            tree.children[-2] = _when_step(tree.children[-2], steps, int_offset, float_offset, use_old_scheduling)
            if tree.children[-2] >= 1:
                ends.add(tree.children[-2])

        def alternate(self, tree):
            ends.update(range(1, steps + 1))

    CollectSteps().visit(tree)
    return [(end, _text_at_step(tree, end)) for end in sorted(ends)]


def _text_at_step(tree: lark.Tree, step: int) -> str:
    """The prompt's text at ``step``: A1111's AtStep transformer (generators, then joined)."""

    class AtStep(lark.Transformer):
        def scheduled(self, args):
            before, after, _, when, _ = args
            yield (before or ()) if step <= when else after

        def alternate(self, args):
            args = ["" if not arg else arg for arg in args]
            yield args[(step - 1) % len(args)]

        def start(self, args):
            def flatten(node):
                if isinstance(node, str):
                    yield node
                else:
                    for child in node:
                        yield from flatten(child)

            return "".join(flatten(args))

        def plain(self, args):
            yield args[0].value

        def __default__(self, data, children, meta):
            for child in children:
                yield child

    return AtStep().transform(tree)
