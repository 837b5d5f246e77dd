"""Embeddings and LoRAs on the bot's side: names for autocomplete, and tags checked before queueing.

The files are found by inference.common.network_files, the same torch-free lookup the worker loads
them with, in the same folders (the worker gets them from Settings.worker_config), so a name
the bot accepts is one the worker finds. The worker checks again anyway: a file may be removed
while the job waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from inference.common.network_files import (
    MalformedNetworkError,
    embedding_files,
    find_lora,
    find_loras,
    lora_files,
    unknown_lora_message,
)

if TYPE_CHECKING:
    from bot.config import PromptSettings, Settings


def _prompt_settings(settings: Settings | PromptSettings) -> PromptSettings:
    # Callers hold either the whole Settings or its [prompts] section.
    return getattr(settings, "prompts", settings)


def lora_names(settings: Settings | PromptSettings) -> list[str]:
    """The LoRAs a prompt may name as <lora:name:weight>, sorted without regard to case."""
    return sorted(lora_files(_prompt_settings(settings).lora_dirs), key=str.casefold)


def embedding_names(settings: Settings | PromptSettings) -> list[str]:
    """The embeddings a prompt may use by writing their names, sorted without regard to case."""
    return sorted(embedding_files(_prompt_settings(settings).embedding_dirs), key=str.casefold)


def check_networks(settings: Settings | PromptSettings, *texts: str | None) -> None:
    """Raise InvalidOption for a malformed <lora:...> tag, a <hypernet:...> tag or an unknown
    LoRA in any of ``texts`` (the prompt, the negative prompt...; None and "" are skipped).

    Embeddings need no check: a name that is no embedding is simply a word of the prompt.
    """
    uses = []
    for text in texts:
        if not text:
            continue
        try:
            uses.extend(find_loras(text))
        except MalformedNetworkError as exc:
            raise InvalidOption(str(exc)) from None
    if not uses:
        return  # no folder is read for a prompt without tags
    files = lora_files(_prompt_settings(settings).lora_dirs)
    for use in uses:
        if find_lora(use.name, files) is None:
            raise InvalidOption(unknown_lora_message(use.name, files))
