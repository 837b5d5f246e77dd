"""The riders of a batch claim (JobQueue.claim_batch): which waiting jobs may share the first
job's pass, and whose of them are read at all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from db.models import Job, JobStatus
from inference.common.batch_keys import BATCHABLE_KINDS


def rider_conditions(first: Job, room: int) -> tuple[Any, ...]:
    """The waiting jobs that may share ``first``'s pass, ``room`` images at most each."""
    return (
        Job.status == JobStatus.PENDING,
        Job.kind.in_([str(kind) for kind in BATCHABLE_KINDS]),
        Job.model == first.model,
        Job.width == first.width,
        Job.height == first.height,
        Job.steps == first.steps,
        Job.sampler == first.sampler,
        Job.cfg_scale == first.cfg_scale,
        Job.tiling == first.tiling,
        Job.vae == first.vae,
        # One sampler run: one schedule, eta and noise source for the pass (whether the
        # worker's batch key names them or not).
        Job.schedule_type == first.schedule_type,
        Job.rng == first.rng,
        Job.eta_noise_seed_delta == first.eta_noise_seed_delta,
        Job.eta.is_not_distinct_from(first.eta),
        Job.seed_resize_from_width.is_not_distinct_from(first.seed_resize_from_width),
        Job.seed_resize_from_height.is_not_distinct_from(first.seed_resize_from_height),
        Job.count <= room,
    )


def nearest_members(firsts: Sequence[Any], usage: dict[int, float], room: int) -> list[int]:
    """The members whose riders are read: ``firsts`` is (member, their first compatible job's
    id) of every member with one. In fair order a member's jobs come after their first, which
    comes at (their use, its id) (queue.fair_order), so the first N jobs of the fair order all
    belong to the N members whose first jobs come first: the riders taken (``room`` at most,
    more when some are passed over) are the same as from every compatible job. With 10,000 jobs
    waiting, reading and ordering them all took seconds a batch."""
    ordered = sorted(firsts, key=lambda row: (usage.get(row[0], 0.0), row[1]))
    return [member for member, _ in ordered[: 2 * room + 8]]
