"""inference.describe on tiny random-weight models the tests build (tests/describe_fixtures.py):
CLIP's ranking on a planted case, the captions, the tagger's thresholds and tag writing, and
the refusals when a model is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from inference.common.protocol import DescribeModels, DescribeOptions, GenerateRequest, ImageInput, JobKind
from inference import describe
from inference.describe import Category, ClipInterrogator, Describers, load_categories, tag_text
from inference.generate import InvalidRequestError, JobCancelledError
from tests.describe_fixtures import build_caption_model, build_clip_model, build_tagger

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "describe-models"


@pytest.fixture(scope="module")
def interrogator(models_dir) -> ClipInterrogator:
    flavors = Category("flavors", 3, ("golden hour", "moody", "8k", "bokeh", "pastel colors", "epic", "cozy"))
    mediums = Category("mediums", 1, ("a photograph", "an oil painting", "pixel art"))
    return ClipInterrogator(
        build_caption_model(str(models_dir / "blip")), build_clip_model(str(models_dir / "clip")),
        (flavors, mediums), CPU, torch.float32,
    )


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> str:
    Image.new("RGB", size, colour).save(path)
    return str(path)


def describe_request(path: str, interrogator: str) -> GenerateRequest:
    return GenerateRequest(
        job_id=1, kind=JobKind.DESCRIBE, model="tiny", prompt="", negative_prompt="", width=48, height=40, steps=1,
        cfg_scale=7.0, sampler="Euler", seeds=(5,), image=ImageInput(path), describe=DescribeOptions(interrogator),
    )


def plant_image_embedding(interrogator: ClipInterrogator, image: Image.Image, target: torch.Tensor) -> None:
    """Set CLIP's visual projection so that this image's embedding points exactly at ``target``."""
    model = interrogator.clip_model
    pixels = interrogator.clip_processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=pixels).pooler_output[0]
        model.visual_projection.weight.copy_(torch.outer(target, pooled) / pooled.dot(pooled))


def test_clip_ranks_the_planted_entry_first_and_varies_the_suggestions(interrogator, tmp_path, monkeypatch):
    monkeypatch.setattr(describe, "TEXT_BATCH", 2)  # the lists' texts encoded in several batches
    image = Image.open(picture(tmp_path / "red.png", (220, 30, 20))).convert("RGB")
    flavors, mediums = interrogator.categories
    for target, category in (("pastel colors", flavors), ("pixel art", mediums)):
        plant_image_embedding(interrogator, image, interrogator.text_features(category)[category.items.index(target)])
        ranking = interrogator.rank(interrogator.image_features(image), category)
        assert ranking[0][0] == target
        assert sorted(name for name, _ in ranking) == sorted(category.items)
        assert [score for _, score in ranking] == sorted((score for _, score in ranking), reverse=True)

    stages = []
    suggestions = interrogator.suggestions(image, 4, lambda *stage: stages.append(stage), lambda: False)
    assert stages == [(1, 2, None), (2, 2, None)]
    assert len(suggestions) == 4 and len(set(suggestions)) == 4
    ranked_flavors = [name for name, _ in interrogator.rank(interrogator.image_features(image), flavors)]
    ranked_mediums = [name for name, _ in interrogator.rank(interrogator.image_features(image), mediums)]
    captions = interrogator.captions(image, 4)
    assert len(captions) > 1 and all(caption.startswith("red") for caption in captions)  # the planted captioner
    for index, suggestion in enumerate(suggestions):
        # The caption of its beam, then the next-best three flavors and the next-best medium.
        flavors_picked = [ranked_flavors[(index * 3 + k) % len(ranked_flavors)] for k in range(3)]
        medium = ranked_mediums[index % len(ranked_mediums)]
        assert suggestion == ", ".join([captions[index % len(captions)], *flavors_picked, medium])
    assert "pixel art" in suggestions[0]

    with pytest.raises(JobCancelledError):
        interrogator.suggestions(image, 4, lambda *stage: None, lambda: True)


def test_the_tagger_writes_tags_as_a1111_over_rising_thresholds(models_dir, tmp_path):
    models = DescribeModels(tagger=build_tagger(str(models_dir / "tagger")), tag_threshold=0.5)
    describers = Describers(models, CPU, torch.float32)
    red = describe_request(picture(tmp_path / "red.png", (255, 0, 0)), "tagger")
    suggestions = describers.describe(red, lambda *stage: None, lambda: False)
    # Most confident first; the rating ("general") never; underscores as spaces but in the
    # face "^_^"; parentheses escaped so they are not read as attention.
    assert suggestions[0] == r"red hair, hatsune miku \(cosplay\), ^_^, 1girl"
    assert all("general" not in text for text in suggestions)
    # The later suggestions keep only the surer tags: 1girl (0.73) falls out first.
    assert suggestions[1:] and all(text and "1girl" not in text for text in suggestions[1:])
    assert len(set(suggestions)) == len(suggestions)
    blue = describe_request(picture(tmp_path / "blue.png", (0, 0, 255), size=(30, 60)), "tagger")
    assert describers.describe(blue, lambda *stage: None, lambda: False)[0] == "blue sky, 1girl"
    assert describers.loaded
    describers.release()
    assert not describers.loaded


def test_tag_text():
    assert tag_text("long_hair") == "long hair"
    assert tag_text("^_^") == "^_^"
    assert tag_text("saber_(fate)") == r"saber \(fate\)"


def test_missing_models_are_refused_with_a_message(tmp_path):
    path = picture(tmp_path / "grey.png", (128, 128, 128))
    nothing = Describers(DescribeModels(), CPU, torch.float32)
    with pytest.raises(InvalidRequestError, match="no caption and CLIP models configured"):
        nothing.describe(describe_request(path, "clip"), lambda *stage: None, lambda: False)
    with pytest.raises(InvalidRequestError, match="no tagger configured"):
        nothing.describe(describe_request(path, "tagger"), lambda *stage: None, lambda: False)
    (tmp_path / "broken").mkdir()
    broken = Describers(DescribeModels(tagger=str(tmp_path / "broken")), CPU, torch.float32)
    with pytest.raises(InvalidRequestError, match="not installed correctly") as raised:
        broken.describe(describe_request(path, "tagger"), lambda *stage: None, lambda: False)
    assert "model.onnx is missing" in raised.value.detail


def test_category_lists(tmp_path):
    shipped = {category.name: category for category in load_categories()}
    assert set(shipped) == {"artists", "flavors", "mediums", "movements"}
    assert shipped["flavors"].topn == 3 and shipped["artists"].topn == 1
    (tmp_path / "lighting.top2.txt").write_text("soft light\n\nhard light\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    assert load_categories(tmp_path) == (Category("lighting", 2, ("soft light", "hard light")),)
    with pytest.raises(ValueError, match="holds no .txt list"):
        load_categories(tmp_path / "empty.txt")
    # A1111's own downloaded lists are long: only the first CATEGORY_LIMIT entries are ranked.
    (tmp_path / "lighting.top2.txt").write_text("\n".join(f"light {n}" for n in range(3000)), encoding="utf-8")
    assert len(load_categories(tmp_path)[0].items) == describe.CATEGORY_LIMIT
