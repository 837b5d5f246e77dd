"""The policy tables (db.models: GuildPolicy, RoleLimit, BlockedTerm, Ban), read and written.

Each function is one short transaction and returns plain typed values, so the gate and the
/admin commands never hold ORM rows across awaits. A server without a GuildPolicy row has the
[policy] and [queue] defaults; so does a direct message (guild None).

Reads come from a copy of each server's rows kept in memory: the gate reads the policy, the
bans, the blocked terms and the role limits before every command and button, and those four
statements were a fifth of a job's way to the worker (bench/bot_overhead.py). Every write
here drops the server's copy once it has committed; the bot is the tables' one writer, and
a copy is read again after CACHED_SECONDS anyway, so a change made by hand in the database
applies within a minute.
"""

from __future__ import annotations

import json
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, select

from bot.config import FLAGGED_ACTIONS
from inference.common.protocol import RNG_SOURCES
from bot.policy.rules import Term, TermKind, TermScope
from db.models import Ban, BlockedTerm, GuildPolicy, RoleLimit, is_row_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.config import Settings
    from db.session import Database

IdList = Literal["channel_ids", "user_role_ids", "costly_role_ids"]
LIMIT_FIELDS = ("images_per_day", "cooldown_s", "max_pending", "max_job_cost", "max_waiting_cost")
CACHED_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    """Per-member limits; 0 means no limit."""

    images_per_day: int
    cooldown_s: int
    max_pending: int
    # GPU time in units (bot.jobs.cost): one job's, and a member's waiting jobs' together.
    max_job_cost: float = 0
    max_waiting_cost: float = 0


@dataclass(frozen=True)
class RoleLimits:
    role_id: int
    images_per_day: int | None  # None: the role does not change this limit
    cooldown_s: int | None
    max_pending: int | None
    max_job_cost: int | None = None
    max_waiting_cost: int | None = None


@dataclass(frozen=True)
class Policy:
    guild_id: int | None
    channel_ids: tuple[int, ...] = ()
    user_role_ids: tuple[int, ...] = ()
    costly_role_ids: tuple[int, ...] = ()
    limits: Limits = field(default_factory=lambda: Limits(0, 0, 0))
    flagged_action: str = "blur"
    log_channel_id: int | None = None
    # The /describe interrogator its admins picked (None: the [describe] default).
    interrogator: str | None = None
    # Which of the limits the server set itself (the others are the [policy]/[queue] defaults).
    custom_limits: tuple[str, ...] = ()
    # A1111's noise settings for jobs here (/admin noise); None: the [limits] defaults.
    rng: str | None = None
    ensd: int | None = None


@dataclass(frozen=True)
class StoredTerm:
    id: int
    term: Term
    created_by: int


@dataclass(frozen=True)
class BanInfo:
    user_id: int
    reason: str
    banned_by: int
    created_at_unix: int


def default_limits(settings: Settings) -> Limits:
    queue = settings.queue
    return Limits(
        settings.policy.images_per_day, settings.policy.cooldown_s, queue.max_pending_per_user,
        queue.max_job_cost, queue.max_waiting_cost_per_member,
    )


async def policy_of(db: Database, settings: Settings, guild_id: int | None) -> Policy:
    """The server's policy, with the defaults filled in where it set nothing."""
    defaults = default_limits(settings)
    if guild_id is None:
        return Policy(guild_id=None, limits=defaults, flagged_action=settings.policy.flagged_action)
    row = (await _guild_rows(db, guild_id)).policy
    if row is None:
        return Policy(guild_id=guild_id, limits=defaults, flagged_action=settings.policy.flagged_action)
    values = {name: row[name] for name in LIMIT_FIELDS}
    return Policy(
        guild_id=guild_id,
        channel_ids=tuple(json.loads(row["channel_ids"])),
        user_role_ids=tuple(json.loads(row["user_role_ids"])),
        costly_role_ids=tuple(json.loads(row["costly_role_ids"])),
        limits=Limits(**{name: getattr(defaults, name) if value is None else value for name, value in values.items()}),
        # A value written around /admin (not one of the actions) falls back to the config's.
        flagged_action=row["flagged_action"] if row["flagged_action"] in FLAGGED_ACTIONS else settings.policy.flagged_action,
        log_channel_id=row["log_channel_id"],
        interrogator=row["interrogator"],
        custom_limits=tuple(name for name, value in values.items() if value is not None),
        # A source written around /admin (not one of A1111's) falls back to the config's.
        rng=row["default_rng"] if row["default_rng"] in RNG_SOURCES else None,
        ensd=row["default_ensd"],
    )


async def update_policy(db: Database, guild_id: int, **changes: object) -> None:
    """Set columns of the server's row (creating it): limits, flagged_action, log_channel_id,
    default_rng, default_ensd, interrogator."""
    async with _writing(db, guild_id) as session:
        row = await _row(session, guild_id)
        for name, value in changes.items():
            setattr(row, name, value)


async def change_id_list(db: Database, guild_id: int, which: IdList, item_id: int, *, add: bool) -> bool:
    """Add an id to (or remove it from) one of the server's lists; False when nothing changed."""
    async with _writing(db, guild_id) as session:
        row = await _row(session, guild_id)
        ids: list[int] = json.loads(getattr(row, which) or "[]")
        if (item_id in ids) == add:
            return False
        ids = [*ids, item_id] if add else [i for i in ids if i != item_id]
        setattr(row, which, json.dumps(ids))
        return True


async def _row(session, guild_id: int) -> GuildPolicy:  # type: ignore[no-untyped-def]
    row = await session.get(GuildPolicy, guild_id)
    if row is None:
        row = GuildPolicy(guild_id=guild_id, channel_ids="[]", user_role_ids="[]", costly_role_ids="[]")
        session.add(row)
    return row


# --- role limits -----------------------------------------------------------------------------


async def role_limits(db: Database, guild_id: int) -> list[RoleLimits]:
    return list((await _guild_rows(db, guild_id)).role_limits)


async def set_role_limits(db: Database, guild_id: int, role_id: int, **values: int | None) -> RoleLimits | None:
    """Change a role's overrides (only the values given); a role left with none is removed (None)."""
    async with _writing(db, guild_id) as session:
        row = await session.scalar(select(RoleLimit).where(RoleLimit.guild_id == guild_id, RoleLimit.role_id == role_id))
        if row is None:
            row = RoleLimit(guild_id=guild_id, role_id=role_id)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        if all(getattr(row, name) is None for name in LIMIT_FIELDS):
            if row.id is not None:
                await session.delete(row)
            else:
                session.expunge(row)
            return None
        return _role_limits(row)


async def clear_role_limits(db: Database, guild_id: int, role_id: int) -> bool:
    async with _writing(db, guild_id) as session:
        result = await session.execute(
            delete(RoleLimit).where(RoleLimit.guild_id == guild_id, RoleLimit.role_id == role_id)
        )
        return result.rowcount > 0


def _role_limits(row: RoleLimit) -> RoleLimits:
    return RoleLimits(row.role_id, **{name: getattr(row, name) for name in LIMIT_FIELDS})


def effective_limits(base: Limits, overrides: list[RoleLimits], member_role_ids: set[int]) -> Limits:
    """The member's limits: for each limit a role of theirs sets, the most generous such role
    (0, no limit, beats any number); where none does, the server's. A role may thus be stricter
    than the server (a "newcomer" role) as well as more generous."""
    chosen = {}
    for name in LIMIT_FIELDS:
        values = [getattr(o, name) for o in overrides if o.role_id in member_role_ids and getattr(o, name) is not None]
        chosen[name] = (0 if 0 in values else max(values)) if values else getattr(base, name)
    return Limits(**chosen)


# --- blocked terms ---------------------------------------------------------------------------


async def terms(db: Database, guild_id: int | None) -> list[StoredTerm]:
    """The server's blocked terms, oldest first (a DM has none of its own)."""
    if guild_id is None:
        return []
    return list((await _guild_rows(db, guild_id)).terms)


async def add_term(db: Database, guild_id: int, term: Term, created_by: int) -> bool:
    """Store a term (already checked with rules.compile_term); False when it was there."""
    async with _writing(db, guild_id) as session:
        exists = await session.scalar(
            select(BlockedTerm.id).where(
                BlockedTerm.guild_id == guild_id, BlockedTerm.scope == term.scope,
                BlockedTerm.kind == term.kind, BlockedTerm.pattern == term.pattern,
            )
        )
        if exists is not None:
            return False
        session.add(BlockedTerm(guild_id=guild_id, scope=term.scope, kind=term.kind, pattern=term.pattern, created_by=created_by))
        return True


async def remove_term(db: Database, guild_id: int, term_id: int) -> Term | None:
    if not is_row_id(term_id):
        return None
    async with _writing(db, guild_id) as session:
        row = await session.get(BlockedTerm, term_id)
        if row is None or row.guild_id != guild_id:
            return None
        await session.delete(row)
        return Term(TermScope(row.scope), TermKind(row.kind), row.pattern)


# --- bans ------------------------------------------------------------------------------------


async def ban(db: Database, guild_id: int, user_id: int, reason: str, banned_by: int) -> bool:
    """Ban a member from the bot here; False when they already were (the reason is updated)."""
    async with _writing(db, guild_id) as session:
        row = await session.get(Ban, (guild_id, user_id))
        if row is not None:
            row.reason, row.banned_by = reason, banned_by
            return False
        session.add(Ban(guild_id=guild_id, user_id=user_id, reason=reason, banned_by=banned_by))
        return True


async def unban(db: Database, guild_id: int, user_id: int) -> bool:
    async with _writing(db, guild_id) as session:
        result = await session.execute(delete(Ban).where(Ban.guild_id == guild_id, Ban.user_id == user_id))
        return result.rowcount > 0


async def ban_of(db: Database, guild_id: int, user_id: int) -> BanInfo | None:
    return (await _guild_rows(db, guild_id)).bans.get(user_id)


async def banned_anywhere(db: Database, user_id: int) -> bool:
    async with db.session() as session:
        return await session.scalar(select(Ban.guild_id).where(Ban.user_id == user_id).limit(1)) is not None


async def bans(db: Database, guild_id: int) -> list[BanInfo]:
    """Newest first."""
    return list((await _guild_rows(db, guild_id)).bans.values())


def _ban_info(row: Ban) -> BanInfo:
    return BanInfo(row.user_id, row.reason, row.banned_by, int(row.created_at.timestamp()))


# --- the copy kept in memory -------------------------------------------------------------------


@dataclass(frozen=True)
class _GuildRows:
    """One server's rows of the four tables, as plain values."""

    policy: dict[str, Any] | None  # the GuildPolicy row's columns; None: the server set nothing
    role_limits: tuple[RoleLimits, ...]
    terms: tuple[StoredTerm, ...]
    bans: dict[int, BanInfo]  # by user id, newest first


@dataclass
class _Copies:
    rows: dict[int, tuple[float, _GuildRows]] = field(default_factory=dict)  # by guild: (read at, rows)
    # Writes per guild: a read that began before a write committed must not be kept.
    writes: Counter[int] = field(default_factory=Counter)


# Per database (tests run several bots, each with its own).
_copies: weakref.WeakKeyDictionary[Database, _Copies] = weakref.WeakKeyDictionary()


async def _guild_rows(db: Database, guild_id: int) -> _GuildRows:
    copies = _copies.setdefault(db, _Copies())
    kept = copies.rows.get(guild_id)
    now = time.monotonic()
    if kept is not None and now - kept[0] < CACHED_SECONDS:
        return kept[1]
    writes = copies.writes[guild_id]
    async with db.session() as session:
        policy = await session.get(GuildPolicy, guild_id)
        limits = await session.scalars(select(RoleLimit).where(RoleLimit.guild_id == guild_id).order_by(RoleLimit.id))
        limits_read = tuple(_role_limits(row) for row in limits)
        terms = await session.scalars(select(BlockedTerm).where(BlockedTerm.guild_id == guild_id).order_by(BlockedTerm.id))
        terms_read = tuple(StoredTerm(r.id, Term(TermScope(r.scope), TermKind(r.kind), r.pattern), r.created_by) for r in terms)
        banned = await session.scalars(select(Ban).where(Ban.guild_id == guild_id).order_by(Ban.created_at.desc()))
        rows = _GuildRows(
            policy={column.key: getattr(policy, column.key) for column in GuildPolicy.__table__.columns} if policy else None,
            role_limits=limits_read,
            terms=terms_read,
            bans={row.user_id: _ban_info(row) for row in banned},
        )
    if copies.writes[guild_id] == writes:
        copies.rows[guild_id] = (now, rows)
    return rows


@asynccontextmanager
async def _writing(db: Database, guild_id: int) -> AsyncIterator[AsyncSession]:
    """A transaction on the server's rows; its copy is dropped once it has committed (or failed)."""
    try:
        async with db.session() as session, session.begin():
            yield session
    finally:
        copies = _copies.get(db)
        if copies is not None:
            copies.writes[guild_id] += 1
            copies.rows.pop(guild_id, None)
