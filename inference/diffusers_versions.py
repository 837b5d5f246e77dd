"""What differs between the diffusers versions pyproject allows, in one place: the model
loader (inference.models) and the preview decoder (inference.previews) both load weights."""

from __future__ import annotations


def dtype_keyword() -> str:
    """from_pretrained's keyword for the weights' dtype: recent diffusers renamed torch_dtype to
    dtype and warn on the old name; the versions that predate the rename only know torch_dtype."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
