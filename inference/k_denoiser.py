"""A1111's denoiser around a diffusers UNet, and a k-diffusion sampler's whole run over it.

A1111 wraps the model in k-diffusion's CompVisDenoiser (CompVisVDenoiser for v-prediction
models) and that in its CFGDenoiser (modules/sd_samplers_cfg_denoiser.py): each call runs the
conds of every image and the unconds in one UNet batch, combines them with the AND weights
and the CFG scale, and counts model evaluations, which is what prompt editing's steps are.
``KDenoiser`` is both layers over the diffusers UNet; ``run_k_sampler`` sets up a sampler's
noise as A1111's KDiffusionSampler does (its per-image step noise, or Brownian trees seeded
with the image seeds, eta) and runs it with progress, previews and cancellation between steps:
k-diffusion's samplers, DPM fast/adaptive, Restart and LCM over sigmas, and the timestep
samplers (DDIM, PLMS, UniPC) over the same denoiser as A1111's CFGDenoiserTimesteps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from inference.common.sampler_catalog import LCM, SAMPLERS, TIMESTEPS
from inference.conditioning import Conditioning
from inference.k_sampling import SAMPLE_FUNCTIONS, BrownianTreeNoiseSampler
from inference.k_sampling_extra import (
    lcm_boundary_scaling,
    restart_sampler,
    sample_dpm_adaptive,
    sample_dpm_fast,
    sample_lcm,
)
from inference.noise import ImageNoise
from inference.schedules import DiscreteSigmas, sd_alphas_cumprod
from inference.timestep_sampling import TIMESTEP_FUNCTIONS, TimestepDenoiser, timestep_callbacks

# Every sampler function of the catalog (sampler_catalog.SamplerInfo.function) run here.
SAMPLER_FUNCTIONS: dict[str, Callable] = {
    **SAMPLE_FUNCTIONS,
    **{f.__name__: f for f in (sample_dpm_fast, sample_dpm_adaptive, restart_sampler, sample_lcm)},
    **TIMESTEP_FUNCTIONS,
}

# k-diffusion's sigma_data of the v-prediction denoiser (CompVisVDenoiser).
SIGMA_DATA = 1.0
# A1111's last alphas_cumprod of a zero-terminal-SNR schedule (not 0: sigma stays finite).
ZSNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08
# The timesteps A1111's refiner switch counts in (its 999 - t over 1000).
TRAIN_TIMESTEPS = 1000
# The UNet's latent channels, and the inpainting UNet's extra input: its mask and the masked
# image's latents.
LATENT_CHANNELS = 4
IMAGE_CONDITIONING_CHANNELS = 5


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111's rescale_zero_terminal_snr_abar (Lin et al. 2023): the schedule shifted so its
    last timestep is pure noise, the last value then set to A1111's small positive constant
    so that its sigma stays finite."""
    alphas_bar_sqrt = alphas_cumprod.sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_CUMPROD
    return alphas_bar


def model_alphas_cumprod(pipe) -> torch.Tensor:
    """The model's alphas_cumprod as A1111's loaded model holds them: ldm's schedule from the
    scheduler config's betas (float64, stored float32), or the scheduler's own table for a
    schedule ldm does not compute that way; rescaled to zero terminal SNR where the model
    was trained so (the single-file loader marks it, as A1111 reads it from the checkpoint)."""
    config = pipe.scheduler.config
    if config.get("beta_schedule", "scaled_linear") == "scaled_linear" and config.get("trained_betas") is None:
        alphas_cumprod = sd_alphas_cumprod(config["beta_start"], config["beta_end"], config["num_train_timesteps"])
    else:
        alphas_cumprod = pipe.scheduler.alphas_cumprod.to(torch.float32)
    if config.get("rescale_betas_zero_snr", False):
        alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
    return alphas_cumprod


def supports_k_sampling(pipe, sampler: str) -> bool:
    """Whether this sampler runs here on this pipeline: one of A1111's samplers (k-diffusion's,
    DPM fast/adaptive, Restart, LCM, the timestep samplers) over a UNet this denoiser knows
    how to condition: SD 1.x/2.x's, SDXL's and its refiner's (the added text_time
    conditioning), and the 9-channel inpainting UNets of both."""
    info = SAMPLERS.get(sampler)
    if info is None or info.function not in SAMPLER_FUNCTIONS:
        return False
    unet = getattr(pipe, "unet", None)
    return (
        unet is not None
        and unet.config.in_channels in (LATENT_CHANNELS, LATENT_CHANNELS + IMAGE_CONDITIONING_CHANNELS)
        and unet.config.get("addition_embed_type") in (None, "text_time")
    )


@dataclass(frozen=True)
class DenoiserModel:
    """One model's side of the denoiser: its UNet, sigma table and parameterisation, and the
    batch's conditioning for it. ``jobs`` pairs each job's Conditioning with its image count,
    in the order of the batch's images. ``time_ids``: SDXL's size (and, for the refiner,
    aesthetic score) conditioning of one cond row and one uncond row, (1, n) each; None for
    a UNet without added conditioning."""

    unet: torch.nn.Module
    table: DiscreteSigmas
    jobs: tuple[tuple[Conditioning, int], ...]
    prediction_type: str = "epsilon"
    time_ids: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class LatentMask:
    """A1111's inpainting blend: each evaluation's denoised latents are kept on the original
    latents where ``keep`` is 1 (``init_latent * mask + nmask * denoised``). ``init_latent``
    holds one row per image; ``keep`` (1 - A1111's latmask) broadcasts over it."""

    init_latent: torch.Tensor
    keep: torch.Tensor

    def blend(self, latents: torch.Tensor) -> torch.Tensor:
        keep = self.keep.to(latents)
        return latents * (1 - keep) + self.init_latent.to(latents) * keep


@dataclass(frozen=True)
class RefinerSwitch:
    """A1111's refiner (sd_samplers_common.apply_refiner): once an evaluation's sigma maps to
    a timestep t (the nearest of the current model's table) with (999 - t) / 1000 at or past
    ``switch_at``, that evaluation and every later one run ``model`` instead."""

    switch_at: float
    model: DenoiserModel

    def due(self, table: DiscreteSigmas, sigma: torch.Tensor) -> bool:
        return self.due_at(torch.argmin((table.sigmas.to(sigma.device) - sigma.max()).abs()).item())

    def due_at(self, timestep: int) -> bool:
        return (TRAIN_TIMESTEPS - 1 - timestep) / TRAIN_TIMESTEPS >= self.switch_at


class KDenoiser:
    """``denoiser(x, sigma) -> denoised`` for k-diffusion: CompVis(V)Denoiser's scalings of
    the UNet's eps or v output, under A1111's CFG over the conditioning in force at the
    current evaluation (``step``, counted per call).

    ``model.jobs`` pairs each Conditioning with the number of images it conditions, in the
    order of the batch's images (one pair for a job alone; several for a cross-user batch).
    Each image's conds (its AND parts) and every image's uncond run in one UNet batch,
    A1111's layout; an image's denoised is uncond + cfg * sum_i w_i (cond_i - uncond).
    SDXL's pooled vectors and size numbers follow the same rows (A1111's dict conds).

    ``image_cond``: an inpainting UNet's extra input (mask and masked-image latents, one row
    per image), concatenated to every row's latents, the uncond's too (A1111's c_concat).
    ``mask``: the inpainting blend of every denoised (A1111's mask_before_denoising False).
    ``refiner``: the model this run switches to part-way (RefinerSwitch).
    """

    def __init__(
        self,
        model: DenoiserModel,
        cfg_scale: float,
        *,
        image_cond: torch.Tensor | None = None,
        mask: LatentMask | None = None,
        refiner: RefinerSwitch | None = None,
    ) -> None:
        self.cfg_scale = cfg_scale
        self.image_cond = image_cond
        self.mask = mask
        self.refiner = refiner
        self.step = 0
        self.use(model)

    def use(self, model: DenoiserModel) -> None:
        """Take ``model`` as the one every evaluation from now on runs."""
        if model.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"cannot sample a {model.prediction_type!r} model over sigmas")
        self.model = model
        self.unet = model.unet
        # diffusers' ModelMixin.dtype walks every parameter: read once, not at every step
        # (it was a few ms a step of the worker's time around the UNet).
        self.unet_dtype = model.unet.dtype
        self.table = model.table
        self.jobs = tuple(model.jobs)
        self.v_prediction = model.prediction_type == "v_prediction"
        # Each image's cond rows: which rows of x they repeat, and the AND weights that take
        # them back to one image (images, cond rows), so the combination is one matmul.
        sources, weights = [], []
        for conditioning, images in self.jobs:
            for _ in range(images):
                image = len(weights)
                sources.extend([image] * len(conditioning.weights))
                weights.append(conditioning.weights)
        self.cond_sources = torch.tensor(sources)
        self.combine = torch.zeros(len(weights), len(sources))
        row = 0
        for image, image_weights in enumerate(weights):
            self.combine[image, row : row + len(image_weights)] = torch.tensor(image_weights)
            row += len(image_weights)
        self.weight_sums = self.combine.sum(1)
        # A plain prompt per image (one cond row at weight 1): the combination is cond - uncond.
        self.plain = len(sources) == len(weights) and all(w == (1.0,) for w in weights)
        self.on_device: torch.device | None = None
        self.embeds_key: tuple | None = None
        self.embeds: torch.Tensor | None = None
        self.added: dict | None = None
        self.last_uncond: torch.Tensor | None = None

    def _to(self, device: torch.device) -> None:
        """The per-image tables on the sampler's device, moved once, not every step."""
        if self.on_device != device:
            self.cond_sources = self.cond_sources.to(device)
            self.combine = self.combine.to(device)
            self.weight_sums = self.weight_sums.to(device).view(-1, 1, 1, 1)
            self.on_device = device

    def _scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) per row, shaped to broadcast over an image."""
        if self.v_prediction:
            total = sigma**2 + SIGMA_DATA**2
            c_skip, c_out = SIGMA_DATA**2 / total, -sigma * SIGMA_DATA / total**0.5
        else:
            total = sigma**2 + 1
            c_skip, c_out = torch.ones_like(sigma), -sigma
        return tuple(value[:, None, None, None] for value in (c_skip, c_out, 1 / total**0.5))

    def _embeddings(self, step: int, device: torch.device) -> torch.Tensor:
        """Every image's cond rows, then every image's uncond, at ``step``, in the UNet's
        dtype on ``device``; rebuilt only when a prompt schedule changes them. SDXL: the
        added conditioning of the same rows goes to ``self.added``."""
        in_force = [conditioning.at_step(step) for conditioning, _ in self.jobs]
        key = tuple(id(tensor) for pair in in_force for tensor in pair)
        if key != self.embeds_key:
            conds, unconds = [], []
            for (cond, uncond), (_, images) in zip(in_force, self.jobs):
                conds.append(cond.repeat(images, 1, 1))
                unconds.append(uncond.expand(images, -1, -1))
            self.embeds = torch.cat(conds + unconds).to(device=device, dtype=self.unet_dtype)
            self.embeds_key = key
            self.added = self._added_conditioning(step, device)
        return self.embeds

    def _added_conditioning(self, step: int, device: torch.device) -> dict | None:
        """SDXL's added_cond_kwargs in the embeddings' row order: each row's pooled vector
        (its AND part's, or the uncond's) and its size numbers."""
        if self.model.time_ids is None:
            return None
        cond_ids, uncond_ids = self.model.time_ids
        pooled_conds, pooled_unconds, cond_rows, images_total = [], [], 0, 0
        for conditioning, images in self.jobs:
            cond, uncond = conditioning.pooled_at_step(step)
            pooled_conds.append(cond.repeat(images, 1))
            pooled_unconds.append(uncond.expand(images, -1))
            cond_rows += cond.shape[0] * images
            images_total += images
        time_ids = torch.cat([cond_ids.expand(cond_rows, -1), uncond_ids.expand(images_total, -1)])
        dtype = self.unet_dtype
        return {
            "text_embeds": torch.cat(pooled_conds + pooled_unconds).to(device=device, dtype=dtype),
            "time_ids": time_ids.to(device=device, dtype=dtype),
        }

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.refiner is not None and self.refiner.due(self.table, sigma):
            self.use(self.refiner.model)
            self.refiner = None
        self._to(x.device)
        embeds = self._embeddings(self.step, x.device)
        self.step += 1
        rows = len(self.cond_sources)
        if self.plain:
            x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        else:
            x_in = torch.cat([x[self.cond_sources], x])
            sigma_in = torch.cat([sigma[self.cond_sources], sigma])
        c_skip, c_out, c_in = self._scalings(sigma_in)
        unet_in = x_in * c_in
        if self.image_cond is not None:
            image_cond = self.image_cond.to(x.device, x.dtype)
            rows_cond = image_cond if self.plain else image_cond[self.cond_sources]
            unet_in = torch.cat([unet_in, torch.cat([rows_cond, image_cond])], dim=1)
        out = self.unet(
            unet_in.to(self.unet_dtype),
            self.table.sigma_to_t(sigma_in),
            encoder_hidden_states=embeds,
            **({} if self.added is None else {"added_cond_kwargs": self.added}),
            return_dict=False,
        )[0].float()
        denoised = out * c_out + x_in * c_skip
        conds, uncond = denoised[:rows], denoised[rows:]
        self.last_uncond = uncond  # DDIM CFG++ steps along the uncond prediction
        if self.plain:
            combined = uncond + (conds - uncond) * self.cfg_scale
        else:
            weighted = torch.einsum("ir,r...->i...", self.combine, conds)
            combined = uncond + (weighted - self.weight_sums * uncond) * self.cfg_scale
        return combined if self.mask is None else self.mask.blend(combined)


def k_noise_sampler(sampler: str, x: torch.Tensor, sigmas: torch.Tensor, noises: Sequence[ImageNoise]) -> Callable:
    """A1111's noise for the sampler's steps, each job's from its own ImageNoise (its seeds,
    RNG source and ENSD): a Brownian tree per image seed for the SDE samplers, otherwise the
    next draw of each image's generator (A1111's randn_like hijack)."""
    if SAMPLERS[sampler].brownian_noise:
        positive = sigmas[sigmas > 0]
        trees, row = [], 0
        for noise in noises:
            rows = x[row : row + len(noise.seeds)]
            trees.append(BrownianTreeNoiseSampler(rows, positive.min(), sigmas.max(), noise.seeds, noise.source))
            row += len(noise.seeds)
        if len(trees) == 1:
            return trees[0]
        return lambda sigma, sigma_next: torch.cat([tree(sigma, sigma_next) for tree in trees])
    return lambda sigma, sigma_next: torch.cat([noise.next() for noise in noises]).to(x.device, x.dtype)


def run_k_sampler(
    sampler: str,
    denoiser: KDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noises: Sequence[ImageNoise],
    callback: Callable[[dict], None] | None,
    eta: float | None = None,
    img2img: bool = False,
) -> torch.Tensor:
    """Run one of A1111's samplers from ``x`` (already at ``sigmas[0]``) as A1111 calls it;
    ``noises`` are the batch's jobs' ImageNoise, in the order of x's images. ``img2img``:
    ``sigmas`` are the end of a schedule (schedules.img2img_sigmas) and x the source latents
    noised to the first, which DPM fast/adaptive and the timestep samplers treat apart."""
    info = SAMPLERS[sampler]
    function = SAMPLER_FUNCTIONS[info.function]
    sigmas = sigmas.to(x.device)
    parameters = inspect.signature(function).parameters
    kwargs: dict = {}
    if "noise_sampler" in parameters:
        kwargs["noise_sampler"] = k_noise_sampler(sampler, x, sigmas, noises)
    if "eta" in parameters:
        kwargs["eta"] = info.eta_default if eta is None else eta
    if info.solver_type is not None:
        kwargs["solver_type"] = info.solver_type
    if info.family == TIMESTEPS:
        return _run_timestep_sampler(info.function, denoiser, x, sigmas, callback, img2img, kwargs)
    model = _lcm_denoiser(denoiser) if info.family == LCM else denoiser
    run_steps = len(sigmas) - 1
    if "sigma_min" not in parameters:
        return function(model, x, sigmas, callback=callback, **kwargs)
    # DPM fast and adaptive take a range, as A1111's KDiffusionSampler passes it: the model's
    # whole range in txt2img, the walked part's ends (not its final 0) in img2img.
    if img2img:
        kwargs.update(sigma_min=sigmas[-2], sigma_max=sigmas[0])
    else:
        kwargs.update(sigma_min=denoiser.table.sigmas[0].item(), sigma_max=denoiser.table.sigmas[-1].item())
    if "n" in parameters:
        kwargs["n"] = run_steps
        solver_steps = run_steps // 3 + 1
        progress = _remapped(callback, lambda state: math.ceil((state["i"] + 1) * run_steps / solver_steps) - 1)
    else:
        progress = _remapped(callback, lambda state: _adaptive_index(state, kwargs, run_steps))
    return function(model, x, callback=progress, **kwargs)


def _lcm_denoiser(denoiser: KDenoiser) -> Callable:
    """A1111's LCMCompVisDenoiser: the CompVis output under LCM's boundary condition."""
    return lambda x, sigma: lcm_boundary_scaling(denoiser.table, sigma, denoiser(x, sigma), x)


def _remapped(callback, index_of: Callable[[dict], int]):
    """The callback with k-diffusion's step index ``i`` replaced by ``index_of(state)``: the
    index in the schedule's steps that progress counts."""
    if callback is None:
        return None
    return lambda state: callback({**state, "i": index_of(state)})


def _adaptive_index(state: dict, kwargs: dict, run_steps: int) -> int:
    """DPM adaptive's progress: how far it is in -log(sigma) over its range, in steps."""
    t_start, t_end = -math.log(float(kwargs["sigma_max"])), -math.log(float(kwargs["sigma_min"]))
    done = (float(state["t"]) - t_start) / (t_end - t_start)
    return max(math.ceil(done * run_steps) - 1, 0)


def _run_timestep_sampler(function: str, denoiser: KDenoiser, x, sigmas, callback, img2img: bool, kwargs: dict):
    """A1111's CompVisSampler: the timesteps are the sigmas' (schedules.sampler_sigmas), and x
    goes back to the VP scale: the seed noise itself in txt2img; in img2img the source noised
    to the first sigma's timestep, which A1111 does not give the sampler."""
    table = denoiser.table
    timesteps = table.sigma_to_t(sigmas[sigmas > 0]).round().long().flip(0)
    if img2img:
        timesteps = timesteps[:-1]
        x = x / (sigmas[0] ** 2 + 1) ** 0.5
    else:
        x = x / sigmas[0]
    if function == "unipc":
        kwargs["is_img2img"] = img2img
    # A1111 blends an inpaint's source latents into the model's input here, not its output,
    # and switches to the refiner at the timestep: the timestep denoiser does both.
    mask, denoiser.mask = denoiser.mask, None
    refiner, denoiser.refiner = denoiser.refiner, None
    model = TimestepDenoiser(denoiser, table.alphas_cumprod, mask, refiner)
    # Progress counts the schedule's steps; these samplers run fewer (see timestep_callbacks).
    offset = len(sigmas) - 1 - timestep_callbacks(function, len(timesteps))
    progress = _remapped(callback, lambda state: state["i"] + offset)
    if len(timesteps) == 0:
        return x
    return TIMESTEP_FUNCTIONS[function](model, x, timesteps, callback=progress, **kwargs)
