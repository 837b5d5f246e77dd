"""Model sources, device/dtype resolution and the pipeline cache."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
import torch
from huggingface_hub import constants

from inference.models import (
    ModelSourceError,
    PipelineCache,
    UnknownModelError,
    check_model_sources,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)
from inference.common.protocol import ModelSpec, WorkerConfig
from inference.common.sources import SourceKind, check_worker_config, classify_source, model_file_hash

HUB_ID = "someone/some-model"


@pytest.fixture
def empty_offline_hub_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty hub cache, as huggingface_hub reads them when called."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def fake_cached_repo(cache, repo_id, model_index):
    """The cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps(model_index))


def test_tiny_model_folder_passes(tiny_model_spec):
    check_model_sources([tiny_model_spec])


def test_every_bad_source_is_named_in_one_error(
    tmp_path, tiny_model_spec, empty_offline_hub_cache
):
    not_diffusers = tmp_path / "just-a-folder"
    not_diffusers.mkdir()
    specs = [
        tiny_model_spec,
        ModelSpec("gone", str(tmp_path / "missing")),
        ModelSpec("plain", str(not_diffusers)),
        ModelSpec("uncached", HUB_ID),
    ]
    with pytest.raises(ModelSourceError) as caught:
        check_model_sources(specs)
    message = str(caught.value)
    assert "3 configured model(s)" in message
    assert "'gone'" in message and "does not exist" in message
    assert "'plain'" in message and "model_index.json" in message
    assert "'uncached'" in message and "HF_HUB_OFFLINE" in message
    assert "'tiny'" not in message


def test_cached_hub_id_passes_offline(empty_offline_hub_cache):
    fake_cached_repo(empty_offline_hub_cache, HUB_ID, {"_class_name": "StableDiffusionPipeline"})
    check_model_sources([ModelSpec("cached", HUB_ID)])


def test_unsupported_pipeline_class_is_refused(empty_offline_hub_cache):
    fake_cached_repo(empty_offline_hub_cache, HUB_ID, {"_class_name": "FluxPipeline"})
    with pytest.raises(ModelSourceError, match="FluxPipeline"):
        check_model_sources([ModelSpec("flux", HUB_ID)])


def test_inpaint_source_is_checked_at_start_up(tmp_path, tiny_model_dir, tiny_inpaint_model_dir):
    good = ModelSpec("good", str(tiny_model_dir), inpaint_source=str(tiny_inpaint_model_dir))
    check_model_sources([good])
    specs = [
        # An ordinary model where the inpainting one belongs, and the other way round.
        ModelSpec("swapped", str(tiny_model_dir), inpaint_source=str(tiny_model_dir)),
        ModelSpec("inpaint-only", str(tiny_inpaint_model_dir)),
        ModelSpec("typo", str(tiny_model_dir), inpaint_source=str(tmp_path / "missing")),
    ]
    with pytest.raises(ModelSourceError) as caught:
        check_model_sources(specs)
    message = str(caught.value)
    assert "3 configured model(s)" in message
    assert "'swapped'" in message
    assert "inpaint_source: pipeline class 'StableDiffusionPipeline'" in message
    assert "'inpaint-only'" in message
    assert "'StableDiffusionInpaintPipeline' is not supported" in message
    assert "'typo'" in message and "inpaint_source: folder" in message


def test_uncached_hub_id_is_fine_online(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))])
    check_model_sources([ModelSpec("later", HUB_ID)], cache_dir=str(tmp_path))


def test_uncached_hub_id_without_a_network_fails_at_once_naming_the_hub(tmp_path, monkeypatch):
    """No half minute of download retries: the hub's name does not resolve (as on this
    sandbox, where nothing outside can be reached), so the model is refused at start-up."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_dns(host, port):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ModelSourceError, match=r"cannot be reached to download it \(huggingface.co: Name or service not known\)"):
        check_model_sources([ModelSpec("later", HUB_ID)], cache_dir=str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy may resolve it
    check_model_sources([ModelSpec("later", HUB_ID)], cache_dir=str(tmp_path))


def test_invalid_hub_id_and_duplicate_names(tiny_model_spec):
    with pytest.raises(ModelSourceError, match="not a valid Hugging Face hub id"):
        check_model_sources([ModelSpec("bad", "no such model!")])
    with pytest.raises(ModelSourceError, match="used twice"):
        check_model_sources([tiny_model_spec, tiny_model_spec])


def test_classify_source(tiny_model_dir):
    assert classify_source(str(tiny_model_dir)) is SourceKind.LOCAL_FOLDER
    assert classify_source("./models/sd") is SourceKind.LOCAL_FOLDER
    assert classify_source("/nowhere/sd") is SourceKind.LOCAL_FOLDER
    assert classify_source("stable-diffusion-v1-5/stable-diffusion-v1-5") is SourceKind.HUB_ID


def test_worker_config_checks_name_the_model(tiny_model_spec, tmp_path):
    check_worker_config(WorkerConfig((tiny_model_spec,), "tiny", str(tmp_path)))
    with pytest.raises(ValueError, match="'other'"):
        check_worker_config(WorkerConfig((tiny_model_spec,), "other", str(tmp_path)))
    with pytest.raises(ValueError, match="'extra'"):
        check_worker_config(
            WorkerConfig((tiny_model_spec,), "tiny", str(tmp_path), preload=("extra",))
        )


def test_model_hash_only_for_single_files(tmp_path, tiny_model_dir):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights")
    assert model_file_hash(str(checkpoint)) == hashlib.sha256(b"weights").hexdigest()[:10]
    assert model_file_hash(str(tiny_model_dir)) is None
    assert model_file_hash(HUB_ID) is None


def test_device_and_dtype_resolution():
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    assert resolve_device("cpu") == torch.device("cpu")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype("float32", cpu) is torch.float32
    with pytest.raises(ValueError, match="'float8'"):
        resolve_dtype("float8", cpu)
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1'"):
            resolve_device("cuda:1")


def test_a_worker_forked_after_cuda_started_says_to_spawn(monkeypatch):
    # What torch reports in a process forked from one that had initialised CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    with pytest.raises(ValueError, match='start_method = "spawn"'):
        resolve_device("auto")


def recording_cache(specs, max_loaded=2) -> tuple[PipelineCache, list[str]]:
    """A cache whose loader makes placeholders and records each source it loads."""
    loads = []

    def fake_loader(spec, device, dtype):
        loads.append(spec.source)
        return object()

    cpu = torch.device("cpu")
    return PipelineCache(specs, cpu, torch.float32, max_loaded, loader=fake_loader), loads


def test_cache_keeps_the_most_recently_used():
    specs = [ModelSpec(name, f"/models/{name}") for name in "abc"]
    cache, loads = recording_cache(specs)
    first = cache.get("a")
    cache.get("b")
    assert cache.get("a") is first  # reused, and now the most recent
    cache.get("c")  # evicts b, the least recently used
    assert cache.loaded_names == ("a", "c")
    cache.get("b")
    assert loads == [f"/models/{name}" for name in "abcb"]
    with pytest.raises(UnknownModelError, match="'nope'"):
        cache.get("nope")
    with pytest.raises(ValueError, match="max_loaded"):
        PipelineCache(specs, torch.device("cpu"), torch.float32, max_loaded=0)


def test_cache_keeps_inpainting_variants_apart():
    specs = [
        ModelSpec("a", "/models/a", inpaint_source="/models/a-inpainting"),
        ModelSpec("b", "/models/b"),
    ]
    cache, loads = recording_cache(specs)
    base, inpaint = cache.get("a"), cache.get_inpaint("a")
    assert base is not inpaint and cache.get_inpaint("a") is inpaint
    assert cache.loaded_names == ("a", "a (inpaint)")
    assert loads == ["/models/a", "/models/a-inpainting"]
    with pytest.raises(ValueError, match="no inpaint_source"):
        cache.get_inpaint("b")


def test_load_pipeline_for_real(tiny_model_spec):
    pipe = load_pipeline(tiny_model_spec, torch.device("cpu"), torch.bfloat16)
    assert pipe.unet.dtype is torch.bfloat16
    assert pipe.safety_checker is None
    assert pipe.vae_scale_factor == 8
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
