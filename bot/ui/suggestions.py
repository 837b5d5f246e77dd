"""The buttons under a describe job's answer (bot.ui.description): one per suggestion, which
queues that prompt as /imagine for whoever presses it, and "Imagine all" (Midjourney's /describe).

The buttons are DynamicItems (``sd:desc:<job>:<index>``, ``sd:desc:<job>:all``): the suggestions live on the job's
row, so the buttons work after a restart. The new job is the presser's own /imagine: their
defaults, this server's checks (channels, blocked terms, limits), their turn in the queue.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord.ui import Button, DynamicItem

from bot import actions
from bot.errors import ImageUnavailable
from bot.jobs.describe_params import suggestions_of
from bot.jobs.params import GenerationOptions, member_defaults, resolve_parameters, with_refiner
from bot.policy import gate
from bot.ui import confirm
from bot.ui.remove_button import RemoveButton

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job

class SuggestionButton(DynamicItem[Button], template=r"sd:desc:(?P<job>\d+):(?P<index>\d|all)"):
    """One suggestion's number, or "Imagine all": queue it (them) as /imagine for the member
    who pressed it."""

    def __init__(self, job_id: int, index: int | None) -> None:
        label = "Imagine all" if index is None else str(index + 1)
        custom_id = f"sd:desc:{job_id}:{'all' if index is None else index}"
        style = discord.ButtonStyle.secondary if index is None else discord.ButtonStyle.primary
        super().__init__(Button(label=label, style=style, custom_id=custom_id))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(job_id=int(match["job"]), index=None if match["index"] == "all" else int(match["index"]))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        # The new jobs are the presser's own /imagine, not derived work: no parent decides their privacy.
        await actions.run_for_user(
            interaction, lambda: imagine_suggestions(interaction, self.job_id, self.index), queues_jobs=True
        )


async def imagine_suggestions(interaction: discord.Interaction[SDBot], job_id: int, index: int | None) -> None:
    """Queue suggestion ``index`` of describe job ``job_id`` (None: every one, a job each) as
    /imagine with nothing but the prompt given: the presser's defaults fill in the rest, and
    /imagine's checks apply (a permutation question above [prompts] confirm_permutations_above)."""
    bot = interaction.client
    job = await actions.job_for_interaction(interaction, job_id)
    actions.check_not_removed(job)
    suggestions = suggestions_of(job)
    if not suggestions:  # not a describe job's: "Imagine all" would queue nothing, and answer nothing
        raise ImageUnavailable(f"Job #{job.id} has no prompt suggestions.")
    if index is not None and index >= len(suggestions):
        raise ImageUnavailable(f"Job #{job.id} has no suggestion {index + 1}.")
    user = await bot.queue.user(interaction.user.id)
    settings = bot.settings
    default_refiner = member_defaults(user, settings).refiner
    server = await gate.server_defaults(interaction)  # this server's noise settings (/admin noise), as /imagine
    params = []
    for prompt in suggestions if index is None else [suggestions[index]]:
        for each in await actions.prepare_for(interaction, GenerationOptions(prompt=prompt), user):
            resolved = resolve_parameters(each, settings, user, server)
            params.append(with_refiner(resolved, settings, None, None, default_refiner))
    await confirm.submit_jobs(interaction, params)


def suggestions_view(job: Job) -> discord.ui.View:
    """A numbered button per suggestion; then "Imagine all" and 🗑️ Remove."""
    view = discord.ui.View(timeout=None)  # dynamic items: they never expire
    for index in range(len(suggestions_of(job))):
        view.add_item(SuggestionButton(job.id, index))
    view.add_item(SuggestionButton(job.id, None))
    view.add_item(RemoveButton(job.id))
    return view
