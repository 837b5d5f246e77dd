"""Queuing what one command asked for: one job, or one per permutation, after a yes when many.

Up to [prompts] confirm_permutations_above jobs are queued at once: the first job's status
message answers the command and each further one is a followup of it. Above that the user
is asked first, privately, with Confirm and Cancel buttons; more than max_permutations never
gets here (bot.prompts.permutations refuses it). A batch that would pass the member's cap of
waiting jobs is refused whole rather than queued in part.

The jobs waiting for a yes are kept in memory under a short random key that the buttons'
custom_id carries: their prompts would not fit in a custom_id (100 characters), and a table
for a question that lives a few minutes is more than it is worth. They are kept for
PENDING_LIFETIME_S; after that, or after a restart, a click is told the question expired and to
run the command again. The buttons are DynamicItems, so even then the click is answered
rather than failing with "This interaction failed".
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem

from bot import actions
from bot.errors import QueueFull
from bot.interactions import MESSAGE_LIMIT, send_private, withdraw_thinking
from bot.policy import gate
from bot.prompts.tokens import cut_warning
from bot.ui.embeds import clip

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.jobs.params import JobParameters

PENDING_LIFETIME_S = 15 * 60
PROMPT_PREVIEW = 100  # characters of each prompt listed in the question


@dataclass
class _Pending:
    user_id: int
    params: list[JobParameters]
    expires_at: float


_pending: dict[str, _Pending] = {}


async def submit_jobs(interaction: discord.Interaction[SDBot], params: list[JobParameters]) -> None:
    """Queue the jobs of one command, asking first when there are many (see module doc)."""
    bot = interaction.client
    async with gate.member_turn(interaction.user.id):
        if len(params) > 1:
            await _check_room(bot, interaction.user.id, len(params))
        await gate.check_jobs(interaction, params)  # the server's policy, for the whole batch
        if len(params) > bot.settings.prompts.confirm_permutations_above:
            await _ask(interaction, params)
            return
        await _queue_all(interaction, params, answered=False)


async def _queue_all(interaction: discord.Interaction[SDBot], params: list[JobParameters], *, answered: bool) -> None:
    for number, job_params in enumerate(params):
        await actions.submit(interaction, job_params, as_followup=answered or number > 0, checked=True)
    settings = interaction.client.settings
    warnings = list(dict.fromkeys(w for p in params if (w := cut_warning(settings, p))))
    if warnings:
        await interaction.followup.send(clip("\n".join(warnings), MESSAGE_LIMIT), ephemeral=True)


async def _check_room(bot: SDBot, user_id: int, count: int) -> None:
    waiting = await bot.queue.pending_count(user_id)
    cap = bot.settings.queue.max_pending_per_user
    if waiting + count > cap:
        raise QueueFull(
            f"This prompt makes {count} jobs, and you may have {cap} waiting at once (you have {waiting} now). "
            "Use fewer {…} options, or wait for some of your jobs to start."
        )


async def _ask(interaction: discord.Interaction[SDBot], params: list[JobParameters]) -> None:
    now = time.monotonic()
    for key in [key for key, pending in _pending.items() if pending.expires_at <= now]:
        del _pending[key]
    key = secrets.token_hex(4)
    _pending[key] = _Pending(interaction.user.id, params, now + PENDING_LIFETIME_S)
    listed = "\n".join(f"{number}. {clip(p.prompt, PROMPT_PREVIEW)}" for number, p in enumerate(params, start=1))
    question = f"This prompt makes **{len(params)} jobs**, one per permutation:\n{listed}\nQueue them all?"
    text = clip(question, MESSAGE_LIMIT)
    view = discord.ui.View(timeout=None)  # the buttons are dynamic items: they never time out
    view.add_item(ConfirmButton(key, "yes", len(params)))
    view.add_item(ConfirmButton(key, "no"))
    if interaction.response.is_done():
        # A public "thinking…" would make the question public: it goes first.
        await withdraw_thinking(interaction, "Waiting for your confirmation.")
        await interaction.followup.send(text, view=view, ephemeral=True)
    else:
        await interaction.response.send_message(text, view=view, ephemeral=True)


class ConfirmButton(DynamicItem[Button], template=r"sd:perm:(?P<key>[0-9a-f]{8}):(?P<answer>yes|no)"):
    """Confirm or Cancel under the question; the key names the jobs waiting in memory."""

    def __init__(self, key: str, answer: str, count: int = 0) -> None:
        label = f"Confirm: queue {count} jobs" if answer == "yes" else "Cancel"
        style = discord.ButtonStyle.primary if answer == "yes" else discord.ButtonStyle.secondary
        super().__init__(Button(label=label, style=style, custom_id=f"sd:perm:{key}:{answer}"))
        self.key, self.answer = key, answer

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(match["key"], match["answer"])

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(interaction, lambda: self._answer(interaction))

    async def _answer(self, interaction: discord.Interaction[SDBot]) -> None:
        pending = _pending.get(self.key)
        if pending is not None and pending.user_id != interaction.user.id:
            await send_private(interaction, "Only the member who asked can answer this.")
            return
        if pending is None or pending.expires_at <= time.monotonic():
            _pending.pop(self.key, None)
            await interaction.response.edit_message(
                content="This question has expired (it is kept for 15 minutes, and not across a restart of the "
                "bot): run the command again.",
                view=None,
            )
            return
        if self.answer == "no":
            del _pending[self.key]
            await interaction.response.edit_message(content="Canceled: nothing was queued.", view=None)
            return
        count = len(pending.params)
        async with gate.member_turn(interaction.user.id):
            if _pending.get(self.key) is not pending:  # a second press (a double click) waited for the first
                await send_private(interaction, "This question was already answered.")
                return
            # Checked again (jobs may have been queued meanwhile); refused, the question stays.
            await _check_room(interaction.client, interaction.user.id, count)
            await gate.check_jobs(interaction, pending.params)
            del _pending[self.key]
            await interaction.response.edit_message(content=f"Queuing {count} jobs.", view=None)
            await _queue_all(interaction, pending.params, answered=True)
