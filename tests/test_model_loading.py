"""First loads a member waits on: the bytes of the model's files read, reported as ModelLoading
events, and the model budget's measure of full-size SDXL pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.common.protocol import JobCompleted, JobProgress, JobStarted, ModelLoading, ModelSpec
from inference.load_progress import read_ahead, weight_files
from inference.models import PipelineCache, pipeline_bytes
from inference.single_file import model_configs_dir
from tests.inference_fixtures import runner_for, tiny_request, tiny_worker_config

CPU = torch.device("cpu")
MB = 2**20


def recorder() -> tuple[list[tuple[str, int, int]], object]:
    reports: list[tuple[str, int, int]] = []
    return reports, lambda name, done, total: reports.append((name, done, total))


def test_read_ahead_reports_bytes_read_from_zero_to_the_total(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    first.write_bytes(b"\1" * (40 * MB))
    second.write_bytes(b"\2" * (3 * MB + 5))
    reports, report = recorder()
    total = read_ahead("big", [first, second], report, interval_s=0, available_bytes=2**40)
    assert total == 43 * MB + 5
    done = [done for _, done, _ in reports]
    assert done[0] == 0 and done[-1] == total
    assert done == sorted(done) and len(done) >= 4  # 16 MB chunks: 0, 16, 32, 40+3..., total
    assert {(name, whole) for name, _, whole in reports} == {("big", total)}


def test_files_too_large_for_memory_are_not_read_twice(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(b"\0" * MB)
    reports, report = recorder()
    read_ahead("huge", [path], report, interval_s=0, available_bytes=MB)  # would take all of it
    assert reports == [("huge", 0, MB)]  # the start only; the job's progress follows the load


def test_a_file_that_cannot_be_read_leaves_the_load_to_say_why(tmp_path):
    folder = tmp_path / "not-a-file.safetensors"
    folder.mkdir()  # stat works, reading fails (IsADirectoryError)
    reports, report = recorder()
    assert read_ahead("odd", [folder], report, interval_s=0, available_bytes=2**40) == folder.stat().st_size
    assert reports == [("odd", 0, folder.stat().st_size)]


def test_weight_files_of_a_folder_a_single_file_and_a_hub_id(tiny_model_dir, tiny_sd15_file):
    folder = weight_files(str(tiny_model_dir))
    assert {path.parent.name for path in folder} == {"unet", "vae", "text_encoder"}
    assert all(path.suffix == ".safetensors" for path in folder)
    assert weight_files(str(tiny_sd15_file.path)) == [tiny_sd15_file.path]
    assert weight_files("runwayml/stable-diffusion-v1-5") == []  # a hub id: total unknown


def test_a_watched_load_reports_its_file_and_a_loaded_model_reports_nothing(tiny_sd15_file):
    spec = tiny_sd15_file.spec("file")
    cache = PipelineCache([spec], CPU, torch.float32)
    reports, report = recorder()
    with cache.reporting_loads(report):
        cache.get("file")
        size = Path(spec.source).stat().st_size
        assert reports[0] == ("file", 0, size) and reports[-1] == ("file", size, size)
        reports.clear()
        cache.get("file")  # loaded: nothing to wait for
    assert reports == []
    cache.replace_specs([])  # unloaded: a load outside reporting_loads reports to no one
    cache.replace_specs([spec])
    cache.get("file")
    assert reports == []


def test_a_job_waiting_on_a_load_gets_model_loading_before_its_progress(tiny_model_spec, tiny_pipe, tmp_path):
    runner = runner_for(tiny_pipe, tiny_worker_config(tiny_model_spec, tmp_path, preview_interval_s=0))
    sent = []
    runner.run(tiny_request(job_id=3, steps=2), lambda: False, sent.append)
    runner.saver.wait()
    loading = [event for event in sent if isinstance(event, ModelLoading)]
    total = sum(path.stat().st_size for path in weight_files(tiny_model_spec.source))
    assert loading[0] == ModelLoading(3, tiny_model_spec.name, 0, total)
    assert loading[-1] == ModelLoading(3, tiny_model_spec.name, total, total)
    kinds = [type(event) for event in sent]
    assert kinds.index(JobStarted) < kinds.index(ModelLoading) < kinds.index(JobProgress)
    assert isinstance(sent[-1], JobCompleted)
    sent.clear()
    runner.run(tiny_request(job_id=4, steps=2), lambda: False, sent.append)  # loaded now
    runner.saver.wait()
    assert not any(isinstance(event, ModelLoading) for event in sent)


@pytest.mark.parametrize(
    ("done", "total", "line"),
    [
        (0, 0, "Loading model xl…"),
        (0, 7 * 2**30, "Loading model xl… 0% · 0.00 of 7.0 GB"),
        (3 * 2**30, 6 * 2**30, "Loading model xl… 50% · 3.0 of 6.0 GB"),
        (6 * 2**30, 6 * 2**30, "Loading model xl… read 6.0 GB, preparing it"),
    ],
)
def test_the_loading_line_members_see(done, total, line):
    assert ModelLoading(1, "xl", done, total).summary == line


def full_size_components(folder: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """A shipped config's components at full size on the meta device: shapes, no memory."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = model_configs_dir() / folder
    parts: dict[str, torch.nn.Module] = {}
    with torch.device("meta"):
        parts["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        parts["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        if (config / "text_encoder").exists():
            parts["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
        encoder_2 = CLIPTextConfig.from_pretrained(config / "text_encoder_2")
        parts["text_encoder_2"] = CLIPTextModelWithProjection(encoder_2)
    return {name: part.to(dtype) for name, part in parts.items()}


def test_the_budget_counts_sdxl_and_its_refiner_at_full_size():
    """pipeline_bytes of real SDXL pipelines (the shipped configs at full size, on the meta
    device): about 7 GB in fp16 for the base, 6 GB more for the refiner, twice in fp32."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    from inference.img2img import derived_pipeline

    base = StableDiffusionXLPipeline(
        **full_size_components("stable-diffusion-xl-base-1.0", torch.float16),
        tokenizer=None, tokenizer_2=None, scheduler=EulerDiscreteScheduler(), add_watermarker=False,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        **full_size_components("stable-diffusion-xl-refiner-1.0", torch.float16), text_encoder=None,
        tokenizer=None, tokenizer_2=None, scheduler=EulerDiscreteScheduler(), add_watermarker=False,
    )
    gigabytes = 10**9
    assert 6.8 * gigabytes < pipeline_bytes(base) < 7.1 * gigabytes  # UNet 5.1, CLIP-G 1.4, CLIP-L 0.25
    assert 5.9 * gigabytes < pipeline_bytes(refiner) < 6.3 * gigabytes
    assert base.unet.dtype == torch.float16
    # The img2img and inpaint pipelines of a model share its tensors: nothing more to count.
    # (Not diffusers' from_pipe, whose default dtype casts the shared modules to float32.)
    assert pipeline_bytes(derived_pipeline(base, StableDiffusionImg2ImgPipeline)) == pipeline_bytes(base)
    budget_for_one = PipelineCache([], CPU, torch.float16, memory_budget_mb=8 * 1024).memory_budget_bytes
    assert pipeline_bytes(base) < budget_for_one < pipeline_bytes(base) + pipeline_bytes(refiner)


def test_a_model_named_by_hub_id_reports_an_unknown_total():
    reports, report = recorder()
    spec = ModelSpec("hub", "someone/some-model")
    assert read_ahead(spec.name, weight_files(spec.source), report) == 0
    assert reports == [("hub", 0, 0)]


def test_the_model_switch_benchmark_switches_between_sdxl_single_files(tmp_path):
    """bench.model_switch --sdxl-file: two SDXL files (the tiny one here) under a budget for
    one; every switch is watched as a job's load is, so it reports its progress."""
    import json

    from bench import model_switch

    results = model_switch.main([
        "--sdxl-file", "--tiny", "--steps", "1", "--repeats", "1", "--budget-mb", "1",
        "--model-cache", str(tmp_path / "models"), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "model_switch_sdxl_file-tiny-cpu.json").read_text())
    assert document["settings"]["model"] == "sdxl-tiny" and document["settings"]["watched"]
    sources = {document["settings"]["model_folder"], document["settings"]["second_model_folder"]}
    assert all(source.endswith(".safetensors") for source in sources) and len(sources) == 2
    for mode in ("one_at_a_time", "budget"):  # a budget below one model: each switch loads again
        loads = results["modes"][mode]["loads"]
        assert [load["model"] for load in loads] == ["first", "second", "first", "second", "first"]
    assert results["progress_reports"] >= 2 * 4 * 2  # four watched loads per mode, a start and an end each
