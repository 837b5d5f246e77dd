"""k-diffusion's samplers as AUTOMATIC1111 1.10 runs them, over sigmas.

A1111 vendors Katherine Crowson's k-diffusion (MIT licence, github.com/crowsonkb/k-diffusion,
the revision A1111 1.10 pins) and calls its ``k_diffusion.sampling`` functions over a
denoiser ``model(x, sigma) -> denoised`` (inference/k_denoiser.py). These are the same
algorithms, step for step and in the same arithmetic, so that a seed gives A1111's image:
Karras et al. (2022) Euler/Heun/DPM2 steps, the ancestral variants, the linear multistep
method, and Lu et al.'s DPM-Solver++ (2S, 2M, SDE, 2M SDE, 3M SDE).

Randomness comes only through ``noise_sampler(sigma, sigma_next)``: A1111 replaces
k-diffusion's ``torch.randn_like`` by the next draw of the job's per-image generators
(inference.noise.ImageNoise) and, for the SDE samplers, passes a Brownian tree per image seed
(BrownianTreeNoiseSampler). ``callback`` gets k-diffusion's dict once a step
(x, i, sigma, sigma_hat, denoised); raising in it stops the run between steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torchsde
from scipy import integrate
from torchsde._brownian import brownian_interval

from inference.noise import randn_local

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[dict], None]


def _expand(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-image (or scalar) value broadcast over an image's dimensions (append_dims)."""
    return value[(...,) + (None,) * (ndim - value.ndim)]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The Karras ODE's derivative dx/dsigma from a denoiser output."""
    return (x - denoised) / _expand(sigma, x.ndim)


def ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """(sigma_down, sigma_up): the level an ancestral step goes down to, and the noise it adds
    back to land on ``sigma_to``; eta 0 makes the step deterministic."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _sigma_of(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t_of(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _log_step(sigmas: torch.Tensor, i: int) -> torch.Tensor:
    """h of step i: how far it goes in -log(sigma)."""
    return sigmas[i].log() - sigmas[i + 1].log()


def _report(callback, x, i, sigma, sigma_hat, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


# --- Brownian noise of the SDE samplers -----------------------------------------------------


@contextlib.contextmanager
def _tree_noise_from(source: str) -> Iterator[None]:
    """torchsde draws each tree node's noise from a generator seeded per node; A1111 replaces
    that draw by its own randn_local, so the nodes follow the RNG source (CPU, GPU or NV)."""
    def randn(size, dtype, device, seed):
        return randn_local(source, seed, size, device).to(dtype=dtype)

    original = brownian_interval._randn
    brownian_interval._randn = randn
    try:
        yield
    finally:
        brownian_interval._randn = original


class BrownianTreeNoiseSampler:
    """k-diffusion's noise of the SDE samplers: one torchsde Brownian tree per image, each
    seeded with the image's seed (A1111's create_noise_sampler), over [sigma_min, sigma_max],
    its nodes drawn from ``source`` as A1111 draws them. A call gives the normalised increment
    between two sigmas, (batch, C, H, W)."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: Sequence[int], source: str = "GPU"):
        if len(seeds) != x.shape[0]:
            raise ValueError(f"one seed per image: {x.shape[0]} images, {len(seeds)} seeds")
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.t0, self.t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        self.source = source
        w0 = torch.zeros_like(x)[0]
        with _tree_noise_from(source):
            self.trees = [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=seed) for seed in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        with _tree_noise_from(self.source):
            w = torch.stack([tree(low, high) for tree in self.trees]) * (self.sign * sign)
        return w / (t1 - t0).abs().sqrt()


# --- samplers -------------------------------------------------------------------------------


def _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s "churn": raise sigma by gamma and add the matching noise (off at 0)."""
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        eps = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return sigma_hat, x


def _karras_steps(update, model: Denoiser, x, sigmas, callback, noise_sampler, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s Algorithm 2: each step evaluates the denoiser at sigma_hat (sigma after
    any churn) and ``update(model, x, d, sigma_hat, sigma_next, s_in)`` takes x to the next
    sigma (Euler's, Heun's or the DPM2 midpoint rule)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma_hat, x = _churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = update(model, x, d, sigma_hat, sigmas[i + 1], s_in)
    return x


def _euler_update(model, x, d, sigma_hat, sigma_next, s_in):
    return x + d * (sigma_next - sigma_hat)


def _heun_update(model, x, d, sigma_hat, sigma_next, s_in):
    """Heun's rule; Euler's on the last step, to sigma 0."""
    if sigma_next == 0:
        return _euler_update(model, x, d, sigma_hat, sigma_next, s_in)
    dt = sigma_next - sigma_hat
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next * s_in))
    return x + (d + d_2) / 2 * dt


def _dpm2_update(model, x, d, sigma_hat, sigma_next, s_in):
    """DPM-Solver-2 style midpoint rule; Euler's on the last step, to sigma 0."""
    if sigma_next == 0:
        return _euler_update(model, x, d, sigma_hat, sigma_next, s_in)
    return _midpoint_step(model, x, d, sigma_hat, sigma_next, s_in)


def _midpoint_step(model, x, d, sigma, sigma_to, s_in):
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_euler(model: Denoiser, x, sigmas, callback=None, noise_sampler=None, s_churn=0.0,
                 s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler steps (churn off by default, as in A1111)."""
    return _karras_steps(_euler_update, model, x, sigmas, callback, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)


@torch.no_grad()
def sample_heun(model: Denoiser, x, sigmas, callback=None, noise_sampler=None, s_churn=0.0,
                s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun steps: two evaluations a step but the last."""
    return _karras_steps(_heun_update, model, x, sigmas, callback, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)


@torch.no_grad()
def sample_dpm_2(model: Denoiser, x, sigmas, callback=None, noise_sampler=None, s_churn=0.0,
                 s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2 style midpoint steps, the midpoint halfway in log sigma."""
    return _karras_steps(_dpm2_update, model, x, sigmas, callback, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)


def _ancestral_steps(update, model: Denoiser, x, sigmas, noise_sampler, callback, eta, s_noise,
                     noise_after_euler: bool = True):
    """Ancestral sampling: each step goes down to sigma_down by ``update(model, x, denoised,
    sigma, sigma_down, s_in)`` (Euler's rule when sigma_down is 0) and adds sigma_up of fresh
    noise, except on the last step (and, for DPM2 a, after an Euler step:
    ``noise_after_euler``)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        euler = sigma_down == 0
        if euler:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            x = update(model, x, denoised, sigmas[i], sigma_down, s_in)
        if sigmas[i + 1] > 0 and (noise_after_euler or not euler):
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _euler_ancestral_update(model, x, denoised, sigma, sigma_down, s_in):
    return x + to_d(x, sigma, denoised) * (sigma_down - sigma)


def _dpm2_ancestral_update(model, x, denoised, sigma, sigma_down, s_in):
    return _midpoint_step(model, x, to_d(x, sigma, denoised), sigma, sigma_down, s_in)


def _dpmpp_2s_update(model, x, denoised, sigma, sigma_down, s_in):
    """DPM-Solver++(2S): a half step in log sigma, then the full step from its denoised."""
    t, t_next = _t_of(sigma), _t_of(sigma_down)
    h = t_next - t
    s = t + h / 2
    x_2 = (_sigma_of(s) / _sigma_of(t)) * x - (-h / 2).expm1() * denoised
    denoised_2 = model(x_2, _sigma_of(s) * s_in)
    return (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_2


@torch.no_grad()
def sample_euler_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0):
    """Ancestral sampling with Euler steps."""
    return _ancestral_steps(_euler_ancestral_update, model, x, sigmas, noise_sampler, callback, eta, s_noise)


@torch.no_grad()
def sample_dpm_2_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0):
    """Ancestral sampling with DPM-Solver-2 style midpoint steps."""
    return _ancestral_steps(
        _dpm2_ancestral_update, model, x, sigmas, noise_sampler, callback, eta, s_noise, noise_after_euler=False
    )


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0):
    """Ancestral sampling with DPM-Solver++(2S) second-order steps."""
    return _ancestral_steps(_dpmpp_2s_update, model, x, sigmas, noise_sampler, callback, eta, s_noise)


def _multistep_coefficient(order: int, t, i: int, j: int) -> float:
    """The integral over [t_i, t_i+1] of the Lagrange basis polynomial j of the last
    ``order`` points (linear multistep)."""
    def basis(tau):
        product = 1.0
        for k in range(order):
            if j != k:
                product *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return product

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model: Denoiser, x, sigmas, callback=None, order=4):
    """The linear multistep method over the last ``order`` derivatives."""
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        derivatives.append(to_d(x, sigmas[i], denoised))
        if len(derivatives) > order:
            derivatives.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        current = min(i + 1, order)
        coefficients = [_multistep_coefficient(current, sigmas_cpu, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(derivatives)))
    return x


@torch.no_grad()
def sample_dpmpp_sde(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ (stochastic): two evaluations a step, noise from a Brownian tree."""
    s_in = x.new_ones([x.shape[0]])
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        sigma_down, sigma_up = ancestral_step(_sigma_of(t), _sigma_of(s), eta)
        s_ = _t_of(sigma_down)
        x_2 = (_sigma_of(s_) / _sigma_of(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(_sigma_of(t), _sigma_of(s)) * s_noise * sigma_up
        denoised_2 = model(x_2, _sigma_of(s) * s_in)
        sigma_down, sigma_up = ancestral_step(_sigma_of(t), _sigma_of(t_next), eta)
        t_next_ = _t_of(sigma_down)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_of(t_next_) / _sigma_of(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(_sigma_of(t), _sigma_of(t_next)) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x, sigmas, callback=None):
    """DPM-Solver++(2M): second order from the previous step's denoised image."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t_of(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0,
                        solver_type="midpoint"):
    """DPM-Solver++(2M) SDE, its correction by the midpoint or Heun's rule."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    s_in = x.new_ones([x.shape[0]])
    old_denoised = h_last = h = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _log_step(sigmas, i)
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Denoiser, x, sigmas, noise_sampler, callback=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE: third order from the two previous denoised images; the last
    step, to sigma 0, is the denoised image itself."""
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            return denoised
        h = _log_step(sigmas, i)
        h_eta = h * (eta + 1)
        phi_2 = h_eta.neg().expm1() / h_eta + 1
        x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if eta:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# The catalog's function names (sampler_catalog.SamplerInfo.function) -> the functions here.
SAMPLE_FUNCTIONS: dict[str, Callable] = {
    function.__name__: function
    for function in (
        sample_euler,
        sample_euler_ancestral,
        sample_heun,
        sample_dpm_2,
        sample_dpm_2_ancestral,
        sample_lms,
        sample_dpmpp_2s_ancestral,
        sample_dpmpp_sde,
        sample_dpmpp_2m,
        sample_dpmpp_2m_sde,
        sample_dpmpp_3m_sde,
    )
}
