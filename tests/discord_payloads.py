"""The JSON Discord sends a bot, for the fake Discord of tests/discord_wire.py: users, one
server (guild) with one text channel, messages, and the interactions a member's slash command
or button press makes. Field for field as Discord's API v10 documents them, with the fields
discord.py 2.7 reads (every interaction's attachment_size_limit among them)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # a server without boosts
EPHEMERAL, LOADING = 1 << 6, 1 << 7  # message flags
GUILD_TEXT = 0  # channel type
SLASH_COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5  # interaction types

_counter = itertools.count(1)


def snowflake(age_s: float = 0.0) -> int:
    """An id made now (or `age_s` ago): discord.py reads an interaction's age from its id (the
    token lasts 15 minutes from then), so the ids carry the real time, as Discord's do."""
    return ((int((time.time() - age_s) * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0xFFF)


def age_of(ident: int | str) -> float:
    """Seconds since the id was made."""
    return time.time() - ((int(ident) >> 22) + DISCORD_EPOCH_MS) / 1000


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id), "username": name, "discriminator": "0", "global_name": None if bot else name,
        "avatar": None, "bot": bot, "public_flags": 0, "flags": 0,
    }


# What a member may do in the channel: talk, post images and embeds, use commands. The bot's
# managed role grants the same, so it can post its results there.
MEMBER_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, embed_links=True, attach_files=True,
    read_message_history=True, add_reactions=True, use_external_emojis=True, use_application_commands=True,
)


@dataclass
class Member:
    user: dict[str, Any]
    permissions: discord.Permissions = MEMBER_PERMISSIONS
    role_ids: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.user["id"])

    def payload(self) -> dict[str, Any]:
        return {
            "user": self.user, "roles": [str(role) for role in self.role_ids], "nick": None, "avatar": None,
            "joined_at": now_iso(), "premium_since": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
            "communication_disabled_until": None,
        }


@dataclass
class Guild:
    """One server: @everyone may use the channel, the bot's role too."""

    owner: Member
    bot: Member
    id: int = field(default_factory=snowflake)
    channel_id: int = field(default_factory=snowflake)
    bot_role_id: int = field(default_factory=snowflake)
    upload_limit: int = DEFAULT_UPLOAD_LIMIT

    def __post_init__(self) -> None:
        self.bot.role_ids = [self.bot_role_id]

    def channel_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.channel_id), "type": GUILD_TEXT, "guild_id": str(self.id), "name": "imagine", "position": 0,
            "permission_overwrites": [], "parent_id": None, "topic": None, "nsfw": False, "rate_limit_per_user": 0,
            "last_message_id": None, "flags": 0,
        }

    def create_payload(self) -> dict[str, Any]:
        """GUILD_CREATE: without the members intent Discord sends the bot's own member alone."""
        role = {"position": 0, "color": 0, "hoist": False, "mentionable": False, "icon": None, "unicode_emoji": None, "flags": 0}
        return {
            "id": str(self.id), "name": "art club", "owner_id": str(self.owner.id), "icon": None, "splash": None,
            "discovery_splash": None, "banner": None, "description": None, "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US", "system_channel_id": None,
            "system_channel_flags": 0, "rules_channel_id": None, "public_updates_channel_id": None, "vanity_url_code": None,
            "application_id": None, "max_members": 500000, "features": [], "emojis": [], "stickers": [],
            "roles": [
                {**role, "id": str(self.id), "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS.value), "managed": False},
                {**role, "id": str(self.bot_role_id), "name": "sdbot", "permissions": str(MEMBER_PERMISSIONS.value),
                 "managed": True, "position": 1, "tags": {"bot_id": self.bot.user["id"]}},
            ],
            "member_count": 2, "large": False, "unavailable": False, "joined_at": now_iso(),
            "members": [self.bot.payload()], "channels": [self.channel_payload()], "threads": [], "presences": [],
            "voice_states": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "premium_progress_bar_enabled": False, "nsfw_level": 0,
        }

    def interaction_payload(
        self, kind: int, member: Member, application_id: int, data: dict[str, Any], upload_limit: int, age_s: float = 0.0
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE from `member` in the channel; `data` says what they did; its
        id says it was made `age_s` ago."""
        return {
            "id": str(snowflake(age_s)), "application_id": str(application_id), "type": kind, "data": data,
            "token": f"interaction-token-{snowflake()}", "version": 1, "guild_id": str(self.id),
            "guild": {"id": str(self.id), "locale": "en-US", "features": []},
            "channel_id": str(self.channel_id),
            "channel": {**self.channel_payload(), "permissions": str(member.permissions.value)},
            "member": {**member.payload(), "permissions": str(member.permissions.value)},
            "app_permissions": str(self.bot.permissions.value), "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(self.id)}, "context": 0,
            "attachment_size_limit": upload_limit,
        }


def message_payload(
    message_id: int, channel_id: int, guild_id: int | None, author: dict[str, Any], *, webhook_id: int | None = None,
    interaction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An empty message, as the fake fills it from what the bot sends."""
    message: dict[str, Any] = {
        "id": str(message_id), "channel_id": str(channel_id), "author": author, "content": "", "timestamp": now_iso(),
        "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "components": [], "pinned": False, "type": 0, "flags": 0,
    }
    if guild_id is not None:
        message["guild_id"] = str(guild_id)
    if webhook_id is not None:
        message["webhook_id"] = message["application_id"] = str(webhook_id)
    if interaction is not None:
        # The answer to a slash command is of type 20 (CHAT_INPUT_COMMAND), a button's 19 (REPLY).
        message["type"] = 20 if interaction["type"] == SLASH_COMMAND else 19
        user = interaction["member"]["user"]
        message["interaction_metadata"] = {
            "id": interaction["id"], "type": interaction["type"], "user": user,
            "authorizing_integration_owners": interaction["authorizing_integration_owners"],
        }
    return message
