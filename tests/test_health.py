"""`sdbot check`: one line per check, exit status 0 only when the bot is ready to run."""

from __future__ import annotations

import sqlite3

from bot import cli
from tests.test_startup_and_cli import write_config


def check(config, capsys, *options: str) -> tuple[int, list[str]]:
    code = cli.main(["--config", str(config), "check", *options])
    return code, capsys.readouterr().out.splitlines()


def test_a_ready_installation_passes_every_check_and_starts_its_worker(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    code, lines = check(config, capsys)
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == ["ok    config", "ok    database", "ok    models", "ok    worker"]
    assert "started on cpu" in lines[3] and "tiny" in lines[3]


def test_a_database_not_migrated_fails_and_says_how_to_migrate(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    database = tmp_path / "sdbot.sqlite3"

    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and "FAIL  database" in lines[1] and "does not exist" in lines[1] and "sdbot migrate" in lines[1]
    assert not database.exists()  # the check creates nothing

    sqlite3.connect(database).close()  # a database never migrated
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and "schema at revision none" in lines[1] and "sdbot run" in lines[1]
    assert [line.split(":")[0] for line in lines] == ["ok    config", "FAIL  database", "ok    models"]


def test_a_missing_model_fails_by_name_and_the_worker_is_not_started(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    with config.open("a", encoding="utf-8") as file:
        file.write(f'[[models]]\nname = "ghost"\nsource = "{tmp_path / "no-such-model"}"\n')
    assert cli.main(["--config", str(config), "migrate"]) == 0
    capsys.readouterr()
    code, lines = check(config, capsys)
    assert code == 1
    assert lines[2].startswith("FAIL  models") and "'ghost'" in lines[2] and "does not exist" in lines[2]
    assert lines[3] == "FAIL  worker: not started: fix the checks above first"


def test_a_bad_config_fails_the_check(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text('default_model = "nowhere"\n', encoding="utf-8")
    code, lines = check(config, capsys, "--no-worker")
    assert code == 1 and lines[0].startswith("FAIL  config: default_model 'nowhere'")
