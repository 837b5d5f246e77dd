"""DPM fast, DPM adaptive, Restart and LCM equal A1111's algorithm on the tiny model, same seeds.

The references are written here from k-diffusion's sampling.py (DPMSolver, sample_dpm_fast,
sample_dpm_adaptive, get_sigmas_karras) and A1111 1.10's modules/sd_samplers_extra.py
(restart_sampler), sd_samplers_lcm.py (LCMCompVisDenoiser, sample_lcm) and
sd_samplers_kdiffusion.py (how the range of DPM fast/adaptive is passed), over the reference
denoiser and noise of tests/test_samplers_reference.py; nothing from inference/k_sampling*.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.conditioning import encode_conditioning
from inference.generate import generate_latents
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from tests.inference_fixtures import tiny_request
from tests.test_samplers_reference import SEEDS, ReferenceDenoiser, ReferenceNoise, ancestral, assert_same_latents

# --- k-diffusion's DPMSolver -----------------------------------------------------------------


class RefDPMSolver:
    def __init__(self, model):
        self.model = model
        self.t = lambda sigma: -sigma.log()
        self.sigma = lambda t: t.neg().exp()

    def eps(self, cache, key, x, t):
        if key not in cache:
            cache[key] = (x - self.model(x, self.sigma(t) * x.new_ones([x.shape[0]]))) / self.sigma(t)
        return cache[key]

    def step1(self, x, t, t_next, cache):
        return x - self.sigma(t_next) * (t_next - t).expm1() * self.eps(cache, "eps", x, t)

    def step2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        eps_r1 = self.eps(cache, "eps_r1", x - self.sigma(s1) * (r1 * h).expm1() * eps, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        eps_r1 = self.eps(cache, "eps_r1", x - self.sigma(s1) * (r1 * h).expm1() * eps, s1)
        u2 = x - self.sigma(s2) * (r2 * h).expm1() * eps - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def target(self, t, t_next, t_end, eta):
        if not eta:
            return t_next, 0.0
        sd, _ = ancestral(self.sigma(t), self.sigma(t_next), eta)
        t_next_ = torch.minimum(t_end, self.t(sd))
        return t_next_, (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5

    def fast(self, x, t_start, t_end, nfe, eta, noise):
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i in range(len(orders)):
            cache = {}
            t, t_next = ts[i], ts[i + 1]
            t_next_, su = self.target(t, t_next, t_end, eta)
            x = (self.step1, self.step2, self.step3)[orders[i] - 1](x, t, t_next_, cache)
            x = x + su * noise(self.sigma(t), self.sigma(t_next))
        return x

    def adaptive(self, x, t_start, t_end, eta, noise, rtol=0.05, atol=0.0078, h=0.05, safety=0.81):
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev = t_start, x
        b1 = 1 / (1.5 if eta else 3)  # PIDStepSizeController(icoeff=1): b2 = b3 = 0
        while s < t_end - 1e-5:
            cache = {}
            t = torch.minimum(t_end, s + h)
            t_, su = self.target(s, t, t_end, eta)
            x_low = self.step2(x, s, t_, cache, r1=1 / 3)
            x_high = self.step3(x, s, t_, cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            factor = 1 + math.atan((1 / (float(error) + 1e-8)) ** b1 - 1)
            h *= factor
            if factor >= safety:
                x_prev = x_low
                x = x_high + su * noise(self.sigma(s), self.sigma(t))
                s = t
        return x


def ref_dpm_fast(model, x, sigma_min, sigma_max, n, eta, noise):
    solver = RefDPMSolver(model)
    return solver.fast(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)), n, eta, noise)


def ref_dpm_adaptive(model, x, sigma_min, sigma_max, n, eta, noise):
    solver = RefDPMSolver(model)
    return solver.adaptive(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)), eta, noise)


@torch.no_grad()
def reference_range_sampler(pipe, function, steps, eta):
    """txt2img as A1111's KDiffusionSampler.sample passes a range: the model's sigma_min and
    sigma_max, n = steps; x is the seed noise times the schedule's first sigma."""
    request = tiny_request(steps=steps, seeds=SEEDS)
    model = ReferenceDenoiser(pipe, request.prompt, request.negative_prompt, request.cfg_scale)
    noise = ReferenceNoise(SEEDS, (4, 8, 8))
    sigmas = model.sigmas.flip(0)  # the schedule's first sigma is the model's largest
    x = noise.first * sigmas[0]
    return function(model, x, model.sigmas[0].item(), model.sigmas[-1].item(), steps, eta, noise.randn_like)


@pytest.mark.parametrize(("sampler", "function", "steps"), [
    ("DPM fast", ref_dpm_fast, 4), ("DPM fast", ref_dpm_fast, 6), ("DPM adaptive", ref_dpm_adaptive, 3),
])
@pytest.mark.parametrize("eta", [None, 0.0])
def test_range_sampler_equals_k_diffusions(tiny_pipe, sampler, function, steps, eta):
    reports = []
    request = tiny_request(sampler=sampler, steps=steps, seeds=SEEDS, eta=eta)
    ours = generate_latents(tiny_pipe, request, lambda step, total, latents: reports.append((step, total)))
    # A1111's eta_ancestral (1.0) unless eta is given.
    reference = reference_range_sampler(tiny_pipe, function, steps, 1.0 if eta is None else eta)
    if sampler == "DPM adaptive":
        # Its step-size controller feeds each step's error estimate into the next step's size,
        # so float32 rounding (which differs between CPUs' matmul kernels) grows along the
        # walk: up to 5e-4 on latents of about 30 on some machines. The bound is that
        # rounding's size against the latents' scale; a wrong step would be off by far more.
        torch.testing.assert_close(ours.float(), reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    else:
        assert_same_latents(ours, reference)
    steps_reported = [step for step, _ in reports]
    assert steps_reported == sorted(steps_reported) and all(total == steps for _, total in reports)
    if sampler == "DPM fast":
        assert steps_reported[-1] == steps


def test_dpm_fast_img2img_runs_between_the_walked_ends(tiny_pipe, tmp_path):
    """KDiffusionSampler.sample_img2img: sigma_min = sigma_sched[-2], sigma_max =
    sigma_sched[0], n = len(sigma_sched) - 1, from the source noised to sigma_sched[0]."""
    from PIL import Image

    from inference.common.protocol import ImageInput, JobKind
    from inference.img2img import decode, encode, run_img2img

    Image.new("RGB", (64, 64), (120, 40, 200)).save(tmp_path / "source.png")
    source = Image.open(tmp_path / "source.png").convert("RGB")
    steps, strength = 8, 0.5
    request = tiny_request(
        sampler="DPM fast", schedule_type="Karras", steps=steps, seeds=SEEDS, kind=JobKind.IMG2IMG,
        image=ImageInput(str(tmp_path / "source.png"), denoising_strength=strength),
    )
    ours = run_img2img(tiny_pipe, request, lambda *args: None, lambda: False)
    with torch.no_grad():
        model = ReferenceDenoiser(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale)
        t_enc = int(strength * steps)
        sigma_sched = sampler_sigmas("DPM fast", "Karras", steps, sd_alphas_cumprod())[steps - t_enc - 1 :]
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        x = encode(tiny_pipe, [source] * len(SEEDS)) + noise.first * sigma_sched[0]
        latents = ref_dpm_fast(model, x, sigma_sched[-2], sigma_sched[0], len(sigma_sched) - 1, 1.0, noise.randn_like)
        expected = decode(tiny_pipe, latents)
    for image, reference in zip(ours, expected):
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1


# --- Restart -----------------------------------------------------------------------------------


def karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def ref_restart(model, x, sigmas, noise):
    s_in = x.new_ones([x.shape[0]])
    steps = sigmas.shape[0] - 1
    restart_list = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise(last_sigma, old_sigma) * (old_sigma**2 - last_sigma**2) ** 0.5
        d = (x - model(x, old_sigma * s_in)) / old_sigma
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, new_sigma * s_in)) / new_sigma
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x


@pytest.mark.parametrize("steps", [3, 20])
def test_restart_equals_a1111s_restart_sampler(tiny_pipe, steps):
    """From 20 steps on, Restart re-plans a Karras schedule with 9 restart steps back up."""
    ours = generate_latents(tiny_pipe, tiny_request(sampler="Restart", steps=steps, seeds=SEEDS))
    with torch.no_grad():
        request = tiny_request(steps=steps, seeds=SEEDS)
        model = ReferenceDenoiser(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale)
        sigmas = sampler_sigmas("Restart", "Automatic", steps, sd_alphas_cumprod())
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        expected = ref_restart(model, noise.first * sigmas[0], sigmas, noise.randn_like)
    assert_same_latents(ours, expected)


# --- LCM ---------------------------------------------------------------------------------------


class RefLCMDenoiser:
    """CFGDenoiser over LCMCompVisDenoiser: LCM's 50 timesteps, t quantised to them, and the
    consistency boundary condition on each row before CFG."""

    def __init__(self, pipe, request):
        alphas_cumprod = sd_alphas_cumprod()
        valid = torch.zeros(50)
        for x in range(50):
            valid[49 - x] = alphas_cumprod[999 - x * 20]
        self.sigmas = ((1 - valid) / valid) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.cond, self.uncond = encode_conditioning(pipe, request.prompt, request.negative_prompt, 8).at_step(0)
        self.unet, self.cfg_scale = pipe.unet, request.cfg_scale

    def sigma_to_t(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * 20 + 19

    def t_to_sigma(self, t):
        t = torch.clamp(((t - 19) / 20).float(), min=0, max=49)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def get_sigmas(self, n):
        t = torch.linspace(self.sigma_to_t(self.sigmas[-1]), self.sigma_to_t(self.sigmas[0]), n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])

    def __call__(self, x, sigma):
        n = x.shape[0]
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        c_in = (1 / (sigma_in**2 + 1) ** 0.5)[:, None, None, None]
        embeds = torch.cat([self.cond.expand(n, -1, -1), self.uncond.expand(n, -1, -1)])
        eps = self.unet(x_in * c_in, self.sigma_to_t(sigma_in), encoder_hidden_states=embeds).sample
        denoised = x_in + eps * -sigma_in[:, None, None, None]
        scaled_t = self.sigma_to_t(sigma_in)[:, None, None, None] * 10.0
        c_skip = 0.25 / (scaled_t**2 + 0.25)
        c_out = scaled_t / (scaled_t**2 + 0.25) ** 0.5
        out = c_out * denoised + c_skip * x_in
        cond, uncond = out.chunk(2)
        return uncond + (cond - uncond) * self.cfg_scale


def test_lcm_equals_a1111s_sample_lcm(tiny_pipe):
    steps = 4
    ours = generate_latents(tiny_pipe, tiny_request(sampler="LCM", steps=steps, seeds=SEEDS, cfg_scale=1.5))
    with torch.no_grad():
        model = RefLCMDenoiser(tiny_pipe, tiny_request(steps=steps, seeds=SEEDS, cfg_scale=1.5))
        sigmas = model.get_sigmas(steps)
        torch.testing.assert_close(sigmas, sampler_sigmas("LCM", "Automatic", steps, sd_alphas_cumprod()))
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        x = noise.first * sigmas[0]
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            x = model(x, sigmas[i] * s_in)
            if sigmas[i + 1] > 0:
                x = x + sigmas[i + 1] * noise.randn_like(sigmas[i], sigmas[i + 1])
    assert_same_latents(ours, x)
