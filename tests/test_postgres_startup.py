"""`sdbot` on a PostgreSQL URL: it migrates a real server's database, one bot at a time uses
it, and a URL it cannot use (nothing listening, no such database, another kind of database)
stops it with one line that says why, never a traceback, never the password."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bot import cli
from db.session import Database, DatabaseInUse
from tests.postgres_fixtures import create_postgres_database, postgres_url


def sdbot(monkeypatch, database_url: str, *args: str) -> int:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SDBOT__DATABASE_URL", f'"{database_url}"')
    return cli.main(["--config", "/nonexistent/config.toml", *args])


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once the probe closes: nothing listens there


async def test_migrate_brings_a_postgresql_database_to_head(postgres_server, monkeypatch, capsys):
    url = await create_postgres_database(postgres_server)
    for _ in range(2):  # and again: nothing left to do
        # cli.main runs its own event loop (asyncio.run): in a thread, not on the test's.
        assert await asyncio.to_thread(sdbot, monkeypatch, url, "migrate") == 0
        assert "is up to date" in capsys.readouterr().out


def test_a_server_that_is_not_there_is_one_line(monkeypatch, capsys):
    url = f"postgresql+asyncpg://sdbot:hunter2@127.0.0.1:{closed_port()}/sdbot"
    assert sdbot(monkeypatch, url, "migrate") == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("Cannot connect to the database at postgresql+asyncpg://sdbot:***@127.0.0.1:")
    assert "Connect call failed" in line and "hunter2" not in line


def test_a_database_the_server_does_not_have_is_named(postgres_server, monkeypatch, capsys):
    assert sdbot(monkeypatch, postgres_url(postgres_server, "no_such_database"), "migrate") == 2
    assert 'database "no_such_database" does not exist' in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("url", ["mysql://sdbot@db.example/sdbot", "postgresql://sdbot@db.example/sdbot", "not a url"])
def test_a_url_the_bot_cannot_use_names_the_ones_it_can(url, monkeypatch, capsys):
    assert sdbot(monkeypatch, url, "migrate") == 2
    assert "postgresql+asyncpg://user:password@host:5432/name" in one_line(capsys.readouterr().err)



async def test_one_bot_per_postgresql_database(postgres_server):
    url = await create_postgres_database(postgres_server)
    first, second = Database(url), Database(url)
    try:
        await first.take_instance_lock()
        with pytest.raises(DatabaseInUse, match="Another sdbot process is using the database"):
            await second.take_instance_lock()
        await first.close()  # the bot stopped: the lock went with its connection
        await second.take_instance_lock()
        other_database = Database(await create_postgres_database(postgres_server))
        await other_database.take_instance_lock()  # the lock is per database, not per server
        await other_database.close()
    finally:
        await first.close()
        await second.close()
