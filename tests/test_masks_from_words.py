"""Masks from words: /inpaint's mask_words makes a preview job (JobKind.SEGMENT) whose CLIPSeg
mask is shown before anything is repainted; *Looks right* queues the inpaint with that mask,
*Adjust* a new preview. Tiny CLIPSeg models with random weights, built here: one as it comes,
to check the worker's path against the model called directly, and one planted (its decoder
answers a constant logit) so that the bot's path has a predictable mask."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.masks_from_words import preview_mask_path
from db.models import JobStatus
from inference.common.protocol import (
    ImageInput,
    JobKind,
    ModelSpec,
    SegmentOptions,
    segment_mask_path,
)
from inference.masks_from_words import mask_from_probabilities, preview
from tests.inference_fixtures import TINY_MODEL_NAME, runner_for, tiny_request, tiny_worker_config
from tests.harness import BotHarness, attachment_image, button_labels, private_answer
from tests.test_bot_image_commands import run_command
from tests.test_bot_inputs import encoded
from tests.test_bot_workflows import pixels
from tests.test_sketch import scenery

TOKENIZER = Path(__file__).resolve().parent.parent / "inference" / "assets" / "clip_tokenizer"
# The planted model's decoder ignores its input and answers this logit everywhere:
# sigmoid(10) = 0.99995, above any usual threshold and below 0.99999.
PLANTED_LOGIT = 10.0
UNUSED_MODEL = ModelSpec(TINY_MODEL_NAME, "never loaded")


@functools.cache
def build_tiny_clipseg(folder: str, planted_logit: float | None = None) -> str:
    """A CLIPSeg of CIDAS/clipseg-rd64-refined's layout at toy sizes (64 px input), with its
    processor (the real CLIP tokenizer, a ViT image processor), saved as a folder."""
    import torch
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizerFast,
        ViTImageProcessor,
    )

    config = CLIPSegConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, image_size=64,
            patch_size=16,
        ),
        projection_dim=16, reduce_dim=16, extract_layers=[1, 2], decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(config).eval()
    if planted_logit is not None:
        with torch.no_grad():
            model.decoder.transposed_convolution.weight.zero_()
            model.decoder.transposed_convolution.bias.fill_(planted_logit)
    processor = CLIPSegProcessor(
        image_processor=ViTImageProcessor(
            size={"height": 64, "width": 64}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
        ),
        tokenizer=CLIPTokenizerFast.from_pretrained(str(TOKENIZER)),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def random_clipseg(tmp_path_factory) -> str:
    return build_tiny_clipseg(str(tmp_path_factory.getbasetemp() / "tiny-clipseg"))


@pytest.fixture(scope="module")
def planted_clipseg(tmp_path_factory) -> str:
    return build_tiny_clipseg(str(tmp_path_factory.getbasetemp() / "tiny-clipseg-planted"), PLANTED_LOGIT)


# --- the mask from a probability map ------------------------------------------------------


def test_threshold_and_dilation_on_a_known_map():
    probabilities = np.zeros((40, 60))
    probabilities[10:20, 30:40] = 0.9  # the sky
    probabilities[30, 5] = 0.5  # a weaker match
    assert np.array_equal(mask_from_probabilities(probabilities, 0.6, 0), probabilities > 0.6)
    found = mask_from_probabilities(probabilities, 0.4, 0)
    assert found.sum() == 101 and found[30, 5]
    # Grown by a disc of radius 3: 3 px beyond each side, the corners rounded.
    grown = mask_from_probabilities(probabilities, 0.6, 3)
    assert grown[7:23, 30:40].all() and grown[10:20, 27:43].all()
    assert not grown[6].any() and not grown[:, 26].any() and not grown[:, 43].any()
    assert not grown[7, 27] and grown[8, 28]  # |(3, 3)| > 3, |(2, 2)| <= 3
    assert not mask_from_probabilities(probabilities, 0.95, 8).any()  # nothing passes: nothing grows


def test_the_preview_tints_the_mask_red_and_leaves_the_rest():
    image = scenery(32, 32)
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, 16:] = True
    shown = np.asarray(preview(image, mask), dtype=np.int16)
    original = np.asarray(image, dtype=np.int16)
    assert np.array_equal(shown[:, :16], original[:, :16])
    assert (shown[:, 16:, 0] >= original[:, 16:, 0]).all() and (shown[:, 16:, 2] < original[:, 16:, 2] + 1).all()


# --- the worker's path, on the random model -----------------------------------------------


def test_the_worker_mask_is_the_models_map_thresholded_and_grown(random_clipseg, tmp_path):
    import torch
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor


    source = tmp_path / "photo.png"
    scenery(96, 64).save(source)
    # A segment job loads no diffusion model: the runner is given none.
    config = tiny_worker_config(UNUSED_MODEL, str(tmp_path / "outputs"), segmentation_model=random_clipseg)
    runner = runner_for(None, config)
    # The model called directly, as its model card shows it.
    processor = CLIPSegProcessor.from_pretrained(random_clipseg)
    model = CLIPSegForImageSegmentation.from_pretrained(random_clipseg).eval()
    image = Image.open(source).convert("RGB")
    with torch.no_grad():
        logits = model(**processor(text=["the sky"], images=[image], return_tensors="pt", padding=True)).logits
    resized = torch.nn.functional.interpolate(logits.reshape(1, 1, 64, 64), size=(64, 96), mode="bilinear")
    probabilities = torch.sigmoid(resized)[0, 0].numpy()
    threshold = float(np.quantile(probabilities, 0.7))  # about 30% of the image, whatever the weights
    expected = mask_from_probabilities(probabilities, threshold, 2)

    request = tiny_request(
        job_id=7, kind=JobKind.SEGMENT, width=96, height=64, image=ImageInput(path=str(source)),
        segment=SegmentOptions("the sky", threshold, 2),
    )
    events: list = []
    runner.run(request, lambda: False, events.append)
    done = events[-1]
    assert type(done).__name__ == "JobCompleted", events
    with Image.open(segment_mask_path(config.outputs_dir, 7)) as written:
        assert written.mode == "L" and written.size == (96, 64)
        assert np.array_equal(np.asarray(written) > 0, expected)
    with Image.open(done.images[0].path) as shown:
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(preview(image, expected)))
        assert shown.info["parameters"] == f"Mask from words: the sky, Threshold: {threshold:g}, Dilation: 2"

    # Words the model finds nowhere above the threshold: the job fails and says so.
    events.clear()
    above_all = (1.0 + float(probabilities.max())) / 2
    unmatched = dataclasses.replace(request, job_id=8, segment=SegmentOptions("the sky", above_all, 2))
    runner.run(unmatched, lambda: False, events.append)
    failed = events[-1]
    assert type(failed).__name__ == "JobFailed"
    assert failed.message.startswith("Nothing in the image matches \u201cthe sky\u201d")
    assert not Path(segment_mask_path(config.outputs_dir, 8)).exists()

    # No model configured: the worker says so too (the bot refuses before queuing).
    bare = runner_for(None, tiny_worker_config(UNUSED_MODEL, str(tmp_path / "bare")))
    events.clear()
    bare.run(dataclasses.replace(request, job_id=9), lambda: False, events.append)
    assert "no segmentation model" in events[-1].message



def test_a_segmentation_folder_that_is_not_there_fails_start_up(random_clipseg, tiny_model_spec, tmp_path):
    from inference.common.sources import check_worker_config

    check_worker_config(tiny_worker_config(tiny_model_spec, str(tmp_path), segmentation_model=random_clipseg))
    check_worker_config(tiny_worker_config(tiny_model_spec, str(tmp_path), segmentation_model="CIDAS/clipseg-rd64-refined"))
    missing = str(tmp_path / "models" / "clipseg")
    with pytest.raises(ValueError, match=r"images.segmentation_model '.*/models/clipseg' is not a folder holding"):
        check_worker_config(tiny_worker_config(tiny_model_spec, str(tmp_path), segmentation_model=missing))


# --- through the bot ----------------------------------------------------------------------


@pytest.fixture
async def segmenting(settings, planted_clipseg):
    # The server's own defaults, which a job without mask_threshold or mask_dilation takes.
    images = dataclasses.replace(
        settings.images, segmentation_model=planted_clipseg, segment_threshold=0.35, segment_dilation=6
    )
    async with BotHarness(dataclasses.replace(settings, images=images)) as harness:
        yield harness


async def test_words_make_a_preview_and_looks_right_inpaints_with_its_mask(segmenting):
    harness = segmenting
    alice = harness.member("alice")
    photo = encoded(scenery(96, 64))
    answer, preview_job, message = await run_command(
        harness, alice, "inpaint", image=("photo.png", photo), prompt="a stormy sky", mask_words="the sky",
        count=2, steps=2, seed=11, strength=0.9, mask_blur=2,
    )
    assert preview_job.kind == JobKind.SEGMENT and preview_job.mask_path is None
    assert (preview_job.segment_words, preview_job.segment_threshold, preview_job.segment_dilation) == (
        "the sky", 0.35, 6,
    )
    assert len(preview_job.images) == 1 and button_labels(message)[:2] == ["Looks right", "Adjust"]
    assert "Mask from words \u201cthe sky\u201d" in message.embeds[0].fields[0].value
    mask_path = preview_mask_path(harness.settings, preview_job.id)
    # The planted model matches everywhere: the whole image is tinted.
    with Image.open(mask_path) as mask:
        assert mask.size == (96, 64) and np.asarray(mask).min() == 255
    shown = np.asarray((await attachment_image(message)).convert("RGB"), dtype=np.int16)
    assert (shown[..., 0] > shown[..., 2]).mean() > 0.9

    # The buttons work after a restart: everything they need is in the preview's row.
    await harness.restart()
    clicked = await alice.click(harness.message(message.id), label="Looks right")
    assert clicked.acknowledged and not clicked.ephemeral
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.kind == JobKind.INPAINT and job.parent_job_id == preview_job.id
    assert job.mask_path == mask_path and job.init_image_path == preview_job.init_image_path
    assert (job.prompt, job.count, job.seed, job.denoising_strength, job.mask_blur) == ("a stormy sky", 2, 11, 0.9, 2)
    assert job.segment_words is None and len(job.images) == 2
    assert not np.array_equal(pixels(job.images[0].path), pixels(job.init_image_path))

    # The mask gone from disk: said privately, nothing queued.
    Path(mask_path).unlink()
    count = await harness.job_count()
    answer = await alice.click(harness.message(message.id), label="Looks right")
    assert f"The mask of job #{preview_job.id} is no longer on disk: press Adjust" in private_answer(answer)
    assert await harness.job_count() == count


async def test_adjust_makes_a_new_preview_and_an_empty_mask_is_said(segmenting):
    harness = segmenting
    alice = harness.member("alice")
    _, first, message = await run_command(
        harness, alice, "inpaint", image=("photo.png", encoded(scenery())), prompt="a hat", mask_words="her hat",
        mask_threshold=0.5, mask_dilation=4, steps=2, count=1,
    )
    shown = await alice.click(message, label="Adjust")
    assert shown.modal is not None
    submitted = await alice.submit_modal(shown, {"words": "  the  red hat ", "threshold": "0,3", "dilation": "0"})
    assert submitted.acknowledged and not submitted.ephemeral
    second = await harness.wait_for_job((await harness.latest_job()).id)
    assert second.status == JobStatus.COMPLETED, second.error
    assert second.kind == JobKind.SEGMENT and second.parent_job_id == first.id
    assert (second.segment_words, second.segment_threshold, second.segment_dilation) == ("the red hat", 0.3, 0)
    assert (second.prompt, second.init_image_path) == (first.prompt, first.init_image_path)

    # Bad values in the form: refused privately, nothing queued.
    count = await harness.job_count()
    for values, expected in (
        ({"words": "hat", "threshold": "high", "dilation": "4"}, "The mask threshold must be a number between 0 and 1"),
        ({"words": "hat", "threshold": "1.5", "dilation": "4"}, "mask_threshold must be above 0 and below 1, got 1.5."),
        ({"words": "hat", "threshold": "0.4", "dilation": "400"}, "mask_dilation must be between 0 and 128"),
    ):
        shown = await alice.click(message, label="Adjust")
        answer = await alice.submit_modal(shown, values)
        assert expected in private_answer(answer), values
    assert await harness.job_count() == count

    # Words that match nothing at this threshold: the preview says so, and offers no inpaint.
    answer = await alice.slash(
        harness.channel, "inpaint", image=("photo.png", encoded(scenery())), prompt="a hat", mask_words="a unicorn",
        mask_threshold=0.99999,
    )
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.FAILED and job.kind == JobKind.SEGMENT
    assert job.member_error.startswith("Nothing in the image matches \u201ca unicorn\u201d")
    assert not Path(preview_mask_path(harness.settings, job.id)).exists()
    assert await harness.job_count() == count + 1  # the preview alone
    # Its message offers Adjust alone: a lower threshold finds the area.
    failed = harness.message(job.message_id)
    assert button_labels(failed) == ["Adjust"]
    shown = await alice.click(failed, label="Adjust")
    assert shown.modal is not None
    await alice.submit_modal(shown, {"words": "a unicorn", "threshold": "0.5", "dilation": "8"})
    found = await harness.wait_for_job((await harness.latest_job()).id)
    assert found.status == JobStatus.COMPLETED and found.parent_job_id == job.id
    assert Path(preview_mask_path(harness.settings, found.id)).is_file()


async def test_bad_mask_choices_are_refused_privately(harness):
    """Without a segmentation model, and every wrong combination of mask and words."""
    alice = harness.member("alice")
    photo = ("photo.png", encoded(scenery()))
    mask = ("mask.png", encoded(Image.new("L", (64, 64), 255)))
    cases = [
        ({"mask_words": "the sky"}, "This server has no segmentation model for masks from words: upload a mask"),
        ({}, "Upload a mask (white where to repaint), or say what to repaint in mask_words."),
        ({"mask": mask, "mask_words": "the sky"}, "Give a mask or mask_words, not both."),
        ({"mask": mask, "mask_threshold": 0.5}, "mask_threshold and mask_dilation go with mask_words"),
        ({"mask_words": "   "}, "Say what to repaint in a few words"),
        ({"mask_words": "the sky", "mask_threshold": 1.0}, "mask_threshold must be above 0 and below 1, got 1."),
    ]
    for options, expected in cases:
        answer = await alice.slash(harness.channel, "inpaint", image=photo, prompt="a cat", **options)
        assert expected in private_answer(answer), (options, private_answer(answer))
        [error] = harness.expect_user_errors()
        assert expected in error.message
    assert await harness.job_count() == 0


async def test_the_inpaint_forms_words_make_a_preview_too(segmenting):
    """The Inpaint button's form takes words instead of a mask; masked content and the
    inpaint area share one menu (Discord's forms hold five items)."""
    from tests.test_bot_workflows import single_image

    harness = segmenting
    alice = harness.member("alice")
    parent, message = await single_image(harness, alice)
    shown = await alice.click(message, label="Inpaint")
    submitted = await alice.submit_modal(
        shown,
        {"prompt": "a lighthouse at dusk", "mask_words": "the sky", "strength": "0.6",
         "fill_and_area": ["latent noise|only masked"]},
    )
    assert submitted.acknowledged and not submitted.ephemeral
    preview_job = await harness.wait_for_job((await harness.latest_job()).id)
    assert preview_job.status == JobStatus.COMPLETED, preview_job.error
    assert preview_job.kind == JobKind.SEGMENT and preview_job.segment_words == "the sky"
    assert (preview_job.parent_job_id, preview_job.parent_image_index) == (parent.id, 0)
    assert (preview_job.masked_content, preview_job.inpaint_only_masked, preview_job.denoising_strength) == (
        "latent noise", True, 0.6,
    )
    assert preview_job.init_image_path == parent.images[0].path

    count = await harness.job_count()
    for values, expected in (
        ({}, "Upload a mask (white where the image should change, black elsewhere), or say what to repaint."),
        ({"mask_words": "the sky", "mask": ("mask.png", encoded(Image.new("L", (64, 64), 255)))}, "not both"),
        ({"mask_words": "   "}, "or say what to repaint."),
        ({"mask_words": "the sky", "strength": "lots"}, "The denoising strength must be a number between 0 and 1"),
    ):
        shown = await alice.click(message, label="Inpaint")
        answer = await alice.submit_modal(shown, {"prompt": "a cat", "strength": "0.75", **values})
        assert expected in private_answer(answer), values
    assert await harness.job_count() == count
