"""A fake Discord on the wire, for tests that run the real `sdbot run` process.

discord.py in that process is pointed at it (tests/discord_address/sitecustomize.py, the two
addresses DISCORD.md names): its REST API under /api/v10, its gateway at /gateway. The gateway
says HELLO, takes IDENTIFY, sends READY and one server's GUILD_CREATE (zlib-stream compressed,
as discord.py asks), acknowledges heartbeats and numbers its events; tests dispatch
interactions through it (`slash`, `press`). The REST side keeps the messages the bot posts and
edits, answers as Discord does (the interaction callback's `interaction` and `resource`, a
deferred response's first followup replacing its "thinking…"), and checks every request
against Discord's limits (tests/discord_limits.py): a request that breaks one is refused as
Discord refuses it, and the breach is kept in `violations` for the test to fail on, as is any
route the fake does not know.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests import discord_limits
from tests.discord_payloads import (
    AUTOCOMPLETE, COMPONENT, DEFAULT_UPLOAD_LIMIT, EPHEMERAL, LOADING, MODAL_SUBMIT, SLASH_COMMAND, Guild, Member, age_of,
    message_payload, now_iso, snowflake, user_payload,
)

ROOT = Path(__file__).resolve().parent.parent
DISCORD_ADDRESS_DIR = Path(__file__).resolve().parent / "discord_address"
TOKEN = "not-a-real-token"
APPLICATION_ID = 1000
BOT_USER = user_payload(APPLICATION_ID, "sdbot", bot=True)
APPLICATION = {
    "id": str(APPLICATION_ID), "name": "sdbot", "description": "", "icon": None, "bot_public": True,
    "bot_require_code_grant": False, "owner": BOT_USER, "verify_key": "0" * 64, "flags": 0,
}
START_TIMEOUT_S = 240.0  # a fresh worker process imports torch: slow on a busy machine
STOP_TIMEOUT_S = 120.0
ANSWER_WITHIN_S = 3.0  # an interaction not answered by then is gone (10062 Unknown interaction)
# What the fake allows past that: on a shared 2-core CI runner, the bot's process can be held
# off the CPU for seconds by the tests beside it. The bot answers in milliseconds (bench.load),
# so an answer this late is the bot's own, not the machine's.
STALL_SLACK_S = 7.0
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content
WITH_MESSAGE, DEFERRED, DEFERRED_UPDATE, UPDATE, CHOICES, MODAL = 4, 5, 6, 7, 8, 9
# Interaction callback types each kind of interaction may be answered with (a modal cannot
# answer a modal; updating a message needs the modal to have come from a button under it).
CALLBACKS = {
    SLASH_COMMAND: {WITH_MESSAGE, DEFERRED, MODAL},
    COMPONENT: {WITH_MESSAGE, DEFERRED, DEFERRED_UPDATE, UPDATE, MODAL},
    AUTOCOMPLETE: {CHOICES},
    MODAL_SUBMIT: {WITH_MESSAGE, DEFERRED, DEFERRED_UPDATE, UPDATE},
}
TOKEN_LIFETIME_S = 15 * 60  # then the interaction's webhook answers 401, 50027 Invalid Webhook Token
ATTACHMENT_OPTION = 11
DM = 1  # channel type
JSON = "application/json"  # discord.py parses a body as JSON only under exactly this type


class DiscordError(Exception):
    """An error answer, in Discord's shape: HTTP status, JSON error code, message."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.errors = status, code, errors


@dataclass
class Sent:
    """One request of the bot: its JSON (payload_json of a multipart one) and its uploads."""

    method: str
    path: str  # below /api/v10
    payload: Any
    files: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # files[n]: filename, bytes
    status: int = 0  # the fake's answer


@dataclass
class Interaction:
    payload: dict[str, Any]
    dispatched_at: float
    callback: dict[str, Any] | None = None  # the bot's answer: {"type": ..., "data": ...}
    revoked: bool = False  # its token answers 50027 from now on, as once 15 minutes have passed
    original_id: int | None = None  # the message its original response is (or edits)
    message_ids: list[int] = field(default_factory=list)  # the original and the followups

    @property
    def token(self) -> str:
        return self.payload["token"]

    @property
    def upload_limit(self) -> int:
        return self.payload["attachment_size_limit"]

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot answered with (callback type 9), as it sent it."""
        if self.callback is None or self.callback.get("type") != MODAL:
            return None
        return self.callback["data"]

    @property
    def expired(self) -> bool:
        return self.revoked or age_of(self.payload["id"]) >= TOKEN_LIFETIME_S


class FakeDiscord:
    def __init__(self, *, refuse_sync: dict[str, Any] | None = None) -> None:
        # The errors to answer the command sync with (400/50035, as to a command over a limit).
        self.refuse_sync = refuse_sync
        self.owner = Member(user_payload(snowflake(), "owner"))
        self.guild = Guild(owner=self.owner, bot=Member(BOT_USER))
        self.sent: list[Sent] = []
        self.violations: list[str] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.uploads: dict[int, bytes] = {}  # by attachment id
        self.interactions: dict[str, Interaction] = {}  # by token
        self.commands: list[dict[str, Any]] = []  # as the bot synced them, with their ids
        self.users: dict[int, dict[str, Any]] = {}  # the members tests made, by id
        self.dm_channels: dict[int, dict[str, Any]] = {}  # the DMs the bot opened: channel id to its member
        self.identified: dict[str, Any] | None = None
        self._socket: web.WebSocketResponse | None = None
        self._compressor: Any = None
        self._sequence = 0
        self._changed = asyncio.Condition()
        self._process: asyncio.subprocess.Process | None = None
        self._watching: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.address = ""

    # --- serving ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # over any upload limit: the checks refuse it
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{attachment}/{filename}", self._attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.address = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.address

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def watch(self, process: asyncio.subprocess.Process) -> None:
        """wait_for fails at once when this process (the bot) exits."""
        self._process = process

        async def wake_on_exit() -> None:
            await process.wait()
            await self._notify()

        self._watching = asyncio.create_task(wake_on_exit())

    async def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
        """Wait until predicate() is truthy, checked after every request and gateway message;
        fail at once when the bot exits or breaks a limit (what is awaited may never come)."""
        breaches, requests = len(self.violations), len(self.sent)

        def done() -> Any:
            if self._process is not None and self._process.returncode is not None:
                raise AssertionError(f"the bot exited ({self._process.returncode}) while waiting for {what}{self._breaches()}")
            if len(self.violations) > breaches:
                raise AssertionError(f"the bot broke Discord's rules while waiting for {what}{self._breaches()}")
            return predicate()

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
        except TimeoutError:
            sent = "".join(f"\n  {s.status} {s.method} {s.path} {str(s.payload)[:300]}" for s in self.sent[requests:])
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; the bot sent meanwhile:{sent}") from None
        return predicate()

    def _breaches(self) -> str:
        """The breaches so far, which often say why what a test waits for never came."""
        return "".join(f"\n  {violation}" for violation in self.violations)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- the gateway -----------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        compress = request.query.get("compress")
        if compress not in (None, "zlib-stream"):
            self.violations.append(f"the gateway was asked for {compress} compression, which the fake does not speak")
        self._socket, self._compressor = socket, zlib.compressobj() if compress else None
        await self._send({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            if event.get("op") == 1:  # heartbeat: carries the last sequence number the bot saw
                if event.get("d") not in (None, *range(self._sequence + 1)):
                    self.violations.append(f"heartbeat with sequence {event.get('d')}, the last sent was {self._sequence}")
                await self._send({"op": 11})
            elif event.get("op") == 2:
                await self._identify(socket, event["d"])
            elif event.get("op") == 6:  # resume: no session to resume here, start anew
                await self._send({"op": 9, "d": False})
            await self._notify()
        return socket

    async def _identify(self, socket: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        if identify.get("token") != TOKEN:
            await socket.close(code=4004, message=b"Authentication failed.")
            return
        if identify.get("intents", 0) & PRIVILEGED_INTENTS:
            await socket.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identified = identify
        ready = {
            "v": 10, "user": BOT_USER, "guilds": [{"id": str(self.guild.id), "unavailable": True}],
            "session_id": f"session-{snowflake()}", "resume_gateway_url": self.address.replace("http", "ws", 1),
            "application": {"id": str(APPLICATION_ID), "flags": 0}, "private_channels": [], "relationships": [],
            "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [], "session_type": "normal",
        }
        if "shard" in identify:
            ready["shard"] = identify["shard"]
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.guild.create_payload())

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self._sequence += 1
        await self._send({"op": 0, "t": event, "s": self._sequence, "d": data})

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._socket is not None, "the bot has not connected to the gateway"
        text = json.dumps(message)
        if self._compressor is None:
            await self._socket.send_str(text)
        else:  # one zlib stream for the connection, each message ending in a sync flush
            await self._socket.send_bytes(self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH))

    # --- what members do -------------------------------------------------------------------

    def member(self, name: str) -> Member:
        member = Member(user_payload(snowflake(), name))
        self.users[member.id] = member.user
        return member

    def dms_of(self, member: Member) -> list[dict[str, Any]]:
        """The messages the bot sent `member` by DM, oldest first."""
        channels = {str(channel_id) for channel_id, user in self.dm_channels.items() if user["id"] == member.user["id"]}
        return [message for message in self.messages.values() if message["channel_id"] in channels]

    def attachment(
        self, filename: str, content: bytes, *, size: int | None = None, content_type: str = "image/png",
        width: int | None = None, height: int | None = None,
    ) -> dict[str, Any]:
        """A file a member attached, as an interaction's data.resolved.attachments holds it,
        served from the fake's CDN. `size`: what Discord states, when it should not be the
        bytes' (an upload over the bot's limit, without sending that many bytes)."""
        attachment_id = snowflake()
        self.uploads[attachment_id] = content
        url = f"{self.address}/attachments/{attachment_id}/{filename}"
        attachment: dict[str, Any] = {
            "id": str(attachment_id), "filename": filename, "size": len(content) if size is None else size,
            "url": url, "proxy_url": url, "content_type": content_type,
        }
        if width is not None and height is not None:
            attachment.update(width=width, height=height)
        return attachment

    def _command(self, name: str) -> dict[str, Any]:
        command = next((c for c in self.commands if c["name"] == name and c.get("type", 1) == 1), None)
        assert command is not None, f"/{name} is not among the synced commands"
        return command

    def _options(self, name: str, options: dict[str, Any], *, complete: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The options of /name as Discord sends them, typed as the synced command declares
        them (an attachment's value is its id, the attachment in the resolved data)."""
        declared = {option["name"]: option for option in self._command(name).get("options", [])}
        unknown = set(options) - set(declared)
        assert not unknown, f"/{name} has no options {sorted(unknown)}"
        missing = {key for key, option in declared.items() if option.get("required")} - set(options)
        assert not (complete and missing), f"/{name} needs its options {sorted(missing)}"
        sent, attachments = [], {}
        for key, value in options.items():
            kind = declared[key]["type"]
            if kind == ATTACHMENT_OPTION:
                attachments[value["id"]] = value
                value = value["id"]
            else:
                assert not (problem := unsendable(declared[key], value)), f"Discord would not send /{name} {key}: {problem}"
            sent.append({"name": key, "type": kind, "value": value})
        return sent, ({"attachments": attachments} if attachments else {})

    async def slash(
        self, member: Member, name: str, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT, age_s: float = 0.0, **options: Any
    ) -> Interaction:
        """`member` runs /name with these options (an attachment option takes `attachment`'s
        dict); the interaction's id says it was made `age_s` ago."""
        sent, resolved = self._options(name, options)
        data: dict[str, Any] = {"id": self._command(name)["id"], "name": name, "type": 1, "options": sent}
        if resolved:
            data["resolved"] = resolved
        return await self._interact(SLASH_COMMAND, member, data, upload_limit, age_s=age_s)

    async def autocomplete(self, member: Member, name: str, focused: str, typed: str, **options: Any) -> Interaction:
        """`member`, typing /name, has typed `typed` so far in the option `focused`."""
        sent, _ = self._options(name, options, complete=False)
        declared = {option["name"]: option for option in self._command(name).get("options", [])}
        assert declared.get(focused, {}).get("autocomplete"), f"/{name} {focused} does not autocomplete"
        sent.append({"name": focused, "type": declared[focused]["type"], "value": typed, "focused": True})
        data = {"id": self._command(name)["id"], "name": name, "type": 1, "options": sent}
        return await self._interact(AUTOCOMPLETE, member, data, DEFAULT_UPLOAD_LIMIT)

    async def submit(self, member: Member, opened: Interaction, values: dict[str, Any]) -> Interaction:
        """`member` submits the modal the bot answered `opened` with: its text inputs keep
        their prefilled values unless `values` (by custom_id) says otherwise; a file upload's
        value is a list of `attachment` dicts. Sent back as Discord does: each top-level
        component with its input's custom_id and value(s), ids numbered in order."""
        modal = opened.modal
        assert modal is not None, f"the bot answered {opened.callback} to that interaction, not a modal"
        numbers = itertools.count(1)
        components, attachments = [], {}
        for top in modal["components"]:
            inner = top["components"][0] if top["type"] == discord_limits.ACTION_ROW else top["component"]
            custom_id, kind = inner["custom_id"], inner["type"]
            answered: dict[str, Any] = {"type": kind, "id": 0, "custom_id": custom_id}
            if kind == discord_limits.TEXT_INPUT:
                answered["value"] = values.get(custom_id, inner.get("value") or "")
            elif kind == discord_limits.FILE_UPLOAD:
                files = values.get(custom_id, [])
                attachments.update({file["id"]: file for file in files})
                answered["values"] = [file["id"] for file in files]
            else:
                answered["values"] = values.get(custom_id, [o["value"] for o in inner.get("options", []) if o.get("default")])
            container = {"type": top["type"], "id": next(numbers)}
            answered["id"] = next(numbers)
            if top["type"] == discord_limits.ACTION_ROW:
                components.append({**container, "components": [answered]})
            else:
                components.append({**container, "component": answered})
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        if attachments:
            data["resolved"] = {"attachments": attachments}
        extra = {"message": opened.payload["message"]} if "message" in opened.payload else {}
        return await self._interact(MODAL_SUBMIT, member, data, opened.upload_limit, **extra)

    def revoke(self, interaction: Interaction) -> None:
        """Its token answers 50027 Invalid Webhook Token from now on, as after 15 minutes."""
        interaction.revoked = True

    async def press(self, member: Member, message_id: int, label: str, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT) -> Interaction:
        """`member` presses the button labelled `label` under a message the bot posted."""
        message = self.messages[message_id]
        buttons = [button for row in message["components"] for button in row.get("components", [])]
        button = next((b for b in buttons if b.get("label") == label), None)
        assert button is not None, f"no button {label!r} under message {message_id}: {[b.get('label') for b in buttons]}"
        data = {"custom_id": button["custom_id"], "component_type": 2}
        return await self._interact(COMPONENT, member, data, upload_limit, message=message)

    async def _interact(
        self, kind: int, member: Member, data: dict[str, Any], upload_limit: int, *, age_s: float = 0.0, **extra: Any
    ) -> Interaction:
        payload = {**self.guild.interaction_payload(kind, member, APPLICATION_ID, data, upload_limit, age_s), **extra}
        interaction = Interaction(payload, dispatched_at=time.monotonic())
        self.interactions[interaction.token] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # --- REST --------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        try:
            sent = await self._read(request, path)
        except DiscordError as error:  # a body that cannot be read
            return self._error(error)
        self.sent.append(sent)
        try:
            if not path.startswith(("/webhooks/", "/interactions/")) and request.headers.get("Authorization") != f"Bot {TOKEN}":
                raise DiscordError(401, 0, "401: Unauthorized")
            status, body = await self._route(request.method, path, sent)
        except DiscordError as error:
            sent.status = error.status
            return self._error(error)
        finally:
            await self._notify()
        sent.status = status
        if body is None:
            return web.Response(status=status)
        return web.Response(status=status, body=json.dumps(body).encode(), headers={"Content-Type": JSON})

    def _error(self, error: DiscordError) -> web.Response:
        body: dict[str, Any] = {"code": error.code, "message": str(error)}
        if error.errors is not None:
            body["errors"] = error.errors
        return web.Response(status=error.status, body=json.dumps(body).encode(), headers={"Content-Type": JSON})

    async def _read(self, request: web.Request, path: str) -> Sent:
        sent = Sent(request.method, path, None)
        if not request.can_read_body:
            return sent
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    sent.payload = json.loads(await part.text())  # type: ignore[union-attr]
                elif (numbered := re.fullmatch(r"files\[(\d+)\]", name)) is not None:
                    sent.files[int(numbered[1])] = (part.filename or "", bytes(await part.read()))  # type: ignore[union-attr]
                else:
                    self.violations.append(f"{request.method} {path}: unexpected multipart part {name!r}")
            return sent
        if request.content_type != JSON:
            self.violations.append(f"{request.method} {path}: a body of type {request.content_type}, not {JSON}")
        sent.payload = json.loads(await request.read())
        return sent

    async def _route(self, method: str, path: str, sent: Sent) -> tuple[int, Any]:
        for route_method, pattern, handler in self._routes():
            if route_method == method and (match := re.fullmatch(pattern, path)) is not None:
                return await handler(sent, *match.groups())
        self.violations.append(f"{method} {path}: a route the fake Discord does not know (the bot must not need it)")
        raise DiscordError(404, 0, "404: Not Found")

    def _routes(self) -> list[tuple[str, str, Callable[..., Awaitable[tuple[int, Any]]]]]:
        app, token, snowflake_ = rf"/applications/{APPLICATION_ID}", rf"/webhooks/{APPLICATION_ID}/([^/]+)", r"(\d+)"
        return [
            ("GET", r"/users/@me", self._static(BOT_USER)),
            ("GET", r"/oauth2/applications/@me", self._static(APPLICATION)),
            ("PUT", rf"{app}/commands", self._sync_commands),
            ("PUT", rf"{app}/guilds/\d+/commands", self._sync_commands),
            ("POST", rf"/interactions/{snowflake_}/([^/]+)/callback", self._callback),
            ("POST", token, self._followup),
            ("GET", rf"{token}/messages/(@original|\d+)", self._webhook_message),
            ("PATCH", rf"{token}/messages/(@original|\d+)", self._webhook_message),
            ("DELETE", rf"{token}/messages/(@original|\d+)", self._webhook_message),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", rf"/channels/{snowflake_}", self._channel),
            ("POST", rf"/channels/{snowflake_}/messages", self._channel_post),
            ("GET", rf"/channels/{snowflake_}/messages/{snowflake_}", self._channel_message),
            ("PATCH", rf"/channels/{snowflake_}/messages/{snowflake_}", self._channel_message),
            ("DELETE", rf"/channels/{snowflake_}/messages/{snowflake_}", self._channel_message),
        ]

    @staticmethod
    def _static(body: Any) -> Callable[..., Awaitable[tuple[int, Any]]]:
        async def answer(sent: Sent) -> tuple[int, Any]:
            return 200, body

        return answer

    async def _sync_commands(self, sent: Sent) -> tuple[int, Any]:
        if self.refuse_sync is not None:
            raise DiscordError(400, 50035, "Invalid Form Body", self.refuse_sync)
        self._refuse(discord_limits.command_breaches(sent.payload), sent)
        # Discord answers with each command whole: what was sent, its defaults and its ids.
        defaults = {"type": 1, "description": "", "default_member_permissions": None, "nsfw": False, "options": []}
        self.commands = [
            {**defaults, **command, "id": str(snowflake()), "application_id": str(APPLICATION_ID), "version": str(snowflake())}
            for command in sent.payload
        ]
        return 200, self.commands

    def _refuse(self, breaches: list[str], sent: Sent, *, status: int = 400, code: int = 50035) -> None:
        """Keep the breaches, and answer as Discord does: the request fails, nothing changes."""
        if breaches:
            self.violations += [f"{sent.method} {sent.path}: {breach}" for breach in breaches]
            raise DiscordError(status, code, "Invalid Form Body" if status == 400 else "Request entity too large")

    # --- interactions ------------------------------------------------------------------------

    async def _callback(self, sent: Sent, interaction_id: str, token: str) -> tuple[int, Any]:
        interaction = self.interactions.get(token)
        if interaction is None or interaction.payload["id"] != interaction_id:
            raise DiscordError(404, 10062, "Unknown interaction")
        late = time.monotonic() - interaction.dispatched_at
        if late > ANSWER_WITHIN_S + STALL_SLACK_S:
            self.violations.append(f"interaction {interaction_id} answered after {late:.1f} s, Discord waits {ANSWER_WITHIN_S:g}")
            raise DiscordError(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        kind, data = sent.payload.get("type"), sent.payload.get("data") or {}
        if kind not in CALLBACKS[interaction.payload["type"]]:
            self._refuse([f"callback type {kind} cannot answer an interaction of type {interaction.payload['type']}"], sent)
        if kind in (DEFERRED_UPDATE, UPDATE) and "message" not in interaction.payload:
            self._refuse([f"callback type {kind} updates the message of a button, and this interaction has none"], sent)
        if kind == MODAL:
            self._refuse(discord_limits.modal_breaches(data), sent)
        if kind == CHOICES:
            focused = next(o for o in interaction.payload["data"]["options"] if o.get("focused"))
            self._refuse(discord_limits.autocomplete_breaches(data, focused["type"]), sent)
        interaction.callback = sent.payload
        resource: dict[str, Any] | None = None
        if kind in (WITH_MESSAGE, DEFERRED):
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | (LOADING if kind == DEFERRED else 0)
            message = self._new_message(interaction, sent, {**data, "flags": flags} if kind == DEFERRED else data, interaction.upload_limit)
            interaction.original_id = int(message["id"])
            interaction.message_ids.append(interaction.original_id)
            resource = {"type": kind, "message": message}
        elif kind in (DEFERRED_UPDATE, UPDATE):  # the original response is the button's message
            interaction.original_id = int(interaction.payload["message"]["id"])
            if kind == UPDATE:
                resource = {"type": kind, "message": self._edit(interaction.original_id, sent, data, interaction.upload_limit)}
        original = self.messages.get(interaction.original_id or 0, {})
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction_id, "type": interaction.payload["type"],
                "response_message_id": str(interaction.original_id) if interaction.original_id else None,
                "response_message_loading": kind == DEFERRED,
                "response_message_ephemeral": bool(int(original.get("flags", 0)) & EPHEMERAL),
            },
        }
        if resource is not None:
            answer["resource"] = resource
        return 200, answer

    def _answered(self, token: str) -> Interaction:
        interaction = self.interactions.get(token)
        if interaction is None or interaction.callback is None:
            raise DiscordError(404, 10015, "Unknown Webhook")  # no answer yet: no webhook to use
        if interaction.expired:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return interaction

    async def _followup(self, sent: Sent, token: str) -> tuple[int, Any]:
        interaction = self._answered(token)
        original = self.messages.get(interaction.original_id or 0)
        if original is not None and int(original["flags"]) & LOADING:
            # The first followup after a "thinking…" replaces it, keeping its visibility: the
            # ephemeral flag is ignored here (Discord's documentation of this endpoint).
            data = {**sent.payload, "flags": int(original["flags"]) & EPHEMERAL}
            return 200, self._edit(interaction.original_id or 0, sent, data, interaction.upload_limit)
        message = self._new_message(interaction, sent, sent.payload, interaction.upload_limit)
        interaction.message_ids.append(int(message["id"]))
        return 200, message

    async def _webhook_message(self, sent: Sent, token: str, which: str) -> tuple[int, Any]:
        interaction = self._answered(token)
        message_id = interaction.original_id if which == "@original" else int(which)
        if message_id is None or message_id not in self.messages or message_id not in interaction.message_ids + [interaction.original_id]:
            raise DiscordError(404, 10008, "Unknown Message")
        return self._message_request(sent, message_id, interaction.upload_limit)

    # --- channels ----------------------------------------------------------------------------

    def _known_channel(self, channel_id: str) -> None:
        if int(channel_id) != self.guild.channel_id and int(channel_id) not in self.dm_channels:
            raise DiscordError(404, 10003, "Unknown Channel")

    def _dm_payload(self, channel_id: int) -> dict[str, Any]:
        return {"id": str(channel_id), "type": DM, "recipients": [self.dm_channels[channel_id]], "last_message_id": None, "flags": 0}

    async def _create_dm(self, sent: Sent) -> tuple[int, Any]:
        """Open (or find) the DM channel with a user: Discord answers with the channel."""
        user = self.users.get(int((sent.payload or {}).get("recipient_id", 0)))
        if user is None:
            raise DiscordError(400, 50033, "Invalid Recipient(s)")
        channel_id = next((c for c, u in self.dm_channels.items() if u["id"] == user["id"]), None) or snowflake()
        self.dm_channels[channel_id] = user
        return 200, self._dm_payload(channel_id)

    async def _channel(self, sent: Sent, channel_id: str) -> tuple[int, Any]:
        self._known_channel(channel_id)
        if int(channel_id) in self.dm_channels:
            return 200, self._dm_payload(int(channel_id))
        return 200, self.guild.channel_payload()

    async def _channel_post(self, sent: Sent, channel_id: str) -> tuple[int, Any]:
        self._known_channel(channel_id)
        # A DM takes uploads up to the default limit (its member's, without Nitro).
        dm = int(channel_id) in self.dm_channels
        limit = DEFAULT_UPLOAD_LIMIT if dm else self.guild.upload_limit
        return 200, self._new_message(None, sent, sent.payload, limit, channel_id=int(channel_id) if dm else None)

    async def _channel_message(self, sent: Sent, channel_id: str, message_id: str) -> tuple[int, Any]:
        self._known_channel(channel_id)
        message = self.messages.get(int(message_id))
        # An ephemeral message belongs to its interaction: the bot's token cannot reach it.
        if message is None or int(message["flags"]) & EPHEMERAL or message["channel_id"] != channel_id:
            raise DiscordError(404, 10008, "Unknown Message")
        return self._message_request(sent, int(message_id), self.guild.upload_limit)

    def _message_request(self, sent: Sent, message_id: int, upload_limit: int) -> tuple[int, Any]:
        if sent.method == "GET":
            return 200, self.messages[message_id]
        if sent.method == "DELETE":
            del self.messages[message_id]
            return 204, None
        return 200, self._edit(message_id, sent, sent.payload or {}, upload_limit)

    # --- messages ----------------------------------------------------------------------------

    def _new_message(
        self, interaction: Interaction | None, sent: Sent, data: dict[str, Any], upload_limit: int, *, channel_id: int | None = None
    ) -> dict[str, Any]:
        """A message in the server's channel, or in the DM `channel_id`."""
        message = message_payload(
            snowflake(), channel_id or self.guild.channel_id, None if channel_id else self.guild.id, BOT_USER,
            webhook_id=APPLICATION_ID if interaction else None, interaction=interaction.payload if interaction else None,
        )
        self._check(sent, data, upload_limit)
        self.messages[int(message["id"])] = message
        return self._fill(message, sent, {"flags": 0, **data})

    def _edit(self, message_id: int, sent: Sent, data: dict[str, Any], upload_limit: int) -> dict[str, Any]:
        self._check(sent, data, upload_limit)
        message = self.messages[message_id]
        message["edited_timestamp"] = now_iso()
        if int(message["flags"]) & LOADING:  # an edit finishes a "thinking…"
            data = {**data, "flags": int(message["flags"]) & EPHEMERAL}
        return self._fill(message, sent, data)

    def _check(self, sent: Sent, data: dict[str, Any], upload_limit: int) -> None:
        self._refuse(discord_limits.message_breaches(data), sent)
        self._refuse(discord_limits.upload_breaches(data, {n: name for n, (name, _) in sent.files.items()}), sent)
        sizes = {index: (filename, len(content)) for index, (filename, content) in sent.files.items()}
        self._refuse(discord_limits.oversized(sizes, upload_limit), sent, status=413, code=40005)

    def _fill(self, message: dict[str, Any], sent: Sent, data: dict[str, Any]) -> dict[str, Any]:
        """Apply the fields the bot sent to a new or edited message, as Discord stores them."""
        for key in ("content", "embeds", "components"):
            if key in data:  # a copy: the message changes (embed images), the request stays as sent
                message[key] = copy.deepcopy(data[key]) or ([] if key != "content" else "")
        if "flags" in data:
            message["flags"] = int(data["flags"] or 0)
        if "attachments" in data or sent.files:
            kept = {int(a["id"]) for a in data.get("attachments") or [] if int(a["id"]) >= discord_limits.ATTACHMENTS}
            attachments = [a for a in message["attachments"] if int(a["id"]) in kept]
            for index, (filename, content) in sorted(sent.files.items()):
                attachment_id = snowflake()
                self.uploads[attachment_id] = content
                url = f"{self.address}/attachments/{attachment_id}/{filename}"
                attachments.append({"id": str(attachment_id), "filename": filename, "size": len(content), "url": url, "proxy_url": url})
            message["attachments"] = attachments
        self._embed_images(message, sent)
        return message

    def _embed_images(self, message: dict[str, Any], sent: Sent) -> None:
        """attachment://name in an embed becomes that attachment's address; a name the message
        does not hold shows no image at all, which is a bug of the bot."""
        by_name = {a["filename"]: a["url"] for a in message["attachments"]}
        for embed in message["embeds"]:
            for key in ("image", "thumbnail"):
                url = (embed.get(key) or {}).get("url", "")
                if url.startswith("attachment://"):
                    if url.removeprefix("attachment://") not in by_name:
                        self.violations.append(f"{sent.method} {sent.path}: the embed's {key} is {url}, not an attachment of the message")
                    else:
                        embed[key] = {**embed[key], "url": by_name[url.removeprefix("attachment://")], "proxy_url": by_name[url.removeprefix("attachment://")]}

    async def _attachment(self, request: web.Request) -> web.Response:
        content = self.uploads.get(int(request.match_info["attachment"]))
        if content is None:
            raise web.HTTPNotFound()
        return web.Response(body=content, content_type="application/octet-stream")


def unsendable(option: dict[str, Any], value: Any) -> str | None:
    """Why Discord's client would not send this value for this declared option, if it would not."""
    if option.get("choices") and value not in [choice["value"] for choice in option["choices"]]:
        return f"{value!r} is not one of its choices"
    if isinstance(value, str) and not option.get("min_length", 0) <= len(value) <= option.get("max_length", 6000):
        return f"{len(value)} characters, outside {option.get('min_length', 0)} to {option.get('max_length', 6000)}"
    if isinstance(value, int | float) and not option.get("min_value", value) <= value <= option.get("max_value", value):
        return f"{value} is outside {option.get('min_value')} to {option.get('max_value')}"
    return None


async def start_bot(config: Path, address: str, log: Path, **extra_env: str) -> asyncio.subprocess.Process:
    """`python -m bot run` with this config, its discord.py pointed at `address`."""
    env = dict(os.environ, DISCORD_TOKEN=TOKEN, SDBOT_TEST_DISCORD_URL=address,
               PYTHONPATH=os.pathsep.join([str(DISCORD_ADDRESS_DIR), str(ROOT)]), **extra_env)
    with log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config), "run",
            cwd=config.parent, env=env, stdout=output, stderr=subprocess.STDOUT,
        )


async def stop_with_sigterm(bot: asyncio.subprocess.Process, log: Path) -> tuple[int, str]:
    """SIGTERM, as a service manager stops the bot: its exit status and everything it logged."""
    bot.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(bot.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        bot.kill()
        await bot.wait()
        raise AssertionError(f"the bot did not stop:\n{log.read_text()}") from None
    return code, log.read_text()
