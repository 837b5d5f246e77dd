"""The riders of a batch claim (JobQueue.claim_batch): which waiting jobs may share the first
job's pass."""

from __future__ import annotations

from typing import Any

from db.models import Job, JobStatus
from inference.common.batch_keys import BATCHABLE_KINDS


def rider_conditions(jobs: Any, first: Job, room: int) -> tuple[Any, ...]:
    """The waiting jobs (``jobs``: the jobs table as the query names it, an alias) that may
    share ``first``'s pass, ``room`` images at most each."""
    return (
        jobs.status == JobStatus.PENDING,
        jobs.kind.in_([str(kind) for kind in BATCHABLE_KINDS]),
        jobs.model == first.model,
        jobs.width == first.width,
        jobs.height == first.height,
        jobs.steps == first.steps,
        jobs.sampler == first.sampler,
        jobs.cfg_scale == first.cfg_scale,
        jobs.tiling == first.tiling,
        jobs.vae == first.vae,
        # One sampler run: one schedule, eta and noise source for the pass (whether the
        # worker's batch key names them or not).
        jobs.schedule_type == first.schedule_type,
        jobs.rng == first.rng,
        jobs.eta_noise_seed_delta == first.eta_noise_seed_delta,
        jobs.eta.is_not_distinct_from(first.eta),
        jobs.seed_resize_from_width.is_not_distinct_from(first.seed_resize_from_width),
        jobs.seed_resize_from_height.is_not_distinct_from(first.seed_resize_from_height),
        jobs.count <= room,
    )
