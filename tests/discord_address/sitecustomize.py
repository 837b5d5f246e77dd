"""Points discord.py at a local stand-in for Discord, for tests that run the real `sdbot run`
process (tests/test_service.py): Python imports this module at start-up when this folder is on
PYTHONPATH. DISCORD.md names the two addresses to replace.

The variable is removed once read, so the worker processes the bot starts (which inherit the
environment) never import discord.

SDBOT_TEST_SLOW_WORKER_START_S, kept for the worker processes, makes their model loading
(inference.jobs.JobRunner.start) take that many seconds longer: a test that stops the bot
while its worker loads then never races a tiny model that loads in a blink.
SDBOT_TEST_SLOW_MODEL_LOAD_S does the same to each model load a job waits on (not the
preloads): tests/test_model_loading_bot.py answers commands while one runs.
"""

import os

_address = os.environ.pop("SDBOT_TEST_DISCORD_URL", None)
if _address:
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = f"{_address}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(_address.replace("http", "ws", 1) + "/gateway")

_slow_start_s = os.environ.get("SDBOT_TEST_SLOW_WORKER_START_S")
_slow_load_s = os.environ.get("SDBOT_TEST_SLOW_MODEL_LOAD_S")


def _patch_on_import(module_name, patch):  # type: ignore[no-untyped-def]
    """Run ``patch(module)`` once ``module_name`` is first imported, the usual way."""
    import importlib.abc
    import importlib.util
    import sys

    class _Patcher(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            if name != module_name:
                return None
            sys.meta_path.remove(self)  # find the real module the usual way, once
            spec = importlib.util.find_spec(name)
            execute = spec.loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                execute(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Patcher())


def _slow_runner_start(module):  # type: ignore[no-untyped-def]
    import time

    start = module.JobRunner.start

    def slow_start(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(float(_slow_start_s))
        return start(*args, **kwargs)

    module.JobRunner.start = slow_start


def _slow_watched_loads(module):  # type: ignore[no-untyped-def]
    """A load a job waits on (PipelineCache's read-ahead, which reports its progress) takes
    that many seconds more once its files are read, as building a big pipeline does."""
    import time

    read_ahead = module.read_ahead

    def slow_read_ahead(*args, **kwargs):  # type: ignore[no-untyped-def]
        total = read_ahead(*args, **kwargs)
        time.sleep(float(_slow_load_s))
        return total

    module.read_ahead = slow_read_ahead


if _slow_start_s:
    _patch_on_import("inference.jobs", _slow_runner_start)
if _slow_load_s:
    _patch_on_import("inference.models", _slow_watched_loads)
