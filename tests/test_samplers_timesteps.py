"""A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) equal A1111's algorithm on the
tiny model, same seeds, in txt2img and img2img.

The reference is written here from A1111 1.10's sources (modules/sd_samplers_timesteps.py
CompVisSampler and CFGDenoiserTimesteps, sd_samplers_timesteps_impl.py, and
modules/models/diffusion/uni_pc/uni_pc.py), in A1111's own variables: the VP latents at
integer timesteps, the UNet's eps under CFG, the model's alphas_cumprod, the timesteps
range(0, 1000, 1000 // steps) + 1. It shares nothing with inference/timestep_sampling.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.conditioning import encode_conditioning
from inference.generate import generate_latents
from inference.schedules import sampler_sigmas, sd_alphas_cumprod
from tests.inference_fixtures import tiny_request
from tests.test_samplers_reference import SEEDS, ReferenceNoise, assert_same_latents

STEPS = 4


class ReferenceEps:
    """CFGDenoiserTimesteps over CompVisTimestepsDenoiser: the UNet's eps at timestep t for
    the cond and uncond rows, uncond + scale * (cond - uncond); the uncond eps kept."""

    def __init__(self, pipe, prompt, negative, cfg_scale, evaluations, v_prediction=False):
        self.cond, self.uncond = encode_conditioning(pipe, prompt, negative, evaluations).at_step(0)
        self.unet = pipe.unet
        self.cfg_scale = cfg_scale
        self.multiplier = 1.0
        self.last_noise_uncond = None
        self.v_prediction = v_prediction

    def __call__(self, x, t):
        n = x.shape[0]
        embeds = torch.cat([self.cond.expand(n, -1, -1), self.uncond.expand(n, -1, -1)])
        x_in, t_in = torch.cat([x, x]), torch.cat([t, t])
        out = self.unet(x_in, t_in, encoder_hidden_states=embeds).sample
        if self.v_prediction:  # CompVisTimestepsVDenoiser.predict_eps_from_z_and_v
            a = sd_alphas_cumprod()[t_in.to(torch.int)][:, None, None, None]
            out = torch.sqrt(a) * out + torch.sqrt(1 - a) * x_in
        cond, uncond = out.chunk(2)
        self.last_noise_uncond = uncond
        return uncond + (cond - uncond) * (self.cfg_scale * self.multiplier)


def a1111_timesteps(steps):
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def ref_ddim(model, x, timesteps, noise, eta=0.0, cfgpp=False):
    alphas_cumprod = sd_alphas_cumprod()
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.numpy()) / (1 - alphas.numpy()) * (1 - alphas.numpy() / alphas_prev.numpy()))
    if cfgpp:
        model.multiplier = 1 / 12.5
    s_in, s_x = x.new_ones([x.shape[0]]), x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        direction = model.last_noise_uncond if cfgpp else e_t
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        sigma_t, sqrt_one_minus_at = sigmas[index].item() * s_x, sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction
        x = a_prev.sqrt() * pred_x0 + dir_xt + sigma_t * noise()
    return x


ADAMS_BASHFORTH = {1: ((3, -1), 2), 2: ((23, -16, 5), 12), 3: ((55, -59, 37, -9), 24)}


def ref_plms(model, x, timesteps, noise):
    alphas_cumprod = sd_alphas_cumprod()
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in, s_x = x.new_ones([x.shape[0]]), x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def x_prev_of(x, e_t, index):
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * s_x * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        if not old_eps:  # pseudo improved Euler
            e_t_next = model(x_prev_of(x, e_t, index), timesteps[max(index - 1, 0)].item() * s_in)
            e_t_prime = (e_t + e_t_next) / 2
        else:  # Adams-Bashforth over e_t and the previous eps, newest first
            weights, divisor = ADAMS_BASHFORTH[len(old_eps)]
            e_t_prime = sum(w * e for w, e in zip(weights, [e_t, *reversed(old_eps)])) / divisor
        x = x_prev_of(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
    return x


def ref_unipc(model, x, timesteps, noise, is_img2img=False, order=3):
    """uni_pc.UniPC(predict_x0=True, variant='bh1').sample(method='multistep', order=3,
    skip_type='time_uniform', lower_order_final=True) over NoiseScheduleVP('discrete')."""
    log_alpha_array = 0.5 * torch.log(sd_alphas_cumprod())
    t_array = torch.linspace(0.0, 1.0, 1001)[1:]

    def log_alpha(t):
        return torch.from_numpy(np.interp(t.double().numpy(), t_array.double().numpy(), log_alpha_array.double().numpy())).float()

    def alpha(t):
        return torch.exp(log_alpha(t))

    def std(t):
        return torch.sqrt(1.0 - torch.exp(2.0 * log_alpha(t)))

    def lam(t):
        return log_alpha(t) - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha(t)))

    def data_pred(x, t):
        eps = model(x, (t - 1.0 / 1000) * 1000.0)
        return (x - std(t)[:, None, None, None] * eps) / alpha(t)[:, None, None, None]

    def update(x, models, ts, t, order, use_corrector=True):
        h = lam(t) - lam(ts[-1])
        rks = [((lam(ts[-(i + 1)]) - lam(ts[-1])) / h)[0] for i in range(1, order)] + [1.0]
        d1s = [(models[-(i + 1)] - models[-1]) / rks[i - 1] for i in range(1, order)]
        rks = torch.tensor(rks)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k, factorial, rows, b = h_phi_1 / hh - 1, 1, [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / hh)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_matrix, b = torch.stack(rows), torch.tensor(b)
        x_t_ = (std(t) / std(ts[-1]))[:, None, None, None] * x - (alpha(t) * h_phi_1)[:, None, None, None] * models[-1]
        pred_res = 0
        if d1s:
            d1s = torch.stack(d1s, dim=1)
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
            pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s)
        x_t = x_t_ - (alpha(t) * hh)[:, None, None, None] * pred_res
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r_matrix, b)
            model_t = data_pred(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s) if len(d1s) else 0
            x_t = x_t_ - (alpha(t) * hh)[:, None, None, None] * (corr_res + rhos_c[-1] * (model_t - models[-1]))
        return x_t, model_t

    steps = len(timesteps)
    t_start = float(timesteps[-1] / 1000 + 1 / 1000) if is_img2img else 1.0
    grid = torch.linspace(t_start, 1.0 / 1000, steps + 1)
    vec = lambda k: grid[k].expand(x.shape[0])  # noqa: E731
    models, ts = [data_pred(x, vec(0))], [vec(0)]
    for k in range(1, order):
        x, m = update(x, models, ts, vec(k), k)
        models.append(m)
        ts.append(vec(k))
    for step in range(order, steps + 1):
        x, m = update(x, models, ts, vec(step), min(order, steps + 1 - step), use_corrector=step != steps)
        models, ts = models[1:] + [m], ts[1:] + [vec(step)]
    return x


REFERENCES = {
    "DDIM": ref_ddim,
    "DDIM CFG++": lambda *args: ref_ddim(*args, cfgpp=True),
    "PLMS": ref_plms,
    "UniPC": ref_unipc,
}


@torch.no_grad()
def reference_txt2img(pipe, sampler, steps=STEPS, eta=0.0, ensd=0):
    request = tiny_request(sampler=sampler, steps=steps, seeds=SEEDS)
    model = ReferenceEps(pipe, request.prompt, request.negative_prompt, request.cfg_scale, steps)
    noise = ReferenceNoise(SEEDS, (4, 8, 8), ensd=ensd)
    timesteps = a1111_timesteps(steps)
    step_noise = lambda: noise.draw()  # noqa: E731 - A1111's randn_like hijack
    if sampler.startswith("DDIM"):
        return REFERENCES[sampler](model, noise.first, timesteps, step_noise, eta)
    return REFERENCES[sampler](model, noise.first, timesteps, step_noise)


@pytest.mark.parametrize("sampler", list(REFERENCES))
def test_timestep_sampler_equals_a1111s_algorithm(tiny_pipe, sampler):
    reports = []
    request = tiny_request(sampler=sampler, steps=STEPS, seeds=SEEDS)
    ours = generate_latents(tiny_pipe, request, lambda step, total, latents: reports.append((step, total)))
    assert_same_latents(ours, reference_txt2img(tiny_pipe, sampler))
    assert reports[-1] == (STEPS, STEPS)


@pytest.mark.parametrize("sampler", ["PLMS", "UniPC"])
def test_a_v_prediction_models_eps_comes_from_its_v(tiny_pipe, sampler):
    """UniPC's fractional timesteps: the UNet sees t, the v to eps conversion int(t)."""
    from diffusers import DDIMScheduler

    components = dict(tiny_pipe.components)
    components["scheduler"] = DDIMScheduler.from_config(tiny_pipe.scheduler.config, prediction_type="v_prediction")
    v_pipe = type(tiny_pipe)(**components)
    request = tiny_request(sampler=sampler, steps=STEPS, seeds=SEEDS)
    ours = generate_latents(v_pipe, request)
    with torch.no_grad():
        model = ReferenceEps(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale, STEPS, True)
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        assert_same_latents(ours, REFERENCES[sampler](model, noise.first, a1111_timesteps(STEPS), noise.draw))
    assert not torch.allclose(ours, generate_latents(tiny_pipe, request))


def test_ddim_eta_adds_each_images_noise_with_ensd(tiny_pipe):
    request = tiny_request(sampler="DDIM", steps=STEPS, seeds=SEEDS, eta=0.6, eta_noise_seed_delta=31337)
    ours = generate_latents(tiny_pipe, request)
    assert_same_latents(ours, reference_txt2img(tiny_pipe, "DDIM", eta=0.6, ensd=31337))
    deterministic = generate_latents(tiny_pipe, tiny_request(sampler="DDIM", steps=STEPS, seeds=SEEDS))
    assert not torch.allclose(ours, deterministic)


def test_step_counts_not_dividing_1000_run_a1111s_extra_timestep(tiny_pipe):
    # 1000 // 6 = 166: timesteps 1, 167, ..., 831 and 997: seven of them, six DDIM steps.
    assert len(a1111_timesteps(6)) == 7
    sigmas = sampler_sigmas("DDIM", "Automatic", 6, sd_alphas_cumprod())
    assert len(sigmas) == 8 and sigmas[-1] == 0
    ours = generate_latents(tiny_pipe, tiny_request(sampler="DDIM", steps=6, seeds=SEEDS))
    assert_same_latents(ours, reference_txt2img(tiny_pipe, "DDIM", steps=6))


@pytest.mark.parametrize(("sampler", "steps", "strength"), [("DDIM", 6, 0.5), ("PLMS", 8, 0.75), ("UniPC", 8, 0.6)])
def test_img2img_noises_to_timestep_t_enc_and_runs_the_ones_below(tiny_pipe, tmp_path, sampler, steps, strength):
    from PIL import Image

    from inference.common.protocol import ImageInput, JobKind
    from inference.img2img import decode, encode, run_img2img

    source = Image.new("RGB", (64, 64), (30, 160, 90))
    source.save(tmp_path / "source.png")
    request = tiny_request(
        sampler=sampler, steps=steps, seeds=SEEDS, kind=JobKind.IMG2IMG,
        image=ImageInput(str(tmp_path / "source.png"), denoising_strength=strength),
    )
    reports = []
    ours = run_img2img(tiny_pipe, request, lambda step, total, latents: reports.append((step, total)), lambda: False)
    t_enc = int(min(strength, 0.999) * steps)
    assert reports[-1] == (t_enc + 1, t_enc + 1)
    with torch.no_grad():
        # CompVisSampler.sample_img2img: the source at timesteps[t_enc], then timesteps[:t_enc].
        timesteps = a1111_timesteps(steps)
        alphas_cumprod = sd_alphas_cumprod()
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        a = alphas_cumprod[timesteps[t_enc]]
        x = encode(tiny_pipe, [source] * len(SEEDS)) * torch.sqrt(a) + noise.first * torch.sqrt(1 - a)
        model = ReferenceEps(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale, steps)
        if sampler == "UniPC":
            latents = ref_unipc(model, x, timesteps[:t_enc], noise.draw, is_img2img=True)
        else:
            latents = REFERENCES[sampler](model, x, timesteps[:t_enc], noise.draw)
        expected = decode(tiny_pipe, latents)
    for image, reference in zip(ours, expected):
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1


def test_hires_pass_of_ddim_noises_the_upscaled_latents_to_its_t_enc_timestep(tiny_pipe):
    from inference.common.protocol import HiresFix
    from inference.img2img import decode
    from inference.workflows import LATENT, run_hires

    request = tiny_request(
        sampler="DDIM", steps=4, seeds=SEEDS, hires=HiresFix(scale=1.5, steps=3, denoising_strength=0.55, upscaler=LATENT)
    )
    reports = []
    ours = run_hires(tiny_pipe, None, request, lambda step, total, latents: reports.append((step, total)), lambda: False)
    assert reports[-1] == (7, 7)  # 4 first-pass steps, then exactly the 3 hires steps
    with torch.no_grad():
        model = ReferenceEps(tiny_pipe, request.prompt, request.negative_prompt, request.cfg_scale, 4)
        noise = ReferenceNoise(SEEDS, (4, 8, 8))
        first = ref_ddim(model, noise.first, a1111_timesteps(4), noise.draw)
        upscaled = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear", antialias=False)
        # A1111: a schedule of int(3 / 0.55) = 5 steps, t_enc = 2: noised to timesteps[2].
        timesteps = a1111_timesteps(5)
        second = ReferenceNoise(SEEDS, (4, 12, 12))
        a = sd_alphas_cumprod()[timesteps[2]]
        x = upscaled * torch.sqrt(a) + second.first * torch.sqrt(1 - a)
        expected = decode(tiny_pipe, ref_ddim(model, x, timesteps[:2], second.draw))
    for image, reference in zip(ours, expected):
        assert image.size == (96, 96)
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1


def test_cross_user_batch_with_ddim_eta_gives_each_job_its_own_image(tiny_pipe):
    from inference.batching import generate_batch
    from inference.generate import generate

    first = tiny_request(job_id=1, sampler="DDIM", eta=0.5, steps=STEPS, seeds=(5,))
    second = tiny_request(job_id=2, sampler="DDIM", eta=0.5, steps=STEPS, seeds=(6, 7), prompt="a dog")
    batched = generate_batch(tiny_pipe, [first, second])
    for request, images in zip((first, second), batched):
        for image, alone in zip(images, generate(tiny_pipe, request)):
            assert np.abs(np.asarray(image, dtype=int) - np.asarray(alone, dtype=int)).max() <= 2
