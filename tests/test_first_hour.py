"""What a new admin meets in the first hour: a placeholder token, a config file in another
folder, `--config` after the command, no network, and the tiny model's settings."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

import discord
import pytest
from simcord.backend.state import Backend
from simcord.http.client import FakeHTTPClient

from bot import cli, discord_token
from bot.config import load_settings
from bot.discord_token import TokenProblem, check_token, placeholder_problem
from bot.jobs.dispatcher import Dispatcher
from inference.common.protocol import ModelSpec
from inference.common.sources import explain_hub_failure
from tests.test_startup_and_cli import write_config

# The shape of a bot token (three base64url parts); not a real one.
WELL_FORMED_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789ABCD"


class RefusingClient:
    """discord.py's HTTPClient as Discord answers a wrong token (401)."""

    closed = False

    async def static_login(self, token: str) -> dict:
        raise discord.LoginFailure("Improper token has been passed.")

    async def close(self) -> None:
        RefusingClient.closed = True


class OfflineClient(RefusingClient):
    async def static_login(self, token: str) -> dict:
        raise socket.gaierror(-2, "Name or service not known")


@pytest.fixture
def no_worker(monkeypatch):
    """Fails the test if anything starts the worker (which would load the models)."""

    async def start_worker(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the worker was started before the token was checked")

    monkeypatch.setattr(Dispatcher, "start_worker", start_worker)


@pytest.mark.parametrize("token", ["your-token", "  ", "<your token>", "Bot abc.def.ghi"])
def test_a_placeholder_token_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, settings, no_worker, token):
    def no_request(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a placeholder must be refused without asking Discord")

    monkeypatch.setattr(discord_token, "HTTPClient", no_request)
    monkeypatch.setenv("DISCORD_TOKEN", token)
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "run"]) == 2
    err = capsys.readouterr().err
    assert "discord.com/developers" in err and "Traceback" not in err
    assert not (tmp_path / "sdbot.sqlite3").exists()  # not even migrated
    # Nor warned about voice packages: the bot has no voice commands.
    assert not discord.VoiceClient.warn_nacl and not discord.VoiceClient.warn_dave


def test_the_placeholder_message_says_what_it_is():
    assert "placeholder" in placeholder_problem("your-token")
    assert "empty" in placeholder_problem("")
    assert "Bot " in placeholder_problem("Bot abc.def.ghi")
    assert placeholder_problem(WELL_FORMED_TOKEN) is None
    assert placeholder_problem("simcord.fake.token") is None  # the token simcord logs in with


@pytest.mark.parametrize(
    ("client", "status", "message"),
    [
        (RefusingClient, 2, "Discord refused the token (401 Unauthorized)"),
        (OfflineClient, 1, "Cannot reach Discord to check the token (Name or service not known)"),
    ],
)
def test_a_token_discord_refuses_or_cannot_check_stops_before_the_worker(
    tmp_path, capsys, monkeypatch, settings, no_worker, client, status, message
):
    monkeypatch.setattr(discord_token, "HTTPClient", lambda loop: client())
    monkeypatch.setenv("DISCORD_TOKEN", WELL_FORMED_TOKEN)
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["--config", str(config), "run"]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and WELL_FORMED_TOKEN not in err
    assert len(err.strip().splitlines()) == 1
    assert client.closed


async def test_the_token_check_logs_in_as_discord_py_does_against_simcord():
    """The check is discord.py's own login request (HTTPClient.static_login), so a simulated
    Discord answers it as it answers the bot's login."""
    backend = Backend()
    loop = asyncio.get_running_loop()
    account = await check_token(WELL_FORMED_TOKEN, new_client=lambda: FakeHTTPClient(backend, loop))
    assert account.split("#")[0] == backend.bot_user.name
    with pytest.raises(TokenProblem, match="placeholder") as refused:
        await check_token("your-token", new_client=lambda: FakeHTTPClient(backend, loop))
    assert refused.value.refused


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "other"
    (folder / "tiny").mkdir(parents=True)
    config = folder / "config.toml"
    config.write_text(
        'default_model = "tiny"\noutputs_dir = "images"\n'
        '[[models]]\nname = "tiny"\nsource = "tiny"\n'
        '[[models]]\nname = "sd15"\nsource = "stable-diffusion-v1-5/stable-diffusion-v1-5"\n'
        '[[models]]\nname = "later"\nsource = "./not-yet"\n'
        '[prompts]\nlora_dirs = ["loras", "/srv/loras"]\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(Path("..") / "other" / "config.toml", environ={"SDBOT__IMAGES__UPSCALER_DIRS": '["ups"]'})
    assert settings.database_url == f"sqlite+aiosqlite:///{folder / 'data' / 'sdbot.sqlite3'}"  # the default
    assert settings.outputs_dir == str(folder / "images")
    assert [model.source for model in settings.models] == [
        str(folder / "tiny"), "stable-diffusion-v1-5/stable-diffusion-v1-5", str(folder / "not-yet"),
    ]
    assert settings.prompts.lora_dirs == (str(folder / "loras"), "/srv/loras")
    assert settings.prompts.embedding_dirs == (str(folder / "embeddings"),)
    assert settings.images.upscaler_dirs == ("ups",)  # the environment's: from the current directory


def test_config_is_accepted_after_the_command(tmp_path, capsys, settings):
    config = write_config(tmp_path / "config.toml", settings)
    assert cli.main(["migrate", "--config", str(config)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (tmp_path / "sdbot.sqlite3").is_file()


def test_run_and_generate_help_say_what_each_option_does(capsys):
    for command in ("run", "generate"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert "Discord token" in out and "--config" in out
    assert "1 to [limits] max_steps (60); default: [limits] default_steps (25)" in out
    assert "a multiple of 8 from [limits] min_size to max_size" in out


def test_make_tiny_model_says_how_to_use_it(tmp_path, capsys):
    assert cli.main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    out = capsys.readouterr().out
    assert f'source = "{(tmp_path / "tiny").as_posix()}"' in out
    assert "base_size = 64" in out and "min_size = 64" in out and "default_steps = 4" in out
    assert 'sdbot --config smoke.toml generate "a lighthouse"' in out


def _diffusers_missing_file_error(cause: BaseException) -> OSError:
    """What diffusers' load_config raises when huggingface_hub failed with `cause`."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        try:
            raise cause
        except Exception:
            raise EntryNotFoundError("not found") from cause
    except EntryNotFoundError:
        try:
            raise OSError("someone/made-up does not appear to have a file named model_index.json.")
        except OSError as error:
            return error


def test_an_unreachable_hub_is_named_not_a_missing_model_index():
    from huggingface_hub.errors import LocalEntryNotFoundError

    spec = ModelSpec("ghost", "someone/made-up")
    offline = LocalEntryNotFoundError("cannot find the requested files in the local cache")
    offline.__cause__ = socket.gaierror(-2, "Name or service not known")
    message = explain_hub_failure(spec, spec.source, _diffusers_missing_file_error(offline))
    assert "model 'ghost' (someone/made-up): cannot reach the Hugging Face hub" in message
    assert "Name or service not known" in message and "model_index.json" not in message
    assert explain_hub_failure(spec, spec.source, OSError("disk full")) is None
    assert explain_hub_failure(ModelSpec("local", "/srv/model"), "/srv/model", offline) is None


def test_a_hub_id_that_does_not_exist_is_named():
    from huggingface_hub.errors import RepositoryNotFoundError

    spec = ModelSpec("typo", "someone/made-up")
    # Built without the HTTP response huggingface_hub builds it from: only its type matters here.
    error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(error, "404 Client Error: Repository Not Found")
    message = explain_hub_failure(spec, spec.source, error)
    assert "the Hugging Face hub has no model by this id" in message


def test_log_lines_during_a_download_do_not_stick_to_its_progress_bar(capsys):
    """A download's progress bar leaves its line unfinished; a log line written meanwhile
    (huggingface_hub's retry warnings) starts on a line of its own."""
    from tqdm import tqdm

    from inference.worker import logging_beside_progress_bars

    logger = logging.getLogger("tests.download")
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        with logging_beside_progress_bars():
            bar = tqdm(total=3, desc="Fetching 3 files", file=sys.stderr)
            bar.update(1)
            logger.warning("Retrying in 1s [Retry 1/5].")
            bar.close()
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    before = err.split("Retrying in 1s")[0]
    assert before.endswith(("\r", "\n")), repr(err)
