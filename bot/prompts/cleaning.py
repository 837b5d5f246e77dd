"""Prompt text as the bot keeps it: without the characters that corrupt how it reads.

Every prompt field passes here, whichever way it came: slash options, forms, styles, /settings,
and an image's infotext through /pnginfo. Control characters (NUL, escape...) and the
bidirectional controls that reorder what Discord shows (U+202E turns "gpj.exe" into "exe.jpg")
are dropped. Newlines and tabs stay: A1111 prompts use them. Zero-width characters stay too:
joiners belong in emoji and in some scripts, and a prompt made of nothing else is refused as
empty (bot.jobs.params).
"""

from __future__ import annotations

import re
import unicodedata

# C0 controls but tab and newline, DEL and the C1 controls; the bidi marks (LRM, RLM, ALM),
# embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_prompt_text(text: str) -> str:
    """The text without control and bidi-control characters (see the module docstring)."""
    return _UNWANTED.sub("", text)


def shows(text: str) -> bool:
    """Whether the text has a character that shows: not only spaces, controls and format
    characters (zero-width spaces and joiners, which str.split() keeps)."""
    return any(unicodedata.category(char)[0] not in "ZC" for char in text)
