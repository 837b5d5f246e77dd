"""The Discord token, checked before `sdbot run` spends minutes loading models.

A placeholder (the README's `your-token`, an empty value) is refused without asking anyone;
any other token is tried with one cheap request, the one discord.py's login makes
(GET /users/@me), so a token Discord refuses (401) or a Discord out of reach is said in one
sentence before the worker starts. The token itself is never printed: a message describes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import aiohttp
import discord
from discord.http import HTTPClient

log = logging.getLogger(__name__)

# What the README, config.example.toml and tutorials write where the token goes.
PLACEHOLDER_TOKENS = frozenset({
    "your-token", "your_token", "yourtoken", "your-bot-token", "your_bot_token", "token", "bot-token",
    "bot_token", "discord_token", "changeme", "change-me", "xxx", "todo", "none", "null", "...",
})
# A bot token is three base64url parts separated by dots (the bot's id, a timestamp, an HMAC).
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
WHERE_TOKENS_ARE = (
    "Get one at https://discord.com/developers/applications: your application > Bot > Reset Token "
    "(the Client Secret and the Public Key are not the token)"
)
CHECK_TIMEOUT_S = 30.0


class TokenProblem(Exception):
    """The token cannot work (`refused`: Discord said so, or it is a placeholder), or Discord
    could not be asked; the message says what to do."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


def placeholder_problem(token: str | None) -> str | None:
    """Why this token cannot be a real one, without asking Discord; None when it might be."""
    value = (token or "").strip()
    if not value:
        return "The Discord token is empty."
    if value.lower().strip("<>\"'") in PLACEHOLDER_TOKENS or value.startswith("<"):
        return (
            "The Discord token is still a placeholder (such as `your-token` in the README): "
            "set DISCORD_TOKEN, or [discord] token in config.toml, to your bot's token."
        )
    if value.lower().startswith("bot "):
        return 'The Discord token starts with "Bot ": give the token alone, without that prefix.'
    if any(char.isspace() or char in "\"'" for char in value):
        return "The Discord token contains spaces or quotes: copy the token alone."
    return None


def _shape_hint(token: str) -> str:
    if TOKEN_SHAPE.fullmatch(token.strip()):
        return ""
    return (
        f" It does not look like a bot token either ({len(token.strip())} characters; a bot token has "
        "about 70, in three parts separated by dots)."
    )


async def check_token(token: str | None, new_client: Callable[[], HTTPClient] | None = None) -> str:
    """The bot account's name (`name#discriminator` or `name`) when Discord accepts the token;
    raises TokenProblem otherwise. `new_client` makes the HTTP client (a simulated one in tests)."""
    problem = placeholder_problem(token)
    if problem is not None:
        raise TokenProblem(f"{problem} {WHERE_TOKENS_ARE}.", refused=True)
    assert token is not None
    client = new_client() if new_client is not None else HTTPClient(asyncio.get_running_loop())
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            user = await client.static_login(token.strip())
    except discord.LoginFailure:
        raise TokenProblem(
            f"Discord refused the token (401 Unauthorized): it is wrong, or was reset since.{_shape_hint(token)} "
            f"{WHERE_TOKENS_ARE}, and set DISCORD_TOKEN or [discord] token to it.",
            refused=True,
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError, discord.HTTPException) as error:
        log.debug("checking the Discord token failed", exc_info=error)
        raise TokenProblem(
            f"Cannot reach Discord to check the token ({_describe(error)}): check this machine's network, "
            "DNS and firewall (the bot needs https://discord.com), then start it again.",
            refused=False,
        ) from None
    finally:
        await client.close()
    name = user.get("username", "?")
    discriminator = user.get("discriminator", "0")
    return name if discriminator in ("0", None) else f"{name}#{discriminator}"


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    if isinstance(error, discord.HTTPException):
        return f"HTTP {error.status}"
    cause = getattr(error, "os_error", None) or error  # aiohttp's connection errors wrap one
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror  # "Name or service not known", without "[Errno -2]"
    return str(cause) or type(cause).__name__
