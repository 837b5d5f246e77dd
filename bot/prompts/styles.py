"""Applying styles to prompts, with AUTOMATIC1111's rules (modules/styles.py merge_prompts).

A style's prompt holding `{prompt}` has the user's prompt put there; otherwise the style is
appended after ", ". The negative prompt works the same way with the style's negative part.
Several styles apply in the order given, each to the result of the one before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

PLACEHOLDER = "{prompt}"


class StyleText(Protocol):
    prompt: str
    negative_prompt: str


def merge_prompts(style_prompt: str, prompt: str) -> str:
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Iterable[StyleText]) -> tuple[str, str]:
    for style in styles:
        prompt = merge_prompts(style.prompt or "", prompt)
        negative_prompt = merge_prompts(style.negative_prompt or "", negative_prompt)
    return prompt, negative_prompt
