"""The embeds a job shows in its life: queued, running, done, failed, canceled, re-queued."""

from __future__ import annotations

from pathlib import Path

import discord

from bot.jobs.job_rows import image_seeds, merge_options, merge_summary, plot_options
from bot.jobs.plot_params import plot_summary
from bot.prompts.tokens import token_summary
from db.models import Job
from inference.common.protocol import JobKind, ModelLoading

QUEUED_COLOUR = discord.Colour.blurple()
RUNNING_COLOUR = discord.Colour.gold()
DONE_COLOUR = discord.Colour.green()
FAILED_COLOUR = discord.Colour.red()
CANCELED_COLOUR = discord.Colour.dark_grey()


def clip(text: str, limit: int) -> str:
    """Discord refuses over-long embed parts; cut with an ellipsis instead."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def sampler_label(job: Job) -> str:
    """The sampler with a schedule type chosen ("DPM++ 2M Karras"), as A1111 named them before 1.9."""
    if not job.schedule_type or job.schedule_type == "Automatic":
        return job.sampler
    return f"{job.sampler} {job.schedule_type}"


def _parameters_line(job: Job) -> str:
    if job.kind == JobKind.MERGE and job.merge_json:
        return merge_summary(merge_options(job.merge_json))
    if job.kind == JobKind.DESCRIBE:
        return f"{workflow_summary(job)} · {job.width}x{job.height}"
    if job.kind == JobKind.UPSCALE:
        return f"{workflow_summary(job)} · {job.width}x{job.height}"
    line = f"{job.width}x{job.height} · {job.steps} steps · {sampler_label(job)} · CFG {job.cfg_scale:g} · {job.model}"
    summary = workflow_summary(job)
    return f"{summary} · {line}" if summary else line


def workflow_summary(job: Job) -> str | None:
    """What a job did besides txt2img, in one line; None for plain txt2img."""
    kind = JobKind(job.kind)
    if kind == JobKind.UPSCALE:
        return f"Upscale {job.upscale_factor:g}x ({job.upscaler})"
    if kind == JobKind.SD_UPSCALE:
        return f"Upscale (detailed) {job.upscale_factor:g}x ({job.upscaler}), strength {job.denoising_strength:g}"
    if kind == JobKind.DESCRIBE:
        return f"Describe ({job.interrogator})"
    parts: list[str] = []
    if kind == JobKind.SEGMENT:
        parts.append(
            f"Mask from words “{job.segment_words}” (threshold {job.segment_threshold:g}, grown "
            f"{job.segment_dilation} px): Looks right repaints the red area"
        )
    if kind == JobKind.PLOT and job.plot_json:
        parts.append(plot_summary(plot_options(job.plot_json)))
    if kind == JobKind.IMG2IMG:
        parts.append(f"img2img, strength {job.denoising_strength:g}, {job.resize_mode}")
        if (job.loopback_count or 1) > 1:
            final = job.loopback_final_strength
            parts.append(f"loopback x{job.loopback_count}" + (f" to strength {final:g}" if final is not None else ""))
    elif kind == JobKind.INPAINT:
        area = "only masked" if job.inpaint_only_masked else "whole picture"
        parts.append(
            f"Inpaint, strength {job.denoising_strength:g}, {job.masked_content}, mask blur {job.mask_blur}, {area}"
        )
    elif kind == JobKind.OUTPAINT:
        added = ", ".join(
            f"+{pixels} {side}"
            for side, pixels in (
                ("left", job.outpaint_left),
                ("right", job.outpaint_right),
                ("top", job.outpaint_top),
                ("bottom", job.outpaint_bottom),
            )
            if pixels
        )
        parts.append(f"Outpaint {added}")
    if job.hires_scale:
        steps = job.hires_steps or job.steps
        parts.append(
            f"Hires fix {job.hires_scale:g}x ({job.hires_upscaler}, {steps} steps, denoising {job.hires_denoising:g})"
        )
    if job.refiner and kind in (JobKind.TXT2IMG, JobKind.VARIATION):
        parts.append(f"Refiner {job.refiner} from {job.refiner_switch_at or 0.8:g}")
    return "; ".join(parts) or None


def _with_prompt(embed: discord.Embed, job: Job) -> discord.Embed:
    embed.description = clip(job.prompt, 1000) if job.prompt else None
    return _with_negative_prompt(embed, job)


def _with_negative_prompt(embed: discord.Embed, job: Job) -> discord.Embed:
    if job.negative_prompt:
        embed.add_field(name="Negative prompt", value=clip(job.negative_prompt, 1000), inline=False)
    return embed


def queued_embed(job: Job, position: int, eta_seconds: float) -> discord.Embed:
    embed = _with_prompt(discord.Embed(title="Queued", colour=QUEUED_COLOUR), job)
    embed.add_field(name="Position", value="next" if position <= 1 else f"{position} in line")
    return _with_answer_fields(embed, job, eta_seconds)


def started_embed(job: Job, eta_seconds: float) -> discord.Embed:
    """The command's answer for a job the worker claimed before it was sent (an idle bot)."""
    return _with_answer_fields(running_embed(job), job, eta_seconds)


def _with_answer_fields(embed: discord.Embed, job: Job, eta_seconds: float) -> discord.Embed:
    """What a new job's answer tells besides its state: when it ends, how its prompt was read."""
    embed.add_field(name="ETA", value=f"about {format_duration(eta_seconds)}")
    tokens = token_summary(job)
    if tokens:
        embed.add_field(name="Tokens", value=tokens)
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed


def running_embed(job: Job, step: int = 0, total: int = 0, preview_filename: str | None = None) -> discord.Embed:
    merging = job.kind == JobKind.MERGE  # its steps are the tensors written
    title = "Merging" if merging else "Describing" if job.kind == JobKind.DESCRIBE else "Generating"
    if total:
        filled = round(10 * step / total)
        title = f"{title} · {'tensor' if merging else 'step'} {step}/{total} {'▰' * filled}{'▱' * (10 - filled)}"
    embed = _with_prompt(discord.Embed(title=title, colour=RUNNING_COLOUR), job)
    if preview_filename:
        embed.set_image(url=f"attachment://{preview_filename}")
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed


def loading_embed(job: Job, loading: ModelLoading) -> discord.Embed:
    """The job waits on its model's first load: how much of its files is read."""
    title = loading.summary
    if loading.total and loading.done < loading.total:
        filled = round(10 * loading.done / loading.total)
        title = f"{title} {'▰' * filled}{'▱' * (10 - filled)}"
    embed = _with_prompt(discord.Embed(title=clip(title, 256), colour=RUNNING_COLOUR), job)
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed


def result_embed(job: Job, filename: str, image_index: int | None = None) -> discord.Embed:
    """The finished job, or one of its images when image_index is given."""
    seeds, subseeds = image_seeds(job)
    if job.kind == JobKind.PLOT:
        seeds = tuple(dict.fromkeys(seeds))  # the cells share the seed unless it is an axis
    if image_index is not None:
        seeds, subseeds = seeds[image_index : image_index + 1], subseeds[image_index : image_index + 1]
    # The prompt is the title; only a prompt too long for a title is repeated in full below it.
    description = clip(job.prompt, 1000) if len(job.prompt) > 256 else None
    title = clip(job.prompt, 256) if job.prompt else "Upscaled image"
    embed = discord.Embed(title=title, description=description, colour=DONE_COLOUR)
    _with_negative_prompt(embed, job)
    summary = workflow_summary(job)
    if summary:
        embed.add_field(name="Workflow", value=clip(summary, 1000), inline=False)
    if job.parent_job_id is not None:
        source = f"job #{job.parent_job_id}"
        if job.parent_image_index is not None:
            source += f", image {job.parent_image_index + 1}"
        embed.add_field(name="From", value=source)
    embed.add_field(name="Seed" if len(seeds) == 1 else "Seeds", value=", ".join(map(str, seeds)))
    if subseeds:
        embed.add_field(
            name="Variation seed" if len(subseeds) == 1 else "Variation seeds",
            value=f"{', '.join(map(str, subseeds))} (strength {job.subseed_strength:g})",
        )
    # The images' own size: a hires fix or an upscale makes them larger than the job's size.
    shown = job.images[image_index or 0] if job.images else None
    size = f"{shown.width}x{shown.height}" if shown is not None else f"{job.width}x{job.height}"
    embed.add_field(name="Size", value=size)
    if job.kind != JobKind.UPSCALE:
        embed.add_field(name="Steps", value=str(job.steps))
        embed.add_field(name="Sampler", value=sampler_label(job))
        embed.add_field(name="CFG", value=f"{job.cfg_scale:g}")
        embed.add_field(name="Model", value=job.model)
    embed.set_image(url=f"attachment://{filename}")
    which = f"Job #{job.id}" if image_index is None else f"Job #{job.id}, image {image_index + 1}"
    took = f" · {job.seconds:.1f} s" if job.seconds is not None else ""
    embed.set_footer(text=f"{which}{took}")
    return embed


def merged_embed(job: Job, listed: set[str], refused: str = "") -> discord.Embed:
    """A finished checkpoint merge: the new model, and whether the lists offer it yet."""
    assert job.merge_json, "a merge job keeps its options"
    merge = merge_options(job.merge_json)
    name = Path(merge.output).stem
    if name in listed:
        description = f"`{name}` is saved and listed: pick it in /imagine and /settings."
    else:
        why = f" ({refused})" if refused else ""
        description = f"`{name}` is saved, but the model list does not offer it yet{why}: try /admin models refresh."
    embed = discord.Embed(title="Merged", description=clip(description, 1000), colour=DONE_COLOUR)
    took = f" · {job.seconds:.1f} s" if job.seconds is not None else ""
    embed.set_footer(text=clip(f"Job #{job.id} · {merge_summary(merge)}{took}", 2000))
    return embed


def failed_embed(job: Job) -> discord.Embed:
    embed = _with_prompt(discord.Embed(title="Failed", colour=FAILED_COLOUR), job)
    embed.add_field(name="What happened", value=clip(job.member_error or "The job failed.", 1000), inline=False)
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed


def canceled_embed(job: Job) -> discord.Embed:
    embed = _with_prompt(discord.Embed(title="Canceled", colour=CANCELED_COLOUR), job)
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed


def requeued_embed(job: Job, reason: str) -> discord.Embed:
    embed = _with_prompt(discord.Embed(title="Re-queued", colour=QUEUED_COLOUR), job)
    embed.add_field(name="Why", value=f"{reason} It is back in the queue and will run again.", inline=False)
    embed.set_footer(text=f"Job #{job.id} · {_parameters_line(job)}")
    return embed
