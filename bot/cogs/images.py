"""/img2img, /inpaint, /outpaint and /upscale: the image workflows on an uploaded image.

Each command reads its upload(s) through bot.inputs (checked, normalized, saved) and hands the
options to the builders in bot.jobs.workflow_params, which the buttons use too, so both refuse the
same things with the same words. Like every command that queues jobs they are acknowledged
first (bot.interactions.acknowledge: reading a large upload can pass Discord's 3 seconds), and a refusal
still reaches only its author. The prompt itself (inline parameters, styles, permutations:
bot.prompts.prepare) is checked before the upload is read.

Discord's option ranges are wide, as /imagine's: the builders check every value and say what
this server allows, in the same words for the buttons.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import actions, image_infotext, inputs
from bot.cogs.base import BotCog
from bot.cogs.generation_options import CommandOptions, generation_command, upscalers
from bot.errors import InvalidOption, echo
from bot.jobs.face_params import member_face_columns
from bot.jobs.params import GenerationOptions, member_defaults, resolve_parameters
from bot.jobs.sd_upscale_params import sd_upscale_parameters
from bot.jobs.workflow_params import (
    DEFAULT_MASK_BLUR,
    check_segment,
    img2img_parameters,
    inpaint_parameters,
    outpaint_parameters,
    segment_parameters,
    upscale_parameters,
    upscaler_names,
)
from bot.policy import gate
from bot.sketch import read_inpaint_sketch
from bot.ui import confirm
from bot.ui.mask_preview import MASK_PREVIEW_ITEMS
from inference.common.infotext import PROMPT_KEY, parse_infotext

if TYPE_CHECKING:
    from bot.client import SDBot
    from bot.jobs.workflow_params import SourceImage

# "up" and "down" are what people say; the builders count pixels per side.
SIDES = {
    "left": ("left",),
    "right": ("right",),
    "up": ("top",),
    "down": ("bottom",),
    "all": ("left", "right", "top", "bottom"),
}


class Images(BotCog):
    @app_commands.command(name="img2img", description="Make new images from an image you upload and a prompt.", extras=actions.QUEUES_JOBS)
    @generation_command(
        "image", "prompt", "strength", "resize_mode", "negative_prompt", "width", "height", "steps", "cfg",
        "sampler", "schedule_type", "seed", "count", "model", "vae", "clip_skip", "seed_resize_from", "eta", "loopback", "loopback_final_strength", "style",
        "restore_faces",
        width="Width in pixels, a multiple of 8 (default: the image's shape, within this server's limits)",
        height="Height in pixels, a multiple of 8 (default: the image's shape, within this server's limits)",
    )
    async def img2img(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        request, source = await self._prepare(interaction, chosen)
        params = [
            img2img_parameters(
                each, self.bot.settings, request.user, source, strength=chosen.strength,
                resize_mode=chosen.resize_mode, loopback=chosen.loopback,
                loopback_final_strength=chosen.loopback_final_strength, server=request.server,
            )
            for each in request.jobs
        ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(
        name="inpaint",
        description="Repaint part of an image you upload: the white area of a mask, or what you name in words.",
        extras=actions.QUEUES_JOBS,
    )
    @generation_command(
        "image", "prompt", "mask", "mask_words", "mask_threshold", "mask_dilation", "strength", "masked_content",
        "mask_blur", "only_masked", "padding", "negative_prompt", "steps", "cfg", "sampler", "schedule_type", "seed",
        "count", "model", "vae", "clip_skip", "seed_resize_from", "eta", "style", "restore_faces",
        image="The image to change",
    )
    async def inpaint(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        """With mask_words, each job is first a preview of the mask found (bot.masks_from_words)."""
        segment = None
        if chosen.mask is not None and chosen.mask_words is not None:
            raise InvalidOption("Give a mask or mask_words, not both.")
        if chosen.mask is None:
            if chosen.mask_words is None:
                raise InvalidOption("Upload a mask (white where to repaint), or say what to repaint in mask_words.")
            segment = check_segment(self.bot.settings, chosen.mask_words, chosen.mask_threshold, chosen.mask_dilation)
        elif chosen.mask_threshold is not None or chosen.mask_dilation is not None:
            raise InvalidOption("mask_threshold and mask_dilation go with mask_words, not with an uploaded mask.")
        request, source = await self._prepare(interaction, chosen)
        note = None
        if segment is None:
            assert chosen.mask is not None
            mask_path, note = await inputs.read_mask_upload(chosen.mask, self.bot.settings, source)
        params = [
            inpaint_parameters(
                each, self.bot.settings, request.user, source, "" if segment else mask_path,
                strength=chosen.strength, masked_content=chosen.masked_content, mask_blur=chosen.mask_blur,
                only_masked=chosen.only_masked, padding=chosen.padding, server=request.server,
            )
            for each in request.jobs
        ]
        if segment is not None:
            params = [segment_parameters(each, self.bot.settings, segment) for each in params]
        await confirm.submit_jobs(interaction, params)
        if note:
            await interaction.followup.send(note, ephemeral=True)

    @app_commands.command(
        name="sketch",
        description="Repaint what you painted on a copy of an image (Inpaint sketch), or start from a drawing.",
        extras=actions.QUEUES_JOBS,
    )
    @generation_command(
        "sketch", "prompt", "original", "strength", "mask_blur", "mask_transparency", "masked_content", "only_masked",
        "padding", "negative_prompt", "steps", "cfg", "sampler", "schedule_type", "seed", "count", "model", "vae",
        "clip_skip", "style", "restore_faces",
        prompt="What the painted area (or the whole drawing) should become",
    )
    async def sketch(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        """A1111's Sketch (img2img of a drawing) and, with the original, its Inpaint sketch:
        the area painted becomes the mask and its colours the start (bot.sketch)."""
        assert chosen.sketch is not None  # a required option
        request = await actions.member_request(interaction, chosen.generation(), style_names=chosen.style)
        user, server = request.user, request.server
        if chosen.original is None:
            inpaint_only = {"mask_blur": chosen.mask_blur, "mask_transparency": chosen.mask_transparency,
                            "masked_content": chosen.masked_content, "only_masked": chosen.only_masked,
                            "padding": chosen.padding}
            if given := [name for name, value in inpaint_only.items() if value is not None]:
                raise InvalidOption(
                    f"{', '.join(given)} work on an Inpaint sketch: upload the unpainted original too."
                )
            source = await inputs.read_image_upload(chosen.sketch, self.bot.settings, what="sketch")
            params = [
                img2img_parameters(each, self.bot.settings, user, source, strength=chosen.strength, server=server)
                for each in request.jobs
            ]
        else:
            blur = DEFAULT_MASK_BLUR if chosen.mask_blur is None else chosen.mask_blur
            painted = await read_inpaint_sketch(
                chosen.original, chosen.sketch, self.bot.settings, mask_blur=blur,
                transparency=chosen.mask_transparency or 0,
            )
            params = [
                inpaint_parameters(
                    each, self.bot.settings, user, painted.start, painted.mask_path, strength=chosen.strength,
                    masked_content=chosen.masked_content, mask_blur=blur, only_masked=chosen.only_masked,
                    padding=chosen.padding, server=server,
                )
                for each in request.jobs
            ]
        await confirm.submit_jobs(interaction, params)

    @app_commands.command(name="outpaint", description="Extend an image you upload beyond its edges.", extras=actions.QUEUES_JOBS)
    @generation_command(
        "image", "direction", "pixels", "prompt", "negative_prompt", "strength", "steps", "cfg", "sampler",
        "schedule_type", "seed", "model", "vae", "clip_skip", "seed_resize_from", "eta", "style", "restore_faces",
        image="The image to extend",
        prompt="What the whole extended image shows",
    )
    async def outpaint(self, interaction: discord.Interaction[SDBot], chosen: CommandOptions) -> None:
        direction = chosen.direction or ""
        if direction not in SIDES:  # a choice in Discord; a stale client could send anything
            raise InvalidOption(f"Unknown direction `{echo(direction)}`. Choose one of: {', '.join(SIDES)}.")
        request, source = await self._prepare(interaction, chosen)
        pads = {side: chosen.pixels for side in SIDES[direction]}
        params = [
            outpaint_parameters(
                each, self.bot.settings, request.user, source, strength=chosen.strength, server=request.server, **pads
            )
            for each in request.jobs
        ]
        await confirm.submit_jobs(interaction, params)

    async def _prepare(
        self, interaction: discord.Interaction[SDBot], chosen: CommandOptions
    ) -> tuple[actions.MemberRequest, SourceImage]:
        """The member's request (actions.member_request: the jobs' options, the member, the
        server's defaults), and the upload read and checked. The prompt is checked before the
        upload is read, so a bad prompt is refused at once."""
        request = await actions.member_request(interaction, chosen.generation(), style_names=chosen.style)
        assert chosen.image is not None  # a required option of every image command
        source = await inputs.read_image_upload(chosen.image, self.bot.settings)
        return request, source

    @app_commands.command(name="upscale", description="Make an image you upload larger, with an upscaler model.", extras=actions.QUEUES_JOBS)
    @app_commands.describe(
        image="The image to enlarge",
        scale="How many times larger, above 1 (default 2; 4 for small images)",
        upscaler="Lanczos (a plain resize), or an upscaler model installed on this server",
        restore_faces="Then restore faces (A1111's Extras order), with your /settings' restorer and visibility",
        detailed="Redraw the enlarged image tile by tile with a model (A1111's SD upscale): sharper detail, slower",
        denoising="Detailed: how much each tile may change, 0-1 (default 0.3)",
        prompt="Detailed: what the image shows (default: the prompt in the image's own parameters)",
    )
    @app_commands.autocomplete(upscaler=upscalers)
    async def upscale(
        self,
        interaction: discord.Interaction[SDBot],
        image: discord.Attachment,
        scale: app_commands.Range[float, 1.0, 8.0] = 2.0,
        upscaler: str | None = None,
        detailed: bool = False,
        denoising: float | None = None,
        prompt: str | None = None,
        restore_faces: bool = False,
    ) -> None:
        settings = self.bot.settings
        defaults = member_defaults(await self.bot.queue.user(interaction.user.id), settings)
        faces = member_face_columns(settings, defaults, restore_faces, extras=True)  # refused before the upload is read
        if detailed:
            await self._detailed_upscale(interaction, image, scale, upscaler, denoising, prompt, faces)
            return
        if denoising is not None or prompt is not None:
            raise InvalidOption("`denoising` and `prompt` are for a detailed upscale: add `detailed: True`.")
        source = await inputs.read_image_upload(image, settings)
        params = upscale_parameters(settings, source, scale=scale, upscaler=upscaler, faces=faces)
        await actions.submit(interaction, params)

    async def _detailed_upscale(
        self,
        interaction: discord.Interaction[SDBot],
        image: discord.Attachment,
        scale: float,
        upscaler: str | None,
        denoising: float | None,
        prompt: str | None,
        faces: dict[str, object],
    ) -> None:
        """A1111's SD upscale of an upload, with its own parameters (a PNG made by A1111 or
        this bot) or the prompt given; InvalidOption when there is neither."""
        settings = self.bot.settings
        data, label = await inputs.download(image, settings)
        text = image_infotext.read_infotext_bytes(data, settings.images.max_upload_pixels, label)
        if text and text.strip():
            params = parse_infotext(text)
            if prompt is not None:
                params[PROMPT_KEY] = prompt
            rerun = image_infotext.rerun_options(
                params, settings, upscaler_names(settings), self.bot.models.model_by_hash
            )
            options = replace(rerun.options, width=None, height=None, count=1)
        elif prompt is not None:
            options = GenerationOptions(prompt=prompt, count=1)
        else:
            raise InvalidOption(
                "A detailed upscale redraws the image with a prompt: give `prompt`, or upload a PNG "
                "that still has its generation parameters."
            )
        user = await self.bot.queue.user(interaction.user.id)
        base = resolve_parameters(options, settings, user, server=await gate.server_defaults(interaction))
        source = await inputs.saved_image(data, settings, label)
        params = sd_upscale_parameters(settings, source, base, scale=scale, upscaler=upscaler, strength=denoising)
        params = replace(params, **faces)  # then restore faces, as A1111's Extras after its upscale
        await actions.submit(interaction, params)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Images(bot))
    bot.add_dynamic_items(*MASK_PREVIEW_ITEMS)
