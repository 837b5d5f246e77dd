"""Textual-inversion embeddings and LoRA (A1111's extra networks) on the tiny model.

The embeddings and LoRAs are random tensors written by the tests in the formats A1111 users
have (A1111 .pt, .safetensors, diffusers .bin; kohya LoRA files). Every test that loads one
uses a pipeline of its own: what it loads stays in that pipeline, and the session's tiny_pipe
is left as it was.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from inference import networks, upscale
from inference.jobs import JobRunner
from inference.models import PipelineCache, load_pipeline
from inference.common import network_files
from inference.common.network_files import LoraUse
from inference.common.protocol import JobCompleted, JobFailed, JobKind, ModelSpec
from tests.inference_fixtures import tiny_request, tiny_worker_config

CPU = torch.device("cpu")


# --- network_files: finding files, reading tags (no torch needed) ---------------------------


def test_files_are_found_recursively_first_folder_first(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for path in (
        first / "EasyNegative.safetensors",
        first / "styles" / "deep" / "watercolor.pt",
        first / "notes.txt",
        first / ".hidden.pt",
        first / ".cache" / "skipped.pt",
        second / "EasyNegative.pt",  # the first folder has this name already
        second / "old.bin",
        second / "Lora1.ckpt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (first / "loop").symlink_to(first)  # followed like A1111, but not around the loop
    dirs = (first, str(second), tmp_path / "missing")
    assert network_files.embedding_files(dirs) == {
        "EasyNegative": first / "EasyNegative.safetensors",
        "old": second / "old.bin",
        "watercolor": first / "styles" / "deep" / "watercolor.pt",
    }
    assert network_files.lora_files(dirs) == {
        "EasyNegative": first / "EasyNegative.safetensors",
        "Lora1": second / "Lora1.ckpt",
        "watercolor": first / "styles" / "deep" / "watercolor.pt",
    }
    files = network_files.lora_files(dirs)
    assert network_files.find_lora("lora1", files) == second / "Lora1.ckpt"  # case differs only
    assert network_files.find_lora("nope", files) is None


@pytest.mark.parametrize(
    ("prompt", "uses"),
    [
        ("a cat <lora:style>", [LoraUse("style", 1.0)]),
        ("<lora:style:0.5>, a cat, <lyco:other:-1.25>", [LoraUse("style", 0.5), LoraUse("other", -1.25)]),
        ("<lora:my style: 0.8 : .5 >", [LoraUse("my style", 0.8, 0.5)]),
        ("<LoRA:style:te=0.3:unet=0.7>", [LoraUse("style", 0.3, 0.7)]),
        ("a <b:c> (d:1.2) [e:f:3]", []),  # other tags are text, not ours
    ],
)
def test_lora_tags_are_read_as_a1111_writes_them(prompt, uses):
    assert network_files.find_loras(prompt) == uses


def test_one_weight_is_both_weights_as_in_a1111():
    assert (LoraUse("s", 0.8).text_encoder, LoraUse("s", 0.8).unet) == (0.8, 0.8)
    assert (LoraUse("s", 0.8, 0.5).text_encoder, LoraUse("s", 0.8, 0.5).unet) == (0.8, 0.5)


def test_strip_loras_takes_out_only_the_tags():
    assert network_files.strip_loras("a cat, <lora:style:0.5>, <lyco:x>BREAK <b:c>") == "a cat, , BREAK <b:c>"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a <lora:>", "has no LoRA name"),
        ("a <lora: :1>", "has no LoRA name"),
        ("a <lora:style:strong>", "the weight must be a number such as 0.8, got `strong`"),
        ("a <lora:style:nan>", "got `nan`"),
        ("a <lora:style:>", "got `nothing`"),
        ("a <lora:style:0.5", "is not closed"),
        ("a <lora:style:0.5 <lora:b>", "is not closed"),
        ("a <lora:style:1:1:8>", "dimension option"),
        ("a <lora:style:scale=2>", "unknown option `scale`"),
        ("a <hypernet:anime:1>", "hypernetworks are not supported"),
    ],
)
def test_malformed_tags_say_what_is_wrong(prompt, message):
    with pytest.raises(network_files.MalformedNetworkError) as caught:
        network_files.find_loras(prompt)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


# --- the worker: embeddings ----------------------------------------------------------------


@pytest.fixture
def own_pipe(tiny_model_dir):
    """A tiny pipeline of the test's own (loading embeddings or LoRAs changes it)."""
    return load_pipeline(ModelSpec("tiny", str(tiny_model_dir)), CPU, torch.float32)


def make_runner(pipe, tmp_path, extra_networks=None, **config) -> JobRunner:
    config = tiny_worker_config(ModelSpec("tiny", "unused"), tmp_path / "outputs", preview_interval_s=3600, **config)
    cache = PipelineCache(config.models, CPU, torch.float32, loader=lambda *args: pipe)
    upscalers = upscale.Upscalers((), CPU, torch.float32)
    return JobRunner(config, cache, upscalers, extra_networks)


_job_ids = itertools.count(1)


def run(runner, **overrides):
    """The job's last event; one step is enough to see a prompt's effect, and cheap."""
    sent = []
    # A job id of its own, so its image is not overwritten by the next job's.
    request = tiny_request(**{"job_id": next(_job_ids), "steps": 1, **overrides})
    runner.run(request, lambda: False, sent.append)
    return sent[-1]


def image(runner, **overrides) -> np.ndarray:
    event = run(runner, **overrides)
    assert isinstance(event, JobCompleted), event
    return pixels(event)


def pixels(event: JobCompleted) -> np.ndarray:
    return np.asarray(Image.open(event.images[0].path).convert("RGB"), dtype=np.float64)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def vectors(pipe, count: int, seed: int) -> torch.Tensor:
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def write_a1111_pt(path: Path, tensor: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": tensor},
            "name": path.stem,
            "step": 1000,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
        },
        path,
    )
    return path


def test_an_embedding_changes_the_image_only_where_its_name_is_used(own_pipe, tmp_path):
    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    save_file({"emb_params": vectors(own_pipe, 1, 1)}, emb_dir / "Sparkle.safetensors")
    write_a1111_pt(emb_dir / "sub" / "TwoVec.pt", two := vectors(own_pipe, 2, 2))
    torch.save({"<cat>": vectors(own_pipe, 1, 3)[0]}, emb_dir / "cat.bin")  # diffusers' format
    plain = make_runner(own_pipe, tmp_path)  # no embedding folder: every name is a word
    with_embeddings = make_runner(own_pipe, tmp_path, embedding_dirs=(str(emb_dir),))

    prompts = ("a photo of Sparkle", "a photo of TwoVec", "a photo of a cat", "a photo of Sparkles")
    before = {prompt: image(plain, prompt=prompt) for prompt in prompts}
    base = image(plain, prompt="a photo of")
    negative = image(plain, prompt="a photo of", negative_prompt="twovec")
    for prompt in prompts[1:3]:
        # "cat" is a word CLIP knows: diffusers refuses such names, our tokens do not clash.
        assert distance(image(with_embeddings, prompt=prompt), before[prompt]) > 0, prompt
    # Loaded embeddings change nothing else: a prompt without them, or with the name inside a
    # longer word (A1111 matches whole words), is made as before any was loaded.
    assert np.array_equal(image(with_embeddings, prompt="a photo of"), base)
    assert np.array_equal(image(with_embeddings, prompt="a photo of Sparkles"), before[prompts[3]])
    # Any case, in the negative prompt too, and inside A1111's attention syntax.
    sparkle = image(with_embeddings, prompt="a photo of Sparkle")
    assert distance(sparkle, before["a photo of Sparkle"]) > 0
    assert np.array_equal(image(with_embeddings, prompt="a photo of (sparkle:1)"), sparkle)
    assert distance(image(with_embeddings, prompt="a photo of", negative_prompt="twovec"), negative) > 0
    # Both vectors count (diffusers' maybe_convert_prompt expands the token): the first alone
    # makes another image. The infotext keeps the prompt as the user wrote it.
    # (Three steps: one token's difference hardly shows after one.)
    two_vectors = run(with_embeddings, prompt="a photo of TwoVec", steps=3)
    assert two_vectors.images[0].infotext.startswith("a photo of TwoVec\n")
    write_a1111_pt(emb_dir / "sub" / "OneOfTwo.pt", two[:1].clone())
    one_vector = image(with_embeddings, prompt="a photo of OneOfTwo", steps=3)
    assert distance(one_vector, pixels(two_vectors)) > 0


def test_a_replaced_embedding_file_is_loaded_again(own_pipe, tmp_path):
    emb_dir = tmp_path / "embeddings"
    path = write_a1111_pt(emb_dir / "Mood.pt", vectors(own_pipe, 1, 5))
    runner = make_runner(own_pipe, tmp_path, embedding_dirs=(str(emb_dir),))
    first = image(runner, prompt="Mood")
    write_a1111_pt(path, vectors(own_pipe, 1, 6))
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert distance(image(runner, prompt="Mood"), first) > 0


def test_a_pickle_that_would_run_code_is_refused(own_pipe, tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    torch.save({"string_to_param": {"*": Payload()}}, emb_dir / "Evil.pt")
    runner = make_runner(own_pipe, tmp_path, embedding_dirs=(str(emb_dir),))
    failed = run(runner, prompt="a photo of Evil")
    assert isinstance(failed, JobFailed)
    assert "embedding `Evil` holds Python objects" in failed.message
    assert "not loaded" in failed.message
    assert not marker.exists()
    assert isinstance(run(runner, prompt="a photo of a cat"), JobCompleted)  # others still run


def test_an_embedding_for_another_model_is_refused_by_name(own_pipe, tmp_path):
    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    save_file({"emb_params": torch.randn(1, 768)}, emb_dir / "Wide.safetensors")
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, emb_dir / "XL.safetensors")
    runner = make_runner(own_pipe, tmp_path, embedding_dirs=(str(emb_dir),))
    wide = run(runner, prompt="Wide")
    assert isinstance(wide, JobFailed) and "embedding `Wide` does not fit model `tiny`" in wide.message
    xl = run(runner, prompt="XL")
    assert isinstance(xl, JobFailed) and "SDXL embedding" in xl.message


# --- the worker: LoRA ----------------------------------------------------------------------


def write_kohya_lora(
    pipe, path: Path, seed: int, scale: float = 0.5, encoders: tuple[tuple[str, str], ...] = (("lora_te_", "text_encoder"),)
) -> Path:
    """A random LoRA in kohya's format (what A1111 users download): lora_down/lora_up/alpha per
    attention projection of the UNet and the text encoders, each (key prefix, pipeline
    attribute) of ``encoders`` (SDXL's: lora_te1_ for text_encoder, lora_te2_ for text_encoder_2)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}

    def add(key: str, module: torch.nn.Linear, rank: int = 2) -> None:
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * scale
        tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * scale
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))

    for name, module in pipe.unet.named_modules():
        if name.split(".")[-1] in ("to_q", "to_k", "to_v") or name.endswith("to_out.0"):
            add("lora_unet_" + name.replace(".", "_"), module)
    for prefix, attribute in encoders:
        for name, module in getattr(pipe, attribute).named_modules():
            if name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "out_proj"):
                add(prefix + "text_model_" + name.removeprefix("text_model.").replace(".", "_"), module)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save(tensors, path)
    return path


def test_a_lora_changes_the_image_by_its_weight_and_is_gone_afterwards(own_pipe, tmp_path):
    lora_dir = tmp_path / "loras"
    write_kohya_lora(own_pipe, lora_dir / "Style.safetensors", seed=1)
    write_kohya_lora(own_pipe, lora_dir / "pickled" / "StylePt.pt", seed=1)
    runner = make_runner(own_pipe, tmp_path, lora_dirs=(str(lora_dir),))
    base = image(runner, prompt="a cat")
    full = image(runner, prompt="a cat <lora:Style:1>")
    half = image(runner, prompt="a cat <lora:style:0.5>")  # the name in another case
    assert distance(full, base) > 1
    assert distance(half, base) > 0
    # Half the weight moves the model half as far: measured on a deterministic sampler's
    # images (an ancestral one's fresh noise each step can hide it on a random-weight model).
    euler = {"sampler": "Euler"}
    euler_base = image(runner, prompt="a cat", **euler)
    assert distance(image(runner, prompt="a cat <lora:style:0.5>", **euler), euler_base) < distance(
        image(runner, prompt="a cat <lora:Style:1>", **euler), euler_base
    )
    assert np.array_equal(image(runner, prompt="a cat"), base)  # exactly the un-LoRA'd image
    # The same LoRA from a pickled .pt (read with weights_only) gives the same image.
    assert np.array_equal(image(runner, prompt="a cat <lora:StylePt>"), full)
    # Text encoder and UNet weights apart, and tags in the negative prompt count too.
    assert distance(image(runner, prompt="a cat <lora:Style:1:0>"), full) > 0
    assert distance(image(runner, negative_prompt="blurry <lora:Style:1>"), base) > 0
    # Twice the same LoRA adds up, as A1111 applies it twice.
    assert np.array_equal(image(runner, prompt="<lora:Style:0.5>a cat<lora:Style:0.5>"), full)
    assert np.array_equal(image(runner, prompt="a cat"), base)
    # Loaded once, kept for the next job.
    assert own_pipe.get_list_adapters()["unet"] == ["Style_1", "StylePt_2"]
    # The infotext keeps the tag, as A1111's does.
    event = run(runner, prompt="a cat <lora:Style:0.5>")
    assert event.images[0].infotext.startswith("a cat <lora:Style:0.5>\n")


def test_loras_beyond_the_limit_are_unloaded_least_recently_used_first(own_pipe, tmp_path):
    lora_dir = tmp_path / "loras"
    for seed, name in enumerate(("One", "Two", "Three"), start=1):
        write_kohya_lora(own_pipe, lora_dir / f"{name}.safetensors", seed=seed)
    extra = networks.ExtraNetworks((), (str(lora_dir),), max_loras_per_pipe=2)
    runner = make_runner(own_pipe, tmp_path, extra)
    one = image(runner, prompt="a cat <lora:One>")
    image(runner, prompt="a cat <lora:Two>")
    image(runner, prompt="a cat <lora:One>")  # One is now the most recently used
    image(runner, prompt="a cat <lora:Three>")
    assert sorted(own_pipe.get_list_adapters()["unet"]) == ["One_1", "Three_3"]
    image(runner, prompt="a cat <lora:Two:0.5> <lora:Three:0.5>")  # One goes, Two comes back
    assert sorted(own_pipe.get_list_adapters()["unet"]) == ["Three_3", "Two_4"]
    assert np.array_equal(image(runner, prompt="a cat <lora:One>"), one)


def test_unknown_and_malformed_loras_fail_the_job_with_a_message(tiny_pipe, tmp_path):
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    (lora_dir / "Style.safetensors").write_bytes(b"not read: the job is refused first")
    runner = make_runner(tiny_pipe, tmp_path, lora_dirs=(str(lora_dir),))
    unknown = run(runner, prompt="a cat <lora:nope:0.5>")
    assert isinstance(unknown, JobFailed)
    assert unknown.message == "Unknown LoRA `nope`. Available: Style."
    malformed = run(runner, negative_prompt="<lora:Style:lots>")
    assert isinstance(malformed, JobFailed) and "the weight must be a number" in malformed.message
    assert tiny_pipe.get_list_adapters() == {}


def test_a_lora_file_diffusers_cannot_load_fails_the_job_and_changes_nothing(own_pipe, tmp_path):
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(2, 3)}, lora_dir / "Odd.safetensors")
    (lora_dir / "Broken.safetensors").write_bytes(b"garbage")
    runner = make_runner(own_pipe, tmp_path, lora_dirs=(str(lora_dir),))
    base = image(runner, prompt="a cat")
    for name in ("Odd", "Broken"):
        failed = run(runner, prompt=f"a cat <lora:{name}>")
        assert isinstance(failed, JobFailed) and f"LoRA `{name}`" in failed.message, failed
    assert np.array_equal(image(runner, prompt="a cat"), base)


def test_inpaint_jobs_load_into_the_inpainting_checkpoint_when_there_is_one():
    calls = []
    specs = {"m": SimpleNamespace(inpaint_source="folder"), "n": SimpleNamespace(inpaint_source="")}
    cache = SimpleNamespace(
        spec=specs.__getitem__,
        get=lambda name: calls.append(("get", name)) or "base",
        get_inpaint=lambda name: calls.append(("inpaint", name)) or "inpaint",
    )
    assert networks.job_pipeline(cache, tiny_request(model="m", kind=JobKind.INPAINT)) == "inpaint"
    assert networks.job_pipeline(cache, tiny_request(model="m", kind=JobKind.OUTPAINT)) == "inpaint"
    assert networks.job_pipeline(cache, tiny_request(model="m", kind=JobKind.IMG2IMG)) == "base"
    assert networks.job_pipeline(cache, tiny_request(model="n", kind=JobKind.INPAINT)) == "base"
    assert calls == [("inpaint", "m"), ("inpaint", "m"), ("get", "m"), ("get", "n")]


def test_a_job_without_networks_does_not_touch_the_cache(tmp_path):
    extra = networks.ExtraNetworks((str(tmp_path / "none"),), (str(tmp_path / "none"),))
    request = tiny_request(prompt="a cat")
    with extra.applied(SimpleNamespace(), request) as applied:  # any cache use would raise
        assert applied is request
