"""The checkpoint merger (inference.merge, inference.common.merge_plan) on tiny single files:
the merged weights against A1111's formulas key by key, its metadata, the refusals, no
overwrite, cancel, and the merged file loading as a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from inference.common.checkpoints import Family, inspect_checkpoint
from inference.common.file_hashes import file_hash
from inference.common.merge_options import MergeMethod, MergeOptions, MergeSource
from inference.common.merge_plan import MergeError, check_free_space, check_output_name, plan_merge
from inference.generate import InvalidRequestError, JobCancelledError
from inference.merge import legacy_hash, merge_checkpoints
from inference.single_file_writer import build_tiny_pipeline, original_layout, write_single_file


def _write(folder: Path, stem: str, family: Family, seed: int, inpainting: bool = False, **kwargs) -> MergeSource:
    path = folder / f"{stem}.safetensors"
    if not path.exists():
        write_single_file(build_tiny_pipeline(family, inpainting=inpainting, seed=seed), path, family, **kwargs)
    return MergeSource(stem, str(path))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MergeSource]:
    folder = tmp_path_factory.mktemp("merge-inputs")
    return {
        "a": _write(folder, "a", Family.SD1, seed=1),
        "b": _write(folder, "b", Family.SD1, seed=2, half=True),
        "c": _write(folder, "c", Family.SD1, seed=3),
        "inpaint": _write(folder, "a-inpainting", Family.SD1, seed=4, inpainting=True),
        "xl": _write(folder, "xl", Family.SDXL, seed=5),
        "xl2": _write(folder, "xl2", Family.SDXL, seed=6),
    }


def _merge(options: MergeOptions, steps: list | None = None) -> None:
    merge_checkpoints(options, lambda done, total: (steps if steps is not None else []).append((done, total)), lambda: False)


def _tensors(source: MergeSource | str) -> dict[str, torch.Tensor]:
    return load_file(source.path if isinstance(source, MergeSource) else source)


def test_weighted_sum_is_a1111s_formula_on_every_merged_key(sources, tmp_path: Path) -> None:
    output = tmp_path / "mix.safetensors"
    steps: list = []
    _merge(MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(output), sources["b"], multiplier=0.3), steps)
    a, b, merged = _tensors(sources["a"]), _tensors(sources["b"]), _tensors(str(output))
    assert merged.keys() == a.keys()
    position_ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    for key, value in merged.items():
        if value.is_floating_point():
            assert value.dtype == torch.float16, key
        if "model" in key and key != position_ids and key in b:
            expected = (0.7 * a[key].float() + 0.3 * b[key].float()).half()
        else:
            expected = a[key].half() if a[key].is_floating_point() else a[key]
        assert torch.equal(value, expected), key
    # Some keys really did move (A and B differ), and the progress counted every tensor.
    unet_key = "model.diffusion_model.input_blocks.0.0.weight"
    assert not torch.equal(merged[unet_key], a[unet_key].half())
    assert steps[-1] == (len(a), len(a)) and len(steps) == len(a)
    assert inspect_checkpoint(output).family == Family.SD1


def test_add_difference_and_its_metadata_as_a1111_writes_them(sources, tmp_path: Path) -> None:
    output = tmp_path / "diff.safetensors"
    options = MergeOptions(
        MergeMethod.ADD_DIFFERENCE, sources["a"], str(output), sources["b"], sources["c"], multiplier=0.5
    )
    _merge(options)
    a, b, c, merged = (_tensors(s) for s in (sources["a"], sources["b"], sources["c"], str(output)))
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(merged[key], (a[key].float() + 0.5 * (b[key].float() - c[key].float())).half())
    with safe_open(str(output), framework="pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == "pt"
    recipe = json.loads(metadata["sd_merge_recipe"])
    hashes = [file_hash(sources[k].path) for k in "abc"]
    assert recipe["type"] == "webui" and recipe["interp_method"] == "Add difference"
    assert (recipe["primary_model_hash"], recipe["secondary_model_hash"], recipe["tertiary_model_hash"]) == tuple(hashes)
    assert recipe["multiplier"] == 0.5 and recipe["custom_name"] == "diff" and recipe["is_inpainting"] is False
    models = json.loads(metadata["sd_merge_models"])
    assert models[hashes[1]] == {
        "name": "b.safetensors", "legacy_hash": legacy_hash(Path(sources["b"].path)), "sd_merge_recipe": None,
    }
    # A merge of a merge keeps the recipe of what it was made from, as A1111's does.
    again = tmp_path / "again.safetensors"
    _merge(MergeOptions(MergeMethod.WEIGHTED_SUM, MergeSource("diff", str(output)), str(again), sources["a"]))
    with safe_open(str(again), framework="pt") as file:
        models = json.loads(file.metadata()["sd_merge_models"])
    assert models[file_hash(output)]["sd_merge_recipe"] == recipe
    assert hashes[2] in models  # diff's own sd_merge_models came along


def test_an_inpainting_a_merges_on_its_first_four_channels(sources, tmp_path: Path) -> None:
    output = tmp_path / "inpaint-mix.safetensors"
    options = MergeOptions(MergeMethod.WEIGHTED_SUM, sources["inpaint"], str(output), sources["b"], multiplier=0.5)
    assert plan_merge(options).is_inpainting
    _merge(options)
    a, b, merged = _tensors(sources["inpaint"]), _tensors(sources["b"]), _tensors(str(output))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert merged[key].shape[1] == 9
    assert torch.equal(merged[key][:, :4], (0.5 * a[key][:, :4].float() + 0.5 * b[key].float()).half())
    assert torch.equal(merged[key][:, 4:], a[key][:, 4:].half())
    assert inspect_checkpoint(output).inpainting
    reverse = MergeOptions(MergeMethod.WEIGHTED_SUM, sources["b"], str(tmp_path / "x.safetensors"), sources["inpaint"])
    with pytest.raises(MergeError, match="A must be the inpainting model"):
        plan_merge(reverse)


def test_refusals_name_what_is_wrong_before_anything_is_written(sources, tmp_path: Path) -> None:
    output = tmp_path / "never.safetensors"
    with pytest.raises(MergeError, match="`a` is SD 1.x and `xl` is SDXL"):
        plan_merge(MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(output), sources["xl"]))
    with pytest.raises(MergeError, match="between 0 and 1, got 1.5"):
        plan_merge(MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(output), sources["b"], multiplier=1.5))
    with pytest.raises(MergeError, match="needs a model C"):
        plan_merge(MergeOptions(MergeMethod.ADD_DIFFERENCE, sources["a"], str(output), sources["b"]))
    with pytest.raises(MergeError, match="not enough disk space"):
        check_free_space(tmp_path, 2**20, keep_free=2**62)
    # The worker refuses the same way (the job fails with the sentence), and writes nothing.
    with pytest.raises(InvalidRequestError, match="SDXL"):
        _merge(MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(output), sources["xl"]))
    with pytest.raises(InvalidRequestError, match="Not enough disk space"):
        merge_checkpoints(
            MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(output), sources["b"]),
            lambda *_: None, lambda: False, keep_free=2**62,
        )
    assert list(tmp_path.iterdir()) == []
    for bad in ("../up", "a/b", "", " .hidden"):
        with pytest.raises(MergeError, match="cannot be a model's name"):
            check_output_name(bad)
    assert check_output_name(" my mix.safetensors ") == "my mix"


def test_an_existing_file_is_never_replaced_and_a_cancel_leaves_nothing(sources, tmp_path: Path) -> None:
    existing = tmp_path / "taken.safetensors"
    existing.write_bytes(b"precious")
    with pytest.raises(InvalidRequestError, match="exists already"):
        _merge(MergeOptions(MergeMethod.NO_INTERPOLATION, sources["a"], str(existing)))
    assert existing.read_bytes() == b"precious"
    calls = iter(range(10**6))
    with pytest.raises(JobCancelledError):
        merge_checkpoints(
            MergeOptions(MergeMethod.WEIGHTED_SUM, sources["a"], str(tmp_path / "late.safetensors"), sources["b"]),
            lambda *_: None, lambda: next(calls) >= 5,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.safetensors"]


def test_no_interpolation_bakes_a_vae_in_as_fp16(sources, tmp_path: Path) -> None:
    pipe = build_tiny_pipeline(Family.SD1, seed=9)
    vae_weights = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in original_layout(pipe, Family.SD1).items()
                   if k.startswith("first_stage_model.")}
    vae_file = tmp_path / "vae" / "other.vae.safetensors"
    vae_file.parent.mkdir()
    save_file(vae_weights, str(vae_file))
    output = tmp_path / "baked.safetensors"
    _merge(MergeOptions(MergeMethod.NO_INTERPOLATION, sources["a"], str(output), vae_path=str(vae_file), vae_name="other"))
    a, merged = _tensors(sources["a"]), _tensors(str(output))
    key = "decoder.conv_out.weight"
    assert torch.equal(merged["first_stage_model." + key], vae_weights[key].half())
    unet_key = "model.diffusion_model.out.2.weight"
    assert torch.equal(merged[unet_key], a[unet_key].half())
    with safe_open(str(output), framework="pt") as file:
        recipe = json.loads(file.metadata()["sd_merge_recipe"])
    assert recipe["bake_in_vae"] == "other" and recipe["secondary_model_hash"] is None
    assert output.stat().st_size < Path(sources["a"].path).stat().st_size  # fp32 in, fp16 out


def test_sdxl_merges_as_a1111_every_key_naming_a_model(sources, tmp_path: Path) -> None:
    """A1111 merges the keys with "model" in their name: on SDXL the UNet, the VAE and both
    text encoders (CLIP-L's keys say "text_model"); a trainer's marker key stays A's."""
    marked = tmp_path / "xl-vpred.safetensors"
    write_single_file(build_tiny_pipeline(Family.SDXL, seed=5), marked, Family.SDXL, extra_tensors={"v_pred": torch.ones(1)})
    output = tmp_path / "xl-mix.safetensors"
    _merge(MergeOptions(MergeMethod.WEIGHTED_SUM, MergeSource("xl", str(marked)), str(output), sources["xl2"], multiplier=0.5))
    a, b, merged = _tensors(str(marked)), _tensors(sources["xl2"]), _tensors(str(output))
    clip_l = next(k for k in a if k.startswith("conditioner.embedders.0.transformer.") and k.endswith("weight"))
    clip_g = next(k for k in a if k.startswith("conditioner.embedders.1.model.") and k.endswith("weight"))
    for key in (clip_l, clip_g, "model.diffusion_model.label_emb.0.0.weight"):
        assert torch.equal(merged[key], (0.5 * a[key].float() + 0.5 * b[key].float()).half()), key
    assert torch.equal(merged["v_pred"], a["v_pred"].half())
    info = inspect_checkpoint(output)
    assert (info.family, info.prediction_type) == (Family.SDXL, "v_prediction")
