"""The infotext of A1111 1.10's sampling and noise keys, both ways: written where and as A1111
writes them (modules/processing.py create_infotext, sd_samplers_common), read back by /pnginfo's
Re-run into a job whose request writes the same text again, and what cannot be kept named."""

from __future__ import annotations

import pytest

from bot.image_infotext import rerun_options
from bot.jobs.params import resolve_parameters
from bot.jobs.job_rows import generate_request, job_columns
from bot.jobs.workflow_params import hires_parameters
from db.models import Job
from inference.common.infotext import parse_infotext, request_infotext
from inference.common.protocol import HiresFix
from tests.inference_fixtures import tiny_request


def rerun_request(text: str, settings):
    """What "Re-run here" queues for ``text``, as the worker receives it, and the notes."""
    rerun = rerun_options(parse_infotext(text), settings, upscalers=[])
    params = resolve_parameters(rerun.options, settings)
    if rerun.hires:
        params = hires_parameters(params, settings, **rerun.hires)  # type: ignore[arg-type]
    job = Job(**job_columns(params), id=7, safety_check=False)
    return generate_request(job), rerun.notes


def test_every_key_is_written_where_a1111_writes_it():
    request = tiny_request(
        sampler="Euler a", schedule_type="Karras", eta=0.5, eta_noise_seed_delta=31337, rng="NV",
        seed_resize_from=(64, 128), clip_skip=2,
    )
    assert request_infotext(request, 0, version="v1.10.1").splitlines()[-1] == (
        "Steps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x64, Model: tiny, "
        "Seed resize from: 64x128, Clip skip: 2, ENSD: 31337, RNG: NV, Eta: 0.5, Version: v1.10.1"
    )


@pytest.mark.parametrize(
    ("changes", "written", "left_out"),
    [
        # A1111's defaults write nothing: GPU, no ENSD, the sampler's own eta, no seed resize.
        ({"sampler": "Euler a"}, "Sampler: Euler a, CFG scale", ("Schedule type", "RNG", "ENSD", "Eta", "Seed resize")),
        # Automatic is written as the schedule type that ran.
        ({"sampler": "DPM++ 2M"}, "Sampler: DPM++ 2M, Schedule type: Karras, CFG", ("Eta",)),
        ({"sampler": "DPM++ 2M SDE"}, "Schedule type: Exponential", ("ENSD",)),
        # ENSD only for a sampler that uses it, and only with eta not 0.
        ({"sampler": "DPM++ 2M SDE Heun", "schedule_type": "Karras", "eta_noise_seed_delta": 5}, "Schedule type: Karras", ("ENSD",)),
        ({"sampler": "Euler a", "eta": 0.0, "eta_noise_seed_delta": 5}, "Eta: 0", ("ENSD",)),
        ({"sampler": "DPM2 a", "eta_noise_seed_delta": 5, "rng": "CPU"}, "ENSD: 5, RNG: CPU", ("Eta",)),
        # The timestep samplers: no schedule type, and DDIM's eta under its own key.
        ({"sampler": "DDIM", "eta": 0.25}, "Sampler: DDIM, CFG scale", ("Schedule type", "ENSD")),
        ({"sampler": "DDIM", "eta": 0.25}, "Eta DDIM: 0.25", ()),
        ({"sampler": "Euler", "schedule_type": "Exponential"}, "Sampler: Euler, Schedule type: Exponential", ()),
        ({"sampler": "Euler", "schedule_type": "Uniform"}, "Schedule type: Uniform", ()),
        ({"sampler": "Euler", "schedule_type": "Align Your Steps"}, "Schedule type: Align Your Steps", ()),
        ({"sampler": "Heun", "schedule_type": "SGM Uniform", "clip_skip": 3}, "Schedule type: SGM Uniform", ()),
        ({"sampler": "UniPC", "seed_resize_from": (128, 64)}, "Seed resize from: 128x64", ("Schedule type",)),
        (
            {"sampler": "DPM++ SDE", "eta": 0.75, "hires": HiresFix(scale=2.0, steps=2, denoising_strength=0.5, upscaler="Latent")},
            "Hires upscaler: Latent, Eta: 0.75",
            (),
        ),
    ],
)
def test_each_key_makes_the_round_trip(settings, changes, written, left_out):
    request = tiny_request(**changes)
    text = request_infotext(request, 0, version=None)
    assert written in text
    for key in left_out:
        assert f"{key}" not in text.replace("Sampler", ""), text
    again, notes = rerun_request(text, settings)
    assert notes == []
    assert request_infotext(again, 0, version=None) == text
    for field in ("sampler", "rng", "seed_resize_from", "clip_skip"):
        assert getattr(again, field) == getattr(request, field), field
    # ENSD is written only where it changes the image; where not, the rerun needs none.
    assert again.eta_noise_seed_delta == (request.eta_noise_seed_delta if "ENSD" in text else 0)


def test_a1111_texts_are_read_as_a1111_reads_them(settings):
    base = "a lighthouse\nSteps: 3, Sampler: {sampler}, CFG scale: 7, Seed: 5, Size: 64x64, Model: tiny{rest}"
    # The old combined name, before 1.9 split the schedule type off.
    again, notes = rerun_request(base.format(sampler="DPM++ 2M Karras", rest=""), settings)
    assert (again.sampler, again.schedule_type, notes) == ("DPM++ 2M", "Karras", [])
    # A DDIM text from A1111 with a schedule type written: DDIM ignores it there.
    again, notes = rerun_request(base.format(sampler="DDIM", rest=", Schedule type: Karras, Eta DDIM: 0.5"), settings)
    assert (again.sampler, again.schedule_type, again.eta, notes) == ("DDIM", "Automatic", 0.5, [])
    # Keys we have no setting for are named, not silently dropped; so is eta for a sampler without it.
    again, notes = rerun_request(
        base.format(sampler="Euler", rest=", Face restoration: CodeFormer, Eta: 0.7, NGMS: 0.5, Lora hashes: \"a: 1\""),
        settings,
    )
    assert again.eta is None
    assert notes == [
        "Face restoration is not set up on this server: the image is made without it.",
        "Eta `0.7` was left out: this job's sampler does not use it.",
        "Not kept (this server has no such setting): `NGMS`.",
    ]
    # Unknown names fall back with a note.
    again, notes = rerun_request(base.format(sampler="Euler", rest=", Schedule type: Wobbly, RNG: TPU"), settings)
    assert (again.sampler, again.schedule_type, again.rng) == ("Euler", "Automatic", "GPU")
    assert notes == [
        "Schedule type `Wobbly` is not available here; Euler's own was used.",
        "RNG `TPU` is not a random number source here; GPU was used.",
    ]
