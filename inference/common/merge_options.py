"""A1111's checkpoint merger's options (JobKind.MERGE), as they cross from the bot to the
worker in GenerateRequest.merge: torch-free, beside the protocol (inference.common.protocol)
that carries them. inference.common.merge_plan checks them from the files' headers;
inference.merge runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["MergeMethod", "MergeOptions", "MergeSource"]


class MergeMethod(StrEnum):
    """A1111's checkpoint merger's "Interpolation method" (its labels, as its recipe says them)."""

    NO_INTERPOLATION = "No interpolation"  # A alone: converts to fp16 and bakes in a VAE
    WEIGHTED_SUM = "Weighted sum"  # A * (1 - M) + B * M
    ADD_DIFFERENCE = "Add difference"  # A + (B - C) * M


@dataclass(frozen=True, slots=True)
class MergeSource:
    """A checkpoint a merge reads: the model's name and its single file."""

    name: str
    path: str
    sha256: str = ""  # the file's sha256 when the bot knows it; "": the worker computes it


@dataclass(frozen=True, slots=True)
class MergeOptions:
    """A1111's checkpoint merger (inference.merge): ``output`` is the new .safetensors file,
    which must not exist yet; the bot picked its folder and name and checked the inputs."""

    method: MergeMethod
    primary: MergeSource  # A
    output: str
    secondary: MergeSource | None = None  # B: every method but No interpolation
    tertiary: MergeSource | None = None  # C: Add difference
    multiplier: float = 0.5  # M, 0-1
    vae_path: str = ""  # a VAE file baked into the result ("": A's own VAE kept)
    vae_name: str = ""
