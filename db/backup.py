"""A consistent copy of the live SQLite database (`sdbot backup PATH`), taken while the bot runs.

A file copy of a database in WAL mode can catch a page half-written or miss the commits still
in the -wal file; SQLite's online backup API copies through a read transaction instead, so the
copy is the database as of one commit. It is written beside PATH under a temporary name and
renamed into place, so PATH never holds a half-written backup.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class BackupError(Exception):
    """The backup cannot be taken; the message says why, in one line."""


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory ones."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def backup_database(database_url: str, target: str | Path, *, force: bool = False) -> Path:
    """Copy the database of `database_url` to `target`; the path written. Raises BackupError."""
    source = sqlite_path(database_url)
    if source is None:
        backend = _backend_name(database_url)
        if backend == "postgresql":
            raise BackupError("the database is PostgreSQL: use pg_dump (sdbot backup copies SQLite databases)")
        raise BackupError(f"sdbot backup copies SQLite databases only, and {database_url!r} is not one")
    if not source.is_file():
        raise BackupError(f"there is no database at {source} (check database_url)")
    target = Path(target)
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{target} is the live database itself: choose another path")
    if target.is_dir():
        raise BackupError(f"{target} is a folder: give the backup's file name")
    if target.exists() and not force:
        raise BackupError(f"{target} exists: choose another path, or pass --force to overwrite it")
    if not target.parent.is_dir():
        what = "is not a folder" if target.parent.exists() else "does not exist"
        raise BackupError(f"cannot write {target}: the folder {target.parent} {what}")
    try:
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as error:
        raise BackupError(f"cannot write {target}: {error.strerror or error}") from error
    os.close(handle)
    try:
        _copy(source, Path(partial))
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as error:
        Path(partial).unlink(missing_ok=True)
        raise BackupError(f"cannot back up to {target}: {getattr(error, 'strerror', None) or error}") from error
    return target


def _copy(source: Path, partial: Path) -> None:
    # Read-only, so a wrong path never creates an empty database; pages=-1 (the default)
    # copies everything in one step, inside one read transaction: writers go on (WAL), and the
    # copy cannot be restarted halfway by their commits.
    live = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(partial)
        try:
            live.backup(copy)
            # A standalone file: the backup keeps no -wal beside it.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        live.close()


def _backend_name(database_url: str) -> str:
    try:
        return make_url(database_url).get_backend_name()
    except ArgumentError:
        return ""
