"""A job row on its way out: the request the worker runs, and the jobs made from it.

The row holds every JobParameters field (bot.jobs.params); here it becomes the protocol's
GenerateRequest, with the workflow's options grouped, and the parameters of the jobs its
buttons make (reroll, remix, variations), each remembering its parent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from bot.jobs.params import DEFAULT_REFINER_SWITCH_AT, JobParameters, random_seed
from inference.common.merge_options import MergeMethod, MergeOptions, MergeSource
from inference.common.protocol import (
    DescribeOptions,
    GenerateRequest,
    HiresFix,
    ImageInput,
    InpaintOptions,
    JobKind,
    OutpaintOptions,
    PlotCell,
    PlotOptions,
    RestoreFacesOptions,
    SegmentOptions,
    UpscaleOptions,
)

if TYPE_CHECKING:
    from db.models import Job


def image_seeds(job: Job | JobParameters) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-image seeds and subseeds of a job, the one rule used to run and to record it.

    A batch follows A1111: image i has seed + i, so re-running image i alone with its seed
    reproduces it. Variations keep the parent image's seed for every image and vary the
    subseed (subseed + i), so the composition stays and only the variation noise differs.
    """
    if job.kind == JobKind.VARIATION:
        assert job.subseed is not None, "a variation job always has a subseed"
        return (job.seed,) * job.count, tuple(job.subseed + i for i in range(job.count))
    if job.kind == JobKind.PLOT and job.plot_json:
        # As A1111's scripts: every cell has the job's seed unless the cell sets its own.
        cells = plot_options(job.plot_json).cells
        return tuple(job.seed if cell.seed is None else cell.seed for cell in cells), ()
    return tuple(job.seed + i for i in range(job.count)), ()


# The protocol's workflow groups, and the job columns named otherwise than the group's fields
# they fill; a field without a column (outpaint's blend) keeps the group's default.
_WORKFLOW_GROUPS: dict[str, tuple[type, dict[str, str]]] = dict(
    image=(ImageInput, {"path": "init_image_path"}),
    inpaint=(InpaintOptions, {"only_masked": "inpaint_only_masked", "only_masked_padding": "inpaint_padding"}),
    outpaint=(OutpaintOptions, {side: f"outpaint_{side}" for side in ("left", "right", "top", "bottom")}),
    hires=(HiresFix, {"scale": "hires_scale", "steps": "hires_steps", "denoising_strength": "hires_denoising", "upscaler": "hires_upscaler"}),
    upscale=(UpscaleOptions, {"scale": "upscale_factor"}),
    restore_faces=(RestoreFacesOptions, {"restorer": "face_restorer", "visibility": "face_visibility"}),
    describe=(DescribeOptions, {}),
    segment=(SegmentOptions, {name: f"segment_{name}" for name in ("words", "threshold", "dilation")}),
)
_JOB_COLUMNS = frozenset(f.name for f in fields(JobParameters))
# The request's fields that are a job's columns under the same name.
_SAME_NAMED = tuple(f.name for f in fields(GenerateRequest) if f.name in _JOB_COLUMNS)


def _workflow_group(job: Job, group: type, renamed: dict[str, str]) -> object:
    """One of the protocol's workflow groups from a job's columns; an empty column (None, "")
    leaves the group's default."""
    values = {}
    for option in fields(group):
        column = renamed.get(option.name, option.name)
        value = getattr(job, column) if column in _JOB_COLUMNS else None
        if value is None or value == "":
            continue
        # A closed set (ResizeMode, MaskedContent) is stored as its value.
        values[option.name] = type(option.default)(value) if isinstance(option.default, Enum) else value
    return group(**values)


def generate_request(job: Job) -> GenerateRequest:
    """The worker's request for a job row: its own columns, its seeds per image, and its
    workflow's options grouped as the protocol declares them."""
    seeds, subseeds = image_seeds(job)
    has_group = dict(
        image=job.init_image_path is not None,
        inpaint=job.mask_path is not None,
        outpaint=job.kind == JobKind.OUTPAINT,
        hires=job.hires_scale is not None and job.hires_scale > 1,
        upscale=job.kind in (JobKind.UPSCALE, JobKind.SD_UPSCALE),
        restore_faces=job.face_restorer is not None,
        describe=job.kind == JobKind.DESCRIBE,
        segment=job.kind == JobKind.SEGMENT,
    )
    groups = {
        name: _workflow_group(job, group, renamed) if has_group[name] else None
        for name, (group, renamed) in _WORKFLOW_GROUPS.items()
    }
    return GenerateRequest(**{
        **{name: getattr(job, name) for name in _SAME_NAMED},
        **groups,
        "job_id": job.id,
        "kind": JobKind(job.kind),
        "seeds": seeds,
        "subseeds": subseeds,
        "subseed_strength": job.subseed_strength if subseeds else 0.0,
        "plot": plot_options(job.plot_json) if job.plot_json else None,
        "merge": merge_options(job.merge_json) if job.merge_json else None,
        "seed_resize_from": seed_resize_of(job),
        "tiling": bool(job.tiling),
        "safety_check": bool(job.safety_check),
        **_refiner_fields(job),
    })


def _refiner_fields(job: Job) -> dict[str, object]:
    """The refiner finishes txt2img and variations (in the hires fix's second pass when it is
    on); an image workflow made from a refined job's image (inpaint, zoom out...) runs on its
    model alone."""
    if not job.refiner or JobKind(job.kind) not in (JobKind.TXT2IMG, JobKind.VARIATION):
        return {"refiner": "", "refiner_switch_at": DEFAULT_REFINER_SWITCH_AT}
    return {"refiner": job.refiner, "refiner_switch_at": job.refiner_switch_at or DEFAULT_REFINER_SWITCH_AT}


def seed_resize_of(job: Job | JobParameters) -> tuple[int, int] | None:
    """A job's "Resize seed from" (width, height), or None when off."""
    if job.seed_resize_from_width and job.seed_resize_from_height:
        return job.seed_resize_from_width, job.seed_resize_from_height
    return None


def sampling_options(job: Job | JobParameters) -> dict[str, object]:
    """A job's sampler and noise choices as GenerationOptions fields: what work derived from
    its images (Vary, Remix, Upscale's img2img, zoom) keeps."""
    resize = seed_resize_of(job)
    return dict(
        sampler=job.sampler,
        schedule_type=job.schedule_type,
        rng=job.rng,
        ensd=job.eta_noise_seed_delta,
        eta=job.eta,
        seed_resize_from=f"{resize[0]}x{resize[1]}" if resize else None,
    )


def plot_options(text: str) -> PlotOptions:
    """PlotOptions from the JSON a job row keeps (plot_json)."""
    data = json.loads(text)
    cells = tuple(PlotCell(**cell) for cell in data.pop("cells"))
    return PlotOptions(cells=cells, **{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})


def plot_json(plot: PlotOptions) -> str:
    return json.dumps(asdict(plot))


def merge_options(text: str) -> MergeOptions:
    """MergeOptions from the JSON a merge job's row keeps (merge_json)."""
    data = json.loads(text)
    sources = {role: MergeSource(**data[role]) if data.get(role) else None for role in ("primary", "secondary", "tertiary")}
    return MergeOptions(**{**data, **sources, "method": MergeMethod(data["method"])})


def merge_json(merge: MergeOptions) -> str:
    return json.dumps(asdict(merge))


def merge_summary(merge: MergeOptions) -> str:
    """A merge in one line, as its formula: "Weighted sum: a x 0.7 + b x 0.3 → `mix`"."""
    a, m = merge.primary.name, merge.multiplier
    b = merge.secondary.name if merge.secondary else "B"
    c = merge.tertiary.name if merge.tertiary else "C"
    formula = {
        MergeMethod.NO_INTERPOLATION: a,
        MergeMethod.WEIGHTED_SUM: f"{a} x {round(1 - m, 4):g} + {b} x {m:g}",
        MergeMethod.ADD_DIFFERENCE: f"{a} + ({b} - {c}) x {m:g}",
    }[MergeMethod(merge.method)]
    vae = f", VAE {merge.vae_name}" if merge.vae_path else ""
    return f"{MergeMethod(merge.method).value}: {formula}{vae} → `{Path(merge.output).stem}`"


def parameters_of(job: Job) -> JobParameters:
    """A job row's parameters (the row has a column for every field)."""
    values = {f.name: getattr(job, f.name) for f in fields(JobParameters)}
    return JobParameters(**{**values, "kind": JobKind(job.kind)})


def job_columns(params: JobParameters) -> dict[str, object]:
    """The jobs-table columns for these parameters."""
    return {**asdict(params), "kind": params.kind.value}


def reroll_of(job: Job) -> JobParameters:
    """Same parameters, new seeds (and no variation): Midjourney's 🔄. The workflow stays: an
    img2img, inpaint or outpaint reroll works on the same source image and mask, a plot stays a
    plot (its cells keep what they set, a Seed axis's seeds included); a variation is txt2img."""
    return replace(
        parameters_of(job),
        kind=JobKind.TXT2IMG if job.kind == JobKind.VARIATION else JobKind(job.kind),
        seed=random_seed(),
        subseed=None,
        subseed_strength=0.0,
        parent_job_id=job.id,
        parent_image_index=None,
    )


# What Remix takes from the edited parameters: all that the prompts and their inline parameters
# set. The workflow (source image, mask...), the count and the kind stay the job's.
REMIXED = (
    "prompt", "negative_prompt", "model", "width", "height", "steps", "cfg_scale", "sampler", "seed", "tiling", "vae",
    "clip_skip", "schedule_type", "eta",
)


def remix_of(job: Job, edited: JobParameters) -> JobParameters:
    """The same job with what the user edited in Remix (the prompts, and any inline parameters
    they wrote, resolved and checked as `edited`): the same seeds unless they gave one, the
    same workflow. Midjourney's remix."""
    remixed = {name: getattr(edited, name) for name in REMIXED}
    return replace(parameters_of(job), **remixed, parent_job_id=job.id, parent_image_index=None)


def variation_of(job: Job, image_index: int, seed: int, strength: float, count: int) -> JobParameters:
    """A1111 variations of one image: its seed, new variation seeds, a blend strength."""
    return replace(
        parameters_of(job),
        kind=JobKind.VARIATION,
        count=count,
        seed=seed,
        subseed=random_seed(),
        subseed_strength=strength,
        parent_job_id=job.id,
        parent_image_index=image_index,
    )
