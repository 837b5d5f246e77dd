"""The whole bot against simcord: real cogs, dispatcher, worker process, database, files.

Only Discord is simulated. The worker process is real and slow to start (it imports torch),
so a harness starts it once per bot generation; `restart()` replaces bot, dispatcher and
worker the way a real restart does, keeping the database and the simulated Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import discord
import simcord
import simcord.backend.serializers
from PIL import Image
from sqlalchemy import select

from bot.client import SDBot, create_bot
from bot.config import Settings
from bot.errors import UserError
from bot.jobs.dispatcher import Dispatcher
from bot.jobs.queue import JobQueue
from db.migrate import upgrade_database
from db.models import FINAL_STATUSES, Job
from db.session import Database

JOB_TIMEOUT_S = 240.0

# Channels Discord marks age-restricted ("nsfw"): simcord's channel model has no such field, so
# every channel payload it sends (gateway events, interactions) gets it from the ids kept on
# its backend under this name (per backend: ids of separate tests' simulations may repeat).
AGE_RESTRICTED_IDS = "age_restricted_channel_ids"
DEFERRED_WITH_MESSAGE = 5  # the interaction callback type of a "thinking…" acknowledgement


def _with_age_restriction(channel_payload):  # type: ignore[no-untyped-def]
    def payload_with_nsfw(backend, channel):  # type: ignore[no-untyped-def]
        payload = channel_payload(backend, channel)
        return {**payload, "nsfw": True} if channel.id in getattr(backend, AGE_RESTRICTED_IDS, ()) else payload

    payload_with_nsfw.wraps_age_restriction = True  # type: ignore[attr-defined]
    return payload_with_nsfw


if not getattr(simcord.backend.serializers.channel_payload, "wraps_age_restriction", False):
    simcord.backend.serializers.channel_payload = _with_age_restriction(simcord.backend.serializers.channel_payload)


@dataclass
class BotHarness:
    settings: Settings
    # The shard count simcord plays Discord recommending, for [discord] shards = "auto".
    recommended_shards: int = 2
    db: Database = field(init=False)
    queue: JobQueue = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    bot: SDBot = field(init=False)
    env: simcord.Env = field(init=False)
    _errors_seen: int = 0

    async def start(self) -> None:
        self.db = Database(self.settings.database_url)
        await upgrade_database(self.db.engine)
        self.queue = JobQueue(self.db, self.settings.queue)
        self.dispatcher = await self._started_dispatcher()
        self.bot = create_bot(self.settings, self.queue, self.dispatcher)
        # shards = "auto" asks Discord for its recommendation at log-in; simcord has to be told it.
        recommended = self.recommended_shards if self.settings.discord.shards == "auto" else None
        self.env = simcord.Env(self.bot, shard_count=recommended)
        self._declare_external_waits()
        await self.env.start()
        self.guild = self.env.create_guild(name="art club")
        self.channel = self.guild.create_text_channel("imagine")

    async def _started_dispatcher(self) -> Dispatcher:
        dispatcher = Dispatcher(
            self.queue,
            self.settings.worker_config(),
            startup_timeout_s=self.settings.worker.startup_timeout_s,
            start_method=self.settings.worker.start_method,
        )
        await dispatcher.start_worker()
        return dispatcher

    def _declare_external_waits(self) -> None:
        # The dispatcher waits on the worker process: tell simcord that wait is external, so
        # settling after each action does not wait for images to finish.
        self.dispatcher.external_wait = self.env.external_wait

    def member(self, name: str, *, moderator: bool = False) -> simcord.MemberActor:
        roles = []
        if moderator:
            roles.append(self.guild.create_role("Moderators", permissions=discord.Permissions(manage_messages=True)))
        return self.guild.add_member(self.env.create_user(name), roles=roles)

    async def age_restricted_channel(self, name: str) -> simcord.ChannelHandle:
        """A text channel Discord marks age-restricted (the bot sees ``is_nsfw()``)."""
        channel = self.guild.create_text_channel(name)
        backend = self.env.backend
        if not hasattr(backend, AGE_RESTRICTED_IDS):
            setattr(backend, AGE_RESTRICTED_IDS, set())
        getattr(backend, AGE_RESTRICTED_IDS).add(channel.id)
        backend.announce_channel_update(channel.id)  # the bot's cache learns it
        await self.env.settle()
        return channel

    async def restart(self, *, crash: bool = False) -> None:
        """A new bot process: graceful (jobs handed back) or a crash (rows left running)."""
        old = self.dispatcher
        if crash:
            await self._abandon(old)
        else:
            await old.stop()
        self.dispatcher = await self._started_dispatcher()
        self.bot = create_bot(self.settings, self.queue, self.dispatcher)
        self._declare_external_waits()
        await self.env.restart_bot(self.bot)

    async def _abandon(self, dispatcher: Dispatcher) -> None:
        """Stop a dispatcher the way a killed bot does: no hand-back, the worker just dies."""
        if dispatcher._task is not None:
            dispatcher._task.cancel()
            await asyncio.gather(dispatcher._task, return_exceptions=True)
            dispatcher._task = None
        dispatcher.running.clear()
        dispatcher.kill_worker()
        await dispatcher.stop()

    async def __aenter__(self) -> BotHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.bot.delivery.drain()
        await self.env.shutdown()
        await self.db.close()
        # Anything the bot raised that no test expected fails the test, swallowed or not.
        unexpected = self.env.errors_since(self._errors_seen)
        if unexpected:
            raise ExceptionGroup("the bot raised errors during the test", list(unexpected))

    def expect_user_errors(self) -> list[UserError]:
        """The errors since the last call, which must all be user errors (answered privately)."""
        errors = self.env.errors_since(self._errors_seen)
        self._errors_seen = self.env.error_cursor
        for error in errors:
            original = getattr(error, "original", error)
            assert isinstance(original, UserError), f"unexpected error {error!r}"
        return [getattr(error, "original", error) for error in errors]

    # --- waiting and looking -------------------------------------------------------------------

    async def wait_for(self, predicate, what: str, timeout: float = JOB_TIMEOUT_S) -> None:  # type: ignore[no-untyped-def]
        deadline = time.perf_counter() + timeout
        while not await predicate():
            if time.perf_counter() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def wait_for_job(self, job_id: int, statuses=FINAL_STATUSES) -> Job:  # type: ignore[no-untyped-def]
        async def reached() -> bool:
            job = await self.queue.get(job_id)
            if job is None or job.status not in statuses:
                return False
            # A canceled row is final at once; the worker confirms the stop a step later.
            return job.status not in FINAL_STATUSES or job_id not in self.dispatcher.running

        await self.wait_for(reached, f"job #{job_id} to reach {statuses}")
        await self.settle()
        job = await self.queue.get(job_id)
        assert job is not None
        return job

    @contextlib.contextmanager
    def arriving_together(self) -> Iterator[None]:
        """Interactions sent inside reach the bot before it has run any of them, as a busy
        gateway delivers them (simcord otherwise runs each to its end before the next)."""
        real_settle = self.env._settle_internal

        async def no_settle(**kwargs) -> None:  # type: ignore[no-untyped-def]
            return None

        self.env._settle_internal = no_settle  # type: ignore[method-assign]
        try:
            yield
        finally:
            self.env._settle_internal = real_settle  # type: ignore[method-assign]

    async def settle(self) -> None:
        await self.env.settle()
        await self.bot.delivery.drain()
        await self.env.settle()

    async def latest_job(self, user_id: int | None = None) -> Job:
        async with self.db.session() as session:
            query = select(Job).order_by(Job.id.desc()).limit(1)
            if user_id is not None:
                query = query.where(Job.user_id == user_id)
            job = await session.scalar(query)
        assert job is not None, "no job was queued"
        return job

    async def job_count(self) -> int:
        async with self.db.session() as session:
            return len(list(await session.scalars(select(Job.id))))

    def first_response(self, interaction_id: int | None = None) -> dict:
        """The payload of the last (or the given) interaction's answer, as sent: its initial
        response, or, when that was a "thinking…" deferral, the first followup (which replaced it)."""
        requests = self.env.http_requests
        callbacks = [
            (number, request) for number, request in enumerate(requests)
            if request.method == "POST" and request.path.endswith("/callback")
            and (interaction_id is None or f"/interactions/{interaction_id}/" in request.path)
        ]
        assert callbacks, "no interaction was answered"
        number, callback = callbacks[-1]
        if callback.json["type"] != DEFERRED_WITH_MESSAGE:
            return callback.json["data"]
        token = callback.path.split("/")[-2]
        followup = next(
            (r for r in requests[number:] if r.method == "POST" and r.path.startswith("/webhooks/") and r.path.endswith(f"/{token}")),
            None,
        )
        assert followup is not None, "the interaction was acknowledged, and never answered"
        return followup.json

    def message(self, message_id: int) -> discord.Message:
        found = next((m for m in self.channel.history() if m.id == message_id), None)
        assert found is not None, f"message {message_id} is not in #{self.channel.name}"
        return found


def private_answer(result) -> str:  # type: ignore[no-untyped-def]
    """What the bot told this member alone (a refusal, an explanation): the interaction's
    private response, or, after a public "thinking…" that was withdrawn, its private followup.
    Fails when anything public stayed."""
    public = result.response is not None and not result.response.ephemeral
    assert not public, f"a public answer stayed: {result.response!r}"
    messages = [m for m in ([result.response] if result.response else []) + result.followups if m.ephemeral]
    assert messages, f"no private answer: {result!r}"
    message = messages[-1]
    return message.content or (message.embeds[0].description or "" if message.embeds else "")


async def attachment_image(message: discord.Message, index: int = 0) -> Image.Image:
    data = await message.attachments[index].read()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# Under one image (a U button's post): Midjourney's buttons, then upscale, zoom and pan.
SINGLE_IMAGE_BUTTONS = [
    "Vary (subtle)", "Vary (strong)", "Inpaint",
    "Upscale 2x", "Upscale 4x", "Upscale (detailed)", "Zoom out 1.5x", "Zoom out 2x",
    "⬅️", "➡️", "⬆️", "⬇️", "Remove",
]


def button_labels(message: discord.Message) -> list[str]:
    return [child.label or "" for row in message.components for child in getattr(row, "children", [])]
