"""AUTOMATIC1111 1.10's timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC.

A1111 runs these over integer timesteps, not sigmas (modules/sd_samplers_timesteps.py,
sd_samplers_timesteps_impl.py and modules/models/diffusion/uni_pc): its CFGDenoiserTimesteps
gives the CFG-combined noise prediction eps(x, t) for the variance-preserving latents x at
timestep t, and each sampler steps with the model's alphas_cumprod at those timesteps. The
loops here are A1111's, step for step, so that a seed gives its image.

The worker's k path hands every sampler k-diffusion's variables (x scaled to sigma, the
sigmas of the run); ``run_timestep_sampler`` converts them: the timesteps are the sigmas'
(schedules.sampler_sigmas lists them), and x is taken back to the VP scale A1111 starts
from (txt2img: the seed noise itself; img2img: sqrt(a) * x0 + sqrt(1 - a) * noise).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from inference.common.sampler_catalog import UNIPC_OPTIONS

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TimestepDenoiser:
    """A1111's CFGDenoiserTimesteps over the k path's denoiser: ``eps(x, t)`` for the VP
    latents x at (possibly fractional) timesteps t, each row's.

    The k denoiser takes x scaled to sigma_t and returns the CFG-combined denoised latents;
    the UNet sees x * c_in = x again and the combination is linear, so its eps equals the
    CFG of the UNet's eps that A1111 computes. ``last_noise_uncond`` is the uncond rows' eps
    of the last call (DDIM CFG++ steps along it). ``mask``: inpainting's LatentMask, blended
    into each evaluation's input (the k denoiser must then not blend its output).
    ``refiner``: the k denoiser's RefinerSwitch, taken over from it: A1111 switches a
    timestep sampler at the timestep itself, truncated (apply_refiner's fallback for
    samplers without sigmas), not at the sigma table's nearest.

    The alphas stay the first model's (A1111's loops read them once); t goes to sigma and
    back through the table of the model the k denoiser runs now."""

    def __init__(self, denoiser, alphas_cumprod: torch.Tensor, mask=None, refiner=None):
        self.denoiser = denoiser
        self.alphas_cumprod = alphas_cumprod
        self.mask = mask
        self.refiner = refiner
        self.last_noise_uncond: torch.Tensor | None = None

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        table = self.denoiser.table
        # UniPC's fractional t may overshoot the last timestep by a rounding error.
        t = t.clamp(0, len(table.sigmas) - 1)
        whole = t.round()
        if torch.equal(whole, t):
            return table.sigmas[whole.long()]  # exactly the table's, so t maps back exactly
        return table.t_to_sigma(t)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.refiner is not None and self.refiner.due_at(int(t.max())):
            self.denoiser.use(self.refiner.model)
            self.refiner = None
        t = t.to(self.denoiser.table.sigmas.device)
        sigma = self._sigma(t)
        if self.mask is not None:
            # CFGDenoiserTimesteps blends the source latents into x before the model sees it
            # (mask_before_denoising), not into the denoised as over sigmas.
            x = self.mask.blend(x)
        x_k = x * ((sigma**2 + 1) ** 0.5)[:, None, None, None]
        eps = self._eps(x, x_k, t, sigma, self.denoiser(x_k, sigma))
        uncond = getattr(self.denoiser, "last_uncond", None)
        self.last_noise_uncond = None if uncond is None else self._eps(x, x_k, t, sigma, uncond)
        return eps

    def _eps(self, x, x_k, t, sigma, denoised):
        sigma_x = sigma[:, None, None, None]
        if not getattr(self.denoiser, "v_prediction", False):
            return (x_k - denoised) / sigma_x
        # CompVisTimestepsVDenoiser: eps from the v output with the alphas at int(t) (which
        # truncates UniPC's fractional t) while the UNet saw t itself.
        total = sigma_x**2 + 1
        v = (denoised - x_k / total) / (-sigma_x / total**0.5)
        a_t = self.alphas_cumprod[t.to(torch.int)][:, None, None, None]
        return a_t.sqrt() * v + (1 - a_t).sqrt() * x


def _report(callback, x, i, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": denoised})


def _ddim_parameters(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float):
    """alphas at the timesteps, at the timestep before each (alphas_cumprod[0] before the
    first; float64, as A1111), DDIM's sigmas for eta, and sqrt(1 - alphas)."""
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    alphas_64 = alphas.cpu().to(torch.float64)
    prev_64 = alphas_prev.cpu()
    sigmas = eta * torch.sqrt((1 - prev_64) / (1 - alphas_64) * (1 - alphas_64 / prev_64))
    return alphas, alphas_prev, sigmas, torch.sqrt(1 - alphas)


def _per_image(x: torch.Tensor, value) -> torch.Tensor:
    """A step constant as A1111 holds it: value.item() * ones of shape (batch, 1, 1, 1)."""
    return value.item() * x.new_ones((x.shape[0], 1, 1, 1))


def _ddim_loop(model: TimestepDenoiser, x, timesteps, noise_sampler, callback, eta, uncond_direction):
    alphas, alphas_prev, sigmas, sqrt_one_minus_alphas = _ddim_parameters(model.alphas_cumprod, timesteps, eta)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        direction = model.last_noise_uncond if uncond_direction else e_t
        a_t, a_prev = _per_image(x, alphas[index]), _per_image(x, alphas_prev[index])
        sigma_t, sqrt_one_minus_at = _per_image(x, sigmas[index]), _per_image(x, sqrt_one_minus_alphas[index])
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction
        # A1111 draws the step's noise even at eta 0 (times 0): the draws stay in step.
        noise = sigma_t * noise_sampler(a_t, a_prev)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        _report(callback, x, i, pred_x0)
    return x


@torch.no_grad()
def ddim(model: TimestepDenoiser, x, timesteps, noise_sampler, callback=None, eta=0.0):
    """DDIM (Song et al. 2020) over the timesteps from the last down; len(timesteps) - 1 steps,
    the last to timestep timesteps[0]. eta > 0 adds fresh noise each step."""
    return _ddim_loop(model, x, timesteps, noise_sampler, callback, eta, uncond_direction=False)


@torch.no_grad()
def ddim_cfgpp(model: TimestepDenoiser, x, timesteps, noise_sampler, callback=None, eta=0.0):
    """DDIM CFG++ (Chung et al. 2024): the step's direction is the uncond noise, and the CFG
    scale is divided by 12.5 (A1111's cond_scale_miltiplier) so 12.5 maps to 1."""
    denoiser = model.denoiser
    cfg_scale = denoiser.cfg_scale
    denoiser.cfg_scale = cfg_scale * (1 / 12.5)
    try:
        return _ddim_loop(model, x, timesteps, noise_sampler, callback, eta, uncond_direction=True)
    finally:
        denoiser.cfg_scale = cfg_scale


@torch.no_grad()
def plms(model: TimestepDenoiser, x, timesteps, callback=None):
    """Pseudo linear multistep (Liu et al. 2022): a pseudo improved Euler first step (two
    evaluations), then Adams-Bashforth of order 2, 3 and 4 over the previous eps."""
    alphas, alphas_prev, _, sqrt_one_minus_alphas = _ddim_parameters(model.alphas_cumprod, timesteps, 0.0)
    s_in = x.new_ones([x.shape[0]])
    old_eps: list[torch.Tensor] = []

    def step(x, e_t, index):
        a_t, a_prev = _per_image(x, alphas[index]), _per_image(x, alphas_prev[index])
        pred_x0 = (x - _per_image(x, sqrt_one_minus_alphas[index]) * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        if not old_eps:
            x_prev, _ = step(x, e_t, index)
            e_t_next = model(x_prev, timesteps[max(index - 1, 0)].item() * s_in)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = step(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        _report(callback, x, i, pred_x0)
    return x


# --- UniPC (Zhao et al. 2023), A1111's modules/models/diffusion/uni_pc --------------------------


class DiscreteVPSchedule:
    """uni_pc.NoiseScheduleVP('discrete'): log alpha_t piecewise linear over t = (n + 1) / N."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_n = len(log_alphas)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].to(alphas_cumprod.device)
        self.log_alpha_array = log_alphas

    def marginal_log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        xp, yp = self.t_array.to(t.device), self.log_alpha_array.to(t.device)
        # The keypoints around t; beyond the ends, the outermost segment (interpolate_fn).
        start = (torch.searchsorted(xp, t.reshape(-1).contiguous(), right=True) - 1).clamp(0, len(xp) - 2)
        start_x, end_x, start_y, end_y = xp[start], xp[start + 1], yp[start], yp[start + 1]
        return start_y + (t.reshape(-1) - start_x) * (end_y - start_y) / (end_x - start_x)

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v[(...,) + (None,) * (ndim - 1)]


class UniPC:
    """UniPC's multistep B(h) solver with data prediction, as A1111's UniPCCFG runs it: the
    model's eps at t_input = (t - 1/N) * 1000, turned into x0 with the schedule's alpha_t."""

    def __init__(self, model: TimestepDenoiser, schedule: DiscreteVPSchedule, variant: str, callback):
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"UniPC variant must be bh1 or bh2, got {variant!r}")
        self.model = model
        self.schedule = schedule
        self.variant = variant
        self.callback = callback
        self.index = 0

    def data_prediction(self, x, t):
        noise = self.model(x, (t - 1.0 / self.schedule.total_n) * 1000.0)
        alpha_t, sigma_t = self.schedule.marginal_alpha(t), self.schedule.marginal_std(t)
        return (x - _expand(sigma_t, x.dim()) * noise) / _expand(alpha_t, x.dim())

    def after_update(self, x, model_x) -> None:
        # The last step evaluates no model: its x, at t = 1/N, is the image.
        _report(self.callback, x, self.index, x if model_x is None else model_x)
        self.index += 1

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        """multistep_uni_pc_bh_update with predict_x0: predictor, then the corrector from the
        model's value at the new point (skipped on the last step)."""
        ns = self.schedule
        dims = x.dim()
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0, lambda_t = ns.marginal_lambda(t_prev_0), ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0

        rks, d1s = [], []
        for i in range(1, order):
            rk = ((ns.marginal_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r_matrix = torch.stack(rows)
        b = torch.tensor(b, device=x.device)

        if d1s:
            d1s = torch.stack(d1s, dim=1)
            rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
            pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s)
        else:
            d1s, pred_res = None, 0
        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
        x_t = x_t_ - _expand(alpha_t * b_h, dims) * pred_res
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(r_matrix, b)
            model_t = self.data_prediction(x_t, t)
            corr_res = 0 if d1s is None else torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s)
            x_t = x_t_ - _expand(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
        return x_t, model_t

    def sample(self, x, steps: int, t_start: float | None, order: int, skip_type: str, lower_order_final: bool):
        t_0 = 1.0 / self.schedule.total_n
        t_T = 1.0 if t_start is None else t_start
        if skip_type != "time_uniform":
            raise ValueError(f"UniPC skip type {skip_type!r} is not supported here (time_uniform is A1111's default)")
        timesteps = torch.linspace(t_T, t_0, steps + 1).to(x.device)
        vec_t = timesteps[0].expand(x.shape[0])
        model_prev_list, t_prev_list = [self.data_prediction(x, vec_t)], [vec_t]
        for init_order in range(1, order):
            vec_t = timesteps[init_order].expand(x.shape[0])
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, init_order)
            self.after_update(x, model_x)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(x.shape[0])
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=step != steps)
            self.after_update(x, model_x)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:
                model_prev_list[-1] = model_x
        return x


@torch.no_grad()
def unipc(model: TimestepDenoiser, x, timesteps, callback=None, is_img2img=False, options=UNIPC_OPTIONS):
    """UniPC over len(timesteps) steps of its own time-uniform grid, from t = 1 (txt2img) or
    just above the last given timestep (img2img), as A1111's unipc() calls it. A1111 refuses
    fewer steps than the order; here the order drops to the step count instead."""
    schedule = DiscreteVPSchedule(model.alphas_cumprod)
    t_start = float(timesteps[-1] / 1000 + 1 / 1000) if is_img2img else None
    steps = len(timesteps)
    order = min(options["order"], steps)
    solver = UniPC(model, schedule, options["variant"], callback)
    return solver.sample(x, steps, t_start, order, options["skip_type"], options["lower_order_final"])


# The catalog's function names (sampler_catalog.SamplerInfo.function) -> the functions here.
TIMESTEP_FUNCTIONS: dict[str, Callable] = {"ddim": ddim, "ddim_cfgpp": ddim_cfgpp, "plms": plms, "unipc": unipc}


def timestep_callbacks(function: str, timesteps: int) -> int:
    """How many steps (callbacks) the sampler runs over ``timesteps`` timesteps."""
    return timesteps if function == "unipc" else timesteps - 1
