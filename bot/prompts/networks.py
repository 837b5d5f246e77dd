"""Embeddings and LoRAs on the bot's side: names for autocomplete, and tags checked before queueing:
every LoRA known, and each LoRA and embedding made for the family of the model it will run on
(inference.common.network_families reads that from the file's header).

The files are found by inference.common.network_files, the same torch-free lookup the worker loads
them with, in the same folders (the worker gets them from Settings.worker_config), so a name
the bot accepts is one the worker finds. The worker checks again anyway: a file may be removed
while the job waits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import InvalidOption, echo
from inference.common.network_families import family_mismatch, network_file_family
from inference.common.network_files import (
    LoraUse,
    MalformedNetworkError,
    embedding_files,
    find_lora,
    find_loras,
    lora_files,
    strip_loras,
    token_text,
    unknown_lora_message,
    used_embeddings,
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
    uses = _lora_uses(texts)
    if not uses:
        return  # no folder is read for a prompt without tags
    files = lora_files(_prompt_settings(settings).lora_dirs)
    for use in uses:
        if find_lora(use.name, files) is None:
            raise InvalidOption(unknown_lora_message(use.name, files))


def check_network_families(
    settings: Settings | PromptSettings, model_name: str, model_family: str, *texts: str | None
) -> None:
    """Raise InvalidOption, naming both, for a LoRA or an embedding in ``texts`` made for
    another family than ``model_family`` (the model ``model_name``'s; "" checks nothing).

    Files whose family cannot be told pass: the worker reports what does not load.
    """
    if not model_family:
        return
    prompt_settings = _prompt_settings(settings)
    uses = _lora_uses(texts)
    if uses:
        files = lora_files(prompt_settings.lora_dirs)
        for use in uses:
            if (path := find_lora(use.name, files)) is not None:
                _check_family("lora", path, model_name, model_family)
    embeddings: dict[str, Path] = {}
    for name, path in embedding_files(prompt_settings.embedding_dirs).items():
        embeddings.setdefault(token_text(name), path)  # as the worker matches them
    if embeddings:
        prompts = [strip_loras(text) for text in texts if text]
        for token in used_embeddings(prompts, tuple(embeddings)):
            _check_family("embedding", embeddings[token], model_name, model_family)


def _check_family(kind: str, path: Path, model_name: str, model_family: str) -> None:
    network_family = network_file_family(path, kind)
    refusal = family_mismatch(kind, echo(path.stem), network_family, echo(model_name), model_family)
    if refusal is not None:
        raise InvalidOption(refusal)


def _lora_uses(texts: tuple[str | None, ...]) -> list[LoraUse]:
    uses = []
    for text in texts:
        if not text:
            continue
        try:
            uses.extend(find_loras(text))
        except MalformedNetworkError as exc:
            raise InvalidOption(str(exc)) from None
    return uses
