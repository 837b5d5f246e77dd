"""A1111 sampler names and the diffusers schedulers that implement them.

The registry names scheduler classes as strings so that the bot can list and validate sampler
names without importing torch or diffusers; the worker resolves the class when it swaps the
scheduler (``Cls.from_config(pipe.scheduler.config, **options)``).

The pairs follow diffusers' own "A1111 / k-diffusion" table. A1111 has no exact counterpart
in diffusers for "DPM++ 2S a"; the single-step DPM-Solver++ is the closest, as that table says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    # Ancestral and SDE samplers draw fresh noise every step from the job's generators.
    stochastic: bool = False


_KARRAS = {"use_karras_sigmas": True}

SAMPLERS: MappingProxyType[str, SamplerSpec] = MappingProxyType(
    {
        "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler", stochastic=True),
        "Euler": SamplerSpec("EulerDiscreteScheduler"),
        "LMS": SamplerSpec("LMSDiscreteScheduler"),
        "LMS Karras": SamplerSpec("LMSDiscreteScheduler", _KARRAS),
        "Heun": SamplerSpec("HeunDiscreteScheduler"),
        "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
        "DPM2 Karras": SamplerSpec("KDPM2DiscreteScheduler", _KARRAS),
        "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler", stochastic=True),
        "DPM2 a Karras": SamplerSpec("KDPM2AncestralDiscreteScheduler", _KARRAS, stochastic=True),
        "DPM++ 2S a": SamplerSpec("DPMSolverSinglestepScheduler"),
        "DPM++ 2S a Karras": SamplerSpec("DPMSolverSinglestepScheduler", _KARRAS),
        "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler"),
        "DPM++ 2M Karras": SamplerSpec("DPMSolverMultistepScheduler", _KARRAS),
        "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler", stochastic=True),
        "DPM++ SDE Karras": SamplerSpec("DPMSolverSDEScheduler", _KARRAS, stochastic=True),
        "DPM++ 2M SDE": SamplerSpec(
            "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, stochastic=True
        ),
        "DPM++ 2M SDE Karras": SamplerSpec(
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", **_KARRAS},
            stochastic=True,
        ),
        "DDIM": SamplerSpec("DDIMScheduler"),
        "UniPC": SamplerSpec("UniPCMultistepScheduler"),
    }
)

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def find_sampler(name: str) -> str | None:
    """The registry's spelling of a sampler name typed with any case or spacing, or None."""
    wanted = " ".join(name.split()).casefold()
    for known in SAMPLERS:
        if known.casefold() == wanted:
            return known
    return None


def split_schedule_type(name: str) -> tuple[str, str | None]:
    """A1111 >= 1.9 writes "Sampler: DPM++ 2M, Schedule type: Karras" in infotext."""
    if name.endswith(" Karras"):
        return name.removesuffix(" Karras"), "Karras"
    return name, None
