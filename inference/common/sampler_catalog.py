"""AUTOMATIC1111 1.10's samplers and schedule types, with what A1111 records for each.

Torch-free, so that the bot can list and validate names from it. The numbers a sampler needs
(its sigmas, its step counts) are computed by inference/schedules.py from these records.

A1111 1.10 lists its samplers in three modules: k-diffusion's (sd_samplers_kdiffusion.py), the
timestep samplers (sd_samplers_timesteps.py: DDIM, DDIM CFG++, PLMS, UniPC) and LCM
(sd_samplers_lcm.py). The schedule type is a separate choice (sd_schedulers.py); "Automatic"
means the sampler's own default, and for a sampler without one the model's uniform spacing
of t from 999 to 0. Names such as "DPM++ 2M Karras" are what A1111 wrote before 1.9 split the
schedule type off; they are still read, as A1111's get_sampler_and_scheduler reads them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from types import MappingProxyType

# --- schedule types ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleType:
    """One entry of A1111's sd_schedulers.schedulers."""

    label: str  # what the UI lists and infotext writes ("SGM Uniform")
    name: str  # A1111's internal name, also accepted at the end of a combined name
    aliases: tuple[str, ...] = ()
    # rho of Karras / Polyexponential (A1111's default_rho; None where the formula has none).
    default_rho: float | None = None
    # Reads the model's own sigma table (A1111's need_inner_model) rather than only its ends.
    needs_model_sigmas: bool = False


AUTOMATIC = "Automatic"

SCHEDULE_TYPES: MappingProxyType[str, ScheduleType] = MappingProxyType(
    {
        schedule.label: schedule
        for schedule in (
            ScheduleType(AUTOMATIC, "automatic"),
            ScheduleType("Uniform", "uniform", needs_model_sigmas=True),
            ScheduleType("Karras", "karras", default_rho=7.0),
            ScheduleType("Exponential", "exponential"),
            ScheduleType("Polyexponential", "polyexponential", default_rho=1.0),
            ScheduleType("SGM Uniform", "sgm_uniform", ("SGMUniform",), needs_model_sigmas=True),
            ScheduleType("KL Optimal", "kl_optimal"),
            ScheduleType("Align Your Steps", "align_your_steps"),
            ScheduleType("Simple", "simple", needs_model_sigmas=True),
            ScheduleType("Normal", "normal", needs_model_sigmas=True),
            ScheduleType("DDIM", "ddim", needs_model_sigmas=True),
            ScheduleType("Beta", "beta", needs_model_sigmas=True),
        )
    }
)

SCHEDULE_TYPE_LABELS: tuple[str, ...] = tuple(SCHEDULE_TYPES)

# A1111's defaults for the Beta schedule's distribution (options beta_dist_alpha/_beta).
BETA_DISTRIBUTION_ALPHA = 0.6
BETA_DISTRIBUTION_BETA = 0.6


# --- samplers --------------------------------------------------------------------------------

K_DIFFUSION = "k-diffusion"  # a k_diffusion.sampling function over sigmas (CompVisDenoiser)
TIMESTEPS = "timesteps"  # an A1111 sampler over integer timesteps (sd_samplers_timesteps_impl)
LCM = "lcm"  # k-diffusion style, over LCM's 50-timestep denoiser (sd_samplers_lcm)


@dataclass(frozen=True, slots=True)
class SamplerInfo:
    """One A1111 1.10 sampler and the options A1111's SamplerData records for it."""

    name: str
    family: str  # K_DIFFUSION, TIMESTEPS or LCM
    function: str  # the k_diffusion.sampling function or A1111's own sampler function
    aliases: tuple[str, ...]
    # The schedule type "Automatic" stands for (A1111's 'scheduler' option); None: the
    # model's uniform spacing (k-diffusion's get_sigmas), or integer timesteps for TIMESTEPS.
    automatic_schedule: str | None = None
    discard_next_to_last_sigma: bool = False
    # Two model evaluations a step: A1111 doubles the steps prompt editing counts over.
    second_order: bool = False
    # A1111 writes ENSD into infotext for it (when eta is not 0).
    uses_ensd: bool = False
    # Its noise comes from a Brownian tree seeded with the image seeds (BrownianTreeNoiseSampler).
    brownian_noise: bool = False
    solver_type: str | None = None  # passed to sample_dpmpp_2m_sde ("heun")
    # Takes eta; A1111's default and the infotext key it writes when eta differs from it.
    uses_eta: bool = False
    eta_default: float | None = None
    eta_infotext_key: str | None = None

    @property
    def evaluations_per_step(self) -> int:
        return 2 if self.second_order else 1

    def total_steps(self, steps: int) -> int:
        """The steps prompt editing spreads "[a:b:when]" over (A1111's SamplerData.total_steps)."""
        return steps * self.evaluations_per_step

    @property
    def schedule_types(self) -> tuple[str, ...]:
        """The schedule types it can run with: every one for a sigma sampler; the timestep
        samplers ignore the choice in A1111, so only Automatic is accepted for them."""
        if self.family == TIMESTEPS:
            return (AUTOMATIC,)
        return SCHEDULE_TYPE_LABELS

    def accepts(self, schedule_type: str) -> bool:
        return schedule_type in self.schedule_types

    def resolve_schedule(self, schedule_type: str) -> str | None:
        """The schedule type that actually runs: Automatic is the sampler's default (None:
        the model's uniform spacing), as A1111's KDiffusionSampler.get_sigmas resolves it."""
        if schedule_type == AUTOMATIC:
            return self.automatic_schedule
        return schedule_type


def _k_diffusion(name: str, function: str, aliases: tuple[str, ...], **options) -> SamplerInfo:
    # k-diffusion's sampler passes eta when the function takes it (A1111: eta_ancestral, 1.0).
    if options.pop("eta", False):
        options.update(uses_eta=True, eta_default=1.0, eta_infotext_key="Eta")
    return SamplerInfo(name, K_DIFFUSION, function, aliases, **options)


def _timesteps(name: str, function: str, aliases: tuple[str, ...], eta: bool = False) -> SamplerInfo:
    # The timestep samplers' eta is eta_ddim (0.0), written as "Eta DDIM".
    if eta:
        return SamplerInfo(
            name, TIMESTEPS, function, aliases, uses_eta=True, eta_default=0.0, eta_infotext_key="Eta DDIM"
        )
    return SamplerInfo(name, TIMESTEPS, function, aliases)


_KARRAS = "Karras"
_EXPONENTIAL = "Exponential"

# In A1111 1.10's order (all_samplers): the first is its default sampler.
SAMPLERS: MappingProxyType[str, SamplerInfo] = MappingProxyType(
    {
        sampler.name: sampler
        for sampler in (
            _k_diffusion("DPM++ 2M", "sample_dpmpp_2m", ("k_dpmpp_2m",), automatic_schedule=_KARRAS),
            _k_diffusion(
                "DPM++ SDE",
                "sample_dpmpp_sde",
                ("k_dpmpp_sde",),
                automatic_schedule=_KARRAS,
                second_order=True,
                brownian_noise=True,
                eta=True,
            ),
            _k_diffusion(
                "DPM++ 2M SDE",
                "sample_dpmpp_2m_sde",
                ("k_dpmpp_2m_sde",),
                automatic_schedule=_EXPONENTIAL,
                brownian_noise=True,
                eta=True,
            ),
            _k_diffusion(
                "DPM++ 2M SDE Heun",
                "sample_dpmpp_2m_sde",
                ("k_dpmpp_2m_sde_heun",),
                automatic_schedule=_EXPONENTIAL,
                brownian_noise=True,
                solver_type="heun",
                eta=True,
            ),
            _k_diffusion(
                "DPM++ 2S a",
                "sample_dpmpp_2s_ancestral",
                ("k_dpmpp_2s_a",),
                automatic_schedule=_KARRAS,
                uses_ensd=True,
                second_order=True,
                eta=True,
            ),
            _k_diffusion(
                "DPM++ 3M SDE",
                "sample_dpmpp_3m_sde",
                ("k_dpmpp_3m_sde",),
                automatic_schedule=_EXPONENTIAL,
                discard_next_to_last_sigma=True,
                brownian_noise=True,
                eta=True,
            ),
            _k_diffusion(
                "Euler a",
                "sample_euler_ancestral",
                ("k_euler_a", "k_euler_ancestral"),
                uses_ensd=True,
                eta=True,
            ),
            _k_diffusion("Euler", "sample_euler", ("k_euler",)),
            _k_diffusion("LMS", "sample_lms", ("k_lms",)),
            _k_diffusion("Heun", "sample_heun", ("k_heun",), second_order=True),
            _k_diffusion(
                "DPM2",
                "sample_dpm_2",
                ("k_dpm_2",),
                automatic_schedule=_KARRAS,
                discard_next_to_last_sigma=True,
                second_order=True,
            ),
            _k_diffusion(
                "DPM2 a",
                "sample_dpm_2_ancestral",
                ("k_dpm_2_a",),
                automatic_schedule=_KARRAS,
                discard_next_to_last_sigma=True,
                uses_ensd=True,
                second_order=True,
                eta=True,
            ),
            # DPM fast and adaptive take only the ends of the range and a step count, so their
            # schedule type matters only in img2img, where the ends come from the schedule.
            _k_diffusion("DPM fast", "sample_dpm_fast", ("k_dpm_fast",), uses_ensd=True, eta=True),
            _k_diffusion("DPM adaptive", "sample_dpm_adaptive", ("k_dpm_ad",), uses_ensd=True, eta=True),
            _k_diffusion(
                "Restart", "restart_sampler", ("restart",), automatic_schedule=_KARRAS, second_order=True
            ),
            _timesteps("DDIM", "ddim", ("ddim",), eta=True),
            _timesteps("DDIM CFG++", "ddim_cfgpp", ("ddim_cfgpp",), eta=True),
            _timesteps("PLMS", "plms", ("plms",)),
            _timesteps("UniPC", "unipc", ("unipc",)),
            SamplerInfo("LCM", LCM, "sample_lcm", ("k_lcm",)),
        )
    }
)

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_SAMPLER = SAMPLER_NAMES[0]

# UniPC's settings at A1111's defaults (uni_pc_variant, _skip_type, _order, _lower_order_final).
UNIPC_OPTIONS = MappingProxyType(
    {"variant": "bh1", "skip_type": "time_uniform", "order": 3, "lower_order_final": True}
)


# --- names -----------------------------------------------------------------------------------


class UnknownNameError(ValueError):
    """A sampler or schedule type name A1111 does not have; ``suggestions`` are the closest."""

    def __init__(self, kind: str, name: str, suggestions: tuple[str, ...]):
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}.{hint}")


class UnknownSamplerError(UnknownNameError):
    def __init__(self, name: str):
        super().__init__("sampler", name, closest_names(name, SAMPLER_NAMES))


class UnknownScheduleTypeError(UnknownNameError):
    def __init__(self, name: str):
        super().__init__("schedule type", name, closest_names(name, SCHEDULE_TYPE_LABELS))


class ScheduleNotAcceptedError(ValueError):
    """A schedule type the sampler cannot run with."""

    def __init__(self, sampler: str, schedule_type: str):
        self.sampler = sampler
        self.schedule_type = schedule_type
        accepted = ", ".join(SAMPLERS[sampler].schedule_types)
        super().__init__(f"{sampler} cannot use the schedule type {schedule_type!r} (it takes: {accepted})")


def _folded(name: str) -> str:
    return " ".join(name.split()).casefold()


def closest_names(name: str, choices: tuple[str, ...], count: int = 3) -> tuple[str, ...]:
    """The known names nearest to ``name`` (difflib's ratio, ignoring case), best first."""
    by_folded = {_folded(choice): choice for choice in choices}
    matches = difflib.get_close_matches(_folded(name), list(by_folded), n=count, cutoff=0.5)
    return tuple(by_folded[match] for match in matches)


def _lookup_table(entries) -> dict[str, str]:
    table: dict[str, str] = {}
    for label, spellings in entries:
        for spelling in spellings:
            table.setdefault(_folded(spelling), label)
    return table


_SAMPLER_SPELLINGS = _lookup_table((s.name, (s.name, *s.aliases)) for s in SAMPLERS.values())
_SCHEDULE_SPELLINGS = _lookup_table(
    (t.label, (t.label, t.name, *t.aliases)) for t in SCHEDULE_TYPES.values()
)


def find_sampler(name: str) -> str | None:
    """A1111's spelling of a sampler name or alias typed with any case or spacing, or None."""
    return _SAMPLER_SPELLINGS.get(_folded(name))


def find_schedule_type(name: str) -> str | None:
    """A1111's label of a schedule type named by label, internal name or alias, or None."""
    return _SCHEDULE_SPELLINGS.get(_folded(name))


def sampler_named(name: str) -> SamplerInfo:
    """The sampler, or UnknownSamplerError with the closest names."""
    found = find_sampler(name)
    if found is None:
        raise UnknownSamplerError(name)
    return SAMPLERS[found]


def schedule_type_named(name: str) -> ScheduleType:
    """The schedule type, or UnknownScheduleTypeError with the closest names."""
    found = find_schedule_type(name)
    if found is None:
        raise UnknownScheduleTypeError(name)
    return SCHEDULE_TYPES[found]


def split_combined_name(
    name: str, schedule_type: str | None = None, *, convert_automatic: bool = True
) -> tuple[str, str]:
    """(sampler, schedule type) from a name such as "DPM++ 2M Karras", as A1111 reads it.

    As A1111's get_sampler_and_scheduler: a schedule type's label, internal name or alias at
    the end of the name is stripped and wins over ``schedule_type``; with
    ``convert_automatic`` a schedule type equal to the sampler's default becomes Automatic,
    as A1111 shows it. Unlike A1111, the longest such ending is stripped (A1111 tries
    "Uniform" before "SGM Uniform" and so misreads "Euler SGM Uniform"), case is ignored,
    and an unknown sampler or schedule type raises with the closest names suggested instead
    of falling back to the default sampler.
    """
    found_schedule = AUTOMATIC if schedule_type is None else schedule_type_named(schedule_type).label
    remaining = " ".join(name.split())
    suffixes = [
        (spelling, schedule.label)
        for schedule in SCHEDULE_TYPES.values()
        for spelling in (schedule.label, schedule.name, *schedule.aliases)
        if remaining.lower().endswith(" " + spelling.lower())
    ]
    if suffixes:
        spelling, found_schedule = max(suffixes, key=lambda suffix: len(suffix[0]))
        remaining = remaining[: -(len(spelling) + 1)]
    sampler = sampler_named(remaining)
    if convert_automatic and sampler.automatic_schedule == found_schedule:
        found_schedule = AUTOMATIC
    return sampler.name, found_schedule


def checked_choice(sampler: str, schedule_type: str = AUTOMATIC) -> tuple[str, str]:
    """(sampler, schedule type) in A1111's spelling, refused with a reason if unknown or if the
    sampler cannot use the schedule type. ``sampler`` may be a combined name."""
    name, schedule = split_combined_name(sampler, schedule_type, convert_automatic=False)
    if not SAMPLERS[name].accepts(schedule):
        raise ScheduleNotAcceptedError(name, schedule)
    return name, schedule


def infotext_fields(sampler: str, schedule_type: str = AUTOMATIC) -> dict[str, str]:
    """The "Sampler" and "Schedule type" infotext fields as A1111 1.10 writes them.

    A1111 writes the schedule type that ran (Automatic resolved to the sampler's default, so
    "DPM++ 2M" with Automatic writes "Schedule type: Karras"), and none when the model's
    uniform spacing ran (Euler with Automatic) or for the timestep samplers.
    """
    info = SAMPLERS[sampler]
    fields = {"Sampler": info.name}
    resolved = info.resolve_schedule(schedule_type)
    if info.family != TIMESTEPS and resolved is not None:
        fields["Schedule type"] = resolved
    return fields


def combined_name(sampler: str, schedule_type: str = AUTOMATIC) -> str:
    """The single name A1111 wrote before 1.9 ("DPM++ 2M Karras"): the sampler, then the
    schedule type that runs, so that old and new A1111 versions both read the same choice."""
    info = SAMPLERS[sampler]
    resolved = info.resolve_schedule(schedule_type)
    return info.name if resolved is None else f"{info.name} {resolved}"
