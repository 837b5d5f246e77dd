"""/admin: a server's moderators set its policy, ban members from the bot, cancel or remove
anyone's work and read the audit log (bot.policy).

The group is guild-only and needs Manage Server by default, but a server can re-enable a
command for anyone in its integration settings, so the cog checks Manage Server again on every
call (`interaction_check`), and audits who tried. Every answer is private; every change is
audited (bot.policy.audit), and mirrored to the server's log channel when it has one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from sqlalchemy import func, or_, select

from bot import actions
from bot.cogs import admin_summary as summary
from bot.cogs.base import BotCog
from bot.cogs.generation_options import Option, declared_options, matching_choices, vaes
from bot.errors import InvalidOption, JobNotFound, NothingToDo
from bot.interactions import acknowledge, is_age_restricted, send_private
from bot.jobs import removal, retention
from bot.jobs.leases import worker_lines
from bot.jobs.merge_params import merge_job
from bot.jobs.sampling import MAX_ENSD, check_ensd, check_rng
from bot.policy import audit, gate, model_rules, rules, store
from bot.ui.embeds import clip
from db.base import utcnow
from db.models import MAX_INTEGER, AuditEntry

if TYPE_CHECKING:
    from bot.client import SDBot

REASON_LIMIT = 300  # characters of a ban reason kept
AUDIT_PAGE_SIZE = 10
ID_LISTS: dict[str, store.IdList] = {"use": "user_role_ids", "costly": "costly_role_ids"}
ROLE_LIST_NAMES = {"use": "may use the bot", "costly": "may use costly features"}
# /admin limits set: the limits (store.LIMIT_FIELDS, in its order), then whose they are.
LIMIT_DESCRIPTIONS = (
    "Images per member in a rolling 24 hours",
    "Seconds between two jobs of a member",
    "Jobs a member may have waiting",
    "GPU time one job may take, in units (1 unit = 20 steps of one 512x512 image)",
    "GPU time a member's waiting jobs may take together, in units",
)
LIMIT_OPTIONS = {
    **{name: Option(int, description) for name, description in zip(store.LIMIT_FIELDS, LIMIT_DESCRIPTIONS, strict=True)},
    "role": Option(discord.Role, "Set this role's own limits instead (a member gets the most generous of their roles')"),
}


def _limit_option(value: int | None, name: str) -> int | None:
    if value is not None and value < 0:
        raise InvalidOption(f"`{name}` must be 0 (no limit) or more, got {value}.")
    # Discord sends up to 2**53: past the column's range the write fails on PostgreSQL, and on
    # SQLite a cooldown beyond timedelta's made every later command here fail.
    if value is not None and value > MAX_INTEGER:
        raise InvalidOption(f"`{name}` can be at most {MAX_INTEGER:,}, got {value:,}.")
    return value


async def _all_models(interaction: discord.Interaction[SDBot], current: str) -> list[app_commands.Choice[str]]:
    """Every model, hidden ones too: moderators set rules on any of them."""
    return matching_choices([m.name for m in interaction.client.settings.models], current)


class Admin(BotCog):
    admin = app_commands.Group(
        name="admin",
        description="Moderate the bot on this server (Manage Server)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    channels = app_commands.Group(name="channels", description="The channels the bot answers in", parent=admin)
    roles = app_commands.Group(name="roles", description="Who may use the bot, and its costly features", parent=admin)
    terms = app_commands.Group(name="terms", description="Banned words and regular expressions", parent=admin)
    limits = app_commands.Group(name="limits", description="Images per day, cooldown, waiting jobs", parent=admin)
    log = app_commands.Group(name="log", description="The channel the audit log is mirrored to", parent=admin)
    policy = app_commands.Group(name="policy", description="This server's policy", parent=admin)
    models = app_commands.Group(name="models", description="Which models are offered, where and to whom", parent=admin)

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.bot.queue.db

    async def interaction_check(self, interaction: discord.Interaction[SDBot], /) -> bool:  # type: ignore[override]
        """Manage Server, checked here whatever Discord's command permissions say."""
        if not gate.is_moderator(interaction):
            command = interaction.command.qualified_name if interaction.command else "admin"
            await gate.refuse(
                interaction,
                gate.Refusal("moderator", "Only members with the Manage Server permission can use /admin.", f"tried /{command}"),
            )
        return True

    async def _changed(self, interaction: discord.Interaction[SDBot], details: str, action: audit.Action = audit.Action.POLICY_CHANGED, **fields: int) -> None:
        await audit.record(
            self.bot, action, actor_id=interaction.user.id, guild_id=interaction.guild_id,
            channel_id=interaction.channel_id, details=details, **fields,
        )

    def _guild_id(self, interaction: discord.Interaction[SDBot]) -> int:
        assert interaction.guild_id is not None  # the group is guild-only
        return interaction.guild_id

    # --- channels -----------------------------------------------------------------------------

    @channels.command(name="add", description="Let the bot answer in this channel (and its threads)")
    async def channels_add(self, interaction: discord.Interaction[SDBot], channel: discord.TextChannel) -> None:
        await self._change_channel(interaction, channel, add=True)

    @channels.command(name="remove", description="Stop answering in this channel")
    async def channels_remove(self, interaction: discord.Interaction[SDBot], channel: discord.TextChannel) -> None:
        await self._change_channel(interaction, channel, add=False)

    async def _change_channel(self, interaction: discord.Interaction[SDBot], channel: discord.TextChannel, *, add: bool) -> None:
        await self._change_id_list(
            interaction, "channel_ids", channel.id, channel.mention, add=add, where="in the list",
            audited=f"channels: {'added' if add else 'removed'} <#{channel.id}>",
            shown=lambda policy: f" {summary.channels_line(policy)}",
        )

    @channels.command(name="list", description="The channels the bot answers in")
    async def channels_list(self, interaction: discord.Interaction[SDBot]) -> None:
        policy = await store.policy_of(self.db, self.bot.settings, self._guild_id(interaction))
        await send_private(interaction, summary.channels_line(policy))

    # --- roles --------------------------------------------------------------------------------

    @roles.command(name="add", description="Add a role to those that may use the bot, or its costly features")
    @app_commands.rename(which="list")
    @app_commands.describe(which="use: may use the bot at all; costly: may use upscale 4x, hires fix, large sizes, count 4")
    async def roles_add(self, interaction: discord.Interaction[SDBot], which: Literal["use", "costly"], role: discord.Role) -> None:
        await self._change_role(interaction, which, role, add=True)

    @roles.command(name="remove", description="Remove a role from one of the lists")
    @app_commands.rename(which="list")
    async def roles_remove(self, interaction: discord.Interaction[SDBot], which: Literal["use", "costly"], role: discord.Role) -> None:
        await self._change_role(interaction, which, role, add=False)

    async def _change_role(self, interaction: discord.Interaction[SDBot], which: str, role: discord.Role, *, add: bool) -> None:
        await self._change_id_list(
            interaction, ID_LISTS[which], role.id, role.mention, add=add,
            where=f"among the roles that {ROLE_LIST_NAMES[which]}",
            audited=f"roles ({which}): {'added' if add else 'removed'} <@&{role.id}>",
            shown=lambda policy: f"\n{summary.roles_lines(policy)}",
        )

    async def _change_id_list(
        self,
        interaction: discord.Interaction[SDBot],
        id_list: store.IdList,
        listed_id: int,
        mention: str,
        *,
        add: bool,
        where: str,
        audited: str,
        shown: Callable[[store.Policy], str],
    ) -> None:
        """Add an id to one of the server's lists (channels, roles) or remove it, audit the
        change and show the list as it is now; a change that changes nothing is refused."""
        changed = await store.change_id_list(self.db, self._guild_id(interaction), id_list, listed_id, add=add)
        if not changed:
            raise NothingToDo(f"{mention} was {'already' if add else 'not'} {where}.")
        await self._changed(interaction, audited)
        policy = await store.policy_of(self.db, self.bot.settings, self._guild_id(interaction))
        await send_private(interaction, f"{'Added' if add else 'Removed'} {mention}.{shown(policy)}")

    @roles.command(name="list", description="The roles that may use the bot, and its costly features")
    async def roles_list(self, interaction: discord.Interaction[SDBot]) -> None:
        policy = await store.policy_of(self.db, self.bot.settings, self._guild_id(interaction))
        await send_private(interaction, summary.roles_lines(policy))

    # --- workers ------------------------------------------------------------------------------

    @admin.command(name="workers", description="The image workers: GPU, models, current job, throughput")
    async def workers(self, interaction: discord.Interaction[SDBot]) -> None:
        current = self.bot.dispatcher.current if self.bot.settings.worker.builtin else None
        lines = await worker_lines(self.bot.queue, self.bot.settings.worker, current.id if current is not None else None)
        await summary.send_embed(interaction, "Workers", lines)

    # --- models -------------------------------------------------------------------------------

    @models.command(name="refresh", description="Look for new, changed and removed model files now")
    async def models_refresh(self, interaction: discord.Interaction[SDBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # a big folder takes seconds
        change = await self.bot.models.refresh()
        await self._changed(interaction, f"models refreshed: {change.summary()}")
        await interaction.followup.send(clip(change.summary(), summary.EMBED_LIMIT), ephemeral=True)

    @models.command(name="list", description="The models and this server's rules for them")
    async def models_list(self, interaction: discord.Interaction[SDBot]) -> None:
        settings = self.bot.settings
        rules = await model_rules.rules_of(self.db, self._guild_id(interaction))
        lines = [
            f"`{m.name}`{' (default)' if m.name == settings.default_model else ''}"
            f"{' (hidden by the bot config)' if m.hidden else ''}: {rules[m.name].describe() if m.name in rules else 'everyone'}"
            for m in settings.models
        ]
        skipped = len(self.bot.models.skipped)
        footer = f"{skipped} model file(s) skipped: the bot's admin sees why with `sdbot models`." if skipped else None
        await summary.send_embed(interaction, f"Models ({len(settings.models)})", lines, footer)

    @models.command(name="rule", description="Hide a model here, keep it to age-restricted channels, or to some roles")
    @app_commands.describe(
        model="The model", hidden="Left out of this server's lists and refused when named",
        age_restricted="Only in age-restricted channels", add_role="Allow this role (once a role is set, only those roles)",
        remove_role="Stop allowing this role",
    )
    @app_commands.autocomplete(model=_all_models)
    async def models_rule(
        self, interaction: discord.Interaction[SDBot], model: str, hidden: bool | None = None,
        age_restricted: bool | None = None, add_role: discord.Role | None = None, remove_role: discord.Role | None = None,
    ) -> None:
        if self.bot.settings.model(model) is None:
            raise InvalidOption(f"There is no model `{clip(model, 100)}`: pick one from the list.")
        if hidden is None and age_restricted is None and add_role is None and remove_role is None:
            raise NothingToDo("Give hidden, age_restricted, add_role or remove_role to change the model's rule.")
        rule = await model_rules.change_rule(
            self.db, self._guild_id(interaction), model, hidden=hidden, age_restricted=age_restricted,
            add_role=add_role.id if add_role else None, remove_role=remove_role.id if remove_role else None,
        )
        await self._changed(interaction, f"model {model}: {rule.describe()}")
        await send_private(interaction, f"`{model}` here: {rule.describe()}.")

    # --- the checkpoint merger (bot.jobs.merge_params, inference.merge) ----------------------

    @admin.command(name="merge", description="Merge checkpoints into a new model, as A1111's checkpoint merger")
    @app_commands.describe(
        model_a="Model A, the base (an inpainting or instruct model must be A)",
        method="No interpolation: A alone (to bake in a VAE); Weighted sum: A x (1-M) + B x M; Add difference: A + (B-C) x M",
        model_b="Model B (Weighted sum, Add difference)",
        model_c="Model C (Add difference)",
        multiplier="M, from 0 to 1 (default 0.5)",
        vae="A VAE to bake into the new model",
        name="The new model's name (default: A1111's, from the models and M)",
    )
    @app_commands.autocomplete(model_a=_all_models, model_b=_all_models, model_c=_all_models, vae=vaes)
    async def merge(
        self,
        interaction: discord.Interaction[SDBot],
        model_a: str,
        method: Literal["Weighted sum", "Add difference", "No interpolation"] = "Weighted sum",
        model_b: str | None = None,
        model_c: str | None = None,
        multiplier: float = 0.5,
        vae: str | None = None,
        name: str | None = None,
    ) -> None:
        await acknowledge(interaction, private=True)  # reading three files' headers takes a moment
        merge = await asyncio.to_thread(
            merge_job, self.bot.settings, self.bot.models.known_hashes(), model_a=model_a, model_b=model_b,
            model_c=model_c, method=method, multiplier=multiplier, vae=vae, name=name,
        )
        job = await actions.submit(interaction, merge.params, checked=True)
        await self._changed(interaction, f"merge queued as job #{job.id}: `{merge.name}` from {merge.recipe}", job_id=job.id)

    # --- blocked terms ------------------------------------------------------------------------

    @terms.command(name="add", description="Ban a word/phrase or a regular expression in prompts and styles")
    @app_commands.describe(
        scope="banned: everywhere; nsfw: outside age-restricted channels",
        kind="word: whole words, any case; regex: a Python regular expression",
        pattern=f"The word, phrase or expression (at most {rules.MAX_PATTERN_LENGTH} characters)",
    )
    async def terms_add(
        self, interaction: discord.Interaction[SDBot], scope: Literal["banned", "nsfw"], kind: Literal["word", "regex"], pattern: str
    ) -> None:
        pattern = pattern.strip()
        if len(pattern) > rules.MAX_PATTERN_LENGTH:
            # Cutting a pattern would change what it matches (or break a regex): refuse instead.
            raise InvalidOption(
                f"The pattern is {len(pattern)} characters long; the limit is {rules.MAX_PATTERN_LENGTH}. "
                "Split it into several terms."
            )
        try:
            rules.compile_term(kind, pattern)
        except rules.InvalidPattern as error:
            raise InvalidOption(f"Not added: {error}") from None
        term = rules.Term(rules.TermScope(scope), rules.TermKind(kind), pattern)
        if not await store.add_term(self.db, self._guild_id(interaction), term, interaction.user.id):
            raise NothingToDo(f"That {kind} is already in the {scope} list.")
        await self._changed(interaction, f"terms: added {scope} {kind} `{pattern}`")
        await send_private(interaction, f"Added the {scope} {kind} `{pattern}`. Try it with /admin terms test.")

    @terms.command(name="remove", description="Remove a blocked term by its number (see /admin terms list)")
    async def terms_remove(self, interaction: discord.Interaction[SDBot], number: int) -> None:
        term = await store.remove_term(self.db, self._guild_id(interaction), number)
        if term is None:
            raise NothingToDo(f"There is no term #{number} on this server: see /admin terms list.")
        await self._changed(interaction, f"terms: removed {term.scope} {term.kind} `{term.pattern}`")
        await send_private(interaction, f"Removed the {term.scope} {term.kind} `{term.pattern}`.")

    @terms.command(name="list", description="This server's banned words and expressions")
    async def terms_list(self, interaction: discord.Interaction[SDBot]) -> None:
        stored = await store.terms(self.db, self._guild_id(interaction))
        lines = [f"**#{s.id}** {s.term.scope} {s.term.kind}: `{s.term.pattern}`" for s in stored]
        await summary.send_embed(interaction, "Blocked terms", lines or ["none: /admin terms add"])

    @terms.command(name="test", description="What a prompt would trigger, here and outside age-restricted channels")
    async def terms_test(self, interaction: discord.Interaction[SDBot], prompt: app_commands.Range[str, 1, 4000]) -> None:
        stored = [s.term for s in await store.terms(self.db, self._guild_id(interaction))]
        here = is_age_restricted(interaction)
        lines = []
        for label, age_restricted in (("Here" + (" (age-restricted)" if here else ""), here), ("In other channels", False)):
            hits = rules.find_hits(prompt, stored, age_restricted=age_restricted)
            found = "; ".join(hit.describe() for hit in hits) if hits else "nothing: it would be queued"
            lines.append(f"**{label}**: {found}")
            if not here:
                break  # "here" is already a channel that is not age-restricted
        await send_private(interaction, clip("\n".join(lines), 2000))

    # --- limits -------------------------------------------------------------------------------

    @limits.command(name="set", description="Per-member limits for the server, or a role's own (0: no limit)")
    @declared_options(LIMIT_OPTIONS, *LIMIT_OPTIONS)
    async def limits_set(
        self, interaction: discord.Interaction[SDBot], role: discord.Role | None = None, **given: int | None
    ) -> None:
        values = {name: _limit_option(value, name) for name, value in given.items() if value is not None}
        if not values:
            raise InvalidOption(f"Give at least one of {', '.join(store.LIMIT_FIELDS)}.")
        queue = self.bot.settings.queue
        ceilings = {
            "max_pending": queue.max_pending_per_user,
            "max_job_cost": queue.max_job_cost,
            "max_waiting_cost": queue.max_waiting_cost_per_member,
        }
        for name, ceiling in ceilings.items():
            if ceiling and values.get(name) not in (None, 0) and values[name] > ceiling:
                raise InvalidOption(f"{name} can be at most {ceiling:g}: the bot's own limit for every member.")
        guild_id = self._guild_id(interaction)
        if role is not None:
            await store.set_role_limits(self.db, guild_id, role.id, **values)
        else:
            await store.update_policy(self.db, guild_id, **values)
        changes = ", ".join(f"{name} {value}" for name, value in values.items())
        target = f"role <@&{role.id}>" if role is not None else "server"
        await self._changed(interaction, f"limits ({target}): {changes}")
        await send_private(interaction, f"Limits set for the {target}: {changes}.\n{await self._limits_text(guild_id)}")

    @limits.command(name="reset", description="Back to the bot's default limits, or remove a role's own limits")
    async def limits_reset(self, interaction: discord.Interaction[SDBot], role: discord.Role | None = None) -> None:
        guild_id = self._guild_id(interaction)
        if role is not None:
            if not await store.clear_role_limits(self.db, guild_id, role.id):
                raise NothingToDo(f"{role.mention} has no limits of its own.")
        else:
            await store.update_policy(self.db, guild_id, **dict.fromkeys(store.LIMIT_FIELDS))
        target = f"role <@&{role.id}>" if role is not None else "server"
        await self._changed(interaction, f"limits ({target}): reset")
        await send_private(interaction, f"Limits reset for the {target}.\n{await self._limits_text(guild_id)}")

    @limits.command(name="show", description="The server's limits and the roles' own")
    async def limits_show(self, interaction: discord.Interaction[SDBot]) -> None:
        await send_private(interaction, await self._limits_text(self._guild_id(interaction)))

    async def _limits_text(self, guild_id: int) -> str:
        policy = await store.policy_of(self.db, self.bot.settings, guild_id)
        lines = [f"**Server**: {summary.limits_line(policy.limits)}" + ("" if policy.custom_limits else " (the bot's defaults)")]
        for limit in await store.role_limits(self.db, guild_id):
            lines.append(f"**<@&{limit.role_id}>**: {summary.limits_line(limit)}")
        return clip("\n".join(lines), 2000)

    # --- safety, log channel ------------------------------------------------------------------

    @admin.command(name="flagged", description="What happens to images the safety classifier flags")
    async def flagged(self, interaction: discord.Interaction[SDBot], action: Literal["blur", "spoiler", "withhold"]) -> None:
        await store.update_policy(self.db, self._guild_id(interaction), flagged_action=action)
        await self._changed(interaction, f"flagged images: {action}")
        note = "" if self.bot.settings.policy.safety_checker else " (no safety classifier is configured on this bot yet)"
        await send_private(interaction, f"Flagged images will be: {action}.{note}")

    @admin.command(name="describe", description="What /describe uses here: a caption with CLIP, or a booru tagger")
    @app_commands.describe(interrogator="clip: a caption and ranked styles (photos, art); tagger: booru tags (anime models)")
    async def describe_interrogator(
        self, interaction: discord.Interaction[SDBot], interrogator: Literal["clip", "tagger"]
    ) -> None:
        available = self.bot.settings.describe.available
        if interrogator not in available:
            raise InvalidOption(
                f"This bot has no models for the {interrogator} interrogator; it has: {', '.join(available) or 'none'} "
                "([describe] in config.toml)."
            )
        await store.update_policy(self.db, self._guild_id(interaction), interrogator=interrogator)
        await self._changed(interaction, f"describe interrogator: {interrogator}")
        await send_private(interaction, f"/describe now uses the {interrogator} interrogator here.")

    @admin.command(name="noise", description="A1111's random number source and ENSD for new jobs here")
    @app_commands.describe(
        rng="Where the seed's noise comes from, as A1111's setting: GPU (A1111's default), CPU, or NV (the same on any machine)",
        ensd="A1111's eta noise seed delta (31337 on NovelAI-style setups); -1: back to the bot's default",
    )
    async def noise(
        self,
        interaction: discord.Interaction[SDBot],
        rng: Literal["GPU", "CPU", "NV", "bot default"] | None = None,
        ensd: app_commands.Range[int, -1, MAX_ENSD] | None = None,
    ) -> None:
        guild_id = self._guild_id(interaction)
        changes: dict[str, object] = {}
        if rng is not None:
            changes["default_rng"] = None if rng == "bot default" else check_rng(rng)
        if ensd is not None:
            changes["default_ensd"] = None if ensd == -1 else check_ensd(ensd)
        if changes:
            await store.update_policy(self.db, guild_id, **changes)
        policy = await store.policy_of(self.db, self.bot.settings, guild_id)
        line = summary.noise_line(policy, self.bot.settings)
        if changes:
            await self._changed(interaction, line)
            await send_private(interaction, f"New jobs here use {line}. A member's own choice in /settings still wins.")
        else:
            await send_private(interaction, f"New jobs here use {line}. Set `rng` or `ensd` to change it.")

    @log.command(name="set", description="Mirror the audit log to this channel")
    async def log_set(self, interaction: discord.Interaction[SDBot], channel: discord.TextChannel) -> None:
        await store.update_policy(self.db, self._guild_id(interaction), log_channel_id=channel.id)
        await self._changed(interaction, f"log channel: <#{channel.id}>")
        await send_private(interaction, f"The audit log is now mirrored to {channel.mention}.")

    @log.command(name="clear", description="Stop mirroring the audit log")
    async def log_clear(self, interaction: discord.Interaction[SDBot]) -> None:
        guild_id = self._guild_id(interaction)
        # Audited first, so the old log channel hears that it is no longer the log.
        await self._changed(interaction, "log channel: none")
        await store.update_policy(self.db, guild_id, log_channel_id=None)
        await send_private(interaction, "The audit log is no longer mirrored (it is still kept: /admin audit).")

    # --- bans ---------------------------------------------------------------------------------

    @admin.command(name="ban", description="Ban a member from using the bot on this server (and in DMs)")
    async def ban(self, interaction: discord.Interaction[SDBot], user: discord.User, reason: str = "") -> None:
        if user.id == interaction.user.id:
            raise InvalidOption("You cannot ban yourself.")
        note = ""
        if len(reason) > REASON_LIMIT:
            reason, note = clip(reason, REASON_LIMIT), f"\nThe reason was cut to {REASON_LIMIT} characters."
        new = await store.ban(self.db, self._guild_id(interaction), user.id, reason, interaction.user.id)
        await self._changed(interaction, reason or "no reason given", audit.Action.BANNED, target_user_id=user.id)
        # Their jobs waiting or running here stop too: a ban is how a moderator ends a flood.
        stopped = 0
        for entry in await self.bot.queue.active_entries(user.id):
            if entry.job.guild_id == interaction.guild_id:
                await self.bot.dispatcher.cancel(entry.job.id)
                stopped += 1
        said = "is now banned" if new else "was already banned (reason updated)"
        if stopped:
            note = f"\n{stopped} of their jobs waiting or running here were canceled.{note}"
        await send_private(interaction, f"{user.mention} {said} from the bot on this server.{note}")

    @admin.command(name="unban", description="Let a banned member use the bot again")
    async def unban(self, interaction: discord.Interaction[SDBot], user: discord.User) -> None:
        if not await store.unban(self.db, self._guild_id(interaction), user.id):
            raise NothingToDo(f"{user.mention} is not banned here.")
        await self._changed(interaction, "", audit.Action.UNBANNED, target_user_id=user.id)
        await send_private(interaction, f"{user.mention} may use the bot again.")

    @admin.command(name="bans", description="The members banned from the bot here")
    async def bans(self, interaction: discord.Interaction[SDBot]) -> None:
        banned = await store.bans(self.db, self._guild_id(interaction))
        lines = [
            f"<@{b.user_id}> by <@{b.banned_by}> <t:{b.created_at_unix}:R>" + (f": {b.reason}" if b.reason else "")
            for b in banned
        ]
        await summary.send_embed(interaction, "Banned from the bot", lines or ["nobody"])

    # --- jobs ---------------------------------------------------------------------------------

    async def _job_here(self, interaction: discord.Interaction[SDBot], job_id: int):  # type: ignore[no-untyped-def]
        job = await self.bot.queue.get(job_id)
        if job is None or job.guild_id != interaction.guild_id:
            raise JobNotFound(f"There is no job #{job_id} on this server.")
        return job

    @admin.command(name="cancel", description="Cancel anyone's job on this server")
    async def cancel(self, interaction: discord.Interaction[SDBot], job: int) -> None:
        await self._job_here(interaction, job)
        await actions.cancel(interaction, job, by_moderator=True)

    @admin.command(name="remove", description="Remove any result: its message, and its files if asked")
    @app_commands.describe(files="Also delete its image files from the bot's disk")
    async def remove(self, interaction: discord.Interaction[SDBot], job: int, files: bool = False) -> None:
        await self._job_here(interaction, job)
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await removal.remove_result(self.bot, job, actor_id=interaction.user.id, remove_files=files)
        what = "message and image files" if files else "message"
        await interaction.followup.send(f"Removed the {what} of job #{removed.id}.", ephemeral=True)

    # --- the audit log ------------------------------------------------------------------------

    @admin.command(name="audit", description="The audit log, newest first: jobs, refusals, moderation")
    @app_commands.describe(user="Only entries by or about this member", hours="Only the last this many hours", page="Page (10 a page)")
    async def audit_log(
        self,
        interaction: discord.Interaction[SDBot],
        user: discord.User | None = None,
        hours: app_commands.Range[int, 1, 24 * 366] | None = None,
        page: app_commands.Range[int, 1] = 1,
    ) -> None:
        conditions = [AuditEntry.guild_id == self._guild_id(interaction)]
        if user is not None:
            conditions.append(or_(AuditEntry.actor_id == user.id, AuditEntry.target_user_id == user.id))
        if hours is not None:
            conditions.append(AuditEntry.created_at >= utcnow() - timedelta(hours=hours))
        async with self.db.session() as session:
            total = await session.scalar(select(func.count(AuditEntry.id)).where(*conditions)) or 0
            pages = max(1, math.ceil(total / AUDIT_PAGE_SIZE))
            page = min(page, pages)
            entries = list(
                await session.scalars(
                    select(AuditEntry).where(*conditions).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                    .offset((page - 1) * AUDIT_PAGE_SIZE).limit(AUDIT_PAGE_SIZE)
                )
            )
        lines = [clip(audit.describe(entry), summary.EMBED_LIMIT // AUDIT_PAGE_SIZE) for entry in entries]
        scope = [f"by or about {user.name}" if user else "", f"last {hours} h" if hours else ""]
        footer = f"Page {page} of {pages} · {total} entries" + "".join(f" · {s}" for s in scope if s)
        await summary.send_embed(interaction, "Audit log", lines or ["no entries"], footer=footer)

    @policy.command(name="show", description="Everything this server has set")
    async def policy_show(self, interaction: discord.Interaction[SDBot]) -> None:
        guild_id = self._guild_id(interaction)
        policy = await store.policy_of(self.db, self.bot.settings, guild_id)
        stored = await store.terms(self.db, guild_id)
        banned = await store.bans(self.db, guild_id)
        lines = [
            summary.channels_line(policy),
            summary.roles_lines(policy),
            await self._limits_text(guild_id),
            f"**Blocked terms**: {sum(s.term.scope == 'banned' for s in stored)} banned, "
            f"{sum(s.term.scope == 'nsfw' for s in stored)} NSFW-only (/admin terms list)",
            f"**Flagged images**: {policy.flagged_action}",
            f"**/describe**: {policy.interrogator or self.bot.settings.describe.interrogator}",
            f"**Noise**: {summary.noise_line(policy, self.bot.settings)} (/admin noise)",
            f"**Log channel**: {f'<#{policy.log_channel_id}>' if policy.log_channel_id else 'none'}",
            f"**Banned members**: {len(banned)} (/admin bans)",
            f"**Direct messages**: {'allowed' if self.bot.settings.policy.allow_dms else 'not allowed'} (the bot's setting)",
        ]
        # Walking a large outputs folder can outlast Discord's 3 seconds: answer "thinking…" first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        usage = await asyncio.to_thread(retention.disk_usage, self.bot.settings)
        lines += summary.storage_lines(self.bot.settings, usage)
        await summary.send_embed(interaction, "This server's policy", lines)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Admin(bot))
