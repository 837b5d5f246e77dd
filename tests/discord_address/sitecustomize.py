"""Points discord.py at a local stand-in for Discord, for tests that run the real `sdbot run`
process (tests/test_service.py): Python imports this module at start-up when this folder is on
PYTHONPATH. DISCORD.md names the two addresses to replace.

The variable is removed once read, so the worker processes the bot starts (which inherit the
environment) never import discord.
"""

import os

_address = os.environ.pop("SDBOT_TEST_DISCORD_URL", None)
if _address:
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = f"{_address}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(_address.replace("http", "ws", 1) + "/gateway")
