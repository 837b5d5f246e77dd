"""What a job costs the GPU, known from its parameters before it runs.

The cost is in units: 1 unit is 20 steps of one 512x512 image (about what a default job's
image costs), and work scales with pixels x steps. Everything the worker will run counts:
every image or plot cell, each at its own steps; img2img, inpaint and outpaint at the steps
their strength runs (as inference.img2img counts them), each loopback pass; the hires fix's
second pass at its size and steps; an upscale by the size it makes; a prompt split by AND
runs the model once more for each two parts at every step (inference.conditioning). The queue
stores it on the job row (Job.cost), and turns, caps and ETAs use it (bot.jobs.queue).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bot.jobs.job_rows import plot_options
from inference.common.network_files import strip_loras
from inference.common.prompt_parser import composable_prompts
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.jobs.params import JobParameters
    from db.models import Job

UNIT_PIXELS = 512 * 512
UNIT_STEPS = 20
# An upscale runs its upscaler once over the image rather than once per step: this many units
# per 512x512 of the upscaled image (a model upscaler's tiles cost about 5 steps each).
UPSCALE_UNITS_PER_TILE = 0.25
# A1111's "Restore faces" on one image: a detector pass and a 512 px restorer pass per face
# (GFPGAN or CodeFormer: about the cost of 20 steps of a 512x512 image each, for one face).
FACE_RESTORATION_UNITS = 1.0
# A describe job runs a caption model and CLIP (or a tagger) once: about as long as a few steps.
DESCRIBE_UNITS = 0.25
# A mask from words (JobKind.SEGMENT): about one step of a 512x512 image.
SEGMENT_UNITS = 0.05
# Shown with every cost, so that a member can tell what makes theirs.
UNIT_MEANING = "1 unit = 20 steps of one 512x512 image"


def job_cost(job: Job | JobParameters) -> float:
    """The job's cost in units, from its parameters (a row, or parameters not yet queued)."""
    faces = FACE_RESTORATION_UNITS * job.count if job.face_restorer else 0.0
    if job.kind == JobKind.RESTORE_FACES:
        return faces
    if job.kind == JobKind.UPSCALE:
        return job.width * job.height / UNIT_PIXELS * UPSCALE_UNITS_PER_TILE + faces
    if job.kind == JobKind.DESCRIBE:
        return DESCRIBE_UNITS
    if job.kind == JobKind.SEGMENT:
        return SEGMENT_UNITS  # one CLIPSeg pass at 352 px; its count is the inpaint's to come
    if job.plot_json:
        # A cell's steps override the job's; a cell's denoising changes the hires pass's
        # strength only, and that pass runs exactly its steps whatever the strength.
        cell_steps = [cell.steps or job.steps for cell in plot_options(job.plot_json).cells]
    else:
        cell_steps = [job.steps] * job.count
    return sum(_image_cost(job, steps) for steps in cell_steps) + faces


def _image_cost(job: Job | JobParameters, steps: int) -> float:
    pixels = job.width * job.height
    if job.init_image_path is not None and job.denoising_strength is not None:
        run = sum(_img2img_steps(steps, strength) for strength in _loopback_strengths(job))
    else:
        run = steps
    cost = pixels / UNIT_PIXELS * run / UNIT_STEPS
    if job.hires_scale is not None and job.hires_scale > 1:
        hires_pixels = _floor8(job.width * job.hires_scale) * _floor8(job.height * job.hires_scale)
        cost += hires_pixels / UNIT_PIXELS * (job.hires_steps or steps) / UNIT_STEPS
    return cost * _model_calls_per_step(job.prompt)


def _model_calls_per_step(prompt: str) -> int:
    """The UNet calls a step makes, against a plain prompt's one (its uncond and cond): AND's
    parts and the uncond run two a call (inference.conditioning.and_prompts_unet), so a
    prompt of 250 ANDs, charged as a plain one, held the GPU 125 times as long."""
    return math.ceil((1 + len(composable_prompts(strip_loras(prompt)))) / 2)


def _img2img_steps(steps: int, strength: float) -> int:
    """inference.img2img.img2img_schedule's count: the last int(steps * strength) steps, at
    least one unless the strength is 0."""
    if strength <= 0:
        return 0
    return max(1, min(int(steps * strength), steps))


def _loopback_strengths(job: Job | JobParameters) -> list[float]:
    """inference.img2img.loopback_strengths: the strength moves linearly over the passes."""
    first = job.denoising_strength or 0.0
    count = job.loopback_count or 1
    last = first if job.loopback_final_strength is None else job.loopback_final_strength
    if count == 1:
        return [first]
    return [first + (last - first) * index / (count - 1) for index in range(count)]


def _floor8(value: float) -> int:
    return max(8, int(value + 1e-6) // 8 * 8)


def format_units(units: float) -> str:
    """960 as "960", 1234.5 as "1,234", and a small job's fraction with two figures ("0.75")."""
    return f"{units:,.0f}" if units >= 10 else f"{units:.2g}"


def cost_refusal(costs: list[float], waiting_cost: float, max_job_cost: float, max_waiting_cost: float) -> str | None:
    """Why these jobs may not be queued for a member whose waiting jobs cost ``waiting_cost``,
    under these caps (the bot's [queue] max_job_cost and max_waiting_cost_per_member, or a
    server's own from /admin limits), or None; 0 is no cap."""
    worst = max(costs, default=0.0)
    if max_job_cost and worst > max_job_cost:
        what = "This job costs" if len(costs) == 1 else "One of these jobs costs"
        return (
            f"{what} {format_units(worst)} units of GPU time ({UNIT_MEANING}); this server allows at "
            f"most {format_units(max_job_cost)} per job. Use fewer images or plot cells, a smaller "
            "size, fewer steps or a smaller hires fix."
        )
    asked = sum(costs)
    cap = max_waiting_cost
    if cap and waiting_cost + asked > cap:
        return (
            f"Your waiting jobs cost {format_units(waiting_cost)} units of GPU time and this asks for "
            f"{format_units(asked)} more ({UNIT_MEANING}); this server allows {format_units(cap)} waiting "
            "per member. Wait for some of your jobs to start, or cancel one with /cancel."
        )
    return None
