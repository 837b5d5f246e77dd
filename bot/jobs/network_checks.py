"""LoRAs and embeddings checked against the model each image of a job runs on, before queuing.

Runs on every job a command or button queues (bot.policy.gate.check_jobs, and `sdbot
generate`): a job re-run on another model, and an X/Y plot's cells with a model axis, are
checked against their own model, not the one the prompt was first written for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot.jobs.job_rows import plot_options
from bot.jobs.model_checks import model_family
from bot.prompts.networks import check_network_families

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.jobs.params import JobParameters


def check_job_networks(settings: Settings, jobs: Iterable[JobParameters]) -> None:
    """Raise InvalidOption for the first LoRA or embedding made for another family than the
    model its image runs on (bot.prompts.networks.check_network_families)."""
    for job in jobs:
        # A plot's cells cover all its images, each the job's values but for its overrides.
        cells = plot_options(job.plot_json).cells if job.plot_json else ()
        runs = [(job.model, job.prompt, job.negative_prompt)] if not cells else [
            (
                cell.model or job.model,
                job.prompt if cell.prompt is None else cell.prompt,
                job.negative_prompt if cell.negative_prompt is None else cell.negative_prompt,
            )
            for cell in cells
        ]
        for model_name, prompt, negative_prompt in dict.fromkeys(runs):
            model = settings.model(model_name)
            if model is not None:  # a model gone is refused by the gate, in its own words
                check_network_families(settings, model.name, model_family(model), prompt, negative_prompt)
