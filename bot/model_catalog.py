"""The bot's live list of models: configured ones and those found under [a1111], kept current.

``catalog.settings`` is the bot's Settings (SDBot.settings reads it), whose ``models`` every
check, autocomplete and /pnginfo reads; a refresh (``/admin models refresh``, or the periodic
rescan every [a1111] rescan_minutes) walks the folders again, reading only the files whose
size or time changed, builds the new list, and tells the worker (UpdateModels, through the
listeners) so that removed models are unloaded and new ones can be picked at once.

The sha256 of every model file is computed here in the background (bot.model_hashes), one
file at a time on a thread after start-up, and handed to the worker with the list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError, Settings, discover
from bot.model_hashes import SHORT_HASH_LENGTH, FileHashes
from inference.common.model_folders import SkippedFile
from inference.common.protocol import ModelSpec
from inference.common.sources import SINGLE_FILE_SUFFIXES

log = logging.getLogger(__name__)

ModelsListener = Callable[[tuple[ModelSpec, ...]], None]


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What a refresh changed, for the moderator who asked and the log."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    skipped: tuple[SkippedFile, ...] = ()
    # Why nothing was changed (a rescan that would leave the bot broken), "" when applied.
    refused: str = ""

    def summary(self) -> str:
        if self.refused:
            return f"Models not refreshed: {self.refused}"
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (("added", self.added), ("removed", self.removed), ("changed", self.changed))
            if names
        ]
        skipped = f" {len(self.skipped)} file(s) skipped (`sdbot models` says why)." if self.skipped else ""
        return ("Models refreshed. " + "; ".join(parts) + "." if parts else "Models refreshed: no change.") + skipped


class ModelCatalog:
    def __init__(self, settings: Settings, hashes: FileHashes | None = None) -> None:
        self.settings = settings
        self.hashes = hashes
        self.skipped: tuple[SkippedFile, ...] = ()
        self._listeners: list[ModelsListener] = []
        self._refreshing = asyncio.Lock()

    def listen(self, listener: ModelsListener) -> None:
        """Call ``listener`` with the worker's new list whenever models or hashes change."""
        self._listeners.append(listener)

    def specs(self) -> tuple[ModelSpec, ...]:
        """What the worker serves: every model, with its file's sha256 when known."""
        return self.settings.worker_config(self.known_hashes()).models

    def known_hashes(self) -> dict[str, str]:
        if self.hashes is None:
            return {}
        return self.hashes.known(model_files(self.settings))

    def model_by_hash(self, short_hash: str) -> str | None:
        """The name of the model whose file has this hash (A1111's "Model hash", 10 hex digits
        or more): how /pnginfo finds a checkpoint that has another name here."""
        if self.hashes is None or len(short_hash.strip()) < SHORT_HASH_LENGTH:
            return None
        paths = set(self.hashes.by_short_hash(short_hash))
        return next((m.name for m in self.settings.models if m.source in paths), None)

    async def refresh(self) -> CatalogChange:
        """Walk the [a1111] folders again and serve what is there now; the worker is told."""
        async with self._refreshing:
            settings = self.settings
            if not settings.a1111.root:
                return CatalogChange()
            tables, _scan, skipped = await asyncio.to_thread(discover, settings.model_entries, settings.a1111)
            try:
                updated = settings.with_models(tables)
            except ConfigError as error:
                log.warning("models not refreshed: %s", error)
                return CatalogChange(skipped=tuple(skipped), refused=str(error))
            before = {m.name: m for m in settings.models}
            after = {m.name: m for m in updated.models}
            change = CatalogChange(
                added=tuple(name for name in after if name not in before),
                removed=tuple(name for name in before if name not in after),
                changed=tuple(name for name in after if name in before and after[name] != before[name]),
                skipped=tuple(skipped),
            )
            self.settings = updated if (change.added or change.removed or change.changed) else settings
            self.skipped = change.skipped
            if change.added or change.removed or change.changed:
                log.info("%s", change.summary())
                self._tell_listeners()
            return change

    async def hash_files(self) -> int:
        """Hash the model files with no valid hash yet (in the background: one at a time, on a
        thread); the worker is told the new hashes. Returns how many were hashed."""
        if self.hashes is None:
            return 0
        computed = await self.hashes.compute(model_files(self.settings))
        if computed:
            self._tell_listeners()
        return len(computed)

    async def keep_current(self) -> None:
        """The background task of a running bot: hash what needs it, then rescan every
        [a1111] rescan_minutes (and hash what the rescan found). Never raises but cancellation."""
        interval = self.settings.a1111.rescan_minutes * 60
        if self.settings.a1111.root:
            try:
                await self.refresh()  # files changed since the settings were read; the skipped ones listed
            except Exception:
                log.exception("rescanning the model folders failed")
        while True:
            try:
                await self.hash_files()
            except Exception:  # a database hiccup must not end the rescans
                log.exception("hashing the model files failed; trying again on the next rescan")
            if not self.settings.a1111.root or interval <= 0:
                return
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("rescanning the model folders failed; trying again in %g min", interval / 60)

    def _tell_listeners(self) -> None:
        specs = self.specs()
        for listener in self._listeners:
            listener(specs)


def model_files(settings: Settings) -> list[str]:
    """The single files the models are read from (A1111 hashes only those), each once."""
    sources = (source for m in settings.models for source in (m.source, m.inpaint_source))
    return list(dict.fromkeys(s for s in sources if s and Path(s).suffix.lower() in SINGLE_FILE_SUFFIXES))
