"""Each k-diffusion sampler's txt2img equals A1111's algorithm on the tiny model, same seeds.

The reference here is written from A1111 1.10's sources and the k-diffusion revision it
vendors (k_diffusion/sampling.py, k_diffusion/external.py CompVisDenoiser,
modules/sd_samplers_cfg_denoiser.py, modules/sd_samplers_kdiffusion.py), not from
inference/k_sampling.py: the model's sigma table and sigma_to_t, A1111's CFG, each image's
torch generator for the first noise and the ancestral noise (A1111's randn_like hijack),
torchsde Brownian trees seeded with the image seeds for the SDE samplers, and the sampler
loops themselves. Only the sigmas (tests/test_schedules.py checks them against A1111's
formulas) and the prompt encoding (tests/test_prompt_parser.py and friends) are shared.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchsde
from scipy import integrate

from inference.common.sampler_catalog import SAMPLERS
from inference.conditioning import encode_conditioning
from inference.generate import generate_latents
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from tests.inference_fixtures import tiny_request

SEEDS = (1234, 987654)
STEPS = 3


# --- A1111's denoiser: CompVisDenoiser under CFGDenoiser ------------------------------------


class ReferenceDenoiser:
    def __init__(self, pipe, prompt: str, negative: str, cfg_scale: float):
        config = pipe.scheduler.config
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()
        conditioning = encode_conditioning(pipe, prompt, negative, STEPS * 2)
        self.cond, self.uncond = conditioning.at_step(0)
        self.unet = pipe.unet
        self.cfg_scale = cfg_scale

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def __call__(self, x, sigma):
        n = x.shape[0]
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        embeds = torch.cat([self.cond.expand(n, -1, -1), self.uncond.expand(n, -1, -1)])
        c_in = (1 / (sigma_in**2 + 1) ** 0.5)[:, None, None, None]
        eps = self.unet(x_in * c_in, self.sigma_to_t(sigma_in), encoder_hidden_states=embeds).sample
        denoised = x_in + eps * -sigma_in[:, None, None, None]
        cond, uncond = denoised.chunk(2)
        return uncond + (cond - uncond) * self.cfg_scale


# --- A1111's noise: one generator per image ------------------------------------------------


class ReferenceNoise:
    """ImageRNG: each image's generator makes the first noise, then the sampler's noise; with
    ENSD the sampler's noise comes from generators seeded with seed + ENSD."""

    def __init__(self, seeds, shape, source="GPU", ensd=0):
        self.seeds, self.shape, self.source = seeds, shape, source
        if source == "NV":
            from inference.noise import PhiloxNormalGenerator

            self.generators = [PhiloxNormalGenerator(seed) for seed in seeds]
        else:
            self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        self.first = self.draw()
        if ensd:
            self.generators = [torch.Generator("cpu").manual_seed(seed + ensd) for seed in seeds]

    def draw(self):
        if self.source == "NV":
            return torch.stack([torch.from_numpy(g.randn(self.shape)) for g in self.generators])
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])

    def randn_like(self, sigma, sigma_next):
        return self.draw()


class ReferenceBrownian:
    def __init__(self, x, sigmas, seeds):
        self.t0, self.t1 = sigmas[sigmas > 0].min(), sigmas.max()
        self.trees = [torchsde.BrownianTree(self.t0, torch.zeros_like(x[0]), self.t1, entropy=s) for s in seeds]

    def __call__(self, sigma, sigma_next):
        lo, hi = (sigma_next, sigma) if sigma_next < sigma else (sigma, sigma_next)
        sign = -1 if sigma_next < sigma else 1
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (sigma_next - sigma).abs().sqrt()


# --- k-diffusion's sampler loops, as A1111 calls them ---------------------------------------


def d_of(x, sigma, denoised):
    return (x - denoised) / sigma


def ancestral(sigma_from, sigma_to, eta=1.0):
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def ref_euler(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        x = x + d_of(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def ref_euler_a(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        down, up = ancestral(sigmas[i], sigmas[i + 1])
        x = x + d_of(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * up
    return x


def ref_heun(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        d = d_of(x, sigmas[i], model(x, sigmas[i].expand(x.shape[0])))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = d_of(x2, sigmas[i + 1], model(x2, sigmas[i + 1].expand(x.shape[0])))
            x = x + (d + d2) / 2 * dt
    return x


def ref_dpm2(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        d = d_of(x, sigmas[i], model(x, sigmas[i].expand(x.shape[0])))
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
        x2 = x + d * (mid - sigmas[i])
        x = x + d_of(x2, mid, model(x2, mid.expand(x.shape[0]))) * (sigmas[i + 1] - sigmas[i])
    return x


def ref_dpm2_a(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        d = d_of(x, sigmas[i], model(x, sigmas[i].expand(x.shape[0])))
        down, up = ancestral(sigmas[i], sigmas[i + 1])
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
        x2 = x + d * (mid - sigmas[i])
        x = x + d_of(x2, mid, model(x2, mid.expand(x.shape[0]))) * (down - sigmas[i])
        x = x + noise(sigmas[i], sigmas[i + 1]) * up
    return x


def ref_lms(model, x, sigmas, noise, order=4):
    t = sigmas.numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        ds.append(d_of(x, sigmas[i], model(x, sigmas[i].expand(x.shape[0]))))
        ds = ds[-order:]
        cur = min(i + 1, order)

        def coeff(j):
            def fn(tau):
                return math.prod((tau - t[i - k]) / (t[i - j] - t[i - k]) for k in range(cur) if k != j)
            return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]

        x = x + sum(coeff(j) * d for j, d in enumerate(reversed(ds)))
    return x


def ref_dpmpp_2s_a(model, x, sigmas, noise):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        down, up = ancestral(sigmas[i], sigmas[i + 1])
        if down == 0:
            x = x + d_of(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            lam, lam_next = -sigmas[i].log(), -down.log()
            h = lam_next - lam
            sigma_s = (-(lam + h / 2)).exp()
            x2 = (sigma_s / sigmas[i]) * x - (-h / 2).expm1() * denoised
            x = (down / sigmas[i]) * x - (-h).expm1() * model(x2, sigma_s.expand(x.shape[0]))
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * up
    return x


def ref_dpmpp_2m(model, x, sigmas, noise):
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        h = sigmas[i].log() - sigmas[i + 1].log()
        if old is not None and sigmas[i + 1] > 0:
            r = (sigmas[i - 1].log() - sigmas[i].log()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        else:
            denoised_d = denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old = denoised
    return x


def ref_dpmpp_sde(model, x, sigmas, noise):
    sig = lambda t: t.neg().exp()  # noqa: E731
    lam = lambda s: s.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        if sigmas[i + 1] == 0:
            x = x + d_of(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = lam(sigmas[i]), lam(sigmas[i + 1])
        s = t + (t_next - t) / 2
        down, up = ancestral(sig(t), sig(s))
        x2 = (down / sig(t)) * x - (t - lam(down)).expm1() * denoised
        x2 = x2 + noise(sig(t), sig(s)) * up
        denoised_2 = model(x2, sig(s).expand(x.shape[0]))
        down, up = ancestral(sig(t), sig(t_next))
        x = (down / sig(t)) * x - (t - lam(down)).expm1() * denoised_2
        x = x + noise(sig(t), sig(t_next)) * up
    return x


def ref_dpmpp_2m_sde(model, x, sigmas, noise, heun=False):
    old = h_last = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            x = sigmas[i + 1] / sigmas[i] * (-h).exp() * x + (-2 * h).expm1().neg() * denoised
            if old is not None:
                r = h_last / h
                phi = (-2 * h).expm1().neg()
                factor = (phi / (-2 * h) + 1) if heun else 0.5 * phi
                x = x + factor * (1 / r) * (denoised - old)
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h).expm1().neg().sqrt()
            h_last = h
        old = denoised
    return x


def ref_dpmpp_3m_sde(model, x, sigmas, noise):
    d1 = d2 = h1 = h2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            he = 2 * h
            x = torch.exp(-he) * x + (-he).expm1().neg() * denoised
            phi_2 = he.neg().expm1() / he + 1
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                a = (denoised - d1) / r0
                b = (d1 - d2) / r1
                x = x + phi_2 * (a + (a - b) * r0 / (r0 + r1)) - (phi_2 / he - 0.5) * ((a - b) / (r0 + r1))
            elif h1 is not None:
                x = x + phi_2 * (denoised - d1) / (h1 / h)
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h).expm1().neg().sqrt()
        d1, d2, h1, h2 = denoised, d1, h, h1
    return x


REFERENCES = {
    "Euler": ref_euler,
    "Euler a": ref_euler_a,
    "Heun": ref_heun,
    "DPM2": ref_dpm2,
    "DPM2 a": ref_dpm2_a,
    "LMS": ref_lms,
    "DPM++ 2S a": ref_dpmpp_2s_a,
    "DPM++ 2M": ref_dpmpp_2m,
    "DPM++ SDE": ref_dpmpp_sde,
    "DPM++ 2M SDE": ref_dpmpp_2m_sde,
    "DPM++ 2M SDE Heun": lambda *args: ref_dpmpp_2m_sde(*args, heun=True),
    "DPM++ 3M SDE": ref_dpmpp_3m_sde,
}


@torch.no_grad()
def reference_txt2img(pipe, sampler, schedule_type="Automatic", steps=STEPS, seeds=SEEDS, source="GPU", ensd=0):
    request = tiny_request(sampler=sampler, steps=steps, seeds=seeds)
    model = ReferenceDenoiser(pipe, request.prompt, request.negative_prompt, request.cfg_scale)
    sigmas = sampler_sigmas(sampler, schedule_type, steps, sd_alphas_cumprod())
    noise = ReferenceNoise(seeds, (4, 8, 8), source, ensd)
    x = noise.first * sigmas[0]
    step_noise = ReferenceBrownian(x, sigmas, seeds) if SAMPLERS[sampler].brownian_noise else noise.randn_like
    return REFERENCES[sampler](model, x, sigmas, step_noise)


def assert_same_latents(ours, reference):
    torch.testing.assert_close(ours.float(), reference, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("sampler", list(REFERENCES))
def test_sampler_equals_a1111s_algorithm(tiny_pipe, sampler):
    # DPM++ 3M SDE's third-order term first runs on its fourth step.
    steps = 4 if sampler == "DPM++ 3M SDE" else STEPS
    ours = generate_latents(tiny_pipe, tiny_request(sampler=sampler, steps=steps, seeds=SEEDS))
    assert_same_latents(ours, reference_txt2img(tiny_pipe, sampler, steps=steps))


@pytest.mark.parametrize(
    ("sampler", "schedule_type"),
    [("Euler", "Karras"), ("Euler a", "Exponential"), ("DPM++ 2M", "Align Your Steps"), ("Heun", "SGM Uniform")],
)
def test_schedule_type_is_the_one_that_runs(tiny_pipe, sampler, schedule_type):
    request = tiny_request(sampler=sampler, schedule_type=schedule_type, steps=STEPS, seeds=SEEDS)
    ours = generate_latents(tiny_pipe, request)
    assert_same_latents(ours, reference_txt2img(tiny_pipe, sampler, schedule_type))
    automatic = generate_latents(tiny_pipe, tiny_request(sampler=sampler, steps=STEPS, seeds=SEEDS))
    assert not torch.allclose(ours, automatic)


def test_combined_name_runs_its_schedule_type(tiny_pipe):
    ours = generate_latents(tiny_pipe, tiny_request(sampler="Euler a Karras", steps=STEPS, seeds=SEEDS))
    assert_same_latents(ours, reference_txt2img(tiny_pipe, "Euler a", "Karras"))


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_rng_source_noise_through_a_whole_txt2img(tiny_pipe, source):
    ours = generate_latents(tiny_pipe, tiny_request(sampler="Euler a", rng=source, steps=STEPS, seeds=SEEDS))
    assert_same_latents(ours, reference_txt2img(tiny_pipe, "Euler a", source=source))
    if source == "NV":
        gpu = generate_latents(tiny_pipe, tiny_request(sampler="Euler a", steps=STEPS, seeds=SEEDS))
        assert not torch.allclose(ours, gpu)


def test_nv_source_feeds_the_brownian_tree(tiny_pipe):
    """A1111 draws torchsde's node noise with randn_local, so the SDE samplers follow NV too."""
    nv = generate_latents(tiny_pipe, tiny_request(sampler="DPM++ 2M SDE", rng="NV", steps=STEPS, seeds=SEEDS))
    cpu = generate_latents(tiny_pipe, tiny_request(sampler="DPM++ 2M SDE", rng="CPU", steps=STEPS, seeds=SEEDS))
    assert not torch.allclose(nv, cpu)


def test_ensd_changes_only_ancestral_results(tiny_pipe):
    def run(sampler, ensd):
        request = tiny_request(sampler=sampler, eta_noise_seed_delta=ensd, steps=STEPS, seeds=SEEDS)
        return generate_latents(tiny_pipe, request)

    assert torch.equal(run("Euler", 31337), run("Euler", 0))
    ancestral = run("Euler a", 31337)
    assert not torch.allclose(ancestral, run("Euler a", 0))
    assert_same_latents(ancestral, reference_txt2img(tiny_pipe, "Euler a", ensd=31337))


def test_batch_image_equals_its_seed_alone(tiny_pipe):
    for sampler in ("Euler a", "DPM++ 2M SDE"):
        batch = generate_latents(tiny_pipe, tiny_request(sampler=sampler, steps=STEPS, seeds=SEEDS))
        alone = generate_latents(tiny_pipe, tiny_request(sampler=sampler, steps=STEPS, seeds=SEEDS[1:]))
        assert_same_latents(batch[1:], alone.float())


# --- img2img: A1111's step count and sample_img2img ------------------------------------------


def test_img2img_runs_a1111s_count_from_the_noised_source(tiny_pipe, tmp_path):
    from PIL import Image

    from inference.common.protocol import ImageInput, JobKind
    from inference.img2img import decode, encode, run_img2img

    source = Image.new("RGB", (64, 64), (200, 100, 50))
    source.save(tmp_path / "source.png")
    steps, strength = 8, 0.5
    request = tiny_request(
        sampler="Euler a", steps=steps, seeds=SEEDS, kind=JobKind.IMG2IMG,
        image=ImageInput(str(tmp_path / "source.png"), denoising_strength=strength),
    )
    reports = []
    ours = run_img2img(tiny_pipe, request, lambda step, total, latents: reports.append((step, total)), lambda: False)
    # A1111: t_enc = int(min(0.5, 0.999) * 8) = 4; the sampler runs the last t_enc + 1 sigmas.
    assert reports == [(step, 5) for step in range(1, 6)]
    with torch.no_grad():
        model = ReferenceDenoiser(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale)
        sigmas = sampler_sigmas("Euler a", "Automatic", steps, sd_alphas_cumprod())[steps - 4 - 1 :]
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        x = encode(tiny_pipe, [source] * len(SEEDS)) + noise.first * sigmas[0]
        expected = decode(tiny_pipe, ref_euler_a(model, x, sigmas, noise.randn_like))
    for image, reference in zip(ours, expected):
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1


def test_hires_pass_runs_a1111s_schedule_with_the_variation_noise(tiny_pipe):
    from inference.common.protocol import HiresFix
    from inference.img2img import decode
    from inference.noise import slerp
    from inference.workflows import LATENT, run_hires

    seeds, subseeds, strength = (21, 22), (7, 8), 0.3
    request = tiny_request(
        sampler="Euler", steps=4, seeds=seeds, subseeds=subseeds, subseed_strength=strength,
        hires=HiresFix(scale=1.5, steps=3, denoising_strength=0.55, upscaler=LATENT),
    )
    reports = []
    ours = run_hires(tiny_pipe, None, request, lambda step, total, latents: reports.append((step, total)), lambda: False)
    assert reports[-1] == (7, 7)  # 4 first-pass steps, then exactly the 3 hires steps

    def variation_noise(shape):
        def draw(seed):
            return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
        return torch.stack([slerp(strength, draw(s), draw(sub)) for s, sub in zip(seeds, subseeds)])

    with torch.no_grad():
        model = ReferenceDenoiser(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale)
        sigmas = sampler_sigmas("Euler", "Automatic", 4, sd_alphas_cumprod())
        first = ref_euler(model, variation_noise((4, 8, 8)) * sigmas[0], sigmas, None)
        upscaled = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear", antialias=False)
        # A1111: a schedule of int(3 / 0.55) = 5 steps, of which the last 3 run.
        second_sigmas = sampler_sigmas("Euler", "Automatic", 5, sd_alphas_cumprod())[5 - 2 - 1 :]
        start = upscaled + variation_noise((4, 12, 12)) * second_sigmas[0]
        model.step = 0
        expected = decode(tiny_pipe, ref_euler(model, start, second_sigmas, None))
    for image, reference in zip(ours, expected):
        assert image.size == (96, 96)
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1
