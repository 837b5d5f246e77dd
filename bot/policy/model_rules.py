"""Each server's rules for its models (db.models.ModelRule), set with /admin models rule.

A moderator may hide a model from the server's lists (a model that is not for everyone, or
not ready), allow it only in age-restricted channels (an NSFW finetune), or only for some
roles. A model a member may not use here is left out of their autocomplete and lists, and a
job naming it is refused privately before it is queued. A model hidden in [[models]]
(``hidden = true``) is left out of every server's lists, but may still be named.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import inspect, select

from db.models import ModelRule

if TYPE_CHECKING:
    from bot.config import ModelSettings
    from db.session import Database

# Autocomplete reads the rules on every keystroke: kept this many seconds, dropped on a write.
CACHED_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Rule:
    model: str
    hidden: bool = False
    age_restricted: bool = False
    role_ids: tuple[int, ...] = ()

    @property
    def is_default(self) -> bool:
        return not (self.hidden or self.age_restricted or self.role_ids)

    def describe(self) -> str:
        parts = ["hidden"] if self.hidden else []
        if self.age_restricted:
            parts.append("age-restricted channels only")
        if self.role_ids:
            parts.append("roles " + ", ".join(f"<@&{role_id}>" for role_id in self.role_ids))
        return "; ".join(parts) or "everyone"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a member asks from, as the rules see it."""

    age_restricted: bool
    role_ids: frozenset[int] = frozenset()
    moderator: bool = False  # moderators see and use every model, to check them


@dataclass
class _Copies:
    rules: dict[int, tuple[float, dict[str, Rule]]] = field(default_factory=dict)


_copies: weakref.WeakKeyDictionary[Database, _Copies] = weakref.WeakKeyDictionary()


async def rules_of(db: Database, guild_id: int | None) -> dict[str, Rule]:
    """The server's rules by model name (a DM has none)."""
    if guild_id is None:
        return {}
    copies = _copies.setdefault(db, _Copies())
    kept = copies.rules.get(guild_id)
    if kept is not None and time.monotonic() - kept[0] < CACHED_SECONDS:
        return kept[1]
    async with db.session() as session:
        rows = await session.scalars(select(ModelRule).where(ModelRule.guild_id == guild_id))
        rules = {row.model: Rule(row.model, row.hidden, row.age_restricted, tuple(json.loads(row.role_ids))) for row in rows}
    copies.rules[guild_id] = (time.monotonic(), rules)
    return rules


async def change_rule(
    db: Database, guild_id: int, model: str, *, hidden: bool | None = None, age_restricted: bool | None = None,
    add_role: int | None = None, remove_role: int | None = None,
) -> Rule:
    """Change what is given of a model's rule here; a rule back to the defaults is deleted."""
    try:
        async with db.session() as session, session.begin():
            row = await session.get(ModelRule, (guild_id, model))
            if row is None:
                row = ModelRule(guild_id=guild_id, model=model, hidden=False, age_restricted=False, role_ids="[]")
                session.add(row)
            if hidden is not None:
                row.hidden = hidden
            if age_restricted is not None:
                row.age_restricted = age_restricted
            roles = [r for r in json.loads(row.role_ids) if r != remove_role]
            if add_role is not None and add_role not in roles:
                roles.append(add_role)
            row.role_ids = json.dumps(roles)
            rule = Rule(model, row.hidden, row.age_restricted, tuple(roles))
            if rule.is_default:  # no row means "everyone, everywhere"
                if inspect(row).persistent:
                    await session.delete(row)
                else:
                    session.expunge(row)
    finally:
        copies = _copies.get(db)
        if copies is not None:
            copies.rules.pop(guild_id, None)
    return rule


def refusal(rule: Rule | None, place: Place) -> str | None:
    """Why a member may not use this model here, or None when they may."""
    if rule is None or place.moderator:
        return None
    if rule.hidden:
        return f"The model `{rule.model}` is not available on this server."
    if rule.age_restricted and not place.age_restricted:
        return f"The model `{rule.model}` may only be used in age-restricted channels here."
    if rule.role_ids and not place.role_ids & set(rule.role_ids):
        roles = ", ".join(f"<@&{role_id}>" for role_id in rule.role_ids)
        return f"The model `{rule.model}` is reserved to members with one of these roles here: {roles}."
    return None


def listed_models(models: Iterable[ModelSettings], rules: dict[str, Rule], place: Place) -> list[str]:
    """The names a member is offered here: not hidden in the config, and allowed by the rules."""
    return [m.name for m in models if not m.hidden and refusal(rules.get(m.name), place) is None]
