"""The Bot subclass: loads the cogs, registers the persistent buttons, runs the dispatcher."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import APOLOGY, check_not_stopping, is_job_command
from bot.answers_first import AnswersFirst
from bot.config import Settings
from bot.delivery import DiscordDelivery
from bot.errors import OutdatedCommand, UserError
from bot.interactions import (
    OUTDATED_COMMAND, STALE_COMPONENT, OpenForms, acknowledge, send_private, sent_outdated_options, stale_form_answer,
)
from bot.jobs.dispatcher import Dispatcher
from bot.jobs.worker_relay import WorkerRelay
from bot.jobs.queue import JobQueue
from bot.model_catalog import ModelCatalog
from bot.model_hashes import FileHashes
from bot.policy import audit, gate
from bot.request_budget import RequestBudget
from bot.ui.buttons import DYNAMIC_ITEMS, JobViews
from inference.common.face_restorer_files import usable_face_restorers
from bot.ui.remove_button import REMOVAL_ITEMS
from inference.common import clip_tokens

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.imagine", "bot.cogs.images", "bot.cogs.plots", "bot.cogs.queue", "bot.cogs.styles", "bot.cogs.history",
    "bot.cogs.pnginfo", "bot.cogs.admin", "bot.cogs.settings", "bot.cogs.retention", "bot.cogs.lifecycle",
    "bot.cogs.describe",
)


def collect_young_less_often() -> None:
    """CPython before 3.13 collects the youngest generation every 700 allocations, so the
    objects of a command still in flight (across its awaits) are promoted again and again, and
    every ten of those collections moves on to an older one. 3.13 raised it to 2,000; the same
    here, under load (bench/load.py), made a third as many collections of the older
    generations and a third as many full ones, the ones that stall the loop. Later Pythons
    (a different collector in 3.14) keep their own defaults."""
    threshold0, *older = gc.get_threshold()
    if sys.version_info < (3, 13) and threshold0 < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *older)


YOUNG_THRESHOLD = 2000
# How long close() waits for the last deliveries: with [worker] shutdown_grace_s, what a
# service manager's stop timeout must cover (deploy/).
LAST_MESSAGES_LIMIT_S = 10.0


class CommandTree(app_commands.CommandTree["SDBot"]):
    """The slash commands: every one passes the server's policy first (channels, roles, bans),
    and what they raise is answered privately."""

    async def interaction_check(self, interaction: discord.Interaction[SDBot]) -> bool:
        """Slash commands and context menus. Autocomplete only suggests names, and a refusal
        cannot be shown there, so it is let through. A command that queues jobs is acknowledged
        before this check (bot.interactions.acknowledge)."""
        if interaction.type != discord.InteractionType.autocomplete:
            check_not_stopping(interaction)
            if sent_outdated_options(interaction):
                raise OutdatedCommand(OUTDATED_COMMAND)
            if is_job_command(interaction.command):
                await acknowledge(interaction)
            await gate.check_access(interaction)
        return True

    async def on_error(self, interaction: discord.Interaction[SDBot], error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, UserError):
            await send_private(interaction, original.message)
            return
        if isinstance(original, app_commands.CheckFailure):
            await send_private(interaction, "You are not allowed to use this command here.")
            return
        if isinstance(original, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
            # The member's Discord still shows the commands as they were before an update (a
            # global sync takes Discord up to an hour): nothing broke here.
            log.warning("a command as it was before an update: %s", original)
            await send_private(interaction, OUTDATED_COMMAND)
            return
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error("command /%s failed", command, exc_info=original)
        await send_private(interaction, APOLOGY)


class SDBot(commands.Bot):
    def __init__(
        self, settings: Settings, queue: JobQueue, dispatcher: Dispatcher | WorkerRelay, **options: Any
    ) -> None:
        # Slash commands and buttons only: interactions come whatever the intents, so the only
        # gateway events asked for are the servers' (channels, threads, roles, leaving a
        # server: bot.cogs.lifecycle). discord.py's default intents would also send every
        # message, reaction and typing event of every server the bot is in, each parsed on the
        # event loop and never used. No message cache either: buttons and commands read the
        # database, never cached messages, and 1,000 cached results (discord.py's default)
        # kept ~100k objects for every full garbage collection to scan (bench/load.py).
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents(guilds=True), help_command=None,
            max_messages=None, tree_cls=CommandTree, **options,
        )
        # The live model list (configured and found under [a1111]); settings is read from it.
        self.models = ModelCatalog(settings, FileHashes(queue.db))
        self.models.listen(dispatcher.update_models)
        self._keeping_models_current: asyncio.Task[None] | None = None
        self.queue = queue
        self.dispatcher = dispatcher
        # The buttons under a job's messages, for the modules below bot.ui that post them.
        self.job_views = JobViews(lambda: usable_face_restorers(self.settings.images.face_restorer_dirs))
        # What the bot may ask of Discord a second, shared by every job's messages.
        self.request_budget = RequestBudget.from_settings(settings.discord)
        self.delivery = DiscordDelivery(self)
        self.answers_first = AnswersFirst()
        # The custom_id templates of every DynamicItem registered: a button or menu that none
        # matches, nothing would answer (_answer_if_unhandled).
        self._item_templates: list[re.Pattern[str]] = []
        self._unhandled_answers: set[asyncio.Task[None]] = set()
        self.open_forms = OpenForms()  # every form opened goes through bot.interactions.send_form
        # Set by shut_down: every command and button is then answered "restarting" privately.
        self.stopping = False

    @property
    def settings(self) -> Settings:
        """The bot's settings, with the models as the last refresh found them."""
        return self.models.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.models.settings = settings

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py dispatches "interaction" as it parses one, after creating its handlers'
        # tasks and before any of them runs: the moment it starts waiting for an answer.
        if event_name == "interaction":
            self.answers_first.arrived(args[0])
            self._answer_if_unhandled(args[0])
        super().dispatch(event_name, *args, **kwargs)

    def add_dynamic_items(self, *items: type[discord.ui.DynamicItem[Any]]) -> None:
        super().add_dynamic_items(*items)
        self._item_templates.extend(item.__discord_ui_compiled_template__ for item in items)

    def _answer_if_unhandled(self, interaction: discord.Interaction[SDBot]) -> None:
        """A button whose custom_id no DynamicItem here matches (forged, or made by a version
        whose template has changed since), or a form whose Modal is gone (the bot restarted
        while it was open; discord.py finds forms by custom_id in memory): discord.py drops
        them, so the member saw "This interaction failed", lost what they had typed, and the
        interactions after it waited on its answer (bot.answers_first). Read now, as discord.py
        has just dispatched it: a form's Modal leaves the store once its submission has run."""
        data: dict[str, Any] = interaction.data or {}  # type: ignore[assignment]
        custom_id = str(data.get("custom_id", ""))
        if interaction.type == discord.InteractionType.component:
            if any(template.fullmatch(custom_id) for template in self._item_templates):
                return
            answer = STALE_COMPONENT
        elif interaction.type == discord.InteractionType.modal_submit:
            if custom_id in self.open_forms:
                return
            answer = stale_form_answer(data)
        else:
            return
        task = asyncio.create_task(self._tell_unhandled(interaction, answer))
        self._unhandled_answers.add(task)
        task.add_done_callback(self._unhandled_answers.discard)

    async def _tell_unhandled(self, interaction: discord.Interaction[SDBot], answer: str) -> None:
        try:
            await send_private(interaction, answer)
        except discord.HTTPException as error:  # the interaction expired, or Discord is down
            log.warning("could not answer an interaction nothing handles: %s", error)

    async def setup_hook(self) -> None:
        # The CLIP vocabulary (token counts in every status embed) loads in a thread now, not on
        # the event loop in the middle of the first member's command.
        await asyncio.to_thread(clip_tokens.tokenizer)
        await self.queue.db.open_pool()
        # Read before the first acknowledgement needs it, not during the first burst of commands.
        await self.queue.privacy.load()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # Buttons are matched by custom_id template, so those under messages posted before a
        # restart (or months ago) still work.
        self.add_dynamic_items(*DYNAMIC_ITEMS, *REMOVAL_ITEMS)
        self.dispatcher.completion_row = self.delivery.outcome_row
        self.dispatcher.run(self.delivery)
        # Model files hashed and [a1111] folders rescanned in the background, never on a job's path.
        self._keeping_models_current = asyncio.create_task(self.models.keep_current(), name="sdbot-models")
        # What is loaded by now (modules, the CLIP vocabulary, commands) lives as long as the
        # bot: frozen out of the cyclic collector's way, whose full passes scan every tracked
        # object on the event loop (bench/load.py saw them stall it for a noticeable pause).
        gc.collect()
        gc.freeze()
        collect_young_less_often()
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Register the slash commands; CommandSyncRefused when Discord refuses them (then
        none is registered, and the bot cannot serve)."""
        guild_id = self.settings.discord.dev_guild_id
        try:
            if guild_id is None:
                synced = await self.tree.sync()
                log.info("synced %d commands globally (they can take up to an hour to appear)", len(synced))
                return
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        except app_commands.CommandSyncFailure as error:  # 400, 50035: a command over one of Discord's limits
            raise _over_a_limit(error) from error
        except AttributeError as error:
            # discord.py 2.7 fails to word some of these refusals: an error on a command's whole
            # list of options ("Must be 25 or fewer in length") raises AttributeError while it
            # builds its CommandSyncFailure. The refusal is the exception it was handling.
            refusal = error.__context__
            if not isinstance(refusal, discord.HTTPException):
                raise
            raise _over_a_limit(refusal) from refusal
        except discord.Forbidden as error:  # 50001 Missing Access: not in that server, or no commands scope
            raise CommandSyncRefused(
                f"Discord refused the bot's slash commands for the development server {guild_id} "
                f"(HTTP {error.status}, error {error.code}): check [discord] dev_guild_id, and that the bot was "
                "invited there with the applications.commands scope."
            ) from error
        log.info("synced %d commands to the development guild %s", len(synced), guild_id)

    async def shut_down(self, grace_s: float) -> None:
        """The orderly stop (SIGTERM, SIGINT): take nothing new, let the running job finish
        and be delivered within ``grace_s`` (else it goes back to the queue), then close."""
        self.stopping = True
        await self.dispatcher.stop(grace_s)
        await self.close()

    async def close(self) -> None:
        if self._keeping_models_current is not None:
            self._keeping_models_current.cancel()
            await asyncio.gather(self._keeping_models_current, return_exceptions=True)
        await self.dispatcher.stop()
        try:
            # Results and audit lines in flight go out first, but a Discord that does not take
            # them must not hold the exit: a service manager kills a bot that does not stop.
            async with asyncio.timeout(LAST_MESSAGES_LIMIT_S):
                await self.delivery.drain()
                await audit.drain_mirrors()
        except TimeoutError:
            log.warning("Discord did not take the last messages within %g s; closing without them", LAST_MESSAGES_LIMIT_S)
        await super().close()


class CommandSyncRefused(Exception):
    """Discord refused the command sync at start-up; the message says why and what to do."""


def _over_a_limit(error: discord.HTTPException) -> CommandSyncRefused:
    """A refusal of the commands themselves (400, 50035), with what Discord said of each."""
    details = "; ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
    return CommandSyncRefused(
        f"Discord refused the bot's slash commands (HTTP {error.status}, error {error.code}"
        f"{': ' + details if details else ''}), so none is registered. A command breaks one of Discord's "
        "limits, which is a bug of this version of sdbot: report it with the output of `sdbot --debug run`."
    )


class ShardedSDBot(SDBot, commands.AutoShardedBot):
    """The same bot over several gateway connections (shards) in one process, for a bot in
    thousands of servers: Discord requires shards from 2,500 servers, one per 1,000 or so.
    Only the gateway is split; the queue, the worker and the request budget stay one."""


def create_bot(settings: Settings, queue: JobQueue, dispatcher: Dispatcher) -> SDBot:
    """The bot as [discord] shards says: one connection by default, else sharded ("auto": as
    many shards as Discord recommends at log-in)."""
    shards = settings.discord.shards
    if shards is None:
        return SDBot(settings, queue, dispatcher)
    return ShardedSDBot(settings, queue, dispatcher, shard_count=shards if isinstance(shards, int) else None)
