"""Serving what the A1111 folders hold: hashes cached in the database, refresh without a
restart (the worker told through UpdateModels), `sdbot models`, and infotext as A1111 writes it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bot.cli import main as sdbot
from bot.config import load_settings
from bot.model_catalog import ModelCatalog
from bot.model_hashes import FileHashes
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobCompleted, JobFailed, ModelSpec
from tests.inference_fixtures import TINY_MODEL_NAME, runner_for, tiny_request, tiny_worker_config
from tests.test_inference_networks import make_runner, run, vectors, write_a1111_pt, write_kohya_lora
from tests.webui_folders import make_webui, write_checkpoint

CHECKPOINTS = Path("models") / "Stable-diffusion"


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    return make_webui(tmp_path / "webui")


def _settings(tmp_path: Path, webui: Path, extra: str = ""):
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{tmp_path / "db.sqlite3"}"\n[a1111]\nroot = "{webui}"\n{extra}')
    return load_settings(config, environ={})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_hashes_are_computed_once_and_again_when_a_file_changes(database, tmp_path):
    path = write_checkpoint(tmp_path / "model.safetensors")
    hashes = FileHashes(database)
    assert await hashes.compute([str(path)]) == {str(path): _sha256(path)}
    # Another bot process (a restart) reads it from the database: nothing to compute.
    again = FileHashes(database)
    assert await again.compute([str(path)]) == {}
    assert again.known([str(path)]) == {str(path): _sha256(path)}
    assert again.by_short_hash(_sha256(path)[:10]) == [str(path)]
    # A changed file (new time) is hashed again; its old hash is no longer trusted.
    write_checkpoint(path, "sdxl")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert again.known([str(path)]) == {} and again.by_short_hash(_sha256(path)[:10]) == []
    assert await again.compute([str(path)]) == {str(path): _sha256(path)}


async def test_refresh_adds_and_removes_models_and_tells_the_worker(database, tmp_path, webui):
    catalog = ModelCatalog(_settings(tmp_path, webui), FileHashes(database))
    told: list[tuple[ModelSpec, ...]] = []
    catalog.listen(told.append)
    pony = webui / CHECKPOINTS / "SDXL" / "ponyDiffusionV6XL.safetensors"

    assert (await catalog.refresh()).summary().startswith("Models refreshed: no change. 3 file(s) skipped")
    assert told == []

    write_checkpoint(webui / CHECKPOINTS / "new" / "illustrious.safetensors", "sdxl")
    pony.unlink()
    change = await catalog.refresh()
    assert (change.added, change.removed) == (("new/illustrious",), ("SDXL/ponyDiffusionV6XL",))
    names = [m.name for m in catalog.settings.models]
    assert "new/illustrious" in names and "SDXL/ponyDiffusionV6XL" not in names
    assert [spec.name for spec in told[-1]] == names

    # Hashes reach the worker too, once computed in the background.
    assert await catalog.hash_files() == 5  # four models and one inpainting partner
    illustrious = next(spec for spec in told[-1] if spec.name == "new/illustrious")
    assert illustrious.sha256 == _sha256(webui / CHECKPOINTS / "new" / "illustrious.safetensors")
    assert catalog.model_by_hash(illustrious.sha256[:10]) == "new/illustrious"

    # Removing the default model would leave the bot without one: refused, nothing changes.
    default = catalog.settings.model(catalog.settings.default_model)
    Path(default.source).unlink()
    refused = await catalog.refresh()
    assert "default_model" in refused.refused and refused.summary().startswith("Models not refreshed")
    assert catalog.settings.model(default.name) is not None


def test_sdbot_models_lists_models_and_skipped_files(tmp_path, webui, capsys):
    config = tmp_path / "config.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "db.sqlite3"}"\n[a1111]\nroot = "{webui}"\n'
        '[[models]]\nname = "pony"\nsource = "SDXL/ponyDiffusionV6XL"\nhidden = true\n'
    )
    assert sdbot(["--config", str(config), "models"]) == 0
    listed = capsys.readouterr().out
    lines = listed.splitlines()
    assert lines[0] == "4 model(s):"
    pony = next(line for line in lines if line.strip().startswith("pony"))
    assert "(hidden)" in pony and " sdxl " in pony and str(webui / CHECKPOINTS / "SDXL") in pony
    assert " -  " in pony  # no hash computed yet
    assert "3 file(s) skipped in" in listed
    assert f"{webui / CHECKPOINTS / 'broken.safetensors'}: broken.safetensors is truncated" in listed
    assert "flux1-dev.safetensors is a Flux model, which is not supported yet" in listed

    assert sdbot(["--config", str(config), "models", "--hash"]) == 0
    hashed = capsys.readouterr().out
    short = _sha256(webui / CHECKPOINTS / "SDXL" / "ponyDiffusionV6XL.safetensors")[:10]
    assert short in next(line for line in hashed.splitlines() if line.strip().startswith("pony"))


# --- the worker's side ------------------------------------------------------------------


def test_the_worker_serves_the_new_list_and_writes_a1111s_model_and_hash(tiny_model_spec, tiny_pipe, tmp_path):
    runner = runner_for(tiny_pipe, tiny_worker_config(tiny_model_spec, tmp_path))
    # A discovered checkpoint: named by its path under the folder, read from a single file
    # (the tiny pipe stands in for it here), its sha256 known to the bot.
    single = ModelSpec("SDXL/pony", "/webui/models/Stable-diffusion/SDXL/pony.safetensors", sha256="0123456789" + "a" * 54)
    runner.update_models((single,))

    sent = []
    runner.run(tiny_request(job_id=1, steps=2), lambda: False, sent.append)
    runner.saver.wait()
    failed = sent[-1]
    assert isinstance(failed, JobFailed)
    assert failed.message.startswith(f"The model '{TINY_MODEL_NAME}' is not on this server any more")

    sent.clear()
    runner.run(tiny_request(job_id=2, model="SDXL/pony", steps=2), lambda: False, sent.append)
    runner.saver.wait()
    completed = sent[-1]
    assert isinstance(completed, JobCompleted), sent
    params = parse_infotext(completed.images[0].infotext)
    assert (params["Model"], params["Model hash"]) == ("pony", "0123456789")


@pytest.fixture
def own_pipe(tiny_model_dir):
    """A tiny pipeline of the test's own: loading LoRAs and embeddings changes it."""
    import torch

    from inference.models import load_pipeline

    return load_pipeline(ModelSpec("tiny", str(tiny_model_dir)), torch.device("cpu"), torch.float32)


def test_infotext_lists_the_loras_and_embeddings_a_job_used_with_a1111s_hashes(own_pipe, tmp_path):
    lora = write_kohya_lora(own_pipe, tmp_path / "loras" / "Style.safetensors", seed=1)
    embedding = write_a1111_pt(tmp_path / "embeddings" / "badhands.pt", vectors(own_pipe, 1, seed=2))
    runner = make_runner(own_pipe, tmp_path, lora_dirs=(str(tmp_path / "loras"),), embedding_dirs=(str(tmp_path / "embeddings"),))
    completed = run(runner, prompt="a cat <lora:style:0.7>", negative_prompt="badhands")
    assert isinstance(completed, JobCompleted), completed
    runner.saver.wait()
    params = parse_infotext(completed.images[0].infotext)
    # A LoRA's is the "addnet" hash (its tensor bytes, after the header); an embedding's the file's.
    data = lora.read_bytes()
    addnet = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]
    assert params["Lora hashes"] == f"style: {addnet}"
    assert params["TI hashes"] == f"badhands: {_sha256(embedding)[:12]}"
    assert "Lora hashes" not in run(runner, prompt="a cat").images[0].infotext


def test_new_specs_unload_only_removed_and_changed_models():
    import torch

    from inference.models import PipelineCache

    loads = []

    def loader(spec, device, dtype):
        loads.append(spec.name)
        return object()

    a, b, c = ModelSpec("a", "/m/a.safetensors"), ModelSpec("b", "/m/b.safetensors"), ModelSpec("c", "/m/c.safetensors")
    cache = PipelineCache((a, b, c), torch.device("cpu"), torch.float32, max_loaded=3, loader=loader)
    for name in "abc":
        cache.get(name)
    # a removed; b's hash only now known (same file: kept); c's file moved (read again).
    moved = ModelSpec("c", "/m/sub/c.safetensors")
    assert cache.replace_specs((ModelSpec("b", b.source, sha256="1" * 64), moved)) == ["a", "c"]
    assert cache.loaded_names == ("b",)
    # b replaced in place: a new hash, so its loaded weights are stale.
    assert cache.replace_specs((ModelSpec("b", b.source, sha256="2" * 64), moved)) == ["b"]
    cache.get("c")
    assert loads == ["a", "b", "c", "c"]


async def test_the_periodic_rescan_finds_new_files_and_hashes_them(database, tmp_path, webui):
    import asyncio
    from dataclasses import replace

    settings = _settings(tmp_path, webui)
    settings = replace(settings, a1111=replace(settings.a1111, rescan_minutes=0.001))  # every 60 ms
    catalog = ModelCatalog(settings, FileHashes(database))
    told: list[tuple[ModelSpec, ...]] = []
    catalog.listen(told.append)
    running = asyncio.create_task(catalog.keep_current())
    try:
        added = write_checkpoint(webui / CHECKPOINTS / "later.safetensors", "sd1")
        async with asyncio.timeout(30):
            while not any(spec.name == "later" and spec.sha256 for spec in (told[-1] if told else ())):
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert catalog.settings.model("later") is not None
    assert next(spec for spec in told[-1] if spec.name == "later").sha256 == _sha256(added)
