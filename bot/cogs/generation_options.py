"""The options of the generating commands (/imagine, /img2img, /inpaint, /outpaint, /xyplot,
/promptmatrix), each declared once: its type and Discord range, description, choices and
autocomplete.

A command lists the options it takes, in the order members see them, with
``@generation_command("prompt", "negative_prompt", ..., prompt="what this command's prompt is")``
(keyword arguments: a description that says what the option means for that command), and its
callback receives them as one ``CommandOptions``. discord.py reads a command's options from its
callback's signature, so the decorator writes that signature from the declarations below;
``declared_options`` does the same from another command's own table (/admin limits set).

Discord's ranges are wide on purpose: the builders (bot.jobs.params, workflow_params,
plot_params) check the server's own limits and say what it allows, in the same words for the
buttons and forms. The mask blur's range is the worker's one limit (protocol.MAX_MASK_BLUR).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import discord
from discord import app_commands

from bot.cogs.styles import style_autocomplete
from bot.interactions import MAX_CHOICES
from bot.jobs.params import ASPECT_RATIOS, MAX_GIVEN_SEED, MOST_IMAGES, GenerationOptions
from bot.jobs.model_checks import settings_vae_files
from bot.jobs.sampling import MAX_ETA
from bot.jobs.plot_params import AXIS_TYPES
from bot.jobs.workflow_params import MASKED_CONTENT, OUTPAINT_DIRECTIONS, RESIZE_MODES, upscaler_names
from bot.policy import gate, model_rules
from bot.prompts.networks import embedding_names, lora_names
from inference.common.protocol import LATENT, MAX_CLIP_SKIP, MAX_MASK_BLUR
from inference.common.protocol import MAX_SEGMENT_DILATION, MAX_SEGMENT_WORDS
from inference.common.vae_files import vae_choices
from inference.common.sampler_catalog import SAMPLER_NAMES, SAMPLERS, SCHEDULE_TYPE_LABELS

if TYPE_CHECKING:
    from bot.client import SDBot

    Interaction = discord.Interaction[SDBot]
else:
    Interaction = discord.Interaction

Choices = list[app_commands.Choice[str]]


def matching_choices(names: Sequence[str], current: str) -> Choices:
    wanted = current.casefold()
    return [app_commands.Choice(name=n, value=n) for n in names if wanted in n.casefold()][:MAX_CHOICES]


# A1111 1.10's samplers, then each with a schedule type it can use ("DPM++ 2M Karras"), the
# combined names A1111 wrote before 1.9, which the sampler option still takes.
SAMPLER_COMPLETIONS = (
    *SAMPLER_NAMES,
    *(f"{name} {schedule}" for name in SAMPLER_NAMES for schedule in SCHEDULE_TYPE_LABELS[1:] if SAMPLERS[name].accepts(schedule)),
)


async def samplers(interaction: Interaction, current: str) -> Choices:
    return matching_choices(SAMPLER_COMPLETIONS, current)


async def models(interaction: Interaction, current: str) -> Choices:
    """The models this member may use here (the server's /admin models rules)."""
    bot = interaction.client
    rules = await model_rules.rules_of(bot.queue.db, interaction.guild_id)
    return matching_choices(model_rules.listed_models(bot.settings.models, rules, gate.model_place(interaction)), current)


async def upscalers(interaction: Interaction, current: str) -> Choices:
    return matching_choices(upscaler_names(interaction.client.settings), current)


async def hires_upscalers(interaction: Interaction, current: str) -> Choices:
    return matching_choices([LATENT, *upscaler_names(interaction.client.settings)], current)


async def vaes(interaction: Interaction, current: str) -> Choices:
    return matching_choices(vae_choices(settings_vae_files(interaction.client.settings)), current)


async def loras(interaction: Interaction, current: str) -> Choices:
    return matching_choices(lora_names(interaction.client.settings), current)


async def embeddings(interaction: Interaction, current: str) -> Choices:
    return matching_choices(embedding_names(interaction.client.settings), current)


@dataclass(frozen=True)
class Option:
    """One option as Discord shows it. ``kind`` is what discord.py reads from an annotation:
    a Python type, or an app_commands.Range for the bounds Discord enforces."""

    kind: Any
    description: str
    required: bool = False
    choices: Sequence[str] = ()
    autocomplete: Callable[[Interaction, str], Awaitable[Choices]] | None = None

    def parameter(self, name: str) -> inspect.Parameter:
        if self.required:
            return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=self.kind)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[self.kind])


Strength = app_commands.Range[float, -1.0, 2.0]
Size = app_commands.Range[int, 8, 4096]
AxisValues = app_commands.Range[str, 1, 1000]
AXIS_VALUES_HELP = "Comma-separated; ranges 1-5, 1-5 (+2), 10-100 [5]; Prompt S/R: the first is the text replaced"

OPTIONS: dict[str, Option] = dict(
    image=Option(discord.Attachment, "The image to start from", required=True),
    mask=Option(
        discord.Attachment,
        "White where to repaint, black where to keep; the image's shape (or say what to repaint: mask_words)",
    ),
    prompt=Option(
        app_commands.Range[str, 1, 4000],
        "What the new image should show; may end with --no text, --seed 5, --steps, --cfg, --tile...",
        required=True,
    ),
    negative_prompt=Option(app_commands.Range[str, 0, 4000], "What to keep out of the image"),
    aspect=Option(str, "Aspect ratio (instead of width and height)", choices=tuple(ASPECT_RATIOS)),
    width=Option(Size, "Width in pixels, a multiple of 8"),
    height=Option(Size, "Height in pixels, a multiple of 8"),
    steps=Option(app_commands.Range[int, 1, 500], "Sampling steps: more is slower and often finer"),
    cfg=Option(app_commands.Range[float, 0.0, 100.0], "How closely to follow the prompt (CFG scale)"),
    sampler=Option(str, "Sampler, by its AUTOMATIC1111 name (\"DPM++ 2M Karras\" also sets the schedule type)", autocomplete=samplers),
    schedule_type=Option(
        str, "Schedule type (A1111's): how the noise levels are spaced; Automatic: the sampler's own",
        choices=SCHEDULE_TYPE_LABELS,
    ),
    eta=Option(
        app_commands.Range[float, 0.0, MAX_ETA], "Eta of the ancestral, SDE and DDIM samplers (0-1; default: the sampler's)"
    ),
    seed_resize_from=Option(
        app_commands.Range[str, 1, 20], "Make the seed's noise at this size, e.g. 512x512: the seed keeps its picture at another size"
    ),
    seed=Option(
        app_commands.Range[int, -1, MAX_GIVEN_SEED], "Seed of the first image; -1 or empty for random. Image i uses seed + i"
    ),
    count=Option(app_commands.Range[int, 1, MOST_IMAGES], "How many images (1-4)"),
    model=Option(str, "Which model to use", autocomplete=models),
    vae=Option(str, "VAE: Automatic (the model's), None (baked in) or a VAE file", autocomplete=vaes),
    clip_skip=Option(
        app_commands.Range[int, 1, MAX_CLIP_SKIP], "Clip skip: read the prompt from an earlier CLIP layer (1: none, 2: anime models)"
    ),
    style=Option(
        str, "Saved style(s) to apply, comma-separated (see /style list)", autocomplete=style_autocomplete
    ),
    lora=Option(
        str, "A LoRA to apply at weight 1 (another weight: write <lora:name:0.8> in the prompt)", autocomplete=loras
    ),
    embedding=Option(
        str,
        "A textual-inversion embedding to add to the prompt (the same as writing its name)",
        autocomplete=embeddings,
    ),
    hires_scale=Option(
        app_commands.Range[float, 1.0, 8.0], "Hires fix: make the image this much larger in a second pass (e.g. 2)"
    ),
    hires_steps=Option(app_commands.Range[int, 0, 500], "Hires fix: steps of the second pass (0: same as steps)"),
    hires_denoising=Option(Strength, "Hires fix: how much the second pass may change (0-1)"),
    hires_upscaler=Option(str, "Hires fix: Latent, Lanczos or an upscaler model", autocomplete=hires_upscalers),
    refiner=Option(str, "SDXL: a refiner model that finishes the images (A1111's Refiner)", autocomplete=models),
    refiner_switch_at=Option(
        app_commands.Range[float, 0.0, 1.0], "SDXL refiner: the share of the denoising done before it takes over (0.8)"
    ),
    strength=Option(Strength, "How far to move from the image: 0 keeps it, 1 ignores it"),
    resize_mode=Option(
        str, "How the image is fitted to width x height when their shapes differ", choices=RESIZE_MODES
    ),
    loopback=Option(
        app_commands.Range[int, 1, 100], "Run img2img this many times, each time on the last result (A1111's loopback)"
    ),
    loopback_final_strength=Option(Strength, "The strength of the last loopback run; the runs move there evenly"),
    masked_content=Option(str, "What the white area starts from before it is repainted", choices=MASKED_CONTENT),
    mask_blur=Option(
        app_commands.Range[int, 0, MAX_MASK_BLUR], "Pixels of blur on the mask's edge, to blend the change in (default 4)"
    ),
    only_masked=Option(bool, "Repaint just the area around the mask at full resolution: best for small fixes"),
    padding=Option(
        app_commands.Range[int, 0, 4096], "With only_masked: pixels of the image around the mask to paint with (default 32)"
    ),
    direction=Option(
        str, "Which side to extend; all: every side (a zoom out)", required=True, choices=OUTPAINT_DIRECTIONS
    ),
    pixels=Option(
        app_commands.Range[int, 1, 8192], "Pixels to add on that side (on each side with all)", required=True
    ),
    x_type=Option(str, "What changes from column to column", required=True, choices=AXIS_TYPES),
    x_values=Option(AxisValues, AXIS_VALUES_HELP, required=True),
    y_type=Option(str, "What changes from row to row (optional)", choices=AXIS_TYPES),
    y_values=Option(AxisValues, AXIS_VALUES_HELP),
    restore_faces=Option(bool, "Restore faces (A1111's GFPGAN or CodeFormer, as in your /settings); default: your /settings"),
    # /inpaint's masks from words (bot.masks_from_words): a preview before the inpaint.
    mask_words=Option(
        app_commands.Range[str, 1, MAX_SEGMENT_WORDS],
        "Instead of a mask: what to repaint, in a few words (\"the sky\"); you see the mask before it runs",
    ),
    mask_threshold=Option(
        app_commands.Range[float, 0.0, 1.0],
        "With mask_words: how sure the match must be, 0-1; lower finds more (default: the server's, often 0.4)",
    ),
    mask_dilation=Option(
        app_commands.Range[int, 0, MAX_SEGMENT_DILATION],
        "With mask_words: pixels the mask grows by, to cover edges (default: the server's, often 8)",
    ),
    # /sketch (bot.sketch): A1111's Sketch and Inpaint sketch.
    sketch=Option(discord.Attachment, "Your drawing, or a copy of the original you painted on", required=True),
    original=Option(
        discord.Attachment, "The unpainted original: the painted area is repainted (Inpaint sketch); without it, img2img"
    ),
    mask_transparency=Option(
        app_commands.Range[int, 0, 99], "Inpaint sketch: how faintly the painted area is repainted, 0-99 (default 0: fully)"
    ),
)


@dataclass(frozen=True)
class CommandOptions:
    """What a member gave to a generating command; None: not given (or not this command's)."""

    prompt: str
    image: discord.Attachment | None = None
    mask: discord.Attachment | None = None
    negative_prompt: str | None = None
    aspect: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    schedule_type: str | None = None
    eta: float | None = None
    seed_resize_from: str | None = None
    seed: int | None = None
    count: int | None = None
    model: str | None = None
    vae: str | None = None
    clip_skip: int | None = None
    style: str | None = None
    lora: str | None = None
    embedding: str | None = None
    hires_scale: float | None = None
    hires_steps: int | None = None
    hires_denoising: float | None = None
    hires_upscaler: str | None = None
    refiner: str | None = None
    refiner_switch_at: float | None = None
    strength: float | None = None
    resize_mode: str | None = None
    loopback: int | None = None
    loopback_final_strength: float | None = None
    masked_content: str | None = None
    mask_blur: int | None = None
    only_masked: bool | None = None
    padding: int | None = None
    direction: str | None = None
    pixels: int | None = None
    x_type: str | None = None
    x_values: str | None = None
    y_type: str | None = None
    y_values: str | None = None
    restore_faces: bool | None = None
    sketch: discord.Attachment | None = None
    original: discord.Attachment | None = None
    mask_transparency: int | None = None
    mask_words: str | None = None
    mask_threshold: float | None = None
    mask_dilation: int | None = None

    def generation(self, prompt: str | None = None) -> GenerationOptions:
        """The options every generating job resolves (bot.jobs.params); ``prompt``: this
        command's prompt where it adds to what the member typed."""
        return GenerationOptions(
            prompt=self.prompt if prompt is None else prompt,
            negative_prompt=self.negative_prompt,
            aspect=self.aspect,
            width=self.width,
            height=self.height,
            steps=self.steps,
            cfg_scale=self.cfg,
            sampler=self.sampler,
            seed=self.seed,
            count=self.count,
            model=self.model,
            vae=self.vae,
            clip_skip=self.clip_skip,
            schedule_type=self.schedule_type,
            eta=self.eta,
            seed_resize_from=self.seed_resize_from,
            restore_faces=self.restore_faces,
        )

    def hires(self) -> dict[str, Any]:
        """The hires fix's options, as bot.jobs.workflow_params.hires_parameters names them."""
        return dict(
            scale=self.hires_scale, steps=self.hires_steps, denoising=self.hires_denoising,
            upscaler=self.hires_upscaler,
        )


CommandCallback = Callable[..., Awaitable[None]]


def declared_options(
    table: Mapping[str, Option], *names: str, **descriptions: str
) -> Callable[[CommandCallback], CommandCallback]:
    """Declares a command's options from ``table``: ``names``, in the order members see them
    (the required first, as Discord lists them); ``descriptions`` replaces an option's
    description for this command. The callback receives them as keyword arguments. Goes below
    ``@app_commands.command``."""
    unknown = (set(names) | set(descriptions)) - set(table)
    if unknown or set(descriptions) - set(names):
        raise TypeError(f"options not declared or not taken: {sorted(unknown or set(descriptions) - set(names))}")
    taken = {name: table[name] for name in names}

    def decorate(callback: CommandCallback) -> CommandCallback:
        @functools.wraps(callback)
        async def with_options(cog: Any, interaction: Interaction, **given: Any) -> None:
            await callback(cog, interaction, **given)

        plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
        with_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("cog", plain), inspect.Parameter("interaction", plain)]
            + [option.parameter(name) for name, option in taken.items()]
        )
        decorated: Any = with_options
        decorated = app_commands.describe(**{name: option.description for name, option in taken.items()} | descriptions)(decorated)
        if choices := {name: [app_commands.Choice(name=c, value=c) for c in o.choices] for name, o in taken.items() if o.choices}:
            decorated = app_commands.choices(**choices)(decorated)
        if completions := {name: o.autocomplete for name, o in taken.items() if o.autocomplete}:
            decorated = app_commands.autocomplete(**completions)(decorated)
        return decorated

    return decorate


def generation_command(*names: str, **descriptions: str) -> Callable[[CommandCallback], CommandCallback]:
    """declared_options from OPTIONS, the callback receiving them as one CommandOptions."""

    def decorate(callback: CommandCallback) -> CommandCallback:
        @functools.wraps(callback)
        async def with_command_options(cog: Any, interaction: Interaction, **given: Any) -> None:
            await callback(cog, interaction, CommandOptions(**given))

        return declared_options(OPTIONS, *names, **descriptions)(with_command_options)

    return decorate
