"""/xyplot and /promptmatrix: A1111's X/Y plot and prompt matrix scripts, one grid each.

The builders in bot.jobs.plot_params check everything (and say what this server allows); the job is
queued like any other, and its result, the labelled grid, is posted by the usual delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands

from bot import actions
from bot.cogs.base import BotCog
from bot.cogs.generation_options import CommandOptions, generation_command
from bot.jobs.plot_params import prompt_matrix_parameters, xy_plot_parameters
from bot.ui import confirm

if TYPE_CHECKING:
    import discord

    from bot.client import SDBot

# The options both grids take, and what each means in a grid (an axis may set it).
GRID_OPTIONS = ("negative_prompt", "width", "height", "steps", "cfg", "sampler", "schedule_type", "eta", "seed", "model")
GRID_DESCRIPTIONS = dict(
    negative_prompt="What to keep out of every image",
    steps="Sampling steps (unless an axis sets them)",
    cfg="CFG scale (unless an axis sets it)",
    sampler="Sampler, by its AUTOMATIC1111 name (unless an axis sets it)",
    schedule_type="Schedule type (unless the Schedule type axis, or a combined Sampler value, sets it)",
    eta="Eta of the ancestral, SDE and DDIM samplers (unless the Eta axis sets it)",
    seed="The seed of every image (unless the Seed axis sets it); -1 or empty for random",
    model="Which model to use (unless the Model axis sets it)",
)


class Plots(BotCog):
    @app_commands.command(name="xyplot", description="A grid of one prompt with one or two settings varied (A1111's X/Y plot).", extras=actions.QUEUES_JOBS)
    @generation_command(
        "prompt", "x_type", "x_values", "y_type", "y_values", *GRID_OPTIONS,
        "hires_scale", "hires_steps", "hires_denoising", "hires_upscaler",
        prompt="What to draw",
        hires_scale="Hires fix: make each image this much larger in a second pass (the Denoising axis needs it)",
        hires_denoising="Hires fix: how much the second pass may change (0-1), unless the Denoising axis sets it",
        **GRID_DESCRIPTIONS,
    )
    async def xyplot(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        request = await actions.member_request(interaction, chosen.generation())
        params = [
            xy_plot_parameters(
                each, self.bot.settings, request.user, chosen.x_type, chosen.x_values, chosen.y_type, chosen.y_values,
                hires=chosen.hires(), server=request.server,
            )
            for each in request.jobs
        ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(
        name="promptmatrix",
        description="Every combination of prompt parts, in one grid (A1111's prompt matrix).",
        extras=actions.QUEUES_JOBS,
    )
    @generation_command(
        "prompt", *GRID_OPTIONS,
        prompt="Parts separated by |: the first is in every image, the others in every combination",
        **GRID_DESCRIPTIONS,
    )
    async def promptmatrix(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        request = await actions.member_request(interaction, chosen.generation())
        await confirm.submit_jobs(
            interaction,
            [prompt_matrix_parameters(each, self.bot.settings, request.user, request.server) for each in request.jobs],
        )


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Plots(bot))
