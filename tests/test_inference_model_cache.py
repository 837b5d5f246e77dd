"""Several models kept loaded under a memory budget, least recently used evicted first.

Real loads of the tiny model under several names (each name is a pipeline of its own), and of
the tiny inpainting model as a model's inpaint_source; sizes are measured, not assumed.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from inference.generate import generate
from inference.img2img import derived_pipeline
from inference.models import PipelineCache, pipeline_bytes
from inference.common.protocol import ModelSpec
from tests.inference_fixtures import tiny_request

CPU = torch.device("cpu")


@pytest.fixture
def specs(tiny_model_dir, tiny_inpaint_model_dir) -> list[ModelSpec]:
    return [
        ModelSpec("a", str(tiny_model_dir), inpaint_source=str(tiny_inpaint_model_dir)),
        ModelSpec("b", str(tiny_model_dir)),
        ModelSpec("c", str(tiny_model_dir)),
    ]


@pytest.fixture
def model_mb(tiny_pipe) -> float:
    return pipeline_bytes(tiny_pipe) / 2**20


def budget_for(models: float, model_mb: float) -> int:
    """A budget in whole MB that holds ``models`` tiny models, not one more."""
    return math.ceil(models * model_mb)


def test_the_least_recently_used_is_evicted_under_the_budget(specs, model_mb):
    cache = PipelineCache(specs, CPU, torch.float32, memory_budget_mb=budget_for(2.5, model_mb))
    a = cache.get("a")
    cache.get("b")
    assert cache.loaded_names == ("a", "b")  # both fit
    assert cache.get("a") is a  # reused, and now the most recent
    cache.get("c")
    assert cache.loaded_names == ("a", "c")  # b was the least recently used
    record = cache.loads[-1]
    assert (record.name, record.evicted) == ("c", ("b",))
    assert record.megabytes == pytest.approx(model_mb) and record.seconds > 0
    assert cache.loaded_bytes <= cache.memory_budget_bytes
    assert [record.name for record in cache.loads] == ["a", "b", "c"]


def test_the_pipeline_in_use_is_never_evicted(specs, model_mb):
    cache = PipelineCache(specs, CPU, torch.float32, memory_budget_mb=budget_for(2.5, model_mb))
    with cache.using("a") as a:
        cache.get("c")  # a is now the least recently used...
        cache.get("b")  # ...but in use: c goes
        assert cache.loaded_names == ("a", "b")
        assert cache.loads[-1].evicted == ("c",)
        # Still the very pipeline, and it still works.
        assert cache.get("a") is a and generate(a, tiny_request(steps=1))
    cache.get("c")  # no longer in use: the least recently used goes now
    assert cache.loaded_names == ("a", "c")


def test_a_budget_of_zero_keeps_one_model_at_a_time(specs):
    cache = PipelineCache(specs, CPU, torch.float32)
    cache.get("a")
    cache.get("b")
    assert cache.loaded_names == ("b",)
    assert cache.loads[-1].evicted == ("a",)


def test_the_inpainting_variant_counts_like_any_model(specs, model_mb, tiny_inpaint_model_dir):
    cache = PipelineCache(specs, CPU, torch.float32, memory_budget_mb=budget_for(2.5, model_mb))
    cache.get("a")
    inpaint = cache.get_inpaint("a")
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline"
    assert cache.loaded_names == ("a", "a (inpaint)")
    cache.get("b")
    assert cache.loaded_names == ("a (inpaint)", "b")
    assert cache.loads[-1].evicted == ("a",)


def test_a_model_over_the_budget_alone_still_loads_alone(specs, caplog):
    cache = PipelineCache(specs, CPU, torch.float32, memory_budget_mb=1)
    cache.get("a")
    with caplog.at_level(logging.WARNING):
        cache.get("b")
    assert cache.loaded_names == ("b",)
    assert "model 'b'" in caplog.text and "does not fit model_memory_budget_mb" in caplog.text


def test_a_reloaded_model_makes_the_same_images(specs, model_mb):
    cache = PipelineCache(specs, CPU, torch.float32, memory_budget_mb=budget_for(1.5, model_mb))
    first = np.asarray(generate(cache.get("a"), tiny_request(steps=2))[0])
    cache.get("b")
    assert cache.loaded_names == ("b",)
    again = np.asarray(generate(cache.get("a"), tiny_request(steps=2))[0])
    assert np.array_equal(first, again)


def test_sizes_count_shared_weights_once(tiny_pipe):
    from diffusers import StableDiffusionImg2ImgPipeline

    size = pipeline_bytes(tiny_pipe)
    expected = sum(
        tensor.numel() * tensor.element_size()
        for module in (tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder)
        for tensor in (*module.parameters(), *module.buffers())
    )
    assert size == expected
    # An img2img pipeline built from the model's components holds the same tensors.
    assert pipeline_bytes(derived_pipeline(tiny_pipe, StableDiffusionImg2ImgPipeline)) == size
    assert pipeline_bytes(object()) == 0


def test_bad_budgets_are_refused(specs):
    with pytest.raises(ValueError, match="memory_budget_mb must be an int >= 0"):
        PipelineCache(specs, CPU, torch.float32, memory_budget_mb=-1)
