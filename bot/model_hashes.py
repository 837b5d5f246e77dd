"""A1111's hashes of model files, computed once and kept in the database (db.models.FileHash).

A1111 writes "Model hash" (the first 10 hex digits of the checkpoint's sha256) into every
image, and Civitai finds a model by it. Hashing a 7 GB file takes tens of seconds, so it is
never done on the event loop nor on a job's path: the bot hashes the files it serves one at a
time on a thread, in the background after start-up, and keeps each sha256 by path, valid while
the file keeps its size and modification time. The worker is told the hashes it knows
(ModelSpec.sha256) and hashes a file itself only when the bot has not yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from db.models import FileHash
from inference.common.file_hashes import file_hash

if TYPE_CHECKING:
    from db.session import Database

log = logging.getLogger(__name__)

# A1111's short hash: what "Model hash" holds, and the least of a hash /pnginfo matches on.
SHORT_HASH_LENGTH = 10


@dataclass(frozen=True, slots=True)
class _Stamp:
    size: int
    mtime_ns: int


def _stamp(path: str) -> _Stamp | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _Stamp(stat.st_size, stat.st_mtime_ns)


class FileHashes:
    """The sha256 of model files by path; ``known`` answers from memory (the catalog asks it
    on every refresh), the database is read once and written as hashes are computed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: dict[str, tuple[_Stamp, str]] = {}
        self._loaded = False
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the stored hashes (once)."""
        if self._loaded:
            return
        async with self.db.session() as session:
            rows = (await session.scalars(select(FileHash))).all()
        for row in rows:
            self._known[row.path] = (_Stamp(row.size, row.mtime_ns), row.sha256)
        self._loaded = True

    def known(self, paths: Iterable[str]) -> dict[str, str]:
        """Path -> sha256 of the files hashed already and unchanged since (a stat each)."""
        found = {}
        for path in paths:
            entry = self._known.get(path)
            if entry is not None and _stamp(path) == entry[0]:
                found[path] = entry[1]
        return found

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The files among ``paths`` with no valid hash yet, in order."""
        known = self.known(paths)
        return [path for path in dict.fromkeys(paths) if path not in known and _stamp(path) is not None]

    async def compute(self, paths: Iterable[str]) -> dict[str, str]:
        """Hash the files that have no valid hash, one at a time on a thread, storing each as
        it is done (a stop in between loses only the file being read). Returns the new ones."""
        await self.load()
        computed = {}
        async with self._lock:  # one hashing pass at a time: a refresh during one waits
            for path in self.missing(paths):
                before = _stamp(path)
                try:
                    digest = await asyncio.to_thread(file_hash, Path(path))
                except OSError as exc:
                    log.warning("cannot hash %s: %s", path, exc.strerror or exc)
                    continue
                if before is None or _stamp(path) != before:
                    log.info("%s changed while it was hashed; it is hashed again on the next pass", path)
                    continue
                await self._store(path, before, digest)
                computed[path] = digest
                log.info("hashed %s: %s", path, digest[:SHORT_HASH_LENGTH])
        return computed

    def by_short_hash(self, short: str) -> list[str]:
        """The paths whose sha256 starts with ``short`` (A1111's 10-digit "Model hash", or the
        whole sha256), files unchanged since they were hashed."""
        short = short.strip().lower()
        if len(short) < SHORT_HASH_LENGTH:
            return []
        return [
            path for path, (stamp, digest) in self._known.items()
            if digest.startswith(short) and _stamp(path) == stamp
        ]

    async def _store(self, path: str, stamp: _Stamp, digest: str) -> None:
        async with self.db.session() as session, session.begin():
            row = await session.get(FileHash, path)
            if row is None:
                session.add(FileHash(path=path, size=stamp.size, mtime_ns=stamp.mtime_ns, sha256=digest))
            else:
                row.size, row.mtime_ns, row.sha256 = stamp.size, stamp.mtime_ns, digest
        self._known[path] = (stamp, digest)
