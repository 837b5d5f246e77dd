"""A1111's prompt encoding on the tiny model: weights, chunks, BREAK, schedules, tiling.

The reference for every embedding is CLIP itself: the tiny model's text encoder run on the
token ids A1111 would build, with A1111's arithmetic on top.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from inference import conditioning as conditioning_module
from inference.conditioning import (
    encode_conditioning,
    encode_for_pass,
    encode_prompt,
    limit_prompt_chunks,
)
from inference.generate import JobCancelledError, generate, scheduler_for
from inference.img2img import (
    Progress,
    derived_pipeline,
    encode,
    img2img_pass,
    img2img_schedule,
    run_img2img,
)
from inference.models import load_pipeline
from inference.common.protocol import LATENT, HiresFix, ImageInput, JobKind, ModelSpec
from inference.tiling import seamless_tiling
from inference.workflows import run_hires
from tests.inference_fixtures import TINY_MODEL_NAME, tiny_request


def clip(pipe, text: str) -> torch.Tensor:
    """CLIP's last hidden state for ``text`` as one 77-token window, padded as diffusers does."""
    ids = pipe.tokenizer(
        text, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def empty(pipe) -> torch.Tensor:
    return clip(pipe, "")


# --- plain prompts equal diffusers -----------------------------------------------------------


def test_plain_prompt_equals_diffusers_encoding(tiny_pipe):
    prompt, negative = "a photo of a cat, high quality", "blurry"
    cond, uncond = encode_conditioning(tiny_pipe, prompt, negative, 20).at_step(0)
    expected, expected_negative = tiny_pipe.encode_prompt(
        prompt, torch.device("cpu"), 1, True, negative
    )
    assert torch.equal(cond, expected)
    assert torch.equal(uncond, expected_negative)
    # An empty negative prompt is diffusers' default unconditional embedding too.
    _, uncond = encode_conditioning(tiny_pipe, prompt, "", 20).at_step(0)
    assert torch.equal(uncond, tiny_pipe.encode_prompt(prompt, "cpu", 1, True)[1])


# --- attention weights ------------------------------------------------------------------------


def test_weights_scale_tokens_and_restore_the_mean(tiny_pipe):
    embeds, cut = encode_prompt(tiny_pipe, "a (cat:1.5) [photo]")
    assert cut == ""
    z = clip(tiny_pipe, "a cat photo")
    # Tokens: start, "a", "cat", "photo", end...: "cat" x1.5, "photo" /1.1, then the mean.
    weights = torch.ones(77)
    weights[2], weights[3] = 1.5, 1 / 1.1
    weighted = z * weights[None, :, None]
    expected = weighted * (z.mean() / weighted.mean())
    assert torch.allclose(embeds, expected, atol=1e-6)
    assert torch.allclose(embeds.mean(), z.mean(), atol=1e-6)
    assert not torch.allclose(embeds, z, atol=1e-3)


def test_schedule_batch_shares_one_mean_as_in_a1111(tiny_pipe):
    # A1111 encodes a schedule's texts as one batch, repeated texts included, and restores the
    # mean of the whole batch: here "(cat:1.5)" twice and "dog" once.
    conditioning = encode_conditioning(tiny_pipe, "[(cat:1.5)|dog]", "", 3)
    z_cat, z_dog = clip(tiny_pipe, "cat"), clip(tiny_pipe, "dog")
    weights = torch.ones(77)
    weights[1] = 1.5
    weighted_cat = z_cat * weights[None, :, None]
    original = (2 * z_cat.mean() + z_dog.mean()) / 3
    new = (2 * weighted_cat.mean() + z_dog.mean()) / 3
    factor = original / new
    cat_at_0, _ = conditioning.at_step(0)
    dog_at_2, _ = conditioning.at_step(2)
    assert torch.allclose(cat_at_0, weighted_cat * factor, atol=1e-6)
    assert torch.allclose(dog_at_2, z_dog * factor, atol=1e-6)


# --- chunks -------------------------------------------------------------------------------------


def test_long_prompt_gives_more_chunks_and_the_negative_is_padded(tiny_pipe):
    prompt = " ".join(["cat"] * 100)
    conditioning = encode_conditioning(tiny_pipe, prompt, "blurry", 10)
    cond, uncond = conditioning.at_step(0)
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.equal(cond[:, :77], clip(tiny_pipe, " ".join(["cat"] * 75)))
    assert torch.equal(cond[:, 77:], clip(tiny_pipe, " ".join(["cat"] * 25)))
    # The shorter side gets the empty prompt's encoding (A1111's pad_cond_uncond).
    assert torch.equal(uncond[:, :77], clip(tiny_pipe, "blurry"))
    assert torch.equal(uncond[:, 77:], empty(tiny_pipe))
    # And the other way round: a long negative prompt pads the prompt.
    cond, uncond = encode_conditioning(tiny_pipe, "cat", " ".join(["dog"] * 160), 10).at_step(0)
    assert cond.shape == uncond.shape == (1, 231, 32)
    assert torch.equal(cond[:, 77:154], empty(tiny_pipe))


def test_break_starts_a_new_chunk(tiny_pipe):
    embeds, _ = encode_prompt(tiny_pipe, "a red cat BREAK a blue dog")
    assert embeds.shape == (1, 154, 32)
    assert torch.equal(embeds[:, :77], clip(tiny_pipe, "a red cat"))
    assert torch.equal(embeds[:, 77:], clip(tiny_pipe, "a blue dog"))


def test_comma_backtrack_moves_the_last_phrase_to_the_next_chunk(tiny_pipe):
    first = " ".join(["cat"] * 70) + ","
    moved = " ".join(["dog"] * 10)
    embeds, _ = encode_prompt(tiny_pipe, f"{first} {moved}")
    assert embeds.shape == (1, 154, 32)
    # Without the rule the first chunk would end with four dogs; A1111 cuts after the comma.
    assert torch.equal(embeds[:, :77], clip(tiny_pipe, first))
    assert torch.equal(embeds[:, 77:], clip(tiny_pipe, moved))


def test_max_chunks_cuts_and_reports_the_dropped_text(tiny_pipe):
    prompt = " ".join(["cat"] * 75) + " a green dog"
    conditioning = encode_conditioning(tiny_pipe, prompt, "blurry", 10, max_chunks=1)
    cond, uncond = conditioning.at_step(0)
    assert cond.shape == uncond.shape == (1, 77, 32)
    assert torch.equal(cond, clip(tiny_pipe, " ".join(["cat"] * 75)))
    assert conditioning.cut_prompt == "a green dog"
    assert conditioning.cut_negative_prompt == ""
    # Set per model, the limit reaches every job on it (through encode_for_pass), until lifted.
    limit_prompt_chunks(tiny_pipe, 1)
    try:
        job = encode_for_pass(tiny_pipe, tiny_request(prompt=prompt), 10)
        assert job.at_step(0)[0].shape == (1, 77, 32)
        assert job.cut_prompt == "a green dog"
    finally:
        limit_prompt_chunks(tiny_pipe, None)
    assert conditioning_module.prompt_chunk_limit(tiny_pipe) is None
    assert encode_for_pass(tiny_pipe, tiny_request(prompt=prompt), 10).cut_prompt == ""


def test_multi_vector_embedding_expands_as_in_diffusers(tiny_model_dir):
    # A private pipeline: loading an embedding changes the tokenizer and the text encoder.
    pipe = load_pipeline(
        ModelSpec(TINY_MODEL_NAME, str(tiny_model_dir)), torch.device("cpu"), torch.float32
    )
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    pipe.load_textual_inversion(vectors, token="<shiny>")
    embeds, _ = encode_prompt(pipe, "a <shiny> cat")
    expected, _ = pipe.encode_prompt("a <shiny> cat", torch.device("cpu"), 1, False)
    assert torch.equal(embeds, expected)
    plain, _ = encode_prompt(pipe, "a cat")
    assert not torch.equal(embeds, plain)


# --- schedules in the pipelines ----------------------------------------------------------------


class UnetRecorder:
    """The conditional half of encoder_hidden_states at every UNet call: the first half, in
    A1111's layout (conds, then unconds), which its denoiser runs whatever the CFG scale."""

    def __init__(self, pipe):
        self.conds: list[torch.Tensor] = []
        self.hook = pipe.unet.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        states = kwargs["encoder_hidden_states"]
        self.conds.append(states[: states.shape[0] // 2].clone())

    def close(self):
        self.hook.remove()

    def which(self, references: dict[str, torch.Tensor]) -> list[str]:
        names = []
        for cond in self.conds:
            assert all(torch.equal(row, cond[0]) for row in cond)  # the batch shares it
            matches = [name for name, ref in references.items() if torch.equal(cond[0], ref[0])]
            assert len(matches) == 1, "the UNet saw embeddings of no known text"
            names.append(matches[0])
        return names


def recorded(pipe, run) -> UnetRecorder:
    recorder = UnetRecorder(pipe)
    try:
        run()
    finally:
        recorder.close()
    return recorder


def texts(pipe, *words):
    return {word: clip(pipe, word) for word in words}


@pytest.mark.parametrize(
    ("prompt", "sampler", "cfg", "expected"),
    [
        # A1111 uses "cat" while the step counter (from 0) is <= 2.
        ("[cat:dog:2]", "Euler", 7.0, ["cat"] * 3 + ["dog"]),
        ("[cat:dog:2]", "Euler a", 1.0, ["cat"] * 3 + ["dog"]),  # no guidance: A1111 still runs both
        # Heun evaluates twice a step (the last step once); A1111 schedules over 2 x steps and
        # counts evaluations: half of 4 steps is evaluation 4.
        ("[cat:dog:0.5]", "Heun", 7.0, ["cat"] * 5 + ["dog"] * 2),
    ],
)
def test_prompt_editing_switches_at_the_scheduled_step(tiny_pipe, prompt, sampler, cfg, expected):
    request = tiny_request(prompt=prompt, sampler=sampler, steps=4, cfg_scale=cfg)
    recorder = recorded(tiny_pipe, lambda: generate(tiny_pipe, request))
    assert recorder.which(texts(tiny_pipe, "cat", "dog")) == expected


def test_alternation_switches_every_step_for_every_image(tiny_pipe):
    request = tiny_request(prompt="[cat|dog|bird]", sampler="Euler", steps=5, seeds=(1, 2))
    recorder = recorded(tiny_pipe, lambda: generate(tiny_pipe, request))
    # A1111's first entry ends at step 1 and its counter starts at 0: "cat" runs twice.
    assert recorder.which(texts(tiny_pipe, "cat", "dog", "bird")) == [
        "cat",
        "cat",
        "dog",
        "bird",
        "cat",
    ]


def test_scheduled_batch_images_are_reproduced_alone(tiny_pipe):
    request = tiny_request(prompt="a [cat:dog:0.5]", sampler="Euler a", steps=4, seeds=(8, 9))
    batch = generate(tiny_pipe, request)
    [alone] = generate(tiny_pipe, dataclasses.replace(request, seeds=(9,)))
    difference = np.abs(np.asarray(batch[1], np.int16) - np.asarray(alone, np.int16))
    assert difference.max() <= 2


def test_prompt_editing_run_matches_plain_runs_where_they_agree(tiny_pipe):
    # Until the switch the run is the "cat" run; the switch changes the result.
    edited = generate(tiny_pipe, tiny_request(prompt="[cat:dog:2]", sampler="Euler", steps=4))
    cat = generate(tiny_pipe, tiny_request(prompt="cat", sampler="Euler", steps=4))
    never = generate(tiny_pipe, tiny_request(prompt="[cat:dog:9]", sampler="Euler", steps=4))
    assert np.array_equal(np.asarray(never[0]), np.asarray(cat[0]))
    assert not np.array_equal(np.asarray(edited[0]), np.asarray(cat[0]))


def test_img2img_schedules_over_the_requested_steps(tiny_pipe, tmp_path):
    path = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(path)
    request = tiny_request(
        prompt="[cat:dog:3]",
        sampler="Euler",
        steps=8,
        image=ImageInput(str(path), denoising_strength=0.75),
        kind=JobKind.IMG2IMG,
    )
    recorder = recorded(
        tiny_pipe, lambda: run_img2img(tiny_pipe, request, lambda *a: None, lambda: False)
    )
    # int(0.75 * 8) + 1 = 7 of 8 steps run (A1111's count); its counter starts at 0 on the
    # first one that runs.
    assert recorder.which(texts(tiny_pipe, "cat", "dog")) == ["cat"] * 4 + ["dog"] * 3


def test_hires_second_pass_counts_steps_on_from_the_first(tiny_pipe):
    # 3 first-pass steps, 4 hires steps: "when" 5 is the second pass's step 2.
    request = tiny_request(
        prompt="[cat:dog:5]",
        sampler="Euler",
        steps=3,
        hires=HiresFix(scale=1.5, steps=4, denoising_strength=0.5, upscaler=LATENT),
    )
    recorder = recorded(
        tiny_pipe, lambda: run_hires(tiny_pipe, None, request, lambda *a: None, lambda: False)
    )
    assert recorder.which(texts(tiny_pipe, "cat", "dog")) == ["cat"] * 3 + ["cat"] * 3 + ["dog"]


# --- tiling ---------------------------------------------------------------------------------


def padding_modes(pipe) -> set[str]:
    return {
        module.padding_mode
        for model in (pipe.unet, pipe.vae)
        for module in model.modules()
        if isinstance(module, torch.nn.Conv2d)
    }


def seam(image) -> float:
    """How much the left and right edges differ, against neighbouring columns in general."""
    pixels = np.asarray(image, dtype=np.float64)
    wrap = np.abs(pixels[:, 0] - pixels[:, -1]).mean()
    inside = np.abs(pixels[:, 1:] - pixels[:, :-1]).mean()
    return wrap / inside


def test_tiling_wraps_the_edges_and_is_restored(tiny_pipe):
    seeds = (3, 4, 5)
    plain = generate(tiny_pipe, tiny_request(sampler="Euler", steps=3, seeds=seeds))
    tiled = generate(tiny_pipe, tiny_request(sampler="Euler", steps=3, seeds=seeds, tiling=True))
    assert padding_modes(tiny_pipe) == {"zeros"}
    assert np.mean([seam(image) for image in tiled]) < 0.8 * np.mean(
        [seam(image) for image in plain]
    )
    # Restored after a cancel too.
    with pytest.raises(JobCancelledError):
        generate(
            tiny_pipe,
            tiny_request(sampler="Euler", steps=3, tiling=True),
            is_cancelled=lambda: padding_modes(tiny_pipe) == {"circular"},
        )
    assert padding_modes(tiny_pipe) == {"zeros"}


def test_tiling_context_nests_and_restores_on_errors(tiny_pipe):
    with pytest.raises(RuntimeError):
        with seamless_tiling(tiny_pipe):
            with seamless_tiling(tiny_pipe):
                assert padding_modes(tiny_pipe) == {"circular"}
            assert padding_modes(tiny_pipe) == {"circular"}
            raise RuntimeError
    assert padding_modes(tiny_pipe) == {"zeros"}
    with seamless_tiling(tiny_pipe, enabled=False):
        assert padding_modes(tiny_pipe) == {"zeros"}


def test_plain_img2img_equals_a_diffusers_prompt_call(tiny_pipe):
    # txt2img's equality is test_inference_generate's; this is the img2img pipeline's.
    request = tiny_request(sampler="Euler", steps=4)
    latents = encode(tiny_pipe, [Image.new("RGB", (64, 64), (30, 140, 220))])
    schedule = img2img_schedule(request.steps, 0.75)
    progress = Progress(lambda *args: None, schedule.steps)
    [ours] = img2img_pass(
        tiny_pipe, request, latents, request.seeds, schedule, progress, lambda: False
    )
    pipe = derived_pipeline(tiny_pipe, StableDiffusionImg2ImgPipeline)
    pipe.scheduler = scheduler_for(tiny_pipe, request.sampler)
    expected = pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        image=latents,
        strength=0.75,
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        generator=torch.Generator().manual_seed(request.seeds[0]),
    ).images[0]
    assert np.abs(np.asarray(ours, np.int16) - np.asarray(expected, np.int16)).max() <= 1


def test_a_model_without_long_prompts_is_cut_to_one_chunk(tiny_model_dir):
    import torch

    from inference.conditioning import encode_for_pass, prompt_chunk_limit
    from inference.generate import scheduler_for
    from inference.models import PipelineCache
    from inference.common.protocol import ModelSpec

    cache = PipelineCache([ModelSpec("short", str(tiny_model_dir), long_prompts=False)], torch.device("cpu"), torch.float32)
    pipe = cache.get("short")
    assert prompt_chunk_limit(pipe) == 1
    request = tiny_request(prompt=" ".join(["cat"] * 80) + " zebra", model="short")
    pipe.scheduler = scheduler_for(pipe, request.sampler)
    conditioning = encode_for_pass(pipe, request, request.steps)
    assert conditioning.at_step(0)[0].shape[1] == 77 and "zebra" in conditioning.cut_prompt
