"""A1111 1.10's CFG denoiser for SDXL, the refiner switch and inpainting, written from its
sources for the k-path tests (modules/sd_samplers_cfg_denoiser.py CFGDenoiser.forward,
sd_samplers_common.apply_refiner, sd_models_xl.get_learned_conditioning,
processing.py StableDiffusionProcessingImg2Img and inpainting_image_conditioning), not from
inference/k_denoiser.py. Only the prompt encoding (checked elsewhere) is shared."""

from __future__ import annotations

import numpy as np
import torch

from inference.conditioning import encode_conditioning
from tests.test_samplers_reference import ReferenceDenoiser


class A1111Model:
    """One checkpoint as A1111 holds it once loaded: CompVisDenoiser's sigma table, the UNet,
    and the conds of get_learned_conditioning (crossattn, and SDXL's vector parts)."""

    def __init__(self, pipe, prompt, negative, steps, width, height, aesthetic=False, hires_steps=None,
                 v_prediction=False, zsnr=False):
        config = pipe.scheduler.config
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)
        if zsnr:
            alphas_cumprod = rescale_zero_terminal_snr_abar(alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod
        self.v_prediction = v_prediction
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.unet = pipe.unet
        conditioning = encode_conditioning(pipe, prompt, negative, steps, hires_steps=hires_steps)
        self.cond, self.uncond = conditioning.at_step(0)
        self.pooled = conditioning.pooled_at_step(0) if conditioning.cond_pooled else None
        # original_size_as_tuple, crop_coords_top_left, then target_size_as_tuple or the
        # refiner's aesthetic_score (6 for the prompt, 2.5 for the negative prompt).
        if aesthetic:
            self.sizes = (torch.tensor([[height, width, 0, 0, 6.0]]), torch.tensor([[height, width, 0, 0, 2.5]]))
        else:
            self.sizes = (torch.tensor([[height, width, 0, 0, height, width]]),) * 2


    def unet_conditioning(self, n):
        """The UNet's conds for n cond rows then n uncond rows: the crossattn, and SDXL's
        vector parts as diffusers' added_cond_kwargs."""
        kwargs = {}
        if self.pooled is not None:
            cond_sizes, uncond_sizes = self.sizes
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.cat([self.pooled[0].expand(n, -1), self.pooled[1].expand(n, -1)]),
                "time_ids": torch.cat([cond_sizes.expand(n, -1), uncond_sizes.expand(n, -1)]),
            }
        return torch.cat([self.cond.expand(n, -1, -1), self.uncond.expand(n, -1, -1)]), kwargs


def rescale_zero_terminal_snr_abar(alphas_cumprod):
    """A1111's sd_models.rescale_zero_terminal_snr_abar."""
    alphas_bar_sqrt = alphas_cumprod.sqrt()
    alphas_bar_sqrt_0 = alphas_bar_sqrt[0].clone()
    alphas_bar_sqrt_T = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= alphas_bar_sqrt_T
    alphas_bar_sqrt *= alphas_bar_sqrt_0 / (alphas_bar_sqrt_0 - alphas_bar_sqrt_T)
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return alphas_bar


class A1111Denoiser(ReferenceDenoiser):
    """CFGDenoiser.forward over CompVisDenoiser (or CompVisVDenoiser), with SDXL's dict conds, the
    inpainting model's c_concat, the latent mask blend after denoising, and apply_refiner."""

    def __init__(self, model: A1111Model, cfg_scale, image_cond=None, init_latent=None, nmask=None,
                 refiner: A1111Model | None = None, switch_at=None):
        self.model, self.cfg_scale = model, cfg_scale
        self.sigmas, self.log_sigmas = model.sigmas, model.log_sigmas
        self.image_cond, self.init_latent, self.nmask = image_cond, init_latent, nmask
        self.refiner, self.switch_at = refiner, switch_at
        self.switched_at_call = None
        self.calls = 0

    def __call__(self, x, sigma):
        if self.refiner is not None:
            timestep = torch.argmin(torch.abs(self.sigmas - torch.max(sigma)))
            if (999 - timestep) / 1000 >= self.switch_at:
                self.model, self.refiner, self.switched_at_call = self.refiner, None, self.calls
                self.sigmas, self.log_sigmas = self.model.sigmas, self.model.log_sigmas
        self.calls += 1
        model, n = self.model, x.shape[0]
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        c_in = (1 / (sigma_in**2 + 1) ** 0.5)[:, None, None, None]
        unet_in = x_in * c_in
        if self.image_cond is not None:
            unet_in = torch.cat([unet_in, torch.cat([self.image_cond, self.image_cond])], dim=1)
        embeds, kwargs = model.unet_conditioning(n)
        out = model.unet(unet_in, self.sigma_to_t(sigma_in), encoder_hidden_states=embeds, **kwargs).sample
        s = sigma_in[:, None, None, None]
        if model.v_prediction:  # CompVisVDenoiser, sigma_data 1
            denoised = out * (-s / (s**2 + 1) ** 0.5) + x_in / (s**2 + 1)
        else:
            denoised = x_in + out * -s
        cond, uncond = denoised.chunk(2)
        denoised = uncond + (cond - uncond) * self.cfg_scale
        if self.nmask is not None:
            denoised = denoised * self.nmask + self.init_latent * (1 - self.nmask)
        return denoised


def assert_same_images(ours, expected, levels: int = 1) -> None:
    """Each image within ``levels`` of the reference's, pixel by pixel."""
    assert len(ours) == len(expected)
    for image, reference in zip(ours, expected):
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= levels


class A1111TimestepEps:
    """CFGDenoiserTimesteps.forward over CompVisTimestepsDenoiser (CompVisTimestepsVDenoiser
    for v): the UNet's eps at timestep t, CFG-combined; the source latents blended into x
    before the model (its mask_before_denoising); apply_refiner at int(max(t)), the fallback
    for samplers without sigmas. ``multiplier`` and ``last_noise_uncond`` serve DDIM CFG++
    (tests/test_samplers_timesteps.py's loops)."""

    def __init__(self, model: A1111Model, cfg_scale, image_cond=None, init_latent=None, nmask=None,
                 refiner: A1111Model | None = None, switch_at=None):
        self.model, self.cfg_scale = model, cfg_scale
        self.image_cond, self.init_latent, self.nmask = image_cond, init_latent, nmask
        self.refiner, self.switch_at = refiner, switch_at
        self.switched_at_call = None
        self.calls = 0
        self.multiplier = 1.0
        self.last_noise_uncond = None

    def __call__(self, x, t):
        if self.refiner is not None and (999 - int(torch.max(t))) / 1000 >= self.switch_at:
            self.model, self.refiner, self.switched_at_call = self.refiner, None, self.calls
        self.calls += 1
        if self.nmask is not None:
            x = x * self.nmask + self.init_latent * (1 - self.nmask)
        model, n = self.model, x.shape[0]
        x_in, t_in = torch.cat([x, x]), torch.cat([t, t])
        unet_in = x_in
        if self.image_cond is not None:
            unet_in = torch.cat([x_in, torch.cat([self.image_cond, self.image_cond])], dim=1)
        embeds, kwargs = model.unet_conditioning(n)
        out = model.unet(unet_in, t_in, encoder_hidden_states=embeds, **kwargs).sample
        if model.v_prediction:
            a = model.alphas_cumprod[t_in.to(torch.int)][:, None, None, None]
            out = a.sqrt() * out + (1 - a).sqrt() * x_in
        cond, uncond = out.chunk(2)
        self.last_noise_uncond = uncond
        return uncond + (cond - uncond) * (self.cfg_scale * self.multiplier)
