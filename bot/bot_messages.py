"""Edits and deletions of the bot's own messages by channel and message id, with the bot's token.

A message deleted meanwhile (by a moderator, or with its channel) is no error: the caller gets
False and goes on. Any other refusal by Discord (missing permissions, an outage) is logged and
gives False too: a status message that cannot change never fails the job behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.client import SDBot

log = logging.getLogger(__name__)


async def edit_message(bot: SDBot, channel_id: int | None, message_id: int, **fields: Any) -> bool:
    """Edit one of the bot's messages; False when there is no channel or it cannot be edited."""
    if channel_id is None:
        return False
    return await _on_message(bot, channel_id, message_id, "edit", lambda message: message.edit(**fields))


async def delete_message(bot: SDBot, channel_id: int, message_id: int) -> bool:
    """Delete one of the bot's messages; False when it was already gone or cannot be deleted."""
    return await _on_message(bot, channel_id, message_id, "delete", lambda message: message.delete())


async def _on_message(
    bot: SDBot,
    channel_id: int,
    message_id: int,
    verb: str,
    act: Callable[[discord.PartialMessage], Awaitable[Any]],
) -> bool:
    message = bot.get_partial_messageable(channel_id).get_partial_message(message_id)
    try:
        await act(message)
        return True
    except discord.NotFound:
        return False
    except discord.HTTPException as error:
        log.warning("could not %s message %s in channel %s: %s", verb, message_id, channel_id, error)
        return False
