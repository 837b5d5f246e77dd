"""A describe job's answer: its prompt suggestions, numbered, with a button for each that
queues that prompt as /imagine for whoever presses it (Midjourney's /describe).

The buttons are DynamicItems (``sd:desc:<job>:<index>``): the suggestions live on the job's
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
from bot.ui import confirm
from bot.ui.remove_button import RemoveButton

if TYPE_CHECKING:
    from bot.client import SDBot
    from db.models import Job

class SuggestionButton(DynamicItem[Button], template=r"sd:desc:(?P<job>\d+):(?P<index>\d)"):
    """One suggestion's number: queue it as /imagine for the member who pressed it."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(
            Button(label=str(index + 1), style=discord.ButtonStyle.primary, custom_id=f"sd:desc:{job_id}:{index}")
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(job_id=int(match["job"]), index=int(match["index"]))

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        # The new job is the presser's own /imagine, not derived work: no parent decides its privacy.
        await actions.run_for_user(interaction, lambda: imagine_suggestion(interaction, self.job_id, self.index), queues_jobs=True)


async def imagine_suggestion(interaction: discord.Interaction[SDBot], job_id: int, index: int) -> None:
    """Queue suggestion ``index`` of describe job ``job_id`` as /imagine with nothing but the
    prompt given: the presser's defaults fill in the rest, and /imagine's checks apply."""
    bot = interaction.client
    job = await actions.job_for_interaction(interaction, job_id)
    actions.check_not_removed(job)
    suggestions = suggestions_of(job)
    if index >= len(suggestions):
        raise ImageUnavailable(f"Job #{job.id} has no suggestion {index + 1}.")
    user = await bot.queue.user(interaction.user.id)
    prepared = await actions.prepare_for(interaction, GenerationOptions(prompt=suggestions[index]), user)
    settings = bot.settings
    default_refiner = member_defaults(user, settings).refiner
    params = [
        with_refiner(resolve_parameters(each, settings, user), settings, None, None, default_refiner)
        for each in prepared
    ]
    await confirm.submit_jobs(interaction, params)


def suggestions_view(job: Job) -> discord.ui.View:
    """A numbered button per suggestion, and 🗑️ Remove."""
    view = discord.ui.View(timeout=None)  # dynamic items: they never expire
    for index in range(len(suggestions_of(job))):
        view.add_item(SuggestionButton(job.id, index))
    view.add_item(RemoveButton(job.id))
    return view
