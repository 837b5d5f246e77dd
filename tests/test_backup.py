"""`sdbot backup PATH`: a consistent copy while a writer keeps writing; bad paths and other
databases get a one-line reason and leave nothing behind."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from bot import cli
from bot.service import InstanceLock
from db.migrate import alembic_config


def write_config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{database_url}"\n', encoding="utf-8")
    return config


@pytest.fixture
def migrated(tmp_path, capsys) -> tuple[Path, Path]:
    """A migrated database file and a config naming it."""
    database = tmp_path / "live.sqlite3"
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{database}")
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    return database, config


class AuditWriter(threading.Thread):
    """Another process's writes, as the running bot makes them: small commits, one after another."""

    def __init__(self, database: Path) -> None:
        super().__init__(daemon=True)
        self.database, self.committed, self.stop = database, 0, threading.Event()
        self.some_written = threading.Event()

    def run(self) -> None:
        connection = sqlite3.connect(self.database, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        while not self.stop.is_set():
            with connection:
                connection.execute(
                    "insert into audit_log (actor_id, action, details, created_at) values (1, 'job.queued', ?, "
                    "'2026-01-01 00:00:00')", ("x" * 500,),
                )
            self.committed += 1
            if self.committed >= 50:
                self.some_written.set()
        connection.close()


def test_a_backup_taken_while_a_writer_writes_is_whole_and_current(migrated, tmp_path, capsys):
    database, config = migrated
    writer = AuditWriter(database)
    writer.start()
    assert writer.some_written.wait(60)
    before = writer.committed
    backup = tmp_path / "backups" / "sdbot.sqlite3"
    backup.parent.mkdir()
    try:
        with InstanceLock(f"sqlite+aiosqlite:///{database}"):  # held by the running bot
            assert cli.main(["--config", str(config), "backup", str(backup)]) == 0
        after_backup = writer.committed
        writer.some_written.clear()
        while writer.committed < after_backup + 20 and writer.is_alive():  # it was never stopped by it
            writer.some_written.wait(0.01)
    finally:
        writer.stop.set()
        writer.join()
    assert f"Database backed up to {backup}." in capsys.readouterr().out
    assert [p.name for p in backup.parent.iterdir()] == ["sdbot.sqlite3"]  # no partial file, no -wal

    copy = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{database}")).get_current_head()
        assert copy.execute("select version_num from alembic_version").fetchone() == (head,)
        rows = copy.execute("select count(*) from audit_log").fetchone()[0]
        assert writer.committed >= after_backup + 20 and before <= rows <= after_backup
    finally:
        copy.close()


def refused(capsys, config: Path, *arguments: str) -> str:
    assert cli.main(["--config", str(config), "backup", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("Backup failed: ") and "\n" not in error, error
    return error


def test_bad_backup_paths_and_databases_are_refused_in_one_line(migrated, tmp_path, capsys):
    database, config = migrated
    assert "the folder" in refused(capsys, config, str(tmp_path / "missing" / "copy.sqlite3"))
    assert "is not a folder" in refused(capsys, config, str(database / "copy.sqlite3"))
    assert "is the live database itself" in refused(capsys, config, str(database), "--force")
    assert "is a folder" in refused(capsys, config, str(tmp_path))

    existing = tmp_path / "old-backup.sqlite3"
    existing.write_bytes(b"yesterday")
    assert "pass --force to overwrite it" in refused(capsys, config, str(existing))
    assert existing.read_bytes() == b"yesterday"
    assert cli.main(["--config", str(config), "backup", str(existing), "--force"]) == 0
    assert existing.read_bytes().startswith(b"SQLite format 3")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    postgres = write_config(elsewhere, "postgresql+asyncpg://bot@localhost/sdbot")
    assert "use pg_dump" in refused(capsys, postgres, str(tmp_path / "pg.sqlite3"))
    wrong_file = write_config(elsewhere, f"sqlite+aiosqlite:///{tmp_path / 'nothing.sqlite3'}")
    assert "there is no database at" in refused(capsys, wrong_file, str(tmp_path / "x"))
    assert not (tmp_path / "nothing.sqlite3").exists()  # not created by looking


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_that_cannot_be_written_is_named(migrated, tmp_path, capsys):
    _, config = migrated
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert "Permission denied" in refused(capsys, config, str(locked / "copy.sqlite3"))
    finally:
        locked.chmod(0o700)
