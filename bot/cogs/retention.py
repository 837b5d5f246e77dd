"""The daily retention pass (bot.jobs.retention), as a discord.ext.tasks loop: first soon after
start-up, once the bot is connected, then every 24 hours; it is stopped with the bot."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from discord.ext import tasks

from bot.cogs.base import BotCog
from bot.jobs.retention import run_retention_pass

if TYPE_CHECKING:
    from bot.client import SDBot

log = logging.getLogger(__name__)


class Retention(BotCog):
    async def cog_load(self) -> None:
        self.daily.start()

    async def cog_unload(self) -> None:
        self.daily.cancel()

    @tasks.loop(hours=24)
    async def daily(self) -> None:
        try:
            report = await run_retention_pass(self.bot)
        except Exception:
            # Logged, and tried again tomorrow: an exception would end the loop for good.
            log.exception("the daily retention pass failed")
            return
        log.info("retention: %d audit entries pruned, images of %d job(s) expired (%d files)",
                 report.audit_entries, report.expired.jobs, report.expired.files)

    @daily.before_loop
    async def after_connecting(self) -> None:
        # Not during start-up itself, when the worker loads its models and the first commands come.
        await self.bot.wait_until_ready()


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Retention(bot))
