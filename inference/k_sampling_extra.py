"""The rest of AUTOMATIC1111 1.10's samplers over sigmas: DPM fast, DPM adaptive, Restart, LCM.

DPM fast and DPM adaptive are k-diffusion's DPMSolver (Lu et al. 2022, DPM-Solver-12/23 with
k-diffusion's ancestral noise): they take only the ends of the range and, for DPM fast, a step
count, not a schedule (run_k_sampler passes them as A1111's KDiffusionSampler does). Restart
is A1111's own restart_sampler (modules/sd_samplers_extra.py, Xu et al. 2023), and LCM its
sample_lcm (modules/sd_samplers_lcm.py) over LCM's 50-timestep denoiser. Same arithmetic as
the originals, step for step, so a seed gives A1111's image; noise comes only through
``noise_sampler`` (each image's next draw), as in inference/k_sampling.py.
"""

from __future__ import annotations

import math

import torch

from inference.k_sampling import ancestral_step, to_d
from inference.schedules import karras


def _report(callback, state: dict) -> None:
    if callback is not None:
        callback(state)


# --- DPM-Solver (k_diffusion.sampling.DPMSolver) -------------------------------------------


class PIDStepSizeController:
    """k-diffusion's PID controller of DPM adaptive's step size in -log(sigma)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    @staticmethod
    def limiter(x):
        return 1 + math.atan(x - 1)

    def propose_step(self, error) -> bool:
        """Scales h by the error's history; whether the step that made ``error`` is kept."""
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = self.limiter(factor)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    """DPM-Solver in t = -log(sigma) over a denoiser, its eps evaluations cached per step."""

    def __init__(self, model, info_callback=None):
        self.model = model
        self.info_callback = info_callback

    @staticmethod
    def t(sigma):
        return -sigma.log()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, eps_cache: dict, key: str, x, t):
        if key in eps_cache:
            return eps_cache[key], eps_cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma)) / self.sigma(t)
        return eps, {key: eps, **eps_cache}

    def dpm_solver_1_step(self, x, t, t_next, eps_cache):
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, eps_cache

    def dpm_solver_2_step(self, x, t, t_next, r1=1 / 2, eps_cache=None):
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, eps_cache

    def dpm_solver_3_step(self, x, t, t_next, r1=1 / 3, r2=2 / 3, eps_cache=None):
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * (r2 * h).expm1() * eps
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2, eps_cache = self.eps(eps_cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, eps_cache

    def _ancestral_target(self, t, t_next, t_end, eta):
        """(where the step's solver goes, the noise that brings it back to t_next)."""
        if not eta:
            return t_next, 0.0
        sigma_down, _ = ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        target = torch.minimum(t_end, self.t(sigma_down))
        return target, (self.sigma(t_next) ** 2 - self.sigma(target) ** 2) ** 0.5

    def _report(self, x, i, t, denoised, **extra) -> None:
        if self.info_callback is not None:
            self.info_callback({"x": x, "i": i, "t": t, "t_up": t, "denoised": denoised, **extra})

    def dpm_solver_fast(self, x, t_start, t_end, nfe, eta, s_noise, noise_sampler):
        """``nfe`` evaluations in steps of order 3 (the last ones lower), evenly spaced in t."""
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            eps_cache: dict = {}
            t, t_next = ts[i], ts[i + 1]
            target, sigma_up = self._ancestral_target(t, t_next, t_end, eta)
            eps, eps_cache = self.eps(eps_cache, "eps", x, t)
            self._report(x, i, t, x - self.sigma(t) * eps)
            step = (self.dpm_solver_1_step, self.dpm_solver_2_step, self.dpm_solver_3_step)[order - 1]
            x, eps_cache = step(x, t, target, eps_cache=eps_cache)
            x = x + sigma_up * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def dpm_solver_adaptive(self, x, t_start, t_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff,
                            accept_safety, eta, s_noise, noise_sampler):
        """Steps of DPM-Solver-2 against -3 (order 3) or -1 against -2, each step's size set by
        their difference; a rejected step is taken again, smaller."""
        if order not in (2, 3):
            raise ValueError(f"order should be 2 or 3, got {order}")
        forward = t_end > t_start
        h_init = abs(h_init) * (1 if forward else -1)
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev = t_start, x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        steps = 0
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            eps_cache: dict = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            target, sigma_up = self._ancestral_target(s, t, t_end, eta)
            eps, eps_cache = self.eps(eps_cache, "eps", x, s)
            denoised = x - self.sigma(s) * eps
            if order == 2:
                x_low, eps_cache = self.dpm_solver_1_step(x, s, target, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_2_step(x, s, target, eps_cache=eps_cache)
            else:
                x_low, eps_cache = self.dpm_solver_2_step(x, s, target, r1=1 / 3, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_3_step(x, s, target, eps_cache=eps_cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high + sigma_up * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
            steps += 1
            self._report(x, steps - 1, s, denoised, error=error, h=pid.h)
        return x


def _solver(model, callback) -> DPMSolver:
    solver = DPMSolver(model)
    if callback is not None:
        solver.info_callback = lambda info: callback(
            {"sigma": solver.sigma(info["t"]), "sigma_hat": solver.sigma(info["t_up"]), **info}
        )
    return solver


def _check_range(sigma_min, sigma_max) -> None:
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError(f"sigma_min and sigma_max must not be 0, got {sigma_min} and {sigma_max}")


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, noise_sampler, callback=None, eta=0.0, s_noise=1.0):
    """DPM-Solver-Fast: ``n`` evaluations at fixed steps from sigma_max to sigma_min."""
    _check_range(sigma_min, sigma_max)
    solver = _solver(model, callback)
    t_start, t_end = solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min))
    return solver.dpm_solver_fast(x, t_start, t_end, n, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, noise_sampler, callback=None, order=3, rtol=0.05,
                        atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        eta=0.0, s_noise=1.0):
    """DPM-Solver-23 with adaptive steps from sigma_max to sigma_min: as many evaluations as
    the tolerances ask, whatever the requested steps."""
    _check_range(sigma_min, sigma_max)
    solver = _solver(model, callback)
    t_start, t_end = solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min))
    return solver.dpm_solver_adaptive(
        x, t_start, t_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise,
        noise_sampler,
    )


# --- Restart (A1111's sd_samplers_extra.restart_sampler) -------------------------------------


def restart_steps(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs Restart walks: from 20 steps on, a Karras schedule with
    fewer steps plus one or two jumps back up (to sigma 2) from the sigma nearest 0.1, each
    followed by its own Karras descent; below 20 steps, the schedule as given."""
    steps = sigmas.shape[0] - 1
    restart_list: dict[float, list] = {}
    if steps >= 20:
        restart_count, restart_times = 9, 1
        if steps >= 36:
            restart_count, restart_times = steps // 4, 2
        kept = steps - restart_count * restart_times
        sigmas = karras(kept, sigmas[-2].item(), sigmas[0].item()).to(sigmas.device)
        restart_list = {0.1: [restart_count + 1, restart_times, 2]}
    at_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at_index:
            count, times, restart_max = at_index[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                descent = karras(count, sigmas[min_idx].item(), sigmas[max_idx].item()).to(sigmas.device)[:-1]
                pairs.extend(list(zip(descent[:-1], descent[1:])) * times)
    return pairs


@torch.no_grad()
def restart_sampler(model, x, sigmas, noise_sampler, callback=None, s_noise=1.0):
    """Heun steps over restart_steps; each jump back up adds the noise that takes x from the
    lower sigma to the higher (each image's next draw, A1111's randn_like)."""
    s_in = x.new_ones([x.shape[0]])
    last_sigma = None
    for step, (old_sigma, new_sigma) in enumerate(restart_steps(sigmas)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise_sampler(last_sigma, old_sigma) * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        denoised = model(x, old_sigma * s_in)
        d = to_d(x, old_sigma, denoised)
        _report(callback, {"x": x, "i": step, "sigma": new_sigma, "sigma_hat": old_sigma, "denoised": denoised})
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, new_sigma, model(x_2, new_sigma * s_in))
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x


# --- LCM (A1111's sd_samplers_lcm) -------------------------------------------------------------


@torch.no_grad()
def sample_lcm(model, x, sigmas, noise_sampler, callback=None):
    """Latent consistency: each step jumps to the denoised image and re-noises it to the next
    sigma with fresh noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, {"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def lcm_boundary_scaling(table, sigma: torch.Tensor, denoised: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """LCMCompVisDenoiser.get_scaled_out: LCM's consistency boundary condition over the
    CompVis denoised output, c_skip(t) * x + c_out(t) * denoised with t scaled by 10.

    A1111 applies it to each UNet row before CFG; it is affine in the denoised output with
    the same coefficients for every row of an image, so applying it after CFG is the same."""
    sigma_data = 0.5
    scaled_timestep = table.sigma_to_t(sigma).to(denoised.dtype)[:, None, None, None] * 10.0
    c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
    c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5
    return c_out * denoised + c_skip * x
