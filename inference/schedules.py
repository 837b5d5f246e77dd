"""Sigmas and step counts exactly as AUTOMATIC1111 1.10 computes them.

A1111 runs k-diffusion's samplers over k_diffusion.external.CompVisDenoiser, whose sigma
table comes from the model's alphas_cumprod (sigma_t = sqrt((1 - a_t) / a_t), t = 0..999);
each schedule type of sd_schedulers.py turns that table into the sigmas of N steps. The
arithmetic here follows A1111's and k-diffusion's step by step (float32 tensors where they use
them, numpy's float64 where they use numpy), so that the same seed gives the same image.

The sampler names and their options come from inference/common/sampler_catalog.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from inference.common.sampler_catalog import (
    AUTOMATIC,
    BETA_DISTRIBUTION_ALPHA,
    BETA_DISTRIBUTION_BETA,
    LCM,
    SAMPLERS,
    SCHEDULE_TYPES,
    TIMESTEPS,
)

# Stable Diffusion 1.x/2.x/XL's training noise: ldm's "linear" schedule (scaled-linear betas).
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_TRAIN_TIMESTEPS = 1000


def sd_alphas_cumprod(
    beta_start: float = SD_BETA_START, beta_end: float = SD_BETA_END, timesteps: int = SD_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """The model's alphas_cumprod as ldm registers it: betas linear in sqrt space, computed in
    float64 and stored as float32 (diffusers computes the same betas in float32)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas.numpy(), axis=0)
    return torch.tensor(alphas_cumprod, dtype=torch.float32)


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


class DiscreteSigmas:
    """k-diffusion's DiscreteSchedule as CompVisDenoiser builds it: the model's sigma table
    (ascending, index = timestep) and the conversions between sigma and a fractional t.

    ``quantize`` is A1111's "Enable quantization in K samplers" (off by default): t rounds to
    the nearest timestep instead of interpolating in log sigma.
    """

    def __init__(self, sigmas: torch.Tensor, quantize: bool = False, alphas_cumprod: torch.Tensor | None = None):
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()
        self.quantize = quantize
        # The model's own table, which the timestep samplers step with (None for LCM's).
        self.alphas_cumprod = alphas_cumprod

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor, quantize: bool = False) -> DiscreteSigmas:
        return cls(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, quantize, alphas_cumprod)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int) -> torch.Tensor:
        """n sigmas with t evenly spaced from the last timestep to 0, then 0 (A1111's "Uniform",
        and what Automatic runs for a sampler without a default)."""
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, device=self.sigmas.device)
        return _append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        if self.quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()


class LCMSigmas(DiscreteSigmas):
    """A1111's LCMCompVisDenoiser: the 50 timesteps LCM was distilled on (19, 39, ..., 999)."""

    ORIGINAL_TIMESTEPS = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        timesteps = len(alphas_cumprod)
        self.skip_steps = timesteps // self.ORIGINAL_TIMESTEPS
        valid = torch.zeros(self.ORIGINAL_TIMESTEPS, dtype=torch.float32, device=alphas_cumprod.device)
        for x in range(self.ORIGINAL_TIMESTEPS):
            valid[self.ORIGINAL_TIMESTEPS - 1 - x] = alphas_cumprod[timesteps - 1 - x * self.skip_steps]
        super().__init__(((1 - valid) / valid) ** 0.5, quantize=False)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)
        t = torch.linspace(start, end, n, device=self.sigmas.device)
        return _append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = ((t - (self.skip_steps - 1)) / self.skip_steps).float()
        return super().t_to_sigma(torch.clamp(index, min=0, max=len(self.sigmas) - 1))


def model_sigmas(sampler: str, alphas_cumprod: torch.Tensor, quantize: bool = False) -> DiscreteSigmas:
    """The sigma table the sampler's denoiser wraps the model in (LCM has its own)."""
    if SAMPLERS[sampler].family == LCM:
        return LCMSigmas(alphas_cumprod)
    return DiscreteSigmas.from_alphas_cumprod(alphas_cumprod, quantize)


# --- the schedule types (sd_schedulers.py and k_diffusion.sampling) -------------------------

# Align Your Steps' 10-step sigmas as A1111 lists them (NVIDIA's published values).
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sgm_uniform(n: int, table: DiscreteSigmas, sigma_min: float, sigma_max: float) -> torch.Tensor:
    start = table.sigma_to_t(torch.tensor(sigma_max))
    end = table.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [table.t_to_sigma(t) for t in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor([*sigmas, 0.0])


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n + 1 sigmas from sigma_max down to sigma_min: A1111 appends no 0 to this one."""
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    step_indices = torch.arange(n + 1)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


def align_your_steps(n: int, is_sdxl: bool = False) -> torch.Tensor:
    """NVIDIA's 10-step sigmas, interpolated log-linearly to n (A1111 ignores the model's own
    sigma range here)."""
    sigmas = list(AYS_SDXL if is_sdxl else AYS_SD15)
    if n != len(sigmas):
        xs = np.linspace(0, 1, len(sigmas))
        ys = np.log(sigmas[::-1])
        interpolated = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
        return torch.FloatTensor(np.append(interpolated, [0.0]))
    return torch.FloatTensor([*sigmas, 0.0])


def simple(n: int, table: DiscreteSigmas) -> torch.Tensor:
    stride = len(table.sigmas) / n
    return torch.FloatTensor([*(float(table.sigmas[-(1 + int(x * stride))]) for x in range(n)), 0.0])


def normal(n: int, table: DiscreteSigmas, sigma_min: float, sigma_max: float) -> torch.Tensor:
    start = table.sigma_to_t(torch.tensor(sigma_max))
    end = table.sigma_to_t(torch.tensor(sigma_min))
    return torch.FloatTensor([*(table.t_to_sigma(t) for t in torch.linspace(start, end, n)), 0.0])


def ddim_spacing(n: int, table: DiscreteSigmas) -> torch.Tensor:
    """Every (timesteps // n)-th sigma from t=1 up, reversed: more than n when n does not
    divide the table (A1111's ddim_scheduler)."""
    stride = max(len(table.sigmas) // n, 1)
    sigmas = [float(table.sigmas[x]) for x in range(1, len(table.sigmas), stride)]
    return torch.FloatTensor([*sigmas[::-1], 0.0])


def beta(
    n: int,
    sigma_min: float,
    sigma_max: float,
    alpha: float = BETA_DISTRIBUTION_ALPHA,
    beta_param: float = BETA_DISTRIBUTION_BETA,
) -> torch.Tensor:
    """"Beta Sampling is All You Need" (Lee et al., 2024): linear in sigma along the Beta
    distribution's quantiles."""
    quantiles = [stats.beta.ppf(x, alpha, beta_param) for x in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([*(sigma_min + x * (sigma_max - sigma_min) for x in quantiles), 0.0])


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """A1111's settings that change a schedule, at their defaults (0 or None: the model's)."""

    sigma_min: float = 0.0  # "sigma min" override
    sigma_max: float = 0.0  # "sigma max" override
    rho: float = 0.0  # Karras / Polyexponential rho override
    beta_alpha: float = BETA_DISTRIBUTION_ALPHA
    beta_beta: float = BETA_DISTRIBUTION_BETA
    is_sdxl: bool = False  # Align Your Steps picks its SDXL list
    quantize: bool = False  # "Enable quantization in K samplers"


def schedule_sigmas(
    schedule_type: str | None, n: int, table: DiscreteSigmas, options: ScheduleOptions = ScheduleOptions()
) -> torch.Tensor:
    """The sigmas of one schedule type at n steps over ``table`` (None: the table's uniform
    spacing, what Automatic runs for a sampler without a default). Discarding is the
    sampler's business: see sampler_sigmas."""
    if schedule_type is None or schedule_type in (AUTOMATIC, "Uniform"):
        return table.get_sigmas(n)
    model_min, model_max = table.sigma_min.item(), table.sigma_max.item()
    sigma_min = options.sigma_min if options.sigma_min != 0 else model_min
    sigma_max = options.sigma_max if options.sigma_max != 0 else model_max
    default_rho = SCHEDULE_TYPES[schedule_type].default_rho
    rho = options.rho if options.rho != 0 and default_rho is not None else default_rho
    if schedule_type == "Karras":
        return karras(n, sigma_min, sigma_max, rho)
    if schedule_type == "Exponential":
        return exponential(n, sigma_min, sigma_max)
    if schedule_type == "Polyexponential":
        return polyexponential(n, sigma_min, sigma_max, rho)
    if schedule_type == "SGM Uniform":
        return sgm_uniform(n, table, sigma_min, sigma_max)
    if schedule_type == "KL Optimal":
        return kl_optimal(n, sigma_min, sigma_max)
    if schedule_type == "Align Your Steps":
        return align_your_steps(n, options.is_sdxl)
    if schedule_type == "Simple":
        return simple(n, table)
    if schedule_type == "Normal":
        return normal(n, table, sigma_min, sigma_max)
    if schedule_type == "DDIM":
        return ddim_spacing(n, table)
    if schedule_type == "Beta":
        return beta(n, sigma_min, sigma_max, options.beta_alpha, options.beta_beta)
    raise ValueError(f"unknown schedule type {schedule_type!r}")


def sampler_sigmas(
    sampler: str,
    schedule_type: str,
    steps: int,
    alphas_cumprod: torch.Tensor,
    options: ScheduleOptions = ScheduleOptions(),
) -> torch.Tensor:
    """The sigmas a sampler runs over, as KDiffusionSampler.get_sigmas makes them: Automatic
    resolved to the sampler's default; for a sampler that discards the penultimate sigma, one
    step more is scheduled and that sigma dropped. For a timestep sampler (DDIM, PLMS...),
    the model's sigmas at its timesteps (sampler_timesteps) from the last down, then 0."""
    info = SAMPLERS[sampler]
    table = model_sigmas(sampler, alphas_cumprod, options.quantize)
    if info.family == TIMESTEPS:
        return _append_zero(table.sigmas[sampler_timesteps(sampler, steps)].flip(0))
    scheduled = steps + 1 if info.discard_next_to_last_sigma else steps
    sigmas = schedule_sigmas(info.resolve_schedule(schedule_type), scheduled, table, options)
    if info.discard_next_to_last_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sampler_timesteps(sampler: str, steps: int) -> torch.Tensor:
    """The integer timesteps of A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC):
    every (1000 // steps)-th from 1, so more than ``steps`` when 1000 is not a multiple
    (CompVisSampler.get_timesteps). The samplers walk them from the last down."""
    if SAMPLERS[sampler].family != TIMESTEPS:
        raise ValueError(f"{sampler} runs over sigmas: see sampler_sigmas")
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


# --- step counts: img2img, inpaint, loopback and the hires fix (processing.py) --------------


@dataclass(frozen=True, slots=True)
class Img2ImgSteps:
    """A1111's setup_img2img_steps: a schedule of ``schedule_steps`` of which the sampler
    starts at index ``schedule_steps - t_enc - 1``; a sigma sampler then runs t_enc + 1."""

    schedule_steps: int
    t_enc: int

    @property
    def steps_run(self) -> int:
        return self.t_enc + 1

    @property
    def start_index(self) -> int:
        """Where the run starts in the schedule's sigmas (sigmas[start_index:])."""
        return self.schedule_steps - self.t_enc - 1


def img2img_steps(
    steps: int, strength: float, *, requested_steps: int | None = None, fix_steps: bool = False
) -> Img2ImgSteps:
    """img2img and inpaint (and each loopback pass): int(min(strength, 0.999) * steps) + 1 of
    ``steps`` run, so 20 steps at 0.75 run 16. With ``requested_steps`` (the hires pass) or
    A1111's "do exactly the amount of steps the slider specifies" (``fix_steps``), exactly
    the requested steps run over a schedule of int(requested / strength)."""
    if fix_steps or requested_steps is not None:
        requested = requested_steps or steps
        schedule_steps = int(requested / min(strength, 0.999)) if strength > 0 else 0
        return Img2ImgSteps(schedule_steps, requested - 1)
    return Img2ImgSteps(steps, int(min(strength, 0.999) * steps))


def hires_steps(steps: int, second_pass_steps: int, denoising_strength: float) -> Img2ImgSteps:
    """The hires fix's second pass: its own step count (0: the first pass's) run exactly, so
    20 steps with hires steps 10 at denoise 0.55 schedule 18 and run 10."""
    return img2img_steps(steps, denoising_strength, requested_steps=second_pass_steps or steps)


def img2img_sigmas(sigmas: torch.Tensor, counts: Img2ImgSteps, sampler: str | None = None) -> torch.Tensor:
    """The part of a schedule an img2img run walks; its first sigma scales the noise added to
    the source latents (KDiffusionSampler.sample_img2img). A timestep sampler's (sampler_sigmas
    lists its timesteps, more than the steps when 1000 is not a multiple) ends with the
    first t_enc timesteps, after the (t_enc + 1)-th that the source is noised to
    (CompVisSampler.sample_img2img: img2img_timesteps)."""
    if sampler is not None and SAMPLERS[sampler].family == TIMESTEPS:
        return sigmas[len(sigmas) - counts.t_enc - 2 :]
    return sigmas[counts.start_index :]


def img2img_timesteps(timesteps: torch.Tensor, counts: Img2ImgSteps) -> tuple[torch.Tensor, int]:
    """A timestep sampler's img2img: the timesteps it is given and the one whose noise level
    the source latents are noised to (CompVisSampler.sample_img2img)."""
    return timesteps[: counts.t_enc], int(timesteps[counts.t_enc])


LOOPBACK_CURVES = ("Linear", "Aggressive", "Lazy")


def loopback_strengths(loops: int, first: float, final: float, curve: str = "Linear") -> list[float]:
    """Each loopback pass's denoising strength (A1111's loopback script): pass i moves from
    ``first`` towards ``final`` by the curve at i / (loops - 1)."""
    if curve not in LOOPBACK_CURVES:
        raise ValueError(f"unknown loopback curve {curve!r}")
    if loops == 1:
        return [first]
    strengths = []
    for loop in range(loops):
        progress = loop / (loops - 1)
        if curve == "Aggressive":
            change = math.sin(progress * math.pi * 0.5)
        elif curve == "Lazy":
            change = 1 - math.cos(progress * math.pi * 0.5)
        else:
            change = progress
        strengths.append(first + (final - first) * change)
    return strengths
