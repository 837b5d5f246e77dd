"""The server's policy, applied: who may use the bot where, and which jobs it takes.

`check_access` runs before every slash command (bot.client.CommandTree.interaction_check) and every button
or form (bot.actions.run_for_user); `check_jobs` runs once for all the jobs of one command
before any is queued (bot.ui.confirm.submit_jobs), and for each job a button queues
(bot.actions.submit). Each refusal raises `Refused` with a message saying why (and, for quotas
and cooldowns, when to try again), and is written to the audit log first.

Members with Manage Server (or Administrator) pass the channel and role rules, costly roles
included, so a policy that locks everyone out can always be fixed; /admin checks its own
permission (bot.cogs.admin). Bans, blocked terms and the limits apply to everyone.

Limits are counted from the jobs table, the truth about jobs, in the server the command came
from (a direct message counts the member's DM jobs):
- images per day: the images of the member's jobs made in the last 24 hours (rolling), in every
  status but two: jobs canceled before they started (they cost nothing) and failed jobs (the
  bot's failure should not cost the member their quota). Canceled running jobs count.
- cooldown: seconds since the member's latest job here, whatever became of it.
- waiting jobs, where the server (or a role) set a limit: the member's pending jobs here, plus
  those being asked for. [queue] max_pending_per_user, the default, is a ceiling over all
  servers that bot.jobs.queue (and bot.ui.confirm, for batches) enforces itself.
- GPU time: each job's cost (bot.jobs.cost), and the member's waiting jobs' in every server
  plus those being asked for, against the server's (or a role's) caps where it set stricter
  ones, else [queue] max_job_cost and max_waiting_cost_per_member. The queue checks the bot's
  caps again as it writes each row; here a batch is refused whole, before any of it is queued.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import discord
from sqlalchemy import and_, func, not_, or_, select

from bot.errors import Refused
from bot.interactions import is_age_restricted
from bot.jobs.cost import cost_refusal, job_cost
from bot.jobs.network_checks import check_job_networks
from bot.jobs.job_rows import plot_options
from bot.jobs.params import ServerDefaults
from bot.policy import audit, model_rules, rules, store
from db.base import utcnow
from db.models import Job, JobStatus
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.config import Settings
    from bot.jobs.params import JobParameters

QUOTA_WINDOW = timedelta(hours=24)
ADMIN_COMMAND = "admin"


@dataclass(frozen=True)
class Refusal:
    rule: str  # short name for the audit log: "channel", "role", "blocked term"...
    message: str  # what the member is told
    details: str = ""  # more for moderators (the matched term, the prompt)


def is_moderator(interaction: discord.Interaction[SDBot]) -> bool:
    """Manage Server or Administrator in this server (never in a DM)."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (permissions.manage_guild or permissions.administrator)


def member_role_ids(interaction: discord.Interaction[SDBot]) -> set[int]:
    return {role.id for role in getattr(interaction.user, "roles", ())}


async def check_access(interaction: discord.Interaction[SDBot]) -> None:
    """May this member use the bot here at all? Raises Refused (audited) when not."""
    refusal = await _access_refusal(interaction)
    if refusal is not None:
        await refuse(interaction, refusal)


async def _access_refusal(interaction: discord.Interaction[SDBot]) -> Refusal | None:
    bot = interaction.client
    db, user_id = bot.queue.db, interaction.user.id
    if interaction.guild_id is None:
        if not bot.settings.policy.allow_dms:
            return Refusal("dm", "This bot does not work in direct messages: use it in a server.")
        if await store.banned_anywhere(db, user_id):
            return Refusal("ban", "You are banned from using this bot in a server, so it does not work for you in direct messages either.")
        return None
    if _is_admin_command(interaction):
        return None  # /admin checks Manage Server itself, and audits who tried
    ban = await store.ban_of(db, interaction.guild_id, user_id)
    if ban is not None:
        reason = f" Reason: {ban.reason}" if ban.reason else ""
        return Refusal("ban", f"You are banned from using this bot on this server.{reason}")
    if is_moderator(interaction):
        return None
    policy = await policy_here(interaction)
    if policy.channel_ids and not _channel_ids(interaction) & set(policy.channel_ids):
        where = ", ".join(f"<#{channel_id}>" for channel_id in policy.channel_ids)
        return Refusal("channel", f"The bot does not work in this channel. Use it in {where}.")
    return role_refusal(policy, member_role_ids(interaction))


def role_refusal(policy: store.Policy, role_ids: set[int]) -> Refusal | None:
    """The role rule, for a member who is no moderator: at commands, and again when a job of
    theirs is claimed (bot.cogs.lifecycle), since a role taken away meanwhile ends their access."""
    if policy.user_role_ids and not role_ids & set(policy.user_role_ids):
        roles = ", ".join(f"<@&{role_id}>" for role_id in policy.user_role_ids)
        return Refusal("role", f"On this server the bot is for members with one of these roles: {roles}.")
    return None


async def policy_here(interaction: discord.Interaction[SDBot]) -> store.Policy:
    """The server's policy, read once per interaction: a command's access check and its job
    check (both on the way to its answer) need the same row."""
    policy = interaction.extras.get(_POLICY_KEY)
    if policy is None:
        bot = interaction.client
        policy = interaction.extras[_POLICY_KEY] = await store.policy_of(bot.queue.db, bot.settings, interaction.guild_id)
    return policy


_POLICY_KEY = "sdbot.policy"


async def server_defaults(interaction: discord.Interaction[SDBot]) -> ServerDefaults:
    """This server's own defaults for a new job asked for here (/admin noise)."""
    policy = await policy_here(interaction)
    return ServerDefaults(rng=policy.rng, ensd=policy.ensd)


def _is_admin_command(interaction: discord.Interaction[SDBot]) -> bool:
    if interaction.type != discord.InteractionType.application_command:
        return False
    data = interaction.data or {}
    return data.get("name") == ADMIN_COMMAND and data.get("type", 1) == 1


def _channel_ids(interaction: discord.Interaction[SDBot]) -> set[int]:
    """The channel, and a thread's parent: allowing a channel allows its threads."""
    ids = {interaction.channel_id} if interaction.channel_id is not None else set()
    parent_id = getattr(interaction.channel, "parent_id", None)
    return ids | ({parent_id} if parent_id is not None else set())


async def refuse(interaction: discord.Interaction[SDBot], refusal: Refusal) -> None:
    """Audit the refusal, then raise it for the error handlers to answer privately."""
    details = f"{refusal.rule}: {refusal.details or refusal.message}"
    await audit.record(
        interaction.client, audit.Action.REFUSED, actor_id=interaction.user.id,
        guild_id=interaction.guild_id, channel_id=interaction.channel_id,
        target_user_id=interaction.user.id, details=details,
    )
    raise Refused(refusal.message)


# --- jobs ----------------------------------------------------------------------------------


_turns: dict[int, asyncio.Lock] = {}
_in_line: Counter[int] = Counter()


@asynccontextmanager
async def member_turn(user_id: int) -> AsyncIterator[None]:
    """One command or button at a time per member, from its job check to its rows: the limits
    count the member's jobs, so two at once (a double click) must not both pass before either
    is queued. One process runs the bot, so a lock in memory is enough."""
    lock = _turns.setdefault(user_id, asyncio.Lock())
    _in_line[user_id] += 1
    try:
        async with lock:
            yield
    finally:
        _in_line[user_id] -= 1
        if not _in_line[user_id]:
            del _in_line[user_id], _turns[user_id]


async def check_jobs(interaction: discord.Interaction[SDBot], params: list[JobParameters]) -> None:
    """May these jobs (one command's, or one button's) be queued? Raises Refused when not, and
    InvalidOption for a LoRA or embedding of another family than a job's model."""
    refusal = await _jobs_refusal(interaction, params)
    if refusal is not None:
        await refuse(interaction, refusal)
    check_job_networks(interaction.client.settings, params)


def model_place(interaction: discord.Interaction[SDBot]) -> model_rules.Place:
    """Where a member asks from, for the server's model rules."""
    return model_rules.Place(is_age_restricted(interaction), frozenset(member_role_ids(interaction)), is_moderator(interaction))


async def _model_refusal(interaction: discord.Interaction[SDBot], params: list[JobParameters]) -> Refusal | None:
    """A model gone since the job was described (a rescan removed it), or one the server's
    rules keep from this member here."""
    bot = interaction.client
    rules = await model_rules.rules_of(bot.queue.db, interaction.guild_id)
    cells = (cell.model for p in params if p.plot_json for cell in plot_options(p.plot_json).cells if cell.model)
    for name in dict.fromkeys([*(p.model for p in params), *cells]):
        if bot.settings.model(name) is None:
            return Refusal("model", f"The model `{name}` is not on this server any more: pick another one.", name)
        if (why := model_rules.refusal(rules.get(name), model_place(interaction))) is not None:
            return Refusal("model", why, name)
    return None


async def _jobs_refusal(interaction: discord.Interaction[SDBot], params: list[JobParameters]) -> Refusal | None:
    bot = interaction.client
    db, guild_id = bot.queue.db, interaction.guild_id
    if (refusal := await _model_refusal(interaction, params)) is not None:
        return refusal
    policy = await policy_here(interaction)
    roles = member_role_ids(interaction)
    if policy.costly_role_ids and not is_moderator(interaction) and not roles & set(policy.costly_role_ids):
        feature = next((f for p in params if (f := costly_feature(p, bot.settings)) is not None), None)
        if feature is not None:
            allowed = ", ".join(f"<@&{role_id}>" for role_id in policy.costly_role_ids)
            return Refusal("costly role", f"{feature} is reserved to members with one of these roles here: {allowed}.", feature)
    refusal = await _blocked_terms(interaction, bot, params)
    if refusal is not None:
        return refusal
    overrides = await store.role_limits(db, guild_id) if guild_id is not None else []
    limits = store.effective_limits(policy.limits, overrides, roles)
    # A server's (or role's) caps on GPU time can be stricter than the bot's, never looser: the
    # queue enforces the bot's own over every server.
    queue_settings = bot.settings.queue
    caps = (
        _tighter(limits.max_job_cost, queue_settings.max_job_cost),
        _tighter(limits.max_waiting_cost, queue_settings.max_waiting_cost_per_member),
    )
    # A lone job under the bot's own caps is checked by the queue, in the job's own
    # transaction, with the same words: reading the member's waiting jobs here too would
    # only delay every job.
    if len(params) > 1 or caps != (queue_settings.max_job_cost, queue_settings.max_waiting_cost_per_member):
        too_costly = cost_refusal(
            [job_cost(p) for p in params], await bot.queue.pending_cost(interaction.user.id), *caps
        )
        if too_costly is not None:
            return Refusal("cost", too_costly)
    if "max_pending" not in policy.custom_limits and not any(o.max_pending is not None and o.role_id in roles for o in overrides):
        # The bot's own cap, which the queue (and confirm, for batches) enforces over all servers.
        limits = replace(limits, max_pending=0)
    return await _limits_refusal(bot, interaction.user.id, guild_id, limits, params)


def _tighter(cap: float, ceiling: float) -> float:
    """The stricter of two caps, where 0 is no cap."""
    return min(cap, ceiling) if cap and ceiling else cap or ceiling


def costly_feature(params: JobParameters, settings: Settings) -> str | None:
    """What makes a job costly (a server may reserve those to some roles), or None."""
    if params.kind == JobKind.DESCRIBE:
        return None  # reads an image of any size, makes none
    if params.upscale_factor is not None and params.upscale_factor >= 4:
        return "Upscaling 4x"
    if params.hires_scale is not None:
        return "The hires fix"
    if params.count >= 4:
        return f"A plot of {params.count} cells" if params.plot_json else f"Making {params.count} images at once"
    if params.width * params.height > settings.policy.large_pixels:
        return f"A {params.width}x{params.height} image"
    return None


def prompt_texts(params: JobParameters) -> list[str]:
    """Every prompt a job runs: its own (inline parameters and styles already merged in by
    bot.prompts.prepare) and each plot cell's."""
    texts = [params.prompt, params.negative_prompt]
    if params.plot_json:
        for cell in plot_options(params.plot_json).cells:
            texts += [cell.prompt or "", cell.negative_prompt or ""]
    return [text for text in texts if text]


async def _blocked_terms(
    interaction: discord.Interaction[SDBot], bot: SDBot, params: list[JobParameters]
) -> Refusal | None:
    stored = await store.terms(bot.queue.db, interaction.guild_id)
    if not stored:
        return None
    age_restricted = is_age_restricted(interaction)
    for job_params in params:
        hits = rules.find_hits(prompt_texts(job_params), [s.term for s in stored], age_restricted=age_restricted)
        if hits:
            return terms_refusal(hits, job_params.prompt)
    return None


SHOWN_HITS = 3


def terms_refusal(hits: list[rules.Hit], prompt: str) -> Refusal:
    # A few hits are enough to say why; a prompt may match a term list dozens of times.
    found = "; ".join(hit.describe() for hit in hits[:SHOWN_HITS])
    if len(hits) > SHOWN_HITS:
        found += f" and {len(hits) - SHOWN_HITS} more"
    nsfw_only = all(hit.term.scope == rules.TermScope.NSFW for hit in hits)
    where = "only in age-restricted channels" if nsfw_only else "at all"
    message = f"Not queued: the prompt contains {found}, which this server allows {where}."
    return Refusal("blocked term", message, f"{found}; prompt: {prompt[:300]}")


async def _limits_refusal(
    bot: SDBot, user_id: int, guild_id: int | None, limits: store.Limits, params: list[JobParameters]
) -> Refusal | None:
    now = utcnow()
    here = Job.guild_id == guild_id if guild_id is not None else Job.guild_id.is_(None)
    async with bot.queue.db.session() as session:
        if limits.max_pending:
            pending = await session.scalar(
                select(func.count(Job.id)).where(Job.user_id == user_id, here, Job.status == JobStatus.PENDING)
            )
            if pending + len(params) > limits.max_pending:
                asked = f" and this asks for {len(params)} more" if len(params) > 1 else ""
                return Refusal(
                    "max pending",
                    f"You have {pending} jobs waiting{asked}; this server allows {limits.max_pending} at once. "
                    "Wait for one to start, or cancel one with /cancel.",
                )
        if limits.cooldown_s:
            last = await session.scalar(select(func.max(Job.created_at)).where(Job.user_id == user_id, here))
            if last is not None and now - last < timedelta(seconds=limits.cooldown_s):
                again = last + timedelta(seconds=limits.cooldown_s)
                return Refusal(
                    "cooldown",
                    f"This server asks for {limits.cooldown_s} s between jobs: try again {_when(again)}.",
                )
        if limits.images_per_day:
            counted = or_(
                Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED)),
                and_(Job.status == JobStatus.CANCELED, not_(Job.started_at.is_(None))),
            )
            rows = (
                await session.execute(
                    select(Job.created_at, Job.count)
                    .where(Job.user_id == user_id, here, counted, Job.created_at > now - QUOTA_WINDOW)
                    .order_by(Job.created_at)
                )
            ).all()
            return _quota_refusal(limits.images_per_day, [(r.created_at, r.count) for r in rows], params)
    return None


def _quota_refusal(limit: int, recent: list[tuple[datetime, int]], params: list[JobParameters]) -> Refusal | None:
    wanted = sum(p.count for p in params)
    used = sum(count for _, count in recent)
    if used + wanted <= limit:
        return None
    if wanted > limit:
        return Refusal("quota", f"This asks for {wanted} images, and this server allows {limit} per member per day.")
    # The first moment enough of the window's images have aged out of it.
    again = None
    for created_at, count in recent:
        used -= count
        if used + wanted <= limit:
            again = created_at + QUOTA_WINDOW
            break
    assert again is not None  # every image ages out eventually, and wanted <= limit
    left = max(0, limit - sum(count for _, count in recent))
    return Refusal(
        "quota",
        f"You have used your {limit} images for the last 24 hours ({left} left, this asks for {wanted}). "
        f"Try again {_when(again)}.",
    )


def _when(moment: datetime) -> str:
    """A Discord timestamp the client shows as "in 5 minutes", counting down."""
    return f"<t:{int(moment.timestamp()) + 1}:R>"


# --- styles ----------------------------------------------------------------------------------


async def _banned_in_style(interaction: discord.Interaction[SDBot]) -> Callable[..., str | None]:
    """The terms this server bans outright that a style's texts contain, described, or None.
    A style's NSFW terms are checked where it is used, since the same style may serve an
    age-restricted channel."""
    bot = interaction.client
    stored = [s.term for s in await store.terms(bot.queue.db, interaction.guild_id) if s.term.scope == rules.TermScope.BANNED]

    def found(*texts: str) -> str | None:
        hits = rules.find_hits([text for text in texts if text], stored, age_restricted=False)
        return "; ".join(hit.describe() for hit in hits) if hits else None

    return found


async def style_refuser(interaction: discord.Interaction[SDBot]) -> Callable[[str, str], str | None]:
    """For imports of many styles: why one may not be stored here (check_style_text's rule), or None."""
    found_in = await _banned_in_style(interaction)

    def refuse(*texts: str) -> str | None:
        found = found_in(*texts)
        return f"contains {found}" if found else None

    return refuse


async def check_style_text(interaction: discord.Interaction[SDBot], *texts: str) -> None:
    """A style saved here must not carry a term this server bans outright."""
    found = (await _banned_in_style(interaction))(*texts)
    if found:
        await refuse(interaction, Refusal("blocked term", f"Not saved: the style contains {found}, which this server does not allow.", f"style: {found}"))
