"""From a prompt as typed to the options of each job it asks for: one place for every command.

In this order, as Midjourney and A1111 do it:
1. permutations: `a {red, blue} car` is two prompts (parameters may be permuted too:
   `--ar {1:1, 2:3}`); more than [prompts] max_permutations is refused before expanding;
2. inline parameters (`--ar 3:2 --no text --seed 5`...) fill the options not given;
3. `--no` joins the negative prompt (the option, else the member's default negative prompt);
4. styles apply to both prompts (A1111's rules, bot.prompts.styles): the style option, else
   the member's default style (/settings); a default style since deleted is skipped;
5. LoRA tags and embeddings are checked against the files this server has, and prompt
   editing against what is read (bot.prompts.checks).
A prompt left empty once its parameters are taken out is refused. Permutations without a
seed of their own share one random seed, so the images differ only by what the prompt changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from bot.jobs.params import GenerationOptions, member_defaults, random_seed
from bot.prompts import style_store
from bot.prompts.inline import apply_inline, parse_inline, with_negative
from bot.prompts.checks import check_prompt_texts
from bot.prompts.permutations import expand_permutations
from bot.prompts.styles import StyleText, apply_styles

if TYPE_CHECKING:
    from bot.config import Settings
    from db.models import Style, User
    from db.session import Database


async def prepare(
    db: Database,
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    *,
    user_id: int,
    guild_id: int | None,
    style_names: str | None = None,
    override: bool = False,
) -> list[GenerationOptions]:
    """The options of each job the prompt asks for, styles read from the database.

    `style_names`: the style option, one name or several comma-separated; without it, the
    member's default style. `override`: the prompt was edited from an earlier job's (Remix,
    Inpaint), so its parameters replace the options instead of conflicting with them, and it
    already carries that job's styles: the default style is not added again."""
    if style_names is not None or override:
        styles = await style_store.find_styles(db, style_store.split_names(style_names), user_id, guild_id)
    else:
        styles = await default_styles(db, user, guild_id)
    return expand(options, settings, user, styles, override=override)


async def default_styles(db: Database, user: User | None, guild_id: int | None) -> list[Style]:
    """The member's default styles that still exist here (a deleted style, or a server style
    outside its server, is skipped: a stale default never breaks a job)."""
    if user is None or not user.default_style:
        return []
    visible = await style_store.visible_styles(db, user.id, guild_id)
    found = []
    for name in style_store.split_names(user.default_style):
        style = next((s for s in visible if s.name.casefold() == name.casefold()), None)
        if style is not None:
            found.append(style)
    return found


def expand(
    options: GenerationOptions,
    settings: Settings,
    user: User | None,
    styles: Sequence[StyleText] = (),
    *,
    override: bool = False,
) -> list[GenerationOptions]:
    prompts = expand_permutations(options.prompt, settings.prompts.max_permutations)
    negative = options.negative_prompt
    if negative is None:
        negative = member_defaults(user, settings).negative_prompt or ""
    prepared = []
    for text in prompts:
        inline = parse_inline(text)
        if not inline.prompt:
            raise InvalidOption("The prompt is empty once its parameters are taken out: describe the image you want.")
        merged = apply_inline(options, inline, override=override)
        prompt, negative_prompt = apply_styles(inline.prompt, with_negative(negative, inline.no), styles)
        check_prompt_texts(settings, prompt, negative_prompt)
        prepared.append(replace(merged, prompt=prompt, negative_prompt=negative_prompt))
    if len(prepared) > 1:
        seed = random_seed()
        prepared = [item if item.seed not in (None, -1) else replace(item, seed=seed) for item in prepared]
    return prepared
