"""The VAE in half precision without black images: A1111's automatic revert to 32-bit floats.

SDXL's VAE overflows float16 on some latents: its decode then comes back as NaNs, which the
image processor turns into a black image. A1111 decodes in half precision anyway (the VAE is
a big share of a 1024 px job's memory and time) and, when a decode or encode produces NaNs,
prints "A tensor with NaNs was produced in VAE", converts the VAE to float32 for good
("Automatically revert VAE to 32-bit floats", on by default) and does it again
(modules/processing.py decode_latent_batch, modules/devices.py test_for_nans).

``guard_vae_precision`` does the same on a loaded pipeline's VAE: its ``decode`` and
``encode`` are wrapped (on the instance, so every pipeline derived from the model shares it)
to check for NaNs and retry once in float32, keeping float32 from then on. diffusers' own
answer, decoding every image in float32 when the VAE's config says ``force_upcast`` (SDXL's
does), is turned off for a guarded VAE: the guard makes it unneeded. A VAE that is fine in
float16 (the "fp16-fix" SDXL VAE, configured as the model's VAE) never trips it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

NAN_MESSAGE = (
    "A tensor with NaNs was produced in VAE (%s in %s); converting the VAE to 32-bit floats and "
    "retrying, as A1111 does. A VAE that works in half precision (SDXL's fp16-fix) avoids this."
)


def guard_vae_precision(pipe: object) -> bool:
    """Guard the pipeline's VAE when it runs in half precision; True when it is guarded (now
    or already). Nothing to do for a float32 VAE or a pipeline without one."""
    vae = getattr(pipe, "vae", None)
    if vae is None or vae.dtype == torch.float32:
        return False
    if getattr(vae, "_nan_guarded", False):
        return True
    for method in ("decode", "encode"):
        setattr(vae, method, _with_retry(vae, getattr(vae, method), method))
    vae._nan_guarded = True
    if getattr(vae.config, "force_upcast", False):
        vae.register_to_config(force_upcast=False)
    return True


def _first_tensor(output: Any) -> torch.Tensor:
    """The tensor a decode (images) or encode (the latent distribution's mean) produced."""
    if isinstance(output, tuple):
        output = output[0]
    for name in ("sample", "latent_dist"):
        output = getattr(output, name, output)
    return getattr(output, "mean", output) if not isinstance(output, torch.Tensor) else output


def _with_retry(vae: torch.nn.Module, method, name: str):  # type: ignore[no-untyped-def]
    @functools.wraps(method)
    def guarded(x: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        output = method(x.to(vae.dtype), *args, **kwargs)
        if vae.dtype == torch.float32 or not torch.isnan(_first_tensor(output)).any():
            return output
        log.warning(NAN_MESSAGE, name, vae.dtype)
        vae.to(torch.float32)
        return method(x.to(torch.float32), *args, **kwargs)

    return guarded
