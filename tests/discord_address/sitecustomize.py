"""Points discord.py at a local stand-in for Discord, for tests that run the real `sdbot run`
process (tests/test_service.py): Python imports this module at start-up when this folder is on
PYTHONPATH. DISCORD.md names the two addresses to replace.

The variable is removed once read, so the worker processes the bot starts (which inherit the
environment) never import discord.

SDBOT_TEST_SLOW_WORKER_START_S, kept for the worker processes, makes their model loading
(inference.jobs.JobRunner.start) take that many seconds longer: a test that stops the bot
while its worker loads then never races a tiny model that loads in a blink.
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
if _slow_start_s:
    import importlib.abc
    import importlib.util
    import sys
    import time

    class _SlowRunnerStart(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            if name != "inference.jobs":
                return None
            sys.meta_path.remove(self)  # find the real module the usual way, once
            spec = importlib.util.find_spec(name)
            execute = spec.loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                execute(module)
                start = module.JobRunner.start

                def slow_start(*args, **kwargs):  # type: ignore[no-untyped-def]
                    time.sleep(float(_slow_start_s))
                    return start(*args, **kwargs)

                module.JobRunner.start = slow_start

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _SlowRunnerStart())
