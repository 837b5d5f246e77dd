"""/xyplot and /promptmatrix: A1111's X/Y plot and prompt matrix scripts, one grid each.

The builders in bot.jobs.plot_params check everything (and say what this server allows); the job is
queued like any other, and its result, the labelled grid, is posted by the usual delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import actions
from bot.ui import confirm
from bot.cogs.imagine import matching_choices
# The option types the generating commands share (wide ranges: the builders check the
# server's limits and say what it allows), and their autocompletes.
from bot.cogs.images import Cfg, NegativePrompt, Prompt, Seed, Size, Steps, _models, _samplers
from bot.jobs.params import GenerationOptions
from bot.jobs.plot_params import AXIS_TYPES, prompt_matrix_parameters, xy_plot_parameters
from bot.jobs.workflow_params import upscaler_names
from inference.common.protocol import LATENT

if TYPE_CHECKING:
    from bot.client import SDBot

Values = app_commands.Range[str, 1, 1000]
AXES = [app_commands.Choice(name=axis, value=axis) for axis in AXIS_TYPES]
SHARED_OPTIONS = dict(
    negative_prompt="What to keep out of every image",
    width="Width in pixels, a multiple of 8",
    height="Height in pixels, a multiple of 8",
    steps="Sampling steps (unless an axis sets them)",
    cfg="CFG scale (unless an axis sets it)",
    sampler="Sampler, by its AUTOMATIC1111 name (unless an axis sets it)",
    seed="The seed of every image (unless the Seed axis sets it); -1 or empty for random",
    model="Which model to use (unless the Model axis sets it)",
)
VALUES_HELP = "Comma-separated; ranges 1-5, 1-5 (+2), 10-100 [5]; Prompt S/R: the first is the text replaced"


async def _hires_upscalers(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return matching_choices([LATENT, *upscaler_names(actions.bot_of(interaction).settings)], current)


class Plots(commands.Cog):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    @app_commands.command(name="xyplot", description="A grid of one prompt with one or two settings varied (A1111's X/Y plot).", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        prompt="What to draw",
        x_type="What changes from column to column",
        x_values=VALUES_HELP,
        y_type="What changes from row to row (optional)",
        y_values=VALUES_HELP,
        hires_scale="Hires fix: make each image this much larger in a second pass (the Denoising axis needs it)",
        hires_steps="Hires fix: steps of the second pass (0: same as steps)",
        hires_denoising="Hires fix: how much the second pass may change (0-1), unless the Denoising axis sets it",
        hires_upscaler="Hires fix: Latent, Lanczos or an upscaler model",
        **SHARED_OPTIONS,
    )
    @app_commands.choices(x_type=AXES, y_type=AXES)
    @app_commands.autocomplete(sampler=_samplers, model=_models, hires_upscaler=_hires_upscalers)
    async def xyplot(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        x_type: str,
        x_values: Values,
        y_type: str | None = None,
        y_values: Values | None = None,
        negative_prompt: NegativePrompt | None = None,
        width: Size | None = None,
        height: Size | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        model: str | None = None,
        hires_scale: app_commands.Range[float, 1.0, 8.0] | None = None,
        hires_steps: app_commands.Range[int, 0, 500] | None = None,
        hires_denoising: app_commands.Range[float, -1.0, 2.0] | None = None,
        hires_upscaler: str | None = None,
    ) -> None:
        options = GenerationOptions(
            prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
            cfg_scale=cfg, sampler=sampler, seed=seed, model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        params = [
            xy_plot_parameters(
                each, self.bot.settings, user, x_type, x_values, y_type, y_values,
                hires_scale=hires_scale, hires_steps=hires_steps, hires_denoising=hires_denoising,
                hires_upscaler=hires_upscaler,
            )
            for each in await actions.prepare_for(interaction, options, user)
        ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(
        name="promptmatrix",
        description="Every combination of prompt parts, in one grid (A1111's prompt matrix).",
        extras=actions.QUEUES_JOBS,
    )
    @app_commands.describe(
        prompt="Parts separated by |: the first is in every image, the others in every combination",
        **SHARED_OPTIONS,
    )
    @app_commands.autocomplete(sampler=_samplers, model=_models)
    async def promptmatrix(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        negative_prompt: NegativePrompt | None = None,
        width: Size | None = None,
        height: Size | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        model: str | None = None,
    ) -> None:
        options = GenerationOptions(
            prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
            cfg_scale=cfg, sampler=sampler, seed=seed, model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        prepared = await actions.prepare_for(interaction, options, user)
        await confirm.submit_jobs(
            interaction, [prompt_matrix_parameters(each, self.bot.settings, user) for each in prepared]
        )



async def setup(bot: SDBot) -> None:
    await bot.add_cog(Plots(bot))
