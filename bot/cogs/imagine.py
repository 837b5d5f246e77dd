"""/imagine: the prompt and every generation option, with autocomplete for names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import actions
from bot.errors import InvalidOption, echo, listed
from bot.prompts.networks import embedding_names, lora_names
from bot.cogs.styles import style_autocomplete
from bot.jobs.params import ASPECT_RATIOS, MAX_SEED, GenerationOptions, resolve_parameters
from bot.jobs.workflow_params import hires_parameters, upscaler_names
from bot.ui import confirm
from inference.common.protocol import LATENT
from inference.common.samplers import SAMPLER_NAMES

if TYPE_CHECKING:
    from bot.client import SDBot

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def matching_choices(names: list[str] | tuple[str, ...], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.casefold()
    return [app_commands.Choice(name=n, value=n) for n in names if wanted in n.casefold()][:MAX_CHOICES]


class Imagine(commands.Cog):
    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Generate images from a text prompt.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        prompt="What to draw; may end with --ar 3:2, --no text, --seed, --steps, --cfg, --sampler, --model, --tile",
        negative_prompt="What to keep out of the image",
        aspect="Aspect ratio (instead of width and height)",
        width="Width in pixels, a multiple of 8",
        height="Height in pixels, a multiple of 8",
        steps="Sampling steps: more is slower and often finer",
        cfg="How closely to follow the prompt (CFG scale)",
        sampler="Sampler, by its AUTOMATIC1111 name",
        seed="Seed of the first image; -1 or empty for random. Image i uses seed + i",
        count="How many images (1-4)",
        model="Which model to use",
        hires_scale="Hires fix: make the image this much larger in a second pass (e.g. 2)",
        hires_steps="Hires fix: steps of the second pass (0: same as steps)",
        hires_denoising="Hires fix: how much the second pass may change (0-1)",
        hires_upscaler="Hires fix: Latent, Lanczos or an upscaler model",
        style="Saved style(s) to apply, comma-separated (see /style list)",
        lora="A LoRA to apply (the same as writing <lora:name:weight> in the prompt)",
        lora_weight="The LoRA's weight (default 1)",
        embedding="A textual-inversion embedding to add to the prompt (the same as writing its name)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS])
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        negative_prompt: app_commands.Range[str, 0, 4000] | None = None,
        aspect: str | None = None,
        width: app_commands.Range[int, 8, 4096] | None = None,
        height: app_commands.Range[int, 8, 4096] | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        cfg: app_commands.Range[float, 0.0, 100.0] | None = None,
        sampler: str | None = None,
        seed: app_commands.Range[int, -1, MAX_SEED] | None = None,
        count: app_commands.Range[int, 1, 10] | None = None,
        model: str | None = None,
        hires_scale: app_commands.Range[float, 1.0, 8.0] | None = None,
        hires_steps: app_commands.Range[int, 0, 500] | None = None,
        hires_denoising: app_commands.Range[float, -1.0, 2.0] | None = None,
        hires_upscaler: str | None = None,
        style: str | None = None,
        lora: str | None = None,
        lora_weight: app_commands.Range[float, -10.0, 10.0] | None = None,
        embedding: str | None = None,
    ) -> None:
        # Discord's ranges above are wide on purpose: the server's own limits (config) are
        # checked here, with a message that says what this server allows.
        if embedding is not None and embedding not in (known := embedding_names(self.bot.settings)):
            raise InvalidOption(f"Unknown embedding `{echo(embedding)}`. Available: {listed(known) or 'none'}.")
        options = GenerationOptions(
            prompt=with_networks(prompt, lora, lora_weight, embedding),
            negative_prompt=negative_prompt,
            aspect=aspect,
            width=width,
            height=height,
            steps=steps,
            cfg_scale=cfg,
            sampler=sampler,
            seed=seed,
            count=count,
            model=model,
        )
        user = await self.bot.queue.user(interaction.user.id)
        # Inline parameters, styles and permutations: one GenerationOptions per job.
        prepared = await actions.prepare_for(interaction, options, user, style_names=style)
        params = [
            hires_parameters(
                resolve_parameters(each, self.bot.settings, user),
                self.bot.settings,
                scale=hires_scale,
                steps=hires_steps,
                denoising=hires_denoising,
                upscaler=hires_upscaler,
            )
            for each in prepared
        ]
        await confirm.submit_jobs(interaction, params)

    @imagine.autocomplete("sampler")
    async def sampler_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching_choices(SAMPLER_NAMES, current)

    @imagine.autocomplete("model")
    async def model_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching_choices([m.name for m in self.bot.settings.models], current)

    @imagine.autocomplete("style")
    async def styles_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await style_autocomplete(interaction, current)

    @imagine.autocomplete("lora")
    async def lora_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching_choices(lora_names(self.bot.settings), current)

    @imagine.autocomplete("embedding")
    async def embedding_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return matching_choices(embedding_names(self.bot.settings), current)

    @imagine.autocomplete("hires_upscaler")
    async def hires_upscaler_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return matching_choices([LATENT, *upscaler_names(self.bot.settings)], current)


def with_networks(prompt: str, lora: str | None, weight: float | None, embedding: str | None) -> str:
    """The prompt with the picked LoRA and embedding written in, as a user would type them;
    inline parameters (`--ar ...`) stay last, where they must be."""
    added = []
    if embedding:
        added.append(embedding)
    if lora:
        added.append(f"<lora:{lora}:{1.0 if weight is None else weight:g}>")
    elif weight is not None:
        raise InvalidOption("lora_weight needs a lora.")
    if not added:
        return prompt
    text, separator, parameters = prompt.partition(" --")
    return f"{text}, {' '.join(added)}{separator}{parameters}"


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Imagine(bot))
    # The Confirm/Cancel buttons of a permutation prompt (every generating command's, and
    # Remix's): registered with the commands that ask.
    bot.add_dynamic_items(confirm.ConfirmButton)
