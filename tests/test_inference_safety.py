"""The safety classifier in the worker: loading (tiny checkers built on disk), verdicts that
match diffusers' own, requests that ask for a check or not, and start-up with a bad path."""

from __future__ import annotations

import functools
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image

from inference.jobs import JobRunner
from inference.common.protocol import JobCompleted, WorkerConfig, WorkerStartupFailed
from inference.safety_checker import SafetyCheckerError, load_safety_checker
from inference.tiny import build_tiny_safety_checker
from inference.worker import run_worker
from tests.inference_fixtures import runner_for, tiny_request, tiny_worker_config

CPU = torch.device("cpu")


@functools.cache
def _tiny_checker(folder: str, flag_all: bool) -> str:
    return str(build_tiny_safety_checker(folder, flag_all=flag_all))


@pytest.fixture(scope="session")
def flag_all_checker(tmp_path_factory) -> str:
    return _tiny_checker(str(tmp_path_factory.getbasetemp() / "tiny-checker-flag-all"), True)


@pytest.fixture(scope="session")
def flag_none_checker(tmp_path_factory) -> str:
    return _tiny_checker(str(tmp_path_factory.getbasetemp() / "tiny-checker-flag-none"), False)


def some_images(count: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(count)]


def test_the_tiny_checkers_flag_all_or_none_through_the_real_loader(flag_all_checker, flag_none_checker):
    images = some_images()
    assert load_safety_checker(flag_all_checker, CPU, torch.float32).flags(images) == [True] * 5
    assert load_safety_checker(flag_none_checker, CPU, torch.float32).flags(images) == [False] * 5
    assert load_safety_checker(flag_all_checker, CPU, torch.float32).flags([]) == []


def test_a_model_folder_layout_is_read_from_its_subfolders(flag_all_checker, tmp_path):
    """A Stable Diffusion model folder keeps them in safety_checker/ and feature_extractor/."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(flag_all_checker, model / "safety_checker")
    (model / "feature_extractor").mkdir()
    shutil.move(model / "safety_checker" / "preprocessor_config.json", model / "feature_extractor")
    checker = load_safety_checker(str(tmp_path / "model"), CPU, torch.float32)
    assert checker.flags(some_images(2)) == [True, True]


def test_verdicts_are_those_of_diffusers_without_blacking_anything_out(flag_none_checker):
    """Thresholds between the images' scores give mixed verdicts, which must be exactly the
    images diffusers' forward would have blacked out; ours leaves every image untouched."""
    checker = load_safety_checker(flag_none_checker, CPU, torch.float32)
    images = some_images(6)
    pixels = checker.processor(images=images, return_tensors="pt").pixel_values
    model = checker.model
    with torch.no_grad():
        embeds = model.visual_projection(model.vision_model(pixels)[1])
        normalized = torch.nn.functional.normalize
        concept = normalized(embeds) @ normalized(model.concept_embeds[:1]).t()
        special = normalized(embeds) @ normalized(model.special_care_embeds[:1]).t()
        # One concept and one "special care" concept decide, each at the images' median score:
        # about half the images pass; every other concept never matches.
        model.concept_embeds_weights.fill_(2.0)
        model.concept_embeds_weights[0] = concept.median() + 0.002
        model.special_care_embeds_weights.fill_(2.0)
        model.special_care_embeds_weights[0] = special.median()
    before = [np.asarray(image).copy() for image in images]
    ours = checker.flags(images)
    _, theirs = model(clip_input=pixels, images=[np.ones((4, 4, 3)) for _ in images])
    assert ours == list(theirs)
    assert 0 < sum(ours) < len(images), "the thresholds should give mixed verdicts"
    assert all(np.array_equal(np.asarray(image), old) for image, old in zip(images, before))


@pytest.fixture
def config(tiny_model_spec, tmp_path) -> WorkerConfig:
    return tiny_worker_config(tiny_model_spec, tmp_path / "outputs", preview_interval_s=3600, device="cpu")


def runner_with(config, tiny_pipe, checker_folder: str) -> JobRunner:
    checker = load_safety_checker(checker_folder, CPU, torch.float32)
    return runner_for(tiny_pipe, config, safety_checker=checker)


def completed(runner: JobRunner, **request) -> JobCompleted:
    sent: list = []
    runner.run(tiny_request(**request), is_cancelled=lambda: False, send=sent.append)
    assert isinstance(sent[-1], JobCompleted), sent[-1]
    return sent[-1]


def test_only_requests_that_ask_are_checked_and_saved_files_stay_as_made(config, tiny_pipe, flag_all_checker):
    runner = runner_with(config, tiny_pipe, flag_all_checker)
    checked = completed(runner, job_id=1, seeds=(1, 2), safety_check=True)
    assert [image.flagged for image in checked.images] == [True, True]
    unchecked = completed(runner, job_id=2, seeds=(1, 2), safety_check=False)
    assert [image.flagged for image in unchecked.images] == [False, False]
    # The flagged files are the images as generated (not blacked out): the same as unchecked.
    for flagged, plain in zip(checked.images, unchecked.images):
        flagged_pixels, plain_pixels = np.asarray(Image.open(flagged.path)), np.asarray(Image.open(plain.path))
        assert flagged_pixels.any() and np.array_equal(flagged_pixels, plain_pixels)


def test_a_checker_that_flags_nothing_flags_nothing(config, tiny_pipe, flag_none_checker):
    runner = runner_with(config, tiny_pipe, flag_none_checker)
    assert [image.flagged for image in completed(runner, job_id=3, seeds=(5, 6), safety_check=True).images] == [
        False,
        False,
    ]


def test_start_up_loads_the_configured_checker(config, flag_all_checker):
    from dataclasses import replace

    runner = JobRunner.start(replace(config, safety_checker=flag_all_checker))
    assert runner.safety_checker is not None
    assert [image.flagged for image in completed(runner, job_id=4, safety_check=True).images] == [True]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/nonexistent/checker", "the folder does not exist"),
        ("EMPTY", "not a StableDiffusionSafetyChecker"),
        ("BROKEN", "cannot be loaded"),
    ],
)
def test_a_broken_checker_fails_loading_with_a_clear_message(source, expected, tmp_path, flag_all_checker):
    if source == "EMPTY":
        source = str(tmp_path)
    elif source == "BROKEN":
        import shutil

        shutil.copytree(flag_all_checker, tmp_path / "broken")
        (tmp_path / "broken" / "model.safetensors").write_bytes(b"not weights")
        source = str(tmp_path / "broken")
    with pytest.raises(SafetyCheckerError, match=expected) as raised:
        load_safety_checker(source, CPU, torch.float32)
    assert source in str(raised.value)


def test_a_broken_checker_path_fails_worker_start_up(config):
    from dataclasses import replace

    broken = replace(config, safety_checker="/nonexistent/safety-checker")
    context = multiprocessing.get_context("spawn")
    commands_recv, commands = context.Pipe(duplex=False)
    events, events_send = context.Pipe(duplex=False)
    process = context.Process(target=run_worker, args=(broken, commands_recv, events_send), daemon=True)
    process.start()
    commands_recv.close()
    events_send.close()
    try:
        assert events.poll(240), "the worker sent nothing"
        event = events.recv()
        assert isinstance(event, WorkerStartupFailed), event
        assert event.message == "safety_checker '/nonexistent/safety-checker': the folder does not exist"
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
