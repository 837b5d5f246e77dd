"""/img2img, /inpaint, /outpaint and /upscale: the image workflows on an uploaded image.

Each command reads its upload(s) through bot.inputs (checked, normalized, saved) and hands the
options to the builders in bot.jobs.workflow_params, which the buttons use too, so both refuse the
same things with the same words. Like every command that queues jobs they are acknowledged
first (actions.acknowledge: reading a large upload can pass Discord's 3 seconds), and a refusal
still reaches only its author. The prompt itself (inline parameters, styles, permutations:
bot.prompts.prepare) is checked before the upload is read.

Discord's option ranges are wide, as /imagine's: the builders check every value and say what
this server allows, in the same words for the buttons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import actions, inputs
from bot.cogs.imagine import matching_choices
from bot.cogs.styles import style_autocomplete
from bot.errors import InvalidOption, echo
from bot.jobs.params import MAX_SEED, GenerationOptions
from bot.jobs.workflow_params import (
    MASKED_CONTENT,
    OUTPAINT_DIRECTIONS,
    RESIZE_MODES,
    img2img_parameters,
    inpaint_parameters,
    outpaint_parameters,
    upscale_parameters,
    upscaler_names,
)
from bot.ui import confirm
from inference.common.samplers import SAMPLER_NAMES

if TYPE_CHECKING:
    from bot.client import SDBot

# The options the generating commands share, typed and described once.
Prompt = app_commands.Range[str, 1, 4000]
NegativePrompt = app_commands.Range[str, 0, 4000]
Size = app_commands.Range[int, 8, 4096]
Steps = app_commands.Range[int, 1, 500]
Cfg = app_commands.Range[float, 0.0, 100.0]
Seed = app_commands.Range[int, -1, MAX_SEED]
Count = app_commands.Range[int, 1, 10]
Strength = app_commands.Range[float, -1.0, 2.0]
GENERATION_OPTIONS = dict(
    prompt="What the new image should show; may end with --no text, --seed 5, --steps, --cfg, --tile...",
    negative_prompt="What to keep out of the image",
    strength="How far to move from the image: 0 keeps it, 1 ignores it",
    steps="Sampling steps: more is slower and often finer",
    cfg="How closely to follow the prompt (CFG scale)",
    sampler="Sampler, by its AUTOMATIC1111 name",
    seed="Seed of the first image; -1 or empty for random. Image i uses seed + i",
    count="How many images (1-4)",
    model="Which model to use",
    style="Saved style(s) to apply, comma-separated (see /style list)",
)
# "up" and "down" are what people say; the builders count pixels per side.
SIDES = {
    "left": ("left",),
    "right": ("right",),
    "up": ("top",),
    "down": ("bottom",),
    "all": ("left", "right", "top", "bottom"),
}


def _choices(values: tuple[str, ...]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=value, value=value) for value in values]


async def _samplers(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return matching_choices(SAMPLER_NAMES, current)


async def _models(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return matching_choices([m.name for m in actions.bot_of(interaction).settings.models], current)


async def _upscalers(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return matching_choices(upscaler_names(actions.bot_of(interaction).settings), current)


class Images(commands.Cog):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    @app_commands.command(name="img2img", description="Make new images from an image you upload and a prompt.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        image="The image to start from",
        resize_mode="How the image is fitted to width x height when their shapes differ",
        width="Width in pixels, a multiple of 8 (default: the image's shape, within this server's limits)",
        height="Height in pixels, a multiple of 8 (default: the image's shape, within this server's limits)",
        loopback="Run img2img this many times, each time on the last result (A1111's loopback)",
        loopback_final_strength="The strength of the last loopback run; the runs move there evenly",
        **GENERATION_OPTIONS,
    )
    @app_commands.choices(resize_mode=_choices(RESIZE_MODES))
    @app_commands.autocomplete(sampler=_samplers, model=_models, style=style_autocomplete)
    async def img2img(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: Prompt,
        strength: Strength | None = None,
        resize_mode: str | None = None,
        negative_prompt: NegativePrompt | None = None,
        width: Size | None = None,
        height: Size | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        count: Count | None = None,
        model: str | None = None,
        loopback: app_commands.Range[int, 1, 100] | None = None,
        loopback_final_strength: Strength | None = None,
        style: str | None = None,
    ) -> None:
        options = GenerationOptions(
            prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
            cfg_scale=cfg, sampler=sampler, seed=seed, count=count, model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        # Checked before the upload is read, so a bad prompt is refused at once.
        prepared = await actions.prepare_for(interaction, options, user, style_names=style)
        source = await inputs.read_image_upload(image, self.bot.settings)
        params = [
            img2img_parameters(
                each, self.bot.settings, user, source, strength=strength, resize_mode=resize_mode,
                loopback=loopback, loopback_final_strength=loopback_final_strength,
            )
            for each in prepared
        ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(name="inpaint", description="Repaint part of an image you upload: the white area of a mask.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        image="The image to change",
        mask="White where to repaint, black where to keep; the image's shape (it is resized to fit)",
        masked_content="What the white area starts from before it is repainted",
        mask_blur="Pixels of blur on the mask's edge, to blend the change in (default 4)",
        only_masked="Repaint just the area around the mask at full resolution: best for small fixes",
        padding="With only_masked: pixels of the image around the mask to paint with (default 32)",
        **GENERATION_OPTIONS,
    )
    @app_commands.choices(masked_content=_choices(MASKED_CONTENT))
    @app_commands.autocomplete(sampler=_samplers, model=_models, style=style_autocomplete)
    async def inpaint(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        mask: discord.Attachment,
        prompt: Prompt,
        strength: Strength | None = None,
        masked_content: str | None = None,
        mask_blur: app_commands.Range[int, 0, 1000] | None = None,
        only_masked: bool | None = None,
        padding: app_commands.Range[int, 0, 4096] | None = None,
        negative_prompt: NegativePrompt | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        count: Count | None = None,
        model: str | None = None,
        style: str | None = None,
    ) -> None:
        options = GenerationOptions(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, cfg_scale=cfg, sampler=sampler,
            seed=seed, count=count, model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        # Checked before the upload is read, so a bad prompt is refused at once.
        prepared = await actions.prepare_for(interaction, options, user, style_names=style)
        source = await inputs.read_image_upload(image, self.bot.settings)
        mask_path, note = await inputs.read_mask_upload(mask, self.bot.settings, source)
        params = [
            inpaint_parameters(
                each, self.bot.settings, user, source, mask_path, strength=strength,
                masked_content=masked_content, mask_blur=mask_blur, only_masked=only_masked, padding=padding,
            )
            for each in prepared
        ]
        await confirm.submit_jobs(interaction, params)
        if note:
            await interaction.followup.send(note, ephemeral=True)

    @app_commands.command(name="outpaint", description="Extend an image you upload beyond its edges.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        image="The image to extend",
        direction="Which side to extend; all: every side (a zoom out)",
        pixels="Pixels to add on that side (on each side with all)",
        prompt="What the whole extended image shows",
        **{k: v for k, v in GENERATION_OPTIONS.items() if k not in ("prompt", "count")},
    )
    @app_commands.choices(direction=_choices(OUTPAINT_DIRECTIONS))
    @app_commands.autocomplete(sampler=_samplers, model=_models, style=style_autocomplete)
    async def outpaint(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        direction: str,
        pixels: app_commands.Range[int, 1, 8192],
        prompt: Prompt,
        negative_prompt: NegativePrompt | None = None,
        strength: Strength | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        model: str | None = None,
        style: str | None = None,
    ) -> None:
        if direction not in SIDES:  # a choice in Discord; a stale client could send anything
            raise InvalidOption(f"Unknown direction `{echo(direction)}`. Choose one of: {', '.join(SIDES)}.")
        options = GenerationOptions(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, cfg_scale=cfg, sampler=sampler,
            seed=seed, model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        # Checked before the upload is read, so a bad prompt is refused at once.
        prepared = await actions.prepare_for(interaction, options, user, style_names=style)
        source = await inputs.read_image_upload(image, self.bot.settings)
        pads = {side: pixels for side in SIDES[direction]}
        params = [
            outpaint_parameters(each, self.bot.settings, user, source, strength=strength, **pads)
            for each in prepared
        ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(name="upscale", description="Make an image you upload larger, with an upscaler model.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        image="The image to enlarge",
        scale="How many times larger, above 1 (default 2; 4 for small images)",
        upscaler="Lanczos (a plain resize), or an upscaler model installed on this server",
    )
    @app_commands.autocomplete(upscaler=_upscalers)
    async def upscale(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        scale: app_commands.Range[float, 1.0, 8.0] = 2.0,
        upscaler: str | None = None,
    ) -> None:
        source = await inputs.read_image_upload(image, self.bot.settings)
        params = upscale_parameters(self.bot.settings, source, scale=scale, upscaler=upscaler)
        await actions.submit(interaction, params)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Images(bot))
