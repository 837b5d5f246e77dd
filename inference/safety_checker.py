"""The safety classifier: diffusers' StableDiffusionSafetyChecker, used only to flag images.

It is loaded once at worker start-up from ``WorkerConfig.safety_checker``: a hub id such as
"CompVis/stable-diffusion-safety-checker" (config.json and preprocessor_config.json at the
top), or a local folder laid out the same way, or a Stable Diffusion model folder (or hub id)
holding ``safety_checker/`` and ``feature_extractor/``. Hub ids follow huggingface_hub's cache
and HF_HUB_OFFLINE, as models do (inference.common.sources).

The verdict is computed here from the checker's own weights and thresholds, the way its
``forward`` does, but without ``forward``: that one replaces flagged images with black ones.
The worker only says which images are flagged; what is posted is the bot's decision (blurred,
spoilered or withheld, per server: bot.flagged_results).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from inference.common.sources import SourceKind, classify_source

log = logging.getLogger(__name__)

CONFIG = "config.json"
PROCESSOR_CONFIG = "preprocessor_config.json"
# Where a Stable Diffusion model folder keeps them (model_index.json names both).
MODEL_SUBFOLDERS = ("safety_checker", "feature_extractor")
# Images per forward pass: a plot of many cells is checked in slices so the memory a check
# needs stays that of one ordinary batch.
MAX_BATCH = 16
# diffusers' forward raises every concept score of an image by this much once one of its
# "special care" concepts matched: a stricter filter for those images.
SPECIAL_CARE_ADJUSTMENT = 0.01


class SafetyCheckerError(ValueError):
    """The configured safety checker cannot be loaded; the message says which and why."""


class SafetyChecker:
    """A loaded checker and its image processor, on the worker's device and dtype."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype):  # type: ignore[no-untyped-def]
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image: True where the classifier judges it NSFW."""
        verdicts: list[bool] = []
        for start in range(0, len(images), MAX_BATCH):
            verdicts.extend(self._flags(images[start : start + MAX_BATCH]))
        return verdicts

    def _flags(self, images: Sequence[Image.Image]) -> list[bool]:
        if not images:
            return []
        rgb = [image.convert("RGB") for image in images]
        pixels = self.processor(images=rgb, return_tensors="pt").pixel_values
        model = self.model
        with torch.inference_mode():
            pooled = model.vision_model(pixels.to(self.device, self.dtype))[1]
            embeds = model.visual_projection(pooled).float()
            special = _cosine(embeds, model.special_care_embeds) - model.special_care_embeds_weights.float()
            # diffusers rounds every score to 3 decimals before comparing it with 0: so do we,
            # so that an image it would black out is exactly an image flagged here.
            special_care = (special.round(decimals=3) > 0).any(dim=1, keepdim=True)
            concepts = _cosine(embeds, model.concept_embeds) - model.concept_embeds_weights.float()
            concepts = concepts + special_care * SPECIAL_CARE_ADJUSTMENT
            flagged = (concepts.round(decimals=3) > 0).any(dim=1)
        return [bool(value) for value in flagged.cpu()]


def _cosine(embeds: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    normalized = torch.nn.functional.normalize
    return normalized(embeds) @ normalized(concepts.float()).t()


def load_safety_checker(source: str, device: torch.device, dtype: torch.dtype) -> SafetyChecker:
    """Load the checker at ``source``; raises SafetyCheckerError naming it and the reason."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    source = source.strip()
    checker_folder, processor_folder = _subfolders(source)
    log.info("loading the safety checker from %s on %s as %s", source, device, dtype)
    try:
        model = StableDiffusionSafetyChecker.from_pretrained(source, subfolder=checker_folder)
        processor = CLIPImageProcessor.from_pretrained(source, subfolder=processor_folder)
    except Exception as exc:  # OSError, a bad config, a corrupt file: all mean the same to the admin
        raise SafetyCheckerError(f"safety_checker {source!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    model = model.to(device=device, dtype=dtype).eval()
    return SafetyChecker(model, processor, device, dtype)


def _subfolders(source: str) -> tuple[str, str]:
    """Where the checker and its processor are inside ``source``: at the top (the checker's
    own repository) or in a model's safety_checker/ and feature_extractor/ folders."""
    if not source:
        raise SafetyCheckerError("safety_checker is empty")
    if classify_source(source) is SourceKind.LOCAL_FOLDER:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise SafetyCheckerError(f"safety_checker {source!r}: the folder does not exist")
        if (folder / CONFIG).is_file():
            return "", ""
        if all((folder / sub / name).is_file() for sub, name in zip(MODEL_SUBFOLDERS, (CONFIG, PROCESSOR_CONFIG))):
            return MODEL_SUBFOLDERS
        raise SafetyCheckerError(
            f"safety_checker {source!r}: the folder has no {CONFIG}, nor {MODEL_SUBFOLDERS[0]}/{CONFIG} "
            f"and {MODEL_SUBFOLDERS[1]}/{PROCESSOR_CONFIG}: it is not a StableDiffusionSafetyChecker"
        )
    return _hub_subfolders(source)


def _hub_subfolders(repo_id: str) -> tuple[str, str]:
    from huggingface_hub import constants, file_exists, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        if isinstance(try_to_load_from_cache(repo_id, CONFIG), str):
            return "", ""
        if isinstance(try_to_load_from_cache(repo_id, f"{MODEL_SUBFOLDERS[0]}/{CONFIG}"), str):
            return MODEL_SUBFOLDERS
    except HFValidationError as exc:
        raise SafetyCheckerError(
            f"safety_checker {repo_id!r} is not an existing folder and not a valid Hugging Face hub id ({exc})"
        ) from None
    if constants.HF_HUB_OFFLINE:
        raise SafetyCheckerError(
            f"safety_checker {repo_id!r} is not a local folder, and the hub id is not in the local cache "
            f"({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE is set; download it once online or unset HF_HUB_OFFLINE"
        )
    try:  # online, not cached yet: one small request tells the two layouts apart
        at_top = file_exists(repo_id, CONFIG)
    except Exception as exc:
        raise SafetyCheckerError(f"safety_checker {repo_id!r} cannot be reached on the hub: {exc}") from exc
    return ("", "") if at_top else MODEL_SUBFOLDERS
