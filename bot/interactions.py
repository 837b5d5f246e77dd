"""Small helpers every command, button and form uses on its Discord interaction: the first
"thinking…" (acknowledge), private answers (send_private), where the member is (an
age-restricted channel) and whether what they make is private.

They sit below what the commands do (bot.actions, bot.policy.gate, bot.ui) and above the
Discord-free core, so any of those can use them without importing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import discord

from bot.ui.embeds import clip

if TYPE_CHECKING:
    from bot.client import SDBot

MESSAGE_LIMIT = 2000  # Discord's longest message
MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
# interaction.extras keys: the privacy chosen at acknowledgement, and a public "thinking…"
# that no status message has replaced yet.
_PRIVATE_KEY = "sdbot.private"
_PUBLIC_THINKING_KEY = "sdbot.public_thinking"


async def acknowledge(
    interaction: discord.Interaction[SDBot], parent_job_id: int | None = None, *, private: bool | None = None
) -> None:
    """Answer Discord at once with "thinking…", before the checks and the queue, whatever the
    load: the 3-second limit and the member's patience both count from the click.

    It is private when the job's result will be (answers_privately), or as ``private`` says
    (a moderator's merge is always private). The first status message
    replaces it (bot.actions.submit); a refusal or a private question withdraws it
    (withdraw_thinking), so only the private explanation remains."""
    if interaction.response.is_done():
        return
    if private is None:
        private = await answers_privately(interaction, parent_job_id)
    await interaction.response.defer(thinking=True, ephemeral=private)
    interaction.extras[_PRIVATE_KEY] = private
    interaction.extras[_PUBLIC_THINKING_KEY] = not private
    # The checks and the queue row wait until the commands that came before this one have had
    # their "thinking…" too (bot/answers_first.py).
    answers_first = interaction.client.answers_first
    answers_first.answered()
    await answers_first.wait_for_earlier()


async def withdraw_thinking(interaction: discord.Interaction[SDBot], content: str) -> None:
    """Finish and delete a public "thinking…" that will not become a status message."""
    if not interaction.extras.pop(_PUBLIC_THINKING_KEY, False):
        return
    with contextlib.suppress(discord.HTTPException):
        # A still-loading response must be finished before it is deleted, or Discord takes the
        # next followup (the private explanation) for its content and fails.
        await interaction.edit_original_response(content=content)
        await interaction.delete_original_response()


async def replace_thinking(interaction: discord.Interaction[SDBot], **fields: Any) -> discord.WebhookMessage:
    """The answer to an acknowledged interaction: its first followup replaces "thinking…"."""
    message = await interaction.followup.send(wait=True, **fields)
    interaction.extras.pop(_PUBLIC_THINKING_KEY, None)
    return message


async def send_private(interaction: discord.Interaction[SDBot], text: str) -> None:
    """Every private answer (refusals, the error handlers' replies) goes out here: cut to what
    Discord takes, since a message it refuses as too long leaves the member with no answer."""
    text = clip(text, MESSAGE_LIMIT)
    if interaction.response.is_done():
        await withdraw_thinking(interaction, "Not queued.")
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


# What a member is told when nothing in the bot takes what they pressed, sent or typed (bot.client).
STALE_COMPONENT = (
    "This button or menu no longer works: it is from an older version of the bot. "
    "Use /show with the job's number for new buttons, or run the command again."
)
STALE_FORM = "This form was open when the bot restarted, so it can no longer be sent: open it again."
OUTDATED_COMMAND = (
    "This command changed in an update of the bot that your Discord has not loaded yet: "
    "reload Discord (Ctrl+R, or reopen the app) and try again."
)


def sent_outdated_options(interaction: discord.Interaction[SDBot]) -> bool:
    """Whether a slash command's options carry other types than the command declares now: a
    member's Discord still on the command as it was before an update (an option that was text
    and is a number now). discord.py passes such a value through as it came, and the checks
    behind it would fail on a string where they expect a number."""
    command = interaction.command
    if not isinstance(command, discord.app_commands.Command):
        return False
    declared = {parameter.name: parameter.type.value for parameter in command.parameters}
    data: Mapping[str, Any] = interaction.data or {}  # type: ignore[assignment]
    return any(
        option.get("name") in declared and option.get("type") != declared[option["name"]]
        for option in _leaf_options(data.get("options"))
    )


def _leaf_options(options: Any) -> Iterator[Mapping[str, Any]]:
    """A command's options as sent, inside the subcommand and group they name (types 1 and 2)."""
    for option in options if isinstance(options, list) else []:
        if not isinstance(option, dict):
            continue
        if option.get("type") in (1, 2):
            yield from _leaf_options(option.get("options"))
        else:
            yield option


class OpenForms:
    """The forms (modals) the bot has open, by custom_id, as discord.py holds them: a form
    leaves once discord.py is done with it (submitted, or timed out: Modal.wait). A submission
    naming none of them is of a form opened before a restart, which nothing here would answer
    (bot.client)."""

    def __init__(self) -> None:
        # A count: the same member may open one job's form twice, one custom_id.
        self._open: Counter[str] = Counter()
        self._watching: set[asyncio.Task[bool]] = set()

    def __contains__(self, custom_id: object) -> bool:
        return custom_id in self._open

    def opened(self, form: discord.ui.Modal) -> None:
        self._open[form.custom_id] += 1
        watch = asyncio.create_task(form.wait())
        self._watching.add(watch)
        watch.add_done_callback(lambda task: self._closed(task, form.custom_id))

    def _closed(self, watch: asyncio.Task[bool], custom_id: str) -> None:
        self._watching.discard(watch)
        self._open[custom_id] -= 1
        if self._open[custom_id] <= 0:
            del self._open[custom_id]


async def send_form(interaction: discord.Interaction[SDBot], form: discord.ui.Modal) -> None:
    """Open ``form`` as the answer to ``interaction``, kept among the bot's open forms."""
    await interaction.response.send_modal(form)
    interaction.client.open_forms.opened(form)


def stale_form_answer(data: Mapping[str, Any]) -> str:
    """STALE_FORM, followed by what the member had typed in the form (a modal submission's
    ``data``), so that a long prompt is not lost with it."""
    typed = "\n\n".join(value.strip() for value in _typed_values(data.get("components", [])) if value.strip())
    if not typed:
        return STALE_FORM
    head = f"{STALE_FORM} What you typed:\n```\n"
    typed = clip(typed.replace("```", "``\u200b`"), MESSAGE_LIMIT - len(head) - len("\n```"))
    return f"{head}{typed}\n```"


def _typed_values(components: Any) -> Iterator[str]:
    """The text inputs' values of a submitted form, in order, inside its rows and labels."""
    for component in components if isinstance(components, list) else []:
        if not isinstance(component, dict):
            continue
        if isinstance(component.get("value"), str):
            yield component["value"]
        yield from _typed_values(component.get("components"))
        yield from _typed_values([component.get("component")])


def is_age_restricted(interaction: discord.Interaction[SDBot]) -> bool:
    """The channel is one Discord marks age-restricted (a thread follows its parent). A DM
    never is: NSFW is allowed only where a server's moderators said so."""
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return interaction.guild_id is not None and callable(is_nsfw) and bool(is_nsfw())


async def answers_privately(interaction: discord.Interaction[SDBot], parent_job_id: int | None = None) -> bool:
    """Whether what this interaction makes is shown to its member alone (ephemeral): they
    turned private results on in /settings, or it is made from a private job (the buttons of
    a private result). Other ephemeral messages (/history, /pnginfo, a permutation question)
    do not make their jobs private. A DM is private already: nothing there is ephemeral, so
    results stay in the conversation."""
    if interaction.guild_id is None:
        return False
    if (chosen := interaction.extras.get(_PRIVATE_KEY)) is not None:
        return chosen  # what the member was shown at acknowledgement is what their jobs are
    return await interaction.client.queue.privacy.answers_privately(interaction.user.id, parent_job_id)
