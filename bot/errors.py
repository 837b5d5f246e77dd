"""Every error a user can cause, as one exception class each.

The bot's single `tree.on_error` (and the button error hook) turns these into ephemeral
replies with the message as written here; anything else is logged with its traceback and the
user gets a short apology. The console CLI prints the same messages.
"""

from __future__ import annotations

from discord import app_commands


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


class Refused(UserError):
    """The server's policy refuses this (channel, role, ban, blocked term, quota, cooldown);
    bot.policy.gate has audited it, and the message says why and when to try again."""
