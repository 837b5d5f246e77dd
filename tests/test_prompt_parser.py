"""A1111's prompt language, torch-free: attention, prompt editing, alternation, 75-token chunks.

The first cases of each group are A1111's own doctests (modules/prompt_parser.py), ported
as they are; the rest pin A1111's behaviour on the edges users hit.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from inference.common import prompt_parser
from inference.common.prompt_chunks import (
    CHUNK_LENGTH,
    Chunk,
    chunk_tokens,
    count_tokens,
    empty_chunk,
    weighted_tokens,
)
from inference.common.prompt_parser import is_break, parse_prompt_attention, prompt_schedules

# --- parse_prompt_attention: A1111's doctests ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_attention_a1111_doctests(text, expected):
    assert parse_prompt_attention(text) == expected


# --- parse_prompt_attention: edges -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("((word))", [("word", 1.1 * 1.1)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
        ("(word:1.3)", [("word", 1.3)]),
        ("( word : 1.3 )", [(" word ", 1.3)]),  # spaces around the weight are allowed
        ("(word:-0.5)", [("word", -0.5)]),
        # An explicit weight inside brackets multiplies with them, it does not replace them.
        ("((a:1.2):1.5)", [("a", 1.2 * 1.5)]),
        ("([a])", [("a", 1 / 1.1 * 1.1)]),
        # Unbalanced: an unclosed bracket weighs everything after it; a stray closer is text.
        ("a (b c", [("a ", 1.0), ("b c", 1.1)]),
        ("a [b c", [("a ", 1.0), ("b c", 1 / 1.1)]),
        ("a) b]", [("a) b]", 1.0)]),
        ("(a [b) c]", [("a ", 1.1), ("b", 1.1 / 1.1), (" c", 1 / 1.1)]),
        ("(a:1.5", [("a:1.5", 1.1)]),  # no ")": the colon and number are text in the bracket
        ("a:1.5)", [("a:1.5)", 1.0)]),  # no "(": the same, unweighted
        ("a:b", [("a:b", 1.0)]),
        # Escapes.
        (r"\(a\)", [("(a)", 1.0)]),
        (r"\[a\]", [("[a]", 1.0)]),
        (r"a \\ b", [("a \\ b", 1.0)]),
        (r"(\(a\):1.2)", [("(a)", 1.2)]),
        ("", [("", 1.0)]),
        ("()", [("", 1.0)]),
    ],
)
def test_attention_edges(text, expected):
    result = parse_prompt_attention(text)
    assert [part for part, _ in result] == [part for part, _ in expected]
    assert [weight for _, weight in result] == pytest.approx([w for _, w in expected])


def test_break_splits_runs():
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]
    # Only the whole word, in capitals.
    assert parse_prompt_attention("a BREAKS break b") == [("a BREAKS break b", 1.0)]
    assert is_break("BREAK", -1.0)
    assert not is_break("BREAK", -1.1)  # a bracketed BREAK is A1111's word "BREAK", no break


def test_adjacent_equal_weights_merge():
    assert parse_prompt_attention("(a)(b) c (d:1.1)") == [("ab", 1.1), (" c ", 1.0), ("d", 1.1)]


# --- prompt_schedules: A1111's doctests ----------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        # A1111's doctest says [(5, 'a  c'), (10, 'a {b|d{ c')] with the comment "not handling
        # this right now", and fails there: the grammar refuses the prompt, which is then
        # used as it is. This pins what A1111's code does.
        ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", [(step, "a" if step % 2 else "(b:1.1)") for step in range(1, 11)]),
        ("[fe|]male", [(step, "female" if step % 2 else "male") for step in range(1, 11)]),
        (
            "[fe|||]male",
            [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)],
        ),
    ],
)
def test_schedules_a1111_doctests(prompt, expected):
    assert prompt_schedules(prompt, 10) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a [b:.5] c", [(10, "a b c")]),
        ("a [b:1.5] c", [(5, "a  c"), (10, "a b c")]),
    ],
)
def test_schedules_a1111_hires_doctests(prompt, expected):
    assert prompt_schedules(prompt, 10, hires_steps=10) == expected


# --- prompt_schedules: edges -------------------------------------------------------------


def test_a1111_comment_example():
    # The example at the top of A1111's prompt_parser.py, at 100 steps.
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedules(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        # A "." makes a fraction of the steps, rounded down; no "." is a step number.
        ("[a:b:0.5]", 20, [(10, "a"), (20, "b")]),
        ("[a:b:0.33]", 20, [(6, "a"), (20, "b")]),
        ("[a:b:1.0]", 20, [(20, "a")]),  # the whole run: "to" never comes
        ("[a:b:1]", 20, [(1, "a"), (20, "b")]),  # step 1, not "all of it"
        ("[a:b:0]", 20, [(20, "b")]),  # from the start
        ("[a:b:25]", 20, [(20, "a")]),  # past the end: capped, "from" throughout
        ("[a::5]", 10, [(5, "a"), (10, "")]),
        ("[a:b:-3]", 10, [(10, "b")]),
        # Nested editing and alternation inside editing.
        ("[[a:b:2]:c:4]", 10, [(2, "a"), (4, "b"), (10, "c")]),
        ("[x:[a|b]:2]", 4, [(1, "x"), (2, "x"), (3, "a"), (4, "b")]),
        # Editing inside emphasis keeps the brackets for parse_prompt_attention.
        ("([a:b:2]:1.2)", 4, [(2, "(a:1.2)"), (4, "(b:1.2)")]),
        # Alternation of three, and with empty options.
        ("[a|b|c] d", 4, [(1, "a d"), (2, "b d"), (3, "c d"), (4, "a d")]),
        ("[|b]", 2, [(1, ""), (2, "b")]),
        # Escaped brackets are text, not syntax.
        (r"\[a:b:2\]", 10, [(10, r"\[a:b:2\]")]),
        # Square brackets without ":" or "|" are emphasis, left to the attention parser.
        ("[a] [b:2]", 4, [(2, "[a] "), (4, "[a] b")]),
    ],
)
def test_schedule_edges(prompt, steps, expected):
    assert prompt_schedules(prompt, steps) == expected


def test_hires_schedule_counts_on_from_the_first_pass():
    # 20 first-pass steps, 10 hires steps: step 25 overall is the second pass's step 5.
    assert prompt_schedules("[a:b:25]", 20, hires_steps=10) == [(5, "a"), (10, "b")]
    assert prompt_schedules("[a:b:15]", 20, hires_steps=10) == [(10, "b")]
    assert prompt_schedules("[a:b:1.5]", 20, hires_steps=10) == [(5, "a"), (10, "b")]
    # (1.2 - 1) * 10 is 1.9999999999999996 in floats, and int() makes it 1, in A1111 too.
    assert prompt_schedules("[a:b:1.2]", 20, hires_steps=10) == [(1, "a"), (10, "b")]


def test_old_scheduling_rule():
    # A1111's "use old scheduling" option: below 1 is a fraction, whatever is written.
    assert prompt_schedules("[a:b:0.5]", 10, use_old_scheduling=True) == [(5, "a"), (10, "b")]
    assert prompt_schedules("[a:b:2.0]", 10, use_old_scheduling=True) == [(2, "a"), (10, "b")]
    assert prompt_schedules("[a:b:2.0]", 10) == [(10, "a")]  # new rule: 200% of the steps


def test_no_syntax_is_one_entry():
    prompt = "a (very:1.2) [long] prompt, with commas BREAK and more \\(escaped\\)"
    assert prompt_schedules(prompt, 30) == [(30, prompt)]


@pytest.mark.parametrize(
    "prompt",
    [
        "", "a cat", "a (very:1.2) cat, (b) ((c)) BREAK d", "a: b", "(a:b:c)", "a|b", "((a)", "a)) b",
        "\\(a\\) \\", "a \\", ":1.2)", "<lora:x:0.8> a, b\n c", "é (ü:0.5)", "(a|b:2)", "a : ) ( :",
    ],
)
def test_a_prompt_without_square_brackets_skips_the_grammar_and_means_what_it_says(prompt):
    """Editing and alternation need "[": for any other prompt prompt_schedules answers
    without the (slow) Earley parse, and the grammar gives the very same answer, whether it
    reads the prompt or refuses it."""
    assert prompt_schedules(prompt, 20) == [(20, prompt)]
    assert prompt_parser._parsed_schedules(prompt, 20, 0, 0.0, False) in ([(20, prompt)], None)


# --- chunks --------------------------------------------------------------------------------

BOS, EOS, PAD, COMMA = 49406, 49407, 0, 267


def runs(*parts) -> list:
    """(ids, weight) runs from (count or id list, weight) pairs; "BREAK" for a break."""
    result, next_id = [], 1000
    for part in parts:
        if part == "BREAK":
            result.append((None, -1.0))
            continue
        ids, weight = part
        if isinstance(ids, int):
            ids, next_id = list(range(next_id, next_id + ids)), next_id + ids
        result.append((ids, weight))
    return result


def contents(chunks: list[Chunk]) -> list[list[int]]:
    return [list(chunk.tokens) for chunk in chunks]


def test_short_prompt_is_one_padded_chunk():
    [chunk] = chunk_tokens(runs(([5, 6], 1.0), ([7], 1.5)), COMMA, BOS, EOS)
    assert chunk.ids == (BOS, 5, 6, 7) + (EOS,) * 73
    assert len(chunk.ids) == CHUNK_LENGTH + 2 == 77
    assert chunk.weights == (1.0, 1.0, 1.0, 1.5) + (1.0,) * 73
    assert chunk.tokens == (5, 6, 7)


def test_empty_prompt_is_one_chunk_of_padding():
    assert chunk_tokens(runs(([], 1.0)), COMMA, BOS, EOS) == [empty_chunk(BOS, EOS)]
    assert empty_chunk(BOS, EOS).ids == (BOS,) + (EOS,) * 76
    assert count_tokens(runs(([], 1.0)), COMMA) == 0


def test_sd2_padding_follows_the_first_end_token():
    [chunk] = chunk_tokens(runs(([5, 6], 1.0)), COMMA, BOS, EOS, pad_id=PAD)
    assert chunk.ids == (BOS, 5, 6, EOS) + (PAD,) * 73
    [full] = chunk_tokens(runs((75, 1.0)), COMMA, BOS, EOS, pad_id=PAD)
    assert full.ids[-1] == EOS and PAD not in full.ids


def test_long_prompt_makes_more_chunks():
    chunks = chunk_tokens(runs((80, 1.0)), None, BOS, EOS)
    assert [chunk.length for chunk in chunks] == [75, 5]
    assert all(len(chunk.ids) == 77 for chunk in chunks)
    assert chunks[1].ids[:6] == (BOS, *range(1075, 1080))
    assert count_tokens(runs((80, 1.0)), None) == 80
    assert len(chunk_tokens(runs((150, 1.0)), None, BOS, EOS)) == 2  # exactly full: no third
    assert len(chunk_tokens(runs((151, 1.0)), None, BOS, EOS)) == 3


def test_break_starts_a_new_chunk():
    chunks = chunk_tokens(runs((3, 1.0), "BREAK", (2, 1.2)), COMMA, BOS, EOS)
    assert contents(chunks) == [[1000, 1001, 1002], [1003, 1004]]
    assert chunks[1].weights[1:3] == (1.2, 1.2)
    # A1111 counts the padded chunk as 75.
    assert count_tokens(runs((3, 1.0), "BREAK", (2, 1.2)), COMMA) == 77
    # A trailing BREAK leaves no empty chunk behind; a leading one does (A1111 does the same).
    assert len(chunk_tokens(runs((3, 1.0), "BREAK"), COMMA, BOS, EOS)) == 1
    assert contents(chunk_tokens(runs("BREAK", (3, 1.0)), COMMA, BOS, EOS)) == [
        [],
        [1000, 1001, 1002],
    ]


def test_weighted_tokens_marks_breaks():
    tokenize = lambda text: [ord(char) for char in text]  # noqa: E731
    # The empty run after BREAK is A1111's too (the split leaves it); it adds no tokens.
    assert weighted_tokens("ab BREAK (c)", tokenize) == [
        ([97, 98], 1.0),
        (None, -1.0),
        ([], 1.0),
        ([99], 1.1),
    ]


def test_comma_backtrack_moves_the_words_after_the_last_comma():
    # 70 tokens, a comma, 10 more: the chunk fills at 75 with the comma 5 tokens back, so it
    # ends after the comma and those 4 words (plus the rest) open the next chunk.
    prompt = runs((70, 1.0), ([COMMA], 1.0), (10, 1.3))
    chunks = chunk_tokens(prompt, COMMA, BOS, EOS)
    assert [chunk.length for chunk in chunks] == [71, 10]
    assert chunks[0].tokens[-1] == COMMA
    assert chunks[1].tokens == tuple(range(1070, 1080))
    assert chunks[1].weights[1:11] == (1.3,) * 10  # the weights move with their tokens
    assert count_tokens(prompt, COMMA) == 85


def test_comma_too_far_back_is_ignored():
    # The comma is 21 tokens before the end of the chunk: more than A1111's 20.
    prompt = runs((54, 1.0), ([COMMA], 1.0), (30, 1.0))
    assert [chunk.length for chunk in chunk_tokens(prompt, COMMA, BOS, EOS)] == [75, 10]
    prompt = runs((55, 1.0), ([COMMA], 1.0), (30, 1.0))  # 20 back: moved
    assert [chunk.length for chunk in chunk_tokens(prompt, COMMA, BOS, EOS)] == [56, 30]
    # Without a comma id or with backtracking off, chunks are cut at 75 regardless.
    assert [c.length for c in chunk_tokens(prompt, None, BOS, EOS)] == [75, 11]
    assert [c.length for c in chunk_tokens(prompt, COMMA, BOS, EOS, backtrack=0)] == [75, 11]


def test_comma_as_the_76th_token_opens_the_next_chunk():
    prompt = runs((75, 1.0), ([COMMA], 1.0), (2, 1.0))
    assert [chunk.length for chunk in chunk_tokens(prompt, COMMA, BOS, EOS)] == [75, 3]


# --- the bot imports these ------------------------------------------------------------------


def test_parser_and_chunks_do_not_import_torch():
    code = (
        "import sys, inference.common.prompt_parser, inference.common.prompt_chunks;"
        "inference.common.prompt_parser.prompt_schedules('[a:b:2]', 4);"
        "sys.exit('torch' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- prompt_schedules: read group by group, bounded ----------------------------------------


def whole_prompt_schedules(prompt: str, steps: int, **options) -> list[tuple[int, str]]:
    """A1111's way, the reference: the grammar reads the whole prompt (or refuses it, and the
    prompt is used as it is)."""
    hires = options.get("hires_steps")
    offsets = (0, 0.0) if hires is None else (steps, 1.0)
    parsed = prompt_parser._parsed_schedules(prompt, hires or steps, *offsets, False)
    return [(hires or steps, prompt)] if parsed is None else parsed


TRICKY_PROMPTS = [
    "a [b:c:0.5] (d:1.2) [e|f] [[g]] \\[h] [i:j:3] [k::0.2] [l:4] [m|n|] [(o):p:0.5]",
    "[[q:r:0.3]:s:0.7] (t [u:v:0.5] w:1.1)", "a [b:c:0.5] | d", "[a|b:c]", "[a:b:c]", "[a:b:c:0.5]",
    "[a: 0.5 ]", "[:b:0.5]", "[]", "[a\\]b:c:0.5]", "[a (b] c) [x:y:0.5]", "[a [b:c:0.5]", "a ]] [b|c]",
    "[a:b:0.5]\\", "[a|[b:c:2]|d]", "[a:b:-3]", "[a:b:+2e0]", "[a:b:.5]", "[a:b:5.]", "[a:b:1e400]",
    "[(a):b:1e400]", "[a:b:-1e400]", "((a [b:c:0.5]) d:1.3)", "[a:b:0.5] [a:b:0.5]", "[x|y] and [p|q|r]",
    "[a\nb:c:0.5]", "[a:b\n:0.5]", "[a:b:0.5\n]", "[ (a:1.1) | b ]",
]


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
@pytest.mark.parametrize("steps", [10, 7])
def test_reading_groups_alone_gives_what_the_whole_prompt_gives(prompt, steps):
    """Each "[...]" group is read alone, simple ones without the grammar: the schedule is
    A1111's, stray brackets, escapes, refusals and all."""
    assert prompt_schedules(prompt, steps) == whole_prompt_schedules(prompt, steps)
    assert prompt_schedules(prompt, steps, hires_steps=5) == whole_prompt_schedules(prompt, steps, hires_steps=5)


def test_reading_groups_alone_agrees_with_the_whole_prompt_on_random_prompts():
    generator = random.Random(20261206)
    # Whole groups among the single characters: stray brackets next to real edits are where
    # reading the groups alone used to differ (see reads_by_groups).
    alphabet = ["a", "b", " ", "[", "]", "(", ")", ":", "|", "\\", "0.5", "2", ":1.2)", "[a:b:3]", "[a|b]", "(c:1.2)"]
    for _ in range(400):
        prompt = "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 12)))
        assert prompt_schedules(prompt, 6) == whole_prompt_schedules(prompt, 6), prompt


def test_a_when_past_any_number_is_past_the_last_step():
    """"1e400" is infinity to float(): before this, int() of it failed the member's job."""
    assert prompt_schedules("a [cat:dog:1e400]", 10) == [(10, "a cat")]
    assert prompt_schedules("a [cat:dog:-1e400]", 10) == [(10, "a dog")]
    assert prompt_schedules("a [(cat):dog:1e400]", 10) == [(10, "a (cat)")]  # through the grammar


def test_a_prompt_past_the_grammar_s_bound_is_used_as_it_is_and_says_why():
    """The Earley parse grows with the brackets, parentheses and colons of the groups it reads:
    one group of 130 "(word:1.2)" took 12.7 s on this machine. Past MAX_PARSED_SPECIALS the prompt is not
    parsed (the bot refuses it with schedule_problem's words); simple groups never count."""
    heavy = "[" + "(word:1.2) " * 130 + ":b:0.5]"
    assert prompt_schedules(heavy, 20) == [(20, heavy)]
    assert "at most 32" in prompt_parser.schedule_problem(heavy)
    nested = "[" * 700 + "a:b:0.5" + "]" * 700  # lark recursed past Python's limit on this
    assert prompt_schedules(nested, 20) == [(20, nested)] and prompt_parser.schedule_problem(nested)
    light = "[a] " * 300 + "[a|b] " * 50 + "[x:y:0.5] " * 50 + "[[deep (and) emphasised]] " * 20
    assert prompt_parser.schedule_problem(light) is None
    assert len(prompt_schedules(light, 20)) == 20  # the alternations switch at every step
    within = "[(a):b:0.5] " * 5  # 30 of 32
    assert prompt_parser.schedule_problem(within) is None
    assert prompt_schedules(within, 10) == [(5, "(a) " * 5), (10, "b " * 5)]
    assert prompt_parser.schedule_problem(within + "[(c):d:0.5]")  # 36


# --- prompts whose stray brackets make A1111 read them whole ----------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # A stray ")" after a group: A1111's grammar takes the brackets as text, no editing.
        ("(a [b:c:3]))", [(10, "(a [b:c:3]))")]),
        # A colon against a closing bracket or parenthesis, or an opening one.
        ("[a:b:3]::", [(10, "[a:b:3]::")]),
        ("([a:b:3]):", [(10, "([a:b:3]):")]),
        ("[[a:b:3]]:", [(10, "[[a:b:3]]:")]),
        ("[a:b:3][:", [(10, "[a:b:3][:")]),
        # ... where the grammar may still edit another group of the same prompt.
        ("[a:b:3]::[a:b:3]", [(3, "[a:b:3]::a"), (10, "[a:b:3]::b")]),
        ("([[[a:b:3](][", [(3, "([[a(]["), (10, "([[b(][")]),
        # A space between is enough for the groups to be read one by one again.
        ("[cat:dog:5] :)", [(5, "cat :)"), (10, "dog :)")]),
    ],
)
def test_stray_brackets_are_read_as_a1111_reads_the_whole_prompt(prompt, expected):
    assert prompt_schedules(prompt, 10) == expected


def test_a_long_prompt_with_a_stray_bracket_is_read_group_by_group_not_parsed_whole():
    """Past MAX_WHOLE_PROMPT_SPECIALS the whole-prompt parse would stall the bot's event loop:
    the groups are then read one by one, as for any prompt (here A1111 agrees)."""
    prompt = ", ".join(f"(word{i}:1.2)" for i in range(12)) + ", [cat:dog:5] ]"
    assert not prompt_parser.reads_by_groups(prompt)
    assert prompt_parser.schedule_problem(prompt) is None
    assert prompt_schedules(prompt, 10) == [(5, prompt.replace("[cat:dog:5]", "cat")), (10, prompt.replace("[cat:dog:5]", "dog"))]
