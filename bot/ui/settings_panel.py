"""/settings: one private message with the member's defaults next to the server's, and the
controls that change them.

Nine selects (model, sampler, aspect, upscaler, VAE, styles, SDXL refiner, RNG source, face
restoration) and a row of buttons (a form for steps, CFG, size, clip skip and negative prompt;
one for ENSD; one for the face restorers' visibility and CodeFormer weight; private results on/off;
reset all) pass Discord's 5 action rows
of a classic message, so the message uses Components V2 (a LayoutView: text and rows, up to 40
components). Every control is a DynamicItem whose custom_id carries the member's id and what it
changes: it works after a restart, a press by anyone else is refused, and each answer edits
the message in place with what the database holds then.

Every value is checked by the commands' own checks (bot.jobs.params), so /settings refuses
what /imagine would, in the same words. A stored default that is no longer valid (a model or
upscaler removed from the config, a style deleted, limits lowered) is shown as unavailable,
and jobs use the server's default instead (bot.jobs.params.member_defaults).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import ui
from discord.ui import Button, DynamicItem, Select

from bot import actions
from bot.errors import InvalidOption, NotAllowed, echo
from bot.interactions import send_form
from bot.jobs.face_params import (
    DEFAULT_CODEFORMER_WEIGHT,
    DEFAULT_VISIBILITY,
    FACE_CHOICES,
    FACE_OFF,
    check_face_choice,
    check_face_models,
    check_fraction,
)
from bot.jobs.sampling import check_ensd, check_rng
from bot.jobs.params import (
    ASPECT_RATIOS,
    ServerDefaults,
    check_aspect,
    check_cfg,
    check_negative_prompt,
    check_sampler,
    check_size,
    check_steps,
    check_upscaler_name,
    member_defaults,
)
from bot.jobs.model_checks import check_clip_skip, check_model, check_vae_choice, model_family, settings_vae_files
from bot.jobs.workflow_params import upscaler_names
from bot.policy import gate
from bot.prompts import style_store
from bot.ui.embeds import clip
from db.models import User
from inference.common.protocol import MAX_CLIP_SKIP, RNG_SOURCES
from inference.common.sampler_catalog import SAMPLER_NAMES
from inference.common.vae_files import AUTOMATIC, vae_choices

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.config import Settings

MAX_OPTIONS = 25  # Discord's most options in a select
SERVER_DEFAULT = "-"  # the option that clears a member's default (a value may not be empty)
STYLE_COLUMN = 200  # users.default_style's size
NOT_YOURS = "These are someone else's settings: use /settings to see your own."
# A1111 1.10's samplers, then combined names members know from A1111 before 1.9 (a select
# holds 25 options, the server default one of them; /imagine's schedule_type covers the rest).
SETTINGS_SAMPLERS = (*SAMPLER_NAMES, "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DPM++ 3M SDE Karras", "Euler a Karras")
# Every column /settings changes, for "Reset all".
DEFAULT_COLUMNS = (
    "default_model", "default_sampler", "default_steps", "default_cfg_scale", "default_width", "default_height",
    "default_negative_prompt", "default_aspect", "default_style", "default_upscaler", "default_vae",
    "default_clip_skip", "default_refiner", "default_rng", "default_ensd",
    "default_face_restorer", "default_face_visibility", "default_codeformer_weight",
)


# --- reading and writing --------------------------------------------------------------------


async def _user(bot: SDBot, user_id: int) -> User | None:
    return await bot.queue.user(user_id)


async def save(bot: SDBot, member: discord.abc.User, **columns: Any) -> None:
    """Set some of the member's columns; a member without a row (no job yet) gets one."""
    await bot.queue.update_user(member.id, member.name, **columns)


# --- the message ------------------------------------------------------------------------------


async def settings_message(interaction: discord.Interaction[SDBot], user_id: int) -> dict[str, Any]:
    """The message's fields (a LayoutView), read from the database now."""
    bot = interaction.client
    user = await _user(bot, user_id)
    styles = await style_store.visible_styles(bot.queue.db, user_id, interaction.guild_id)
    view = ui.LayoutView(timeout=None)
    server = await gate.server_defaults(interaction)
    view.add_item(ui.TextDisplay(_summary(bot.settings, user, styles, server)))
    for what in ("model", "sampler", "size", "upscaler", "vae", "style", "refiner", "rng", "faces"):
        row: ui.ActionRow[Any] = ui.ActionRow()
        row.add_item(SettingSelect(user_id, what, _options(bot.settings, user, styles, what, server)))
        view.add_item(row)
    private = bool(user is not None and user.private_results)
    buttons: ui.ActionRow[Any] = ui.ActionRow()
    buttons.add_item(SettingsButton(user_id, "form"))
    buttons.add_item(SettingsButton(user_id, "ensd"))
    buttons.add_item(SettingsButton(user_id, "faces"))
    buttons.add_item(SettingsButton(user_id, "private", private=private))
    buttons.add_item(SettingsButton(user_id, "reset"))
    view.add_item(buttons)
    return {"view": view}


def _summary(settings: Settings, user: User | None, styles: list[Any], server: ServerDefaults) -> str:
    limits = settings.limits
    defaults = member_defaults(user, settings)
    base = check_model(settings, defaults.model or settings.default_model).base_size
    server_base = check_model(settings, settings.default_model).base_size

    def line(label: str, key: str, stored: object, server: str, shown: str | None = None) -> str:
        if stored is None or stored == "":
            mine = "server default"
        elif key in defaults.unavailable:
            mine = f"~~{stored}~~ unavailable ({defaults.unavailable[key]}): the server default is used"
        else:
            mine = f"**{shown if shown is not None else stored}**"
        return f"**{label}**: {mine} · server: {server}"

    u = user or User(id=0, name="")
    if u.default_aspect is not None:
        size_key, size_stored = "aspect", u.default_aspect
        size_shown = f"{u.default_aspect} ({'x'.join(map(str, _aspect_size(u.default_aspect, base, settings)))})"
    elif u.default_width is not None or u.default_height is not None:
        size_key, size_stored = "size", f"{u.default_width or base}x{u.default_height or base}"
        size_shown = size_stored
    else:
        size_key, size_stored, size_shown = "size", None, None
    style_names = style_store.split_names(u.default_style)
    known = {s.name.casefold() for s in styles}
    missing = [name for name in style_names if name.casefold() not in known]
    if not style_names:
        style_line = "**Styles**: none · server: none"
    elif missing:
        style_line = (
            f"**Styles**: **{', '.join(n for n in style_names if n not in missing) or 'none'}**; "
            f"~~{', '.join(missing)}~~ unavailable (deleted, or not on this server): skipped · server: none"
        )
    else:
        style_line = f"**Styles**: **{', '.join(style_names)}** · server: none"
    negative = u.default_negative_prompt
    lines = [
        "## Your settings",
        "Applied to every new job of yours; an option you give a command still wins.",
        line("Model", "model", u.default_model, settings.default_model),
        line("Sampler", "sampler", u.default_sampler, limits.default_sampler),
        line("Steps", "steps", u.default_steps, str(limits.default_steps)),
        line("CFG", "cfg_scale", None if u.default_cfg_scale is None else f"{u.default_cfg_scale:g}",
             f"{limits.default_cfg_scale:g}"),
        line("Size", size_key, size_stored, f"{server_base}x{server_base} (the model's size)", size_shown),
        line("Negative prompt", "negative_prompt", clip(negative, 200) if negative else None, "none"),
        style_line,
        line("Upscaler", "upscaler", u.default_upscaler, settings.images.default_upscaler),
        line("VAE", "vae", u.default_vae, AUTOMATIC),
        line("Clip skip", "clip_skip", u.default_clip_skip, "the model's"),
        line("SDXL refiner", "refiner", u.default_refiner, "none"),
        line("RNG source", "rng", u.default_rng, server.rng or limits.default_rng),
        line("ENSD", "ensd", u.default_ensd, str(limits.default_ensd if server.ensd is None else server.ensd)),
        line("Restore faces", "face_restorer", u.default_face_restorer, FACE_OFF),
        line("Face visibility (Restore faces button, /upscale)", "face_visibility",
             None if u.default_face_visibility is None else f"{u.default_face_visibility:g}", f"{DEFAULT_VISIBILITY:g}"),
        line("CodeFormer weight", "codeformer_weight",
             None if u.default_codeformer_weight is None else f"{u.default_codeformer_weight:g}",
             f"{DEFAULT_CODEFORMER_WEIGHT:g}"),
        f"**Private results**: **{'on' if u.private_results else 'off'}** · server: off",
    ]
    return "\n".join(lines)


def _aspect_size(aspect: str, base: int, settings: Settings) -> tuple[int, int]:
    try:
        return check_aspect(aspect, base, settings.limits)
    except InvalidOption:
        return base, base


def refiner_names(settings: Settings) -> list[str]:
    """The models that may refine: SDXL refiners first, then SDXL models (and models whose
    family their folder does not tell)."""
    families = {m.name: model_family(m) for m in settings.models}
    return [name for name, family in families.items() if family == "sdxl-refiner"] + [
        name for name, family in families.items() if family in ("sdxl", "")
    ]


def _options(
    settings: Settings, user: User | None, styles: list[Any], what: str, here: ServerDefaults
) -> list[discord.SelectOption]:
    u = user or User(id=0, name="")
    if what == "style":
        chosen = {name.casefold() for name in style_store.split_names(u.default_style)}
        names = dict.fromkeys(s.name for s in styles)  # the member's own first, then the server's
        return [
            discord.SelectOption(label=clip(name, 100), value=name[:100], default=name.casefold() in chosen)
            for name in list(names)[:MAX_OPTIONS]
        ]
    current: str | None
    if what == "model":
        server, values, current = settings.default_model, [m.name for m in settings.models if not m.hidden], u.default_model
    elif what == "sampler":
        server, values, current = settings.limits.default_sampler, list(SETTINGS_SAMPLERS), u.default_sampler
    elif what == "size":
        base = check_model(settings, settings.default_model).base_size
        server, values, current = f"{base}x{base}", list(ASPECT_RATIOS), u.default_aspect
    elif what == "rng":
        server, values, current = here.rng or settings.limits.default_rng, list(RNG_SOURCES), u.default_rng
    elif what == "vae":
        # The server default is Automatic, so the list offers None and the files.
        server, values, current = AUTOMATIC, vae_choices(settings_vae_files(settings))[1:], u.default_vae
    elif what == "refiner":
        server, values, current = "none", refiner_names(settings), u.default_refiner
    elif what == "faces":
        server, values, current = FACE_OFF, list(FACE_CHOICES), u.default_face_restorer
    else:
        server, values, current = settings.images.default_upscaler, upscaler_names(settings), u.default_upscaler
    options = [discord.SelectOption(label=f"Server default ({server})", value=SERVER_DEFAULT, default=current is None)]
    options += [
        discord.SelectOption(label=clip(value, 100), value=value[:100], default=value == current)
        for value in values[: MAX_OPTIONS - 1]
    ]
    return options


PLACEHOLDERS = {
    "model": "Model…",
    "sampler": "Sampler…",
    "size": "Aspect ratio (a size: in the form)…",
    "upscaler": "Upscaler of Upscale 2x/4x and /upscale…",
    "vae": "VAE (Automatic: the model's own or one named after it)…",
    "style": "Styles applied when a command names none…",
    "refiner": "SDXL refiner of your SDXL jobs…",
    "rng": "Random number source (A1111's): GPU, CPU or NV…",
    "faces": "Restore faces on your images: Off, GFPGAN or CodeFormer…",
}


class SettingSelect(
    DynamicItem[Select], template=r"sd:set:(?P<user>\d+):(?P<what>model|sampler|size|upscaler|vae|style|refiner|rng|faces)"
):
    """One of the nine selects; choosing edits the settings message in place."""

    def __init__(self, user_id: int, what: str, options: list[discord.SelectOption] | None = None) -> None:
        options = options or []
        select: Select[Any] = Select(
            custom_id=f"sd:set:{user_id}:{what}",
            placeholder=PLACEHOLDERS[what],
            options=options or [discord.SelectOption(label="-", value=SERVER_DEFAULT)],
        )
        if what == "style":
            if options:
                select.min_values, select.max_values = 0, len(options)
            else:
                select.placeholder, select.disabled = "No styles yet: save one with /style add", True
        super().__init__(select)
        self.user_id, self.what = user_id, what

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Select, match: re.Match[str]) -> Any:
        return cls(int(match["user"]), match["what"])

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        values = list((interaction.data or {}).get("values") or [])  # type: ignore[union-attr]

        async def choose() -> None:
            _check_owner(interaction, self.user_id)
            await save(interaction.client, interaction.user, **await self._columns(interaction, values))
            await interaction.response.edit_message(**await settings_message(interaction, self.user_id))

        await actions.run_for_user(interaction, choose)

    async def _columns(self, interaction: discord.Interaction[SDBot], values: list[str]) -> dict[str, Any]:
        bot = interaction.client
        settings = bot.settings
        if self.what == "style":
            if not values:
                return {"default_style": None}
            found = await style_store.find_styles(bot.queue.db, values, interaction.user.id, interaction.guild_id)
            text = ", ".join(style.name for style in found)
            if len(text) > STYLE_COLUMN:
                raise InvalidOption(f"Those styles' names make {len(text)} characters; at most {STYLE_COLUMN} fit.")
            return {"default_style": text}
        value = values[0] if values else SERVER_DEFAULT
        if self.what == "size":
            if value == SERVER_DEFAULT:
                return {"default_aspect": None, "default_width": None, "default_height": None}
            user = await _user(bot, interaction.user.id)
            model = member_defaults(user, settings).model or settings.default_model
            check_aspect(value, check_model(settings, model).base_size, settings.limits)
            return {"default_aspect": value, "default_width": None, "default_height": None}
        column = "default_face_restorer" if self.what == "faces" else f"default_{self.what}"
        if value == SERVER_DEFAULT:
            return {column: None}
        check = {
            "model": lambda: check_model(settings, value).name,
            "sampler": lambda: check_sampler(value),
            "upscaler": lambda: check_upscaler_name(settings, value),
            "vae": lambda: check_vae_choice(settings, value),
            "refiner": lambda: check_model(settings, value).name,
            "rng": lambda: check_rng(value),
            "faces": lambda: _usable_face_choice(settings, value),
        }[self.what]
        return {column: check()}


def _usable_face_choice(settings: Settings, value: str) -> str:
    """A face restoration default: Off, or a restorer this server has the models for."""
    choice = check_face_choice(value)
    if choice != FACE_OFF:
        check_face_models(settings, choice)
    return choice


BUTTON_LABELS = {
    "form": "Steps, CFG, size, clip skip, negative prompt…", "ensd": "ENSD…", "faces": "Face visibility, CodeFormer weight…",
    "reset": "Reset all",
}


class SettingsButton(DynamicItem[Button], template=r"sd:setb:(?P<user>\d+):(?P<what>form|ensd|faces|private|reset)"):
    """The forms (steps and the rest, ENSD, face restoration), "Private results: on/off" and
    "Reset all"."""

    def __init__(self, user_id: int, what: str, *, private: bool = False) -> None:
        if what == "private":
            label = f"Private results: {'on' if private else 'off'}"
            style = discord.ButtonStyle.success if private else discord.ButtonStyle.secondary
        else:
            label = BUTTON_LABELS[what]
            style = discord.ButtonStyle.danger if what == "reset" else discord.ButtonStyle.primary
        super().__init__(Button(label=label, style=style, custom_id=f"sd:setb:{user_id}:{what}"))
        self.user_id, self.what = user_id, what

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[SDBot], item: Button, match: re.Match[str]) -> Any:
        return cls(int(match["user"]), match["what"])

    async def callback(self, interaction: discord.Interaction[SDBot]) -> None:
        await actions.run_for_user(interaction, lambda: self._press(interaction))

    async def _press(self, interaction: discord.Interaction[SDBot]) -> None:
        _check_owner(interaction, self.user_id)
        bot = interaction.client
        user = await _user(bot, self.user_id)
        if self.what == "form":
            await send_form(interaction, SettingsModal(bot.settings, self.user_id, user))
            return
        if self.what == "ensd":
            await send_form(interaction, EnsdModal(bot.settings, self.user_id, user))
            return
        if self.what == "faces":
            await send_form(interaction, FacesModal(self.user_id, user))
            return
        if self.what == "private":
            await save(bot, interaction.user, private_results=not (user is not None and user.private_results))
        else:
            await save(bot, interaction.user, private_results=False, **dict.fromkeys(DEFAULT_COLUMNS))
        await interaction.response.edit_message(**await settings_message(interaction, self.user_id))


def _check_owner(interaction: discord.Interaction[SDBot], user_id: int) -> None:
    if interaction.user.id != user_id:
        raise NotAllowed(NOT_YOURS)


class SettingsModal(ui.Modal):
    """Steps, CFG, a size, clip skip and the negative prompt; an emptied field means the
    server's default (the model's, for clip skip).

    A modal lives as long as the form is open, so it need not survive a restart."""

    def __init__(self, settings: Settings, user_id: int, user: User | None) -> None:
        super().__init__(title="Your defaults", custom_id=f"sd:modal:settings:{user_id}")
        self.user_id = user_id
        limits = settings.limits
        u = user or User(id=0, name="")
        size = f"{u.default_width}x{u.default_height}" if u.default_width and u.default_height else None
        self.steps = _field("steps", "Steps", f"1 to {limits.max_steps}; empty: {limits.default_steps}",
                            None if u.default_steps is None else str(u.default_steps), 4)
        self.cfg = _field("cfg", "CFG scale", f"1 to {limits.max_cfg_scale:g}; empty: {limits.default_cfg_scale:g}",
                          None if u.default_cfg_scale is None else f"{u.default_cfg_scale:g}", 6)
        self.size = _field("size", "Size (width x height, instead of an aspect)",
                           f"e.g. {limits.min_size}x{limits.min_size}; empty: the model's size", size, 11)
        self.clip_skip = _field("clip_skip", "Clip skip", f"1 (none) to {MAX_CLIP_SKIP}; empty: the model's",
                                None if u.default_clip_skip is None else str(u.default_clip_skip), 2)
        self.negative = ui.TextInput(
            custom_id="negative_prompt", label="Negative prompt", style=discord.TextStyle.paragraph, required=False,
            default=u.default_negative_prompt or None, max_length=min(4000, limits.max_prompt_length),
        )
        for item in (self.steps, self.cfg, self.size, self.clip_skip, self.negative):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def apply() -> None:
            _check_owner(interaction, self.user_id)
            bot = interaction.client
            columns = form_columns(
                bot.settings, self.steps.value, self.cfg.value, self.size.value, self.negative.value,
                self.clip_skip.value,
            )
            await save(bot, interaction.user, **columns)
            await interaction.response.edit_message(**await settings_message(interaction, self.user_id))

        await actions.run_for_user(interaction, apply)


class EnsdModal(ui.Modal):
    """A1111's ENSD (eta noise seed delta); emptied: the server's."""

    def __init__(self, settings: Settings, user_id: int, user: User | None) -> None:
        super().__init__(title="Your ENSD", custom_id=f"sd:modal:ensd:{user_id}")
        self.user_id = user_id
        stored = None if user is None or user.default_ensd is None else str(user.default_ensd)
        self.ensd = _field("ensd", "ENSD (eta noise seed delta)",
                           f"e.g. 31337; 0: none; empty: the server's ({settings.limits.default_ensd})", stored, 10)
        self.add_item(self.ensd)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def apply() -> None:
            _check_owner(interaction, self.user_id)
            bot = interaction.client
            await save(bot, interaction.user, default_ensd=ensd_column(self.ensd.value))
            await interaction.response.edit_message(**await settings_message(interaction, self.user_id))

        await actions.run_for_user(interaction, apply)


class FacesModal(ui.Modal):
    """The face restorers' visibility (the Restore faces button and /upscale: A1111's Extras)
    and CodeFormer's weight; emptied: the defaults."""

    def __init__(self, user_id: int, user: User | None) -> None:
        super().__init__(title="Your face restoration", custom_id=f"sd:modal:faces:{user_id}")
        self.user_id = user_id
        u = user or User(id=0, name="")
        self.visibility = _field(
            "face_visibility", "Visibility (0-1)", f"The restored faces over the original; empty: {DEFAULT_VISIBILITY:g}",
            None if u.default_face_visibility is None else f"{u.default_face_visibility:g}", 6,
        )
        self.weight = _field(
            "codeformer_weight", "CodeFormer weight (0-1)",
            f"0: most restoration, 1: closest to the image; empty: {DEFAULT_CODEFORMER_WEIGHT:g}",
            None if u.default_codeformer_weight is None else f"{u.default_codeformer_weight:g}", 6,
        )
        self.add_item(self.visibility)
        self.add_item(self.weight)

    async def on_submit(self, interaction: discord.Interaction[SDBot]) -> None:
        async def apply() -> None:
            _check_owner(interaction, self.user_id)
            await save(interaction.client, interaction.user, **face_columns(self.visibility.value, self.weight.value))
            await interaction.response.edit_message(**await settings_message(interaction, self.user_id))

        await actions.run_for_user(interaction, apply)


def face_columns(visibility: str, weight: str) -> dict[str, float | None]:
    """The face form's fields as columns, both checked before either is saved."""
    return {
        "default_face_visibility": check_fraction(_number(visibility, "visibility", float), "visibility")
        if visibility.strip() else None,
        "default_codeformer_weight": check_fraction(_number(weight, "CodeFormer weight", float), "CodeFormer weight")
        if weight.strip() else None,
    }


def ensd_column(text: str) -> int | None:
    """The ENSD form's field as the column: checked as `sdbot generate --ensd` is; empty: None."""
    return check_ensd(_number(text, "ENSD", int)) if text.strip() else None


def _field(custom_id: str, label: str, placeholder: str, default: str | None, max_length: int) -> ui.TextInput[Any]:
    return ui.TextInput(
        custom_id=custom_id, label=label, placeholder=placeholder, default=default, required=False,
        max_length=max_length,
    )


def form_columns(settings: Settings, steps: str, cfg: str, size: str, negative: str, clip_skip: str) -> dict[str, Any]:
    """The form's fields as columns, each checked as the commands check it; nothing is saved
    unless all are valid."""
    limits = settings.limits
    columns: dict[str, Any] = {
        "default_steps": check_steps(_number(steps, "steps", int), limits) if steps.strip() else None,
        "default_cfg_scale": check_cfg(_number(cfg, "cfg", float), limits) if cfg.strip() else None,
        "default_negative_prompt": check_negative_prompt(negative.strip(), limits) or None,
        "default_clip_skip": check_clip_skip(_number(clip_skip, "clip skip", int)) if clip_skip.strip() else None,
    }
    if size.strip():
        match = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", size)
        if match is None:
            raise InvalidOption(f"Give the size as width x height, for example 512x768, got `{echo(size)}`.")
        width, height = check_size(int(match[1]), int(match[2]), limits)
        # A size replaces an aspect ratio.
        columns.update(default_width=width, default_height=height, default_aspect=None)
    else:
        columns.update(default_width=None, default_height=None)
    return columns


def _number(text: str, name: str, kind: type) -> Any:
    try:
        return kind(text.strip().replace(",", ".") if kind is float else text.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidOption(f"{name} must be {what}, got `{echo(text)}`.") from None


SETTINGS_ITEMS = (SettingSelect, SettingsButton)
