"""AND (composable diffusion) as A1111 1.10 does it: the parse, the bot's refusal of a weight
that is not a number, token counts, and the worker's combination of noise predictions.

A1111's get_multicond_prompt_list splits the positive prompt at each whole uppercase AND and
reads a ":number" at the end of each part as its weight; combine_denoised then takes
uncond + sum_i w_i * cfg * (cond_i - uncond).
"""

from __future__ import annotations

import random
import re

import pytest

from bot.errors import InvalidOption
from bot.prompts.checks import check_prompt_texts
from bot.prompts.tokens import longest_and_part
from inference.common.prompt_parser import and_weight_problem, composable_prompts, is_composable
from tests.test_bot_prompt_tools import fields_of, refused
from tests.test_inference_conditioning import clip

# A1111 1.10 modules/prompt_parser.py, verbatim: the reference the parser is checked against.
A1111_RE_AND = re.compile(r"\bAND\b")
A1111_RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def a1111_multicond(prompt: str) -> list[tuple[str, float]]:
    """A1111's get_multicond_prompt_list for one prompt, as (text, weight) pairs."""
    parts = []
    for subprompt in A1111_RE_AND.split(prompt):
        match = A1111_RE_WEIGHT.search(subprompt)
        text, weight = match.groups() if match is not None else (subprompt, 1.0)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


# --- the parse -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a AND b", [("a", 1.0), (" b", 1.0)]),
        ("a AND b :0.5", [("a", 1.0), (" b", 0.5)]),
        ("a AND b:-1", [("a", 1.0), (" b", -1.0)]),
        ("a AND", [("a", 1.0), ("", 1.0)]),
        ("a and b", [("a and b", 1.0)]),  # lowercase: text
        ("ANDROID AND BANDAGE", [("ANDROID", 1.0), (" BANDAGE", 1.0)]),  # whole words only
        ("a cat AND a dog : 0.5  ", [("a cat", 1.0), (" a dog", 0.5)]),  # spaces around the weight
        ("a AND b :+.5 AND c:2.", [("a", 1.0), (" b", 0.5), (" c", 2.0)]),
        ("a AND b :x", [("a", 1.0), (" b :x", 1.0)]),  # not a number: A1111 keeps it as text
        ("a AND b :1e3", [("a", 1.0), (" b :1e3", 1.0)]),  # no exponent in A1111's number
        ("(cat:1.2) AND [a:b:0.5]", [("(cat:1.2)", 1.0), (" [a:b:0.5]", 1.0)]),
        ("a cat :0.5", [("a cat", 0.5)]),  # no AND: still A1111's weight of the whole prompt
        ("a cat", [("a cat", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_composable_prompts_follow_a1111(prompt, expected):
    assert composable_prompts(prompt) == expected == a1111_multicond(prompt)


def test_composable_prompts_equal_a1111s_regexes_on_fuzzed_prompts():
    alphabet = list("ab :.-+1 05\n\tAND()[]\u00a0e")
    rng = random.Random(28)
    for _ in range(20000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert composable_prompts(prompt) == a1111_multicond(prompt), repr(prompt)


def test_long_whitespace_does_not_stall_the_parse():
    # A1111's lazy regex backtracks over whitespace runs; ours reads the same meaning directly.
    prompt = "a" + " " * 20000 + "b AND c" + "\n" * 20000 + ":0.5"
    assert composable_prompts(prompt) == [("a" + " " * 20000 + "b", 1.0), (" c", 0.5)]


def test_only_and_or_a_weight_makes_a_prompt_composable():
    assert not is_composable("a cat, (fluffy:1.2), [day:night:0.5]")
    assert not is_composable("a cat :1")
    assert is_composable("a cat AND a dog")
    assert is_composable("a cat :0.5")


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("a cat AND a dog :high", "the weight `high` of `a dog :high` is not a number"),
        ("a cat :x AND a dog", "the weight `x` of `a cat :x` is not a number"),
        ("a cat AND a dog :0.5.5", "the weight `0.5.5`"),
        ("a cat AND a dog :1e3", "the weight `1e3`"),
        ("a cat AND a dog:", "`a dog:` ends in `:` and no weight"),
    ],
)
def test_a_weight_that_is_not_a_number_is_named(prompt, named):
    assert named in and_weight_problem(prompt)
    with pytest.raises(InvalidOption, match="AND can't be read in this prompt: " + re.escape(named)):
        check_prompt_texts(_no_networks(), prompt, "")


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat :x",  # no AND: A1111's plain text
        "a cat AND a dog :0.5",
        "a cat AND a (dog:1.3)",
        "a cat AND [a dog:a wolf:0.5]",
        "a cat AND a dog, style: watercolor",  # a word after ": ": text
        "a cat AND a dog : high",
        "a cat AND",
    ],
)
def test_weights_and_text_that_are_fine(prompt):
    assert and_weight_problem(prompt) is None


def test_and_is_checked_in_the_positive_prompt_only():
    check_prompt_texts(_no_networks(), "a cat", "blurry AND ugly :x")  # a negative is plain text


def _no_networks():
    from bot.config import PromptSettings

    return PromptSettings()


def test_tokens_count_the_longest_part():
    long_part = " a castle on a hill with a moat and towers"
    assert longest_and_part("a cat AND" + long_part + " :0.5", 20) == long_part
    assert longest_and_part("a cat <lora:x:1> :0.5 AND a dog", 20) == "a cat"  # tag gone, weight read
    assert longest_and_part("a cat :0.5", 20) == "a cat :0.5"  # no AND: counted as today


# --- the worker: A1111's combine_denoised on the tiny model ----------------------------------


def a1111_latents(pipe, request, parts: list[tuple[str, float]]):
    """An independent run of A1111's composable diffusion over the same UNet: k-diffusion's
    Euler over A1111's sigmas, each step's denoised uncond + cfg * sum_i w_i (cond_i - uncond)."""
    import torch

    from inference.schedules import sampler_sigmas, sd_alphas_cumprod
    from tests.test_samplers_reference import ReferenceDenoiser, ReferenceNoise

    model = ReferenceDenoiser(pipe, request.prompt, request.negative_prompt, request.cfg_scale)
    sigmas = sampler_sigmas(request.sampler, "Automatic", request.steps, sd_alphas_cumprod())
    latents = ReferenceNoise(request.seeds, (4, request.height // 8, request.width // 8)).first * sigmas[0]
    uncond = clip(pipe, request.negative_prompt)
    conds = [(clip(pipe, text), weight) for text, weight in parts]
    images = len(request.seeds)
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i].expand(images)
            c_in = 1 / (sigmas[i] ** 2 + 1) ** 0.5

            def predict(embeds):
                eps = pipe.unet(latents * c_in, model.sigma_to_t(sigma), encoder_hidden_states=embeds.expand(images, -1, -1)).sample
                return latents - eps * sigmas[i]

            denoised_uncond = predict(uncond)
            guidance = sum(weight * (predict(cond) - denoised_uncond) for cond, weight in conds)
            denoised = denoised_uncond + request.cfg_scale * guidance
            latents = latents + (latents - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return latents


@pytest.mark.parametrize("cfg", [7.0, 1.0])  # 1: A1111 still runs the uncond
def test_and_combines_noise_predictions_as_a1111(tiny_pipe, cfg):
    from inference.generate import generate_latents
    from tests.inference_fixtures import tiny_request

    request = tiny_request(prompt="a cat AND a dog :0.5", sampler="Euler", steps=2, cfg_scale=cfg, seeds=(1234, 99))
    ours = generate_latents(tiny_pipe, request)
    expected = a1111_latents(tiny_pipe, request, [("a cat", 1.0), (" a dog", 0.5)])
    import torch

    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=5e-4)  # batched vs one by one
    assert "forward" not in vars(tiny_pipe.unet)  # the wrapper is gone after the call
    plain = generate_latents(tiny_pipe, tiny_request(prompt="a cat", sampler="Euler", steps=2, cfg_scale=cfg, seeds=(1234, 99)))
    assert (plain - expected).abs().max() > 1e-3  # the dog made a difference


def test_a_weighted_prompt_scales_its_guidance(tiny_pipe):
    # uncond + 7 * 0.5 (cond - uncond) is the plain prompt at CFG 3.5.
    from inference.generate import generate_latents
    from tests.inference_fixtures import tiny_request

    weighted = generate_latents(tiny_pipe, tiny_request(prompt="a cat :0.5", sampler="Euler", steps=2, cfg_scale=7.0))
    plain = generate_latents(tiny_pipe, tiny_request(prompt="a cat", sampler="Euler", steps=2, cfg_scale=3.5))
    assert (weighted - plain).abs().max() < 1e-4


def test_a_prompt_without_and_takes_todays_path(tiny_pipe):
    # No wrapper: the UNet sees 77 tokens in two halves of one row each, as without AND.
    from inference.generate import generate_latents
    from tests.inference_fixtures import tiny_request

    seen = []

    def record(module, args, kwargs):
        seen.append((tuple(kwargs["encoder_hidden_states"].shape), "forward" in vars(module)))

    hook = tiny_pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate_latents(tiny_pipe, tiny_request(prompt="a cat, [day:night:0.5] and a dog", sampler="Euler", steps=2))
    finally:
        hook.remove()
    assert [shape[:2] for shape, _ in seen] == [(2, 77)] * 2 and not any(wrapped for _, wrapped in seen)


def test_and_parts_have_their_own_schedules_and_pad_with_their_last_vector(tiny_pipe):
    import torch

    from inference.conditioning import encode_conditioning

    long_part = ", ".join(["a very detailed castle on a hill"] * 12)  # two chunks
    conditioning = encode_conditioning(tiny_pipe, f"[cat:dog:2] AND {long_part} :0.5", "", 4)
    assert conditioning.weights == (1.0, 0.5) and conditioning.composable
    assert [end for end, _ in conditioning.cond] == [2, 4]
    early, late = conditioning.cond[0][1], conditioning.cond[1][1]
    assert early.shape[:2] == (2, 154) and torch.equal(early[1], late[1])
    assert torch.equal(early[0, :77], clip(tiny_pipe, "cat")[0]) and torch.equal(late[0, :77], clip(tiny_pipe, "dog")[0])
    assert torch.equal(early[0, 77:], early[0, 76:77].expand(77, -1))  # A1111's last-vector padding
    [(_, uncond)] = conditioning.uncond
    assert torch.equal(uncond[0, 77:], clip(tiny_pipe, "")[0])  # the uncond: empty chunks
    packed, negative = conditioning.pipeline_embeds(0)
    assert packed is negative and packed.shape[:2] == (1, 3 * 154)


def test_and_in_img2img_equals_the_weighted_guidance(tiny_pipe):
    # Through the img2img pipeline too: "a cat :0.5" at CFG 7 is "a cat" at CFG 3.5.
    from PIL import Image

    from inference.img2img import Progress, encode, img2img_pass, img2img_schedule
    from tests.inference_fixtures import tiny_request

    latents = encode(tiny_pipe, [Image.new("RGB", (64, 64), (30, 140, 220))])
    schedule = img2img_schedule(4, 0.75)
    images = {}
    for prompt, cfg in (("a cat :0.5", 7.0), ("a cat", 3.5)):
        request = tiny_request(prompt=prompt, sampler="Euler", steps=4, cfg_scale=cfg)
        progress = Progress(lambda *args: None, schedule.steps)
        [images[cfg]] = img2img_pass(tiny_pipe, request, latents, request.seeds, schedule, progress, lambda: False)
    import numpy as np

    assert np.abs(np.asarray(images[7.0], np.int16) - np.asarray(images[3.5], np.int16)).max() <= 1


def test_and_jobs_are_not_batched():
    from inference.batching import batch_key
    from tests.inference_fixtures import tiny_request

    assert batch_key(tiny_request(prompt="a cat")) is not None
    assert batch_key(tiny_request(prompt="a cat AND a dog")) is None


# --- through the bot -------------------------------------------------------------------------


async def test_the_bot_refuses_a_bad_and_weight_privately_and_counts_the_longest_part(harness):
    alice = harness.member("alice")
    result = await alice.slash(harness.channel, "imagine", prompt="a cat AND a dog :heavy", count=1, steps=1)
    await refused(harness, result, "AND can't be read in this prompt: the weight `heavy` of `a dog :heavy` is not a number")
    assert await harness.job_count() == 0

    prompt = "a cat AND a castle on a hill with a moat :0.5"
    result = await alice.slash(harness.channel, "imagine", prompt=prompt, count=1, steps=1)
    assert result.acknowledged and not result.ephemeral
    assert fields_of(harness.first_response()["embeds"][0])["Tokens"] == "9 (1 chunk)"  # the whole prompt: 16
    job = await harness.latest_job(alice.id)
    assert job.prompt == prompt
    await harness.wait_for_job(job.id)
