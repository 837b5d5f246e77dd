"""`sdbot check`: one line per check, exit status 0 only when the bot is ready to run."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from simcord.backend.state import Backend
from simcord.http.client import FakeHTTPClient

from bot import cli, discord_token
from tests.test_first_hour import WELL_FORMED_TOKEN, RefusingClient
from tests.test_startup_and_cli import write_config


@pytest.fixture(autouse=True)
def simulated_discord(monkeypatch):
    """The token check's one request goes to a simulated Discord that knows the token."""
    backend = Backend()
    monkeypatch.setattr(discord_token, "HTTPClient", lambda loop: FakeHTTPClient(backend, asyncio.get_running_loop()))
    monkeypatch.setenv("DISCORD_TOKEN", WELL_FORMED_TOKEN)
    return backend


def check(config, capsys, *options: str) -> tuple[int, list[str]]:
    code = cli.main(["--config", str(config), "check", *options])
    return code, capsys.readouterr().out.splitlines()


def test_a_ready_installation_passes_every_check_and_starts_its_worker(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    code, lines = check(config, capsys)
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "ok    config", "ok    discord token", "ok    database", "ok    models", "ok    worker"
    ]
    assert "logs in as" in lines[1]
    assert "started on cpu" in lines[4] and "tiny" in lines[4]


def test_a_placeholder_or_refused_token_fails_the_check_and_says_where_tokens_are(tmp_path, settings, capsys, monkeypatch):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("DISCORD_TOKEN", "your-token")
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and lines[1].startswith("FAIL  discord token: The Discord token is still a placeholder")
    monkeypatch.setenv("DISCORD_TOKEN", WELL_FORMED_TOKEN)
    monkeypatch.setattr(discord_token, "HTTPClient", lambda loop: RefusingClient())
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and lines[1].startswith("FAIL  discord token: Discord refused the token (401 Unauthorized)")
    assert WELL_FORMED_TOKEN not in "\n".join(lines)
    assert [line.split(":")[0] for line in lines] == ["ok    config", "FAIL  discord token", "ok    database", "ok    models"]


def test_a_database_not_migrated_fails_and_says_how_to_migrate(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    database = tmp_path / "sdbot.sqlite3"

    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and "FAIL  database" in lines[2] and "does not exist" in lines[2] and "sdbot migrate" in lines[2]
    assert not database.exists()  # the check creates nothing

    sqlite3.connect(database).close()  # a database never migrated
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and "schema at revision none" in lines[2] and "sdbot run" in lines[2]
    assert [line.split(":")[0] for line in lines] == ["ok    config", "ok    discord token", "FAIL  database", "ok    models"]


def test_a_missing_model_fails_by_name_and_the_worker_is_not_started(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    with config.open("a", encoding="utf-8") as file:
        file.write(f'[[models]]\nname = "ghost"\nsource = "{tmp_path / "no-such-model"}"\n')
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    code, lines = check(config, capsys)
    assert code == 1
    assert lines[3].startswith("FAIL  models") and "'ghost'" in lines[3] and "does not exist" in lines[3]
    assert lines[4] == "FAIL  worker: not started: fix the checks above first"


def test_a_bad_config_fails_the_check(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text('default_model = "nowhere"\n', encoding="utf-8")
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and lines[0].startswith("FAIL  config: default_model 'nowhere'")
