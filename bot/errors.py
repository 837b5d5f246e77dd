"""Every error a user can cause, as one exception class each.

The bot's single `tree.on_error` (and the button error hook) turns these into ephemeral
replies with the message as written here; anything else is logged with its traceback and the
user gets a short apology. The console CLI prints the same messages.
"""

from __future__ import annotations

from collections.abc import Iterable

from discord import app_commands

from bot.prompts.cleaning import clean_prompt_text

# How much of what a member typed a refusal repeats, and how many names it lists: Discord
# refuses a message over 2,000 characters, and the member then gets no answer at all.
ECHO_LIMIT = 100
LISTED_NAMES = 10
LISTED_NAME_LIMIT = 40


def echo(text: object, limit: int = ECHO_LIMIT) -> str:
    """What a member typed, fit to quote between backticks in a reply: on one line, cut to
    ``limit`` characters, unable to end the quote (no backtick) or to ping (@everyone, <@id>),
    and without the control characters that would garble the answer (bot.prompts.cleaning)."""
    one_line = " ".join(clean_prompt_text(str(text)).split()).replace("`", "'").replace("@", "@\u200b")
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def listed(names: Iterable[str], limit: int = LISTED_NAMES) -> str:
    """Names for a refusal's "Available: ..." list: the first few, each clipped, and how many
    more there are (a server may have hundreds of LoRAs or upscalers)."""
    names = list(names)
    shown = ", ".join(echo(name, LISTED_NAME_LIMIT) for name in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


class UserError(app_commands.AppCommandError):
    """An error caused by what the user asked; its message is shown to them privately."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidOption(UserError):
    """An option value is out of range, malformed or unknown."""


class QueueFull(UserError):
    """The user already has as many jobs waiting as the server allows."""


class TooCostly(UserError):
    """A job costs more GPU time than the server allows, alone or with the member's waiting jobs."""


class JobNotFound(UserError):
    """The job a button or command names no longer exists (deleted, or never existed)."""


class NotAllowed(UserError):
    """The user may not do this to this job (someone else's job, not a moderator)."""


class NothingToDo(UserError):
    """The request is valid but there is nothing to act on (no active job to cancel...)."""


class ImageUnavailable(UserError):
    """The job's image is gone from disk or the job has not produced it."""


class OutdatedCommand(UserError):
    """The member's Discord sent a command as it was before an update of the bot."""


class Refused(UserError):
    """The server's policy refuses this (channel, role, ban, blocked term, quota, cooldown);
    bot.policy.gate has audited it, and the message says why and when to try again."""


class Restarting(UserError):
    """The bot is shutting down (a restart, an update): it takes nothing new until it is back."""
