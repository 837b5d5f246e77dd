"""Masks from words (JobKind.SEGMENT): CLIPSeg finds "the sky" or "her hat" in the source image.

transformers' CLIPSegForImageSegmentation scores each cell of a coarse map (352 px input,
logits per pixel of it) for the words; the sigmoid of the logits, resized to the source's own
size, is the probability that a pixel shows them. The mask is the pixels above the threshold,
grown by the dilation (a disc of that radius, scipy.ndimage), so it covers the edges the coarse
map blurs. It is written where the bot expects it (protocol.segment_mask_path), and the job's
one image is a preview: the mask in translucent red over the source, for the member to judge
before anything is repainted. A mask with nothing in it fails the job with a message that says
so; no inpaint is queued from it.

The model is loaded on the first segment job (most servers inpaint rarely) from the worker's
``segmentation_model``, offline like every model here: a folder, or a hub id already in the
cache.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from inference.common.protocol import GenerateRequest, SegmentOptions, segment_mask_path
from inference.generate import InvalidRequestError
from inference.masks import flatten

log = logging.getLogger(__name__)

PREVIEW_COLOUR = np.array([255, 40, 40], dtype=np.float32)
PREVIEW_OPACITY = 0.5


def mask_from_probabilities(probabilities: np.ndarray, threshold: float, dilation: int) -> np.ndarray:
    """The pixels whose probability passes ``threshold``, grown by a disc of radius ``dilation``."""
    mask = probabilities > threshold
    if dilation > 0 and mask.any():
        offsets = np.arange(-dilation, dilation + 1)
        disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= dilation**2
        mask = ndimage.binary_dilation(mask, structure=disc)
    return mask


def preview(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The source with the mask's area tinted red: what "Looks right" would repaint."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = np.where(mask[..., None], pixels * (1 - PREVIEW_OPACITY) + PREVIEW_COLOUR * PREVIEW_OPACITY, pixels)
    return Image.fromarray(np.rint(tinted).astype(np.uint8), mode="RGB")


class Segmenter:
    """CLIPSeg and its processor, loaded once, on the worker's device."""

    def __init__(self, source: str, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        try:
            self.processor = CLIPSegProcessor.from_pretrained(source, local_files_only=True)
            model = CLIPSegForImageSegmentation.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as error:
            raise InvalidRequestError(
                "The server's segmentation model for masks from words could not be loaded; tell its admin.",
                detail=f"segmentation_model {source!r}: {type(error).__name__}: {error}",
            ) from error
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def probabilities(self, image: Image.Image, words: str) -> np.ndarray:
        """Per pixel of ``image``, 0-1: how likely it shows ``words``."""
        inputs = self.processor(text=[words], images=[image], return_tensors="pt", padding=True)
        inputs = {
            name: value.to(self.device, dtype=self.dtype if value.is_floating_point() else value.dtype)
            for name, value in inputs.items()
        }
        logits = self.model(**inputs).logits.float().reshape(1, 1, *inputs["pixel_values"].shape[-2:])
        # Back to the source's own shape (the processor squashed it to a square).
        resized = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear")
        return torch.sigmoid(resized)[0, 0].cpu().numpy()


class Segments:
    """The worker's segment jobs: the model loaded on first use, then each job's mask and preview."""

    def __init__(self, source: str, outputs_dir: str, device: torch.device, dtype: torch.dtype) -> None:
        self.source, self.outputs_dir = source, outputs_dir
        self.device, self.dtype = device, dtype
        self._segmenter: Segmenter | None = None
        self._lock = threading.Lock()

    def segmenter(self) -> Segmenter:
        if not self.source:
            raise InvalidRequestError("This server has no segmentation model: upload a mask instead of words.")
        with self._lock:
            if self._segmenter is None:
                self._segmenter = Segmenter(self.source, self.device, self.dtype)
                log.info("segmentation model loaded from %s", self.source)
            return self._segmenter

    def run(self, request: GenerateRequest) -> list[Image.Image]:
        """Write the job's mask and return its preview (one image)."""
        assert request.image is not None and request.segment is not None, "a segment job has both"
        options: SegmentOptions = request.segment
        with Image.open(request.image.path) as opened:
            image = flatten(opened)
        probabilities = self.segmenter().probabilities(image, options.words)
        mask = mask_from_probabilities(probabilities, options.threshold, options.dilation)
        if not mask.any():
            raise InvalidRequestError(
                f"Nothing in the image matches \u201c{options.words}\u201d (the best match scored "
                f"{probabilities.max():.2f}, the threshold is {options.threshold:g}): try other words or a lower "
                "threshold, or upload a mask."
            )
        path = segment_mask_path(self.outputs_dir, request.job_id)
        _write_png(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), path)
        return [preview(image, mask)]


def segment_infotext(request: GenerateRequest) -> str:
    """The preview's PNG text: what found the mask (the inpaint job's own image gets A1111's)."""
    assert request.segment is not None
    options = request.segment
    return f"Mask from words: {options.words}, Threshold: {options.threshold:g}, Dilation: {options.dilation}"


def _write_png(image: Image.Image, path: str) -> None:
    """Written whole or not at all: the bot reads it when the member presses Looks right."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.png")
    image.save(partial, format="PNG")
    partial.replace(target)
