"""Describe jobs in the worker: up to four prompt suggestions for an image, Midjourney's /describe.

Two interrogators, as A1111 has them (DescribeOptions.interrogator):

- "clip", A1111's Interrogate CLIP (modules/interrogate.py): a BLIP caption, then CLIP ranks
  each category list (artists, flavors, mediums, movements; "<name>.topN.txt" takes the N best)
  against the image and the best entries are appended to the caption. The four suggestions
  differ: each has its own caption (BLIP's beam search returns several) and the next-best
  entries of every list (suggestion i takes ranks i*N .. i*N+N-1).
- "tagger", a WD14-style ONNX tagger as A1111's tagger extension runs it (model.onnx and
  selected_tags.csv in a folder): the general and character tags whose confidence reaches the
  threshold, most confident first, written as A1111 writes DeepBooru's tags (underscores as
  spaces, parentheses escaped). The suggestions are the tags over rising thresholds: the
  full list first, then shorter ones.

The models load when a describe job first needs them and stay loaded, in RAM between describe
jobs (A1111 moves its interrogation models off the GPU after each use too); with a model memory
budget of 0 (one model at a time) the worker drops them before the next diffusion job
(Describers.release).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference.common.protocol import (
    CLIP_INTERROGATOR,
    DESCRIBE_SUGGESTIONS,
    TAGGER_INTERROGATOR,
    DescribeModels,
    GenerateRequest,
)
from inference.generate import InvalidRequestError, IsCancelled, JobCancelledError

log = logging.getLogger(__name__)

# The category lists shipped with the bot, in A1111's interrogate folder layout.
SHIPPED_CATEGORIES = Path(__file__).parent / "assets" / "interrogate"
_TOP_N = re.compile(r"\.top(\d+)$")
# A1111's Interrogate CLIP defaults (interrogate_clip_min_length, _max_length).
CAPTION_MIN_TOKENS = 24
CAPTION_MAX_TOKENS = 48
# A1111 ranks at most this many entries of each list (interrogate_clip_dict_limit): its own
# download of the lists holds ~100,000 flavors. The texts are encoded TEXT_BATCH at a time.
CATEGORY_LIMIT = 1500
TEXT_BATCH = 256
# CLIP's similarity scale, as A1111's rank() applies it before the softmax.
CLIP_LOGIT_SCALE = 100.0
# WD14 tagger categories (selected_tags.csv's "category"): ratings are never suggested.
GENERAL_TAGS, CHARACTER_TAGS = 0, 4
# A1111 escapes these in tags so that "(cosplay)" stays text and is not read as attention.
_ESCAPED = re.compile(r"([\\()])")
# Tags that are faces written with underscores ("^_^"), kept as they are (the tagger extension's list).
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@", "^_^",
    "o_o", "u_u", "x_x", "|_|", "||_||",
})

# Called as describe jobs advance: (stage, stages), as JobProgress's steps.
OnStage = Callable[[int, int, None], None]


@dataclass(frozen=True)
class Category:
    """One list CLIP ranks: A1111's artists, flavors (top 3), mediums, movements."""

    name: str
    topn: int
    items: tuple[str, ...]


def load_categories(folder: str | Path = "") -> tuple[Category, ...]:
    """The "*.txt" lists of ``folder`` ("": the shipped ones), in name order."""
    path = Path(folder) if folder else SHIPPED_CATEGORIES
    categories = []
    for file in sorted(path.glob("*.txt")):
        match = _TOP_N.search(file.stem)
        lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
        items = tuple(line for line in lines if line)[:CATEGORY_LIMIT]
        if items:
            name = file.stem[: match.start()] if match else file.stem
            categories.append(Category(name, int(match[1]) if match else 1, items))
    if not categories:
        raise ValueError(f"describe.categories_dir {str(path)!r} holds no .txt list with entries")
    return tuple(categories)


def tag_text(tag: str) -> str:
    """A booru tag as a prompt word, as A1111 writes DeepBooru's: spaces, parentheses escaped."""
    if tag not in KAOMOJI:
        tag = tag.replace("_", " ")
    return _ESCAPED.sub(r"\\\1", tag)


def _distinct(texts: Sequence[str], count: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text for text in texts if text))[:count]


class ClipInterrogator:
    """BLIP captions plus CLIP-ranked category entries (A1111's Interrogate CLIP)."""

    def __init__(
        self, caption_source: str, clip_source: str, categories: Sequence[Category], device: torch.device,
        dtype: torch.dtype,
    ):
        from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPModel, CLIPProcessor

        self.device, self.dtype = device, dtype
        self.caption_processor = BlipProcessor.from_pretrained(caption_source)
        self.caption_model = BlipForConditionalGeneration.from_pretrained(caption_source, dtype=dtype).to(device).eval()
        self.clip_processor = CLIPProcessor.from_pretrained(clip_source)
        self.clip_model = CLIPModel.from_pretrained(clip_source, dtype=dtype).to(device).eval()
        self.categories = tuple(categories)
        self._text_features: dict[str, torch.Tensor] = {}  # per category, computed once

    def to(self, device: torch.device) -> None:
        """Both models (and the lists' encoded texts) on ``device``."""
        if device != self.device:
            self.caption_model.to(device)
            self.clip_model.to(device)
            self._text_features = {name: features.to(device) for name, features in self._text_features.items()}
            self.device = device

    @torch.inference_mode()
    def captions(self, image: Image.Image, count: int) -> list[str]:
        """Up to ``count`` distinct captions, best first: BLIP's beam search, as A1111 captions
        (no sampling), returning its best beams."""
        inputs = self.caption_processor(images=image, return_tensors="pt").to(self.device, self.dtype)
        beams = max(count, 1)
        tokens = self.caption_model.generate(
            **inputs, num_beams=beams, num_return_sequences=beams, min_length=CAPTION_MIN_TOKENS,
            max_length=CAPTION_MAX_TOKENS,
        )
        texts = self.caption_processor.batch_decode(tokens, skip_special_tokens=True)
        return list(_distinct([" ".join(text.split()) for text in texts], count)) or [""]

    @torch.inference_mode()
    def image_features(self, image: Image.Image) -> torch.Tensor:
        pixels = self.clip_processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        features = self.clip_model.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        return features / features.norm(dim=-1, keepdim=True)

    @torch.inference_mode()
    def text_features(self, category: Category) -> torch.Tensor:
        if category.name not in self._text_features:
            chunks = []
            for start in range(0, len(category.items), TEXT_BATCH):
                tokens = self.clip_processor.tokenizer(
                    list(category.items[start : start + TEXT_BATCH]), padding=True, truncation=True, return_tensors="pt"
                ).to(self.device)
                features = self.clip_model.get_text_features(**tokens)
                chunks.append(getattr(features, "pooler_output", features))
            features = torch.cat(chunks)
            self._text_features[category.name] = features / features.norm(dim=-1, keepdim=True)
        return self._text_features[category.name]

    def rank(self, image_features: torch.Tensor, category: Category) -> list[tuple[str, float]]:
        """Every entry of the list with its probability, best first (A1111's rank over all)."""
        logits = CLIP_LOGIT_SCALE * image_features.float() @ self.text_features(category).float().T
        similarity = logits.softmax(dim=-1)
        probabilities = similarity.mean(dim=0).cpu()
        order = torch.argsort(probabilities, descending=True).tolist()
        return [(category.items[i], float(probabilities[i])) for i in order]

    def suggestions(
        self, image: Image.Image, count: int, on_stage: OnStage, is_cancelled: IsCancelled
    ) -> tuple[str, ...]:
        captions = self.captions(image, count)
        on_stage(1, 2, None)
        if is_cancelled():
            raise JobCancelledError
        features = self.image_features(image)
        ranked = [(category.topn, self.rank(features, category)) for category in self.categories]
        on_stage(2, 2, None)
        texts = []
        for index in range(count):
            picks = [
                ranking[(index * topn + k) % len(ranking)][0]
                for topn, ranking in ranked
                for k in range(min(topn, len(ranking)))
            ]
            texts.append(", ".join(part for part in (captions[index % len(captions)], *picks) if part))
        return _distinct(texts, count)


class OnnxTagger:
    """A WD14-style tagger: model.onnx (NHWC BGR float input, one sigmoid per tag) and
    selected_tags.csv (tag_id, name, category, count), as A1111's tagger extension keeps it."""

    def __init__(self, folder: str, use_gpu: bool):
        import onnxruntime

        model, tags = Path(folder) / "model.onnx", Path(folder) / "selected_tags.csv"
        for file in (model, tags):
            if not file.is_file():
                raise InvalidRequestError(
                    "The server's tagger is not installed correctly; an admin must fix it.",
                    detail=f"describe.tagger: {file} is missing",
                )
        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(model), providers=providers)
        self.input = self.session.get_inputs()[0]
        self.side = int(self.input.shape[1])
        with tags.open(encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file))
        self.names = [row["name"] for row in rows]
        self.kinds = np.array([int(row["category"]) for row in rows])

    def confidences(self, image: Image.Image) -> list[tuple[str, float]]:
        """General and character tags with their confidence, most confident first."""
        # Padded to a square on white and resized, RGB to BGR, 0-255: the taggers' training input.
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        pixels = np.asarray(square.resize((self.side, self.side), Image.Resampling.BICUBIC), dtype=np.float32)
        batch = np.ascontiguousarray(pixels[None, :, :, ::-1])
        scores = self.session.run(None, {self.input.name: batch})[0][0]
        kept = np.isin(self.kinds, (GENERAL_TAGS, CHARACTER_TAGS))
        order = [i for i in np.argsort(-scores, kind="stable") if kept[i]]
        return [(self.names[i], float(scores[i])) for i in order]

    def suggestions(self, image: Image.Image, threshold: float, count: int, on_stage: OnStage) -> tuple[str, ...]:
        tags = self.confidences(image)
        on_stage(1, 1, None)
        texts = []
        for index in range(count):
            # The full list first, then only the surer tags: thresholds rising towards 1.
            level = threshold + (1 - threshold) * index / (count + 1)
            texts.append(", ".join(tag_text(name) for name, score in tags if score >= level))
        return _distinct(texts, count)


class Describers:
    """The worker's interrogators, loaded on a describe job's first use of each."""

    def __init__(self, models: DescribeModels, device: torch.device, dtype: torch.dtype):
        self.models, self.device, self.dtype = models, device, dtype
        self._clip: ClipInterrogator | None = None
        self._tagger: OnnxTagger | None = None

    @property
    def loaded(self) -> bool:
        return self._clip is not None or self._tagger is not None

    def release(self) -> None:
        """Drop the loaded models (the model cache keeps one model at a time)."""
        if self.loaded:
            log.info("unloading the describe models")
            self._clip = self._tagger = None

    def describe(self, request: GenerateRequest, on_stage: OnStage, is_cancelled: IsCancelled) -> tuple[str, ...]:
        assert request.image is not None and request.describe is not None, "a describe job needs image and describe"
        with Image.open(request.image.path) as opened:
            image = opened.convert("RGB")
        interrogator = request.describe.interrogator
        if interrogator == CLIP_INTERROGATOR:
            clip = self.clip()
            clip.to(self.device)
            try:
                suggestions = clip.suggestions(image, DESCRIBE_SUGGESTIONS, on_stage, is_cancelled)
            finally:
                # Back to RAM between describe jobs, as A1111 does unless told to keep them in
                # VRAM: the GPU's memory is the diffusion models'; the next job moves them back.
                clip.to(torch.device("cpu"))
        elif interrogator == TAGGER_INTERROGATOR:
            suggestions = self.tagger().suggestions(image, self.models.tag_threshold, DESCRIBE_SUGGESTIONS, on_stage)
        else:
            raise InvalidRequestError(f"Unknown interrogator `{interrogator}`.")
        if not suggestions:
            raise InvalidRequestError(
                f"The {interrogator} found nothing it is sure of in this image: no suggestion to give."
            )
        return suggestions

    def clip(self) -> ClipInterrogator:
        if self._clip is None:
            models = self.models
            if not (models.caption_model and models.clip_model):
                raise InvalidRequestError("This server has no caption and CLIP models configured for /describe.")
            log.info("loading the describe models %s and %s", models.caption_model, models.clip_model)
            self._clip = ClipInterrogator(
                models.caption_model, models.clip_model, load_categories(models.categories_dir), self.device, self.dtype
            )
        return self._clip

    def tagger(self) -> OnnxTagger:
        if self._tagger is None:
            if not self.models.tagger:
                raise InvalidRequestError("This server has no tagger configured for /describe.")
            log.info("loading the tagger %s", self.models.tagger)
            self._tagger = OnnxTagger(self.models.tagger, use_gpu=self.device.type == "cuda")
        return self._tagger
