"""Start-up errors name what is wrong; the CLI runs a job through the same queue and worker."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot import cli
from bot.config import ModelSettings
from bot.jobs.dispatcher import Dispatcher, WorkerStartError
from bot.jobs.queue import JobQueue


def write_config(path: Path, settings) -> Path:
    model = settings.models[0]
    path.write_text(
        f'database_url = "{settings.database_url}"\n'
        f'outputs_dir = "{settings.outputs_dir}"\n'
        'default_model = "tiny"\n'
        f'[[models]]\nname = "tiny"\nsource = "{model.source}"\nbase_size = 64\n'
        "[limits]\nmin_size = 64\nmax_size = 128\ndefault_steps = 3\n"
        '[worker]\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    return path


async def test_a_model_that_cannot_be_loaded_stops_the_start_with_its_name(database, settings, tmp_path):
    broken = dataclasses.replace(
        settings,
        models=(*settings.models, ModelSettings(name="ghost", source=str(tmp_path / "no-such-model"))),
    )
    dispatcher = Dispatcher(JobQueue(database, broken.queue), broken.worker_config(), startup_timeout_s=180)
    with pytest.raises(WorkerStartError, match="ghost"):
        await dispatcher.start_worker()


def test_run_without_a_token_explains_where_to_get_one(tmp_path, capsys, monkeypatch, settings):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "run"]) == 2
    err = capsys.readouterr().err
    assert "No Discord bot token" in err and "discord.com/developers" in err and "DISCORD_TOKEN" in err


def test_a_wrong_secret_setting_is_named_but_never_printed(tmp_path, capsys, monkeypatch, settings):
    config = write_config(tmp_path / "config.toml", settings)
    monkeypatch.setenv("SDBOT__DISCORD__TOKEN", "1234567890")
    assert cli.main(["--config", str(config), "migrate"]) == 2
    err = capsys.readouterr().err
    assert "discord.token must be str" in err and "1234567890" not in err
    monkeypatch.delenv("SDBOT__DISCORD__TOKEN")
    monkeypatch.setenv("SDBOT__DATABASE_URL", '["postgresql://sdbot:hunter2@db.example/sdbot"]')
    assert cli.main(["--config", str(config), "migrate"]) == 2
    err = capsys.readouterr().err
    assert "postgresql://sdbot:***@db.example/sdbot" in err and "hunter2" not in err


def test_generate_runs_a_job_through_the_queue_and_worker(tmp_path, capsys, settings):
    config = write_config(tmp_path / "config.toml", settings)
    code = cli.main(["--config", str(config), "generate", "a lighthouse", "--count", "2", "--seed", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "job #1 queued" in out and "image 2: seed 6" in out
    paths = [line.split(" -> ")[1] for line in out.splitlines() if " -> " in line]
    assert len(paths) == 3  # two images and the grid
    with Image.open(paths[0]) as image:
        assert "Seed: 5" in image.info["parameters"]


def test_generate_refuses_bad_options(tmp_path, capsys, settings):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "generate", "x", "--width", "65"]) == 2
    assert "width must be a multiple of 8, got 65." in capsys.readouterr().err


def test_migrate_and_make_tiny_model(tmp_path, settings, capsys):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "model_index.json").is_file()


def test_the_bot_collects_its_youngest_objects_less_often_on_older_pythons():
    """setup_hook raises the young generation's threshold to what CPython 3.13 made the
    default (2,000), never lowers one set higher, and leaves newer collectors alone."""
    import gc

    from bot.client import YOUNG_THRESHOLD, collect_young_less_often

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        collect_young_less_often()
        expected = (YOUNG_THRESHOLD, 10, 10) if sys.version_info < (3, 13) else (700, 10, 10)
        assert gc.get_threshold() == expected
        gc.set_threshold(5000, 10, 10)
        collect_young_less_often()
        assert gc.get_threshold() == (5000, 10, 10)
    finally:
        gc.set_threshold(*saved)
