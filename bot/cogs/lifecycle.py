"""Jobs whose result has nowhere to go are canceled, not run: the bot was removed from their
server, their channel or thread was deleted, their owner left or lost the role the server's
policy requires.

Discord tells the bot of the first three (guild and channel events come with the default
intents), and their waiting and running jobs stop at once. Leaving and role changes come only
with the privileged members intent, which the bot does not ask for: those, and anything the bot
missed while it was offline, are caught when the dispatcher claims a job (`reason_to_drop`).
Every such cancel is audited with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.cogs.base import BotCog
from bot.jobs.queue import CancelOutcome
from bot.policy import audit, gate, store
from db.base import utcnow
from db.models import Job

if TYPE_CHECKING:
    from bot.client import SDBot

log = logging.getLogger(__name__)

SERVER_LEFT = "the bot is no longer in this server"
CHANNEL_DELETED = "its channel was deleted"
THREAD_DELETED = "its thread was deleted"
CHANNEL_HIDDEN = "the bot can no longer see its channel"
OWNER_LEFT = "its owner left the server"
ROLE_LOST = "its owner no longer has a role this server requires"
# A job claimed this soon after its command needs no member lookup: the command showed the
# member here, with their roles, moments ago. The lookup is a Discord round trip that would
# otherwise delay every job on an idle bot.
MEMBER_SEEN_RECENTLY = timedelta(seconds=60)


class Lifecycle(BotCog):
    async def cog_load(self) -> None:
        self.bot.dispatcher.target_check = self.reason_to_drop

    async def cog_unload(self) -> None:
        self.bot.dispatcher.target_check = None

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self._cancel_jobs(SERVER_LEFT, guild.id)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        # Its threads go with it; an archived one the cache lacks is caught when claimed.
        threads = getattr(channel, "threads", ())
        await self._cancel_jobs(CHANNEL_DELETED, channel.guild.id, [channel.id, *(thread.id for thread in threads)])

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        # The raw event: it comes for threads the cache does not hold too.
        await self._cancel_jobs(THREAD_DELETED, payload.guild_id, [payload.thread_id])

    async def _cancel_jobs(self, reason: str, guild_id: int, channel_ids: Collection[int] | None = None) -> None:
        for job_id in await self.bot.queue.active_job_ids(guild_id, channel_ids):
            job, outcome = await self.bot.dispatcher.cancel(job_id)
            if outcome is not CancelOutcome.ALREADY_FINISHED:
                await self._audit(job, reason)

    async def reason_to_drop(self, job: Job) -> str | None:
        """The dispatcher's check of a claimed job (Dispatcher.target_check), audited."""
        reason = await self._target_gone(job)
        if reason is not None:
            await self._audit(job, reason)
        return reason

    async def _target_gone(self, job: Job) -> str | None:
        if job.guild_id is None or job.channel_id is None:
            return None  # a DM, or the console: the bot can always answer there
        # At start-up the dispatcher claims jobs before Discord has sent the bot its servers.
        await self.bot.wait_until_ready()
        guild = self.bot.get_guild(job.guild_id)
        if guild is None:
            return SERVER_LEFT
        try:
            if guild.get_channel_or_thread(job.channel_id) is None:
                await guild.fetch_channel(job.channel_id)  # archived threads are not cached
        except discord.NotFound:
            return CHANNEL_DELETED
        except discord.Forbidden:
            return CHANNEL_HIDDEN
        except discord.HTTPException as error:
            log.warning("could not look up the channel of job %s, running it anyway: %s", job.id, error)
            return None
        if utcnow() - job.created_at < MEMBER_SEEN_RECENTLY:
            return None
        try:
            # Read from Discord, not the cache: without the members intent nothing updates it.
            member = await guild.fetch_member(job.user_id)
        except discord.NotFound:
            return OWNER_LEFT
        except discord.HTTPException as error:
            log.warning("could not look up the owner of job %s, running it anyway: %s", job.id, error)
            return None
        permissions = member.guild_permissions
        if permissions.manage_guild or permissions.administrator:
            return None  # moderators pass the role rule (bot.policy.gate)
        policy = await store.policy_of(self.bot.queue.db, self.bot.settings, guild.id)
        if gate.role_refusal(policy, {role.id for role in member.roles}) is not None:
            return ROLE_LOST
        return None

    async def _audit(self, job: Job, reason: str) -> None:
        actor_id = self.bot.user.id if self.bot.user is not None else 0
        await audit.record(
            self.bot, audit.Action.TARGET_GONE, actor_id=actor_id, guild_id=job.guild_id, channel_id=job.channel_id,
            target_user_id=job.user_id, job_id=job.id, details=f"canceled: {reason}",
        )


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Lifecycle(bot))
