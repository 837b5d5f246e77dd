"""/imagine: the prompt and every generation option, with autocomplete for names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands

from bot import actions
from bot.cogs.base import BotCog
from bot.cogs.generation_options import CommandOptions, generation_command
from bot.errors import InvalidOption, echo, listed
from bot.jobs.params import member_defaults, resolve_parameters, with_refiner
from bot.jobs.workflow_params import hires_parameters
from bot.prompts.networks import embedding_names
from bot.ui import confirm

if TYPE_CHECKING:
    import discord

    from bot.client import SDBot


class Imagine(BotCog):
    @app_commands.command(name="imagine", description="Generate images from a text prompt.", extras=actions.QUEUES_JOBS)
    # Discord takes at most 25 options a command (it refuses the whole command sync otherwise):
    # eta and a LoRA's weight, which the prompt takes as well (--eta 0.5, <lora:name:0.8>),
    # are written there.
    @generation_command(
        "prompt", "negative_prompt", "aspect", "width", "height", "steps", "cfg", "sampler", "schedule_type", "seed",
        "count", "model", "vae", "clip_skip", "seed_resize_from", "hires_scale", "hires_steps", "hires_denoising",
        "hires_upscaler", "style", "lora", "embedding", "refiner", "refiner_switch_at", "restore_faces",
        prompt="What to draw; may end with --ar 3:2, --no text, --seed, --steps, --cfg, --eta, --sampler, --model, --tile",
    )
    async def imagine(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        # Discord's ranges are wide on purpose: the server's own limits (config) are checked
        # here, with a message that says what this server allows.
        embedding = chosen.embedding
        if embedding is not None and embedding not in (known := embedding_names(self.bot.settings)):
            raise InvalidOption(f"Unknown embedding `{echo(embedding)}`. Available: {listed(known) or 'none'}.")
        options = chosen.generation(prompt=with_networks(chosen.prompt, chosen.lora, embedding))
        # Inline parameters, styles and permutations: one GenerationOptions per job.
        request = await actions.member_request(interaction, options, style_names=chosen.style)
        settings = self.bot.settings
        default_refiner = member_defaults(request.user, settings).refiner
        params = [
            with_refiner(
                hires_parameters(
                    resolve_parameters(each, settings, request.user, request.server), settings, **chosen.hires()
                ),
                settings, chosen.refiner, chosen.refiner_switch_at, default_refiner,
            )
            for each in request.jobs
        ]
        await confirm.submit_jobs(interaction, params)


def with_networks(prompt: str, lora: str | None, embedding: str | None) -> str:
    """The prompt with the picked LoRA (at weight 1) and embedding written in, as a user would
    type them; inline parameters (`--ar ...`) stay last, where they must be."""
    added = []
    if embedding:
        added.append(embedding)
    if lora:
        added.append(f"<lora:{lora}:1>")
    if not added:
        return prompt
    text, separator, parameters = prompt.partition(" --")
    return f"{text}, {' '.join(added)}{separator}{parameters}"


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Imagine(bot))
    # The Confirm/Cancel buttons of a permutation prompt (every generating command's, and
    # Remix's): registered with the commands that ask.
    bot.add_dynamic_items(confirm.ConfirmButton)
