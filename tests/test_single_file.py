"""Single-file checkpoints (A1111's ``.safetensors``): every family loads offline with the file's
weights, the prediction type is found as A1111 finds it, an A1111 .yaml beside the file is
honoured, SD 1.x generates through the real worker, and bad files are refused at start-up
with a message naming them."""

from __future__ import annotations

import json
from dataclasses import replace
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from safetensors.torch import save_file

from inference.common.checkpoints import Family, TensorHeader, family_of
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobCompleted, ModelSpec, RunJob
from inference.common.sources import ModelSourceError, check_model_sources, model_file_hash
from inference.models import read_pipeline
from inference.single_file import MODEL_CONFIGS_DIR, MODEL_CONFIGS_VARIABLE, config_folder_name, uses_v_prediction
from inference.single_file_writer import a1111_yaml, original_layout
from tests.checkpoint_fixtures import tiny_checkpoint
from tests.inference_fixtures import tiny_request, tiny_worker_config
from tests.test_inference_worker import InProcessWorker

FAMILIES = [
    (Family.SD1, False, StableDiffusionPipeline),
    (Family.SD1, True, StableDiffusionInpaintPipeline),
    (Family.SD2, False, StableDiffusionPipeline),
    (Family.SD2, True, StableDiffusionInpaintPipeline),
    (Family.SDXL, False, StableDiffusionXLPipeline),
    (Family.SDXL, True, StableDiffusionXLInpaintPipeline),
    (Family.SDXL_REFINER, False, StableDiffusionXLImg2ImgPipeline),
]


def assert_same_weights(expected, loaded) -> None:
    """Every network of ``loaded`` holds exactly the tensors of ``expected``'s."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want = getattr(expected, name, None)
        got = getattr(loaded, name, None)
        assert (want is None) == (got is None), name
        if want is None:
            continue
        want_state, got_state = want.state_dict(), got.state_dict()
        assert set(want_state) == set(got_state), name
        for key, tensor in want_state.items():
            assert torch.equal(tensor, got_state[key]), f"{name}.{key}"


@pytest.mark.parametrize("family, inpainting, pipeline_class", FAMILIES, ids=lambda v: str(getattr(v, "__name__", v)))
def test_every_family_loads_from_its_single_file_with_the_files_weights(
    checkpoints_dir, monkeypatch, family, inpainting, pipeline_class
):
    checkpoint = tiny_checkpoint(checkpoints_dir, family, inpainting)

    def no_network(*args, **kwargs):
        raise AssertionError("loading a single file tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    if inpainting:  # accepted at start-up as a base model's inpainting partner
        base = tiny_checkpoint(checkpoints_dir, family)
        check_model_sources([ModelSpec("m", str(base.path), inpaint_source=str(checkpoint.path))])
    else:
        check_model_sources([ModelSpec("m", str(checkpoint.path))])
    pipe = read_pipeline(checkpoint.spec(), torch.float32)
    assert type(pipe) is pipeline_class
    assert_same_weights(checkpoint.pipe, pipe)
    assert getattr(pipe, "safety_checker", None) is None
    assert pipe.unet.config.in_channels == (9 if inpainting else 4)
    if family in (Family.SDXL, Family.SDXL_REFINER):
        # OpenCLIP pads with "!" (id 0), OpenAI's CLIP with its end token.
        assert pipe.tokenizer_2.pad_token == "!"
        assert (pipe.tokenizer is None) == (family is Family.SDXL_REFINER)
    if pipe.tokenizer is not None:
        assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_the_shipped_configs_have_the_real_models_shapes_and_families():
    """Each shipped config, built on the meta device and named as A1111 files name their tensors,
    has the shapes of the real files, is told apart as its family from those shapes, and
    diffusers' own conversion of that layout gives back every tensor of the full-size networks."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    expected = {
        "stable-diffusion-v1-5": (Family.SD1, {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}),
        "stable-diffusion-inpainting": (Family.SD1, {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}),
        "stable-diffusion-2-1-base": (Family.SD2, {"cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight": (3072, 1024)}),
        "stable-diffusion-2-1": (Family.SD2, {"model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320)}),
        "stable-diffusion-2-inpainting": (Family.SD2, {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}),
        "stable-diffusion-xl-base-1.0": (Family.SDXL, {
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
            "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
            "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
            "conditioner.embedders.1.model.text_projection": (1280, 1280),
            "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        }),
        "stable-diffusion-xl-refiner-1.0": (Family.SDXL_REFINER, {
            "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
        }),
        "stable-diffusion-xl-1.0-inpainting-0.1": (Family.SDXL, {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}),
    }
    assert sorted(path.name for path in MODEL_CONFIGS_DIR.iterdir()) == sorted(expected)
    for name, (family, shapes) in expected.items():
        folder = MODEL_CONFIGS_DIR / name
        with torch.device("meta"):  # shapes without memory
            parts = {
                "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
                "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            }
            for encoder, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
                if (folder / encoder).is_dir():
                    parts[encoder] = cls(CLIPTextConfig.from_pretrained(folder / encoder))
        tensors = original_layout(SimpleNamespace(**parts), family)
        headers = {key: TensorHeader("F16", tuple(tensor.shape)) for key, tensor in tensors.items()}
        info = family_of(headers, name)
        assert (info.family, info.inpainting) == (family, "inpainting" in name), name
        for key, shape in shapes.items():
            assert headers[key].shape == shape, (name, key)
        for part, convert in (("unet", convert_ldm_unet_checkpoint), ("vae", convert_ldm_vae_checkpoint)):
            converted = convert(tensors, dict(parts[part].config))
            own = parts[part].state_dict()
            assert set(converted) == set(own), (name, part, set(converted) ^ set(own))
            assert all(converted[key].shape == own[key].shape for key in own), (name, part)


def test_the_config_follows_the_family_and_only_sd2_has_a_v_prediction_base():
    assert config_folder_name(Family.SD2, False, True) == "stable-diffusion-2-1"
    assert config_folder_name(Family.SD2, False, False) == "stable-diffusion-2-1-base"
    assert config_folder_name(Family.SD2, True, True) == "stable-diffusion-2-inpainting"
    # Other v-prediction finetunes keep their base's shapes (the scheduler is set instead).
    assert config_folder_name(Family.SD1, False, True) == "stable-diffusion-v1-5"
    assert config_folder_name(Family.SDXL, False, True) == "stable-diffusion-xl-base-1.0"
    with pytest.raises(ModelSourceError, match="sdxl-refiner inpainting"):
        config_folder_name(Family.SDXL_REFINER, True, False)


def test_sd2_prediction_is_found_by_running_the_unet_as_a1111_does(tmp_path, monkeypatch, tiny_configs_dir):
    """An SD 2.x file that says nothing of its prediction, configured as a real one is (a bare
    source, the configs' folder at the tiny shapes): A1111's one-step test decides between the
    768-v model's config and the 512 base's."""
    from inference.single_file_writer import build_tiny_pipeline, write_single_file

    monkeypatch.setenv(MODEL_CONFIGS_VARIABLE, str(tiny_configs_dir))
    v_folder = tiny_configs_dir / config_folder_name(Family.SD2, False, True)
    base_folder = tiny_configs_dir / config_folder_name(Family.SD2, False, False)
    pipe = build_tiny_pipeline(Family.SD2)
    # Once its weights are zero the UNet answers its conv_out bias: far below the grey input
    # (-5 - 0.5) is what a v model answers, near it (0 - 0.5) what an epsilon model does.
    with torch.no_grad():
        pipe.unet.conv_out.weight.zero_()
    for bias, prediction, folder in ((-5.0, "v_prediction", v_folder), (0.0, "epsilon", base_folder)):
        with torch.no_grad():
            pipe.unet.conv_out.bias.fill_(bias)
        assert uses_v_prediction(pipe.unet) is (prediction == "v_prediction")
        path = write_single_file(pipe, tmp_path / f"sd2-{prediction}.safetensors", Family.SD2)
        loaded = read_pipeline(ModelSpec("sd2", str(path)), torch.float32)
        assert loaded.scheduler.config.prediction_type == prediction
        assert loaded.unet.config.sample_size == json.loads((folder / "unet" / "config.json").read_text())["sample_size"]
        assert_same_weights(pipe, loaded)
    assert pipe.unet.dtype is torch.float32  # the test ran in float32 and left the dtype alone

    # The configured prediction type wins over the test, and the file's metadata too.
    configured = read_pipeline(ModelSpec("sd2", str(path), prediction_type="v_prediction"), torch.float32)
    assert configured.scheduler.config.prediction_type == "v_prediction"
    declared = write_single_file(
        pipe, tmp_path / "declared.safetensors", Family.SD2, metadata={"modelspec.prediction_type": "v"}
    )
    assert read_pipeline(ModelSpec("sd2", str(declared)), torch.float32).scheduler.config.prediction_type == "v_prediction"


def test_sdxl_v_prediction_markers_set_the_scheduler(checkpoints_dir):
    plain = read_pipeline(tiny_checkpoint(checkpoints_dir, Family.SDXL).spec(), torch.float32)
    assert plain.scheduler.config.prediction_type == "epsilon"
    assert not plain.scheduler.config.get("rescale_betas_zero_snr")
    v_pred = read_pipeline(tiny_checkpoint(checkpoints_dir, Family.SDXL, markers=("v_pred",)).spec(), torch.float32)
    assert v_pred.scheduler.config.prediction_type == "v_prediction"
    assert not v_pred.scheduler.config.get("rescale_betas_zero_snr")
    ztsnr = read_pipeline(tiny_checkpoint(checkpoints_dir, Family.SDXL, markers=("v_pred", "ztsnr")).spec(), torch.float32)
    assert ztsnr.scheduler.config.prediction_type == "v_prediction"
    assert ztsnr.scheduler.config.rescale_betas_zero_snr is True


def test_an_a1111_yaml_beside_the_checkpoint_shapes_the_unet_and_vae(tmp_path, tiny_sd15_file):
    # A copy of the file and a config folder whose UNet and VAE shapes are wrong: only the
    # .yaml beside the file (the same stem, as A1111 reads it) can make the file load.
    checkpoint = tmp_path / "custom.safetensors"
    shutil.copyfile(tiny_sd15_file.path, checkpoint)
    config = shutil.copytree(tiny_sd15_file.config, tmp_path / "config")
    for part in ("unet", "vae"):
        settings = json.loads((config / part / "config.json").read_text())
        settings["block_out_channels"] = [2 * n for n in settings["block_out_channels"]]
        (config / part / "config.json").write_text(json.dumps(settings))
    spec = ModelSpec("custom", str(checkpoint), original_config=str(config))
    with pytest.raises(ModelSourceError, match=r"custom\.safetensors.*custom\.yaml"):
        read_pipeline(spec, torch.float32)

    source = tiny_sd15_file.pipe
    checkpoint.with_suffix(".yaml").write_text(a1111_yaml(source.unet.config, source.vae.config, parameterization="v"))
    with_yaml = read_pipeline(spec, torch.float32)
    assert_same_weights(source, with_yaml)
    assert with_yaml.scheduler.config.prediction_type == "v_prediction"  # parameterization: "v"


def test_a_single_file_generates_through_the_worker_as_its_folder_does(
    tmp_path, monkeypatch, tiny_model_spec, tiny_sd15_file, tiny_configs_dir
):
    """The tiny SD 1.x file holds the tiny folder model's weights: the worker, given both,
    makes the same image from each, and the file's infotext carries A1111's Model hash. The
    file is configured as a real one is, by its path alone (the configs at the tiny shapes)."""
    monkeypatch.setenv(MODEL_CONFIGS_VARIABLE, str(tiny_configs_dir))
    file_spec = ModelSpec("tiny-file", str(tiny_sd15_file.path))
    config = replace(tiny_worker_config(tiny_model_spec, tmp_path / "outputs"), models=(tiny_model_spec, file_spec))
    worker = InProcessWorker(config)
    try:
        images = {}
        for job_id, model in ((1, "tiny"), (2, "tiny-file")):
            worker.commands.send(RunJob(tiny_request(job_id=job_id, model=model, seeds=(7,))))
            done = worker.events_until(JobCompleted)[-1]
            assert isinstance(done, JobCompleted), done
            images[model] = done.images[0]
    finally:
        worker.stop()
    from PIL import Image

    with Image.open(images["tiny"].path) as folder_image, Image.open(images["tiny-file"].path) as file_image:
        assert folder_image.tobytes() == file_image.tobytes()
    fields = parse_infotext(images["tiny-file"].infotext)
    assert fields["Model"] == tiny_sd15_file.path.stem  # A1111's name_for_extra: the file's name, not ours
    assert fields["Model hash"] == model_file_hash(str(tiny_sd15_file.path))
    assert "Model hash" not in parse_infotext(images["tiny"].infotext)


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


def test_bad_files_are_refused_at_start_up_naming_each(tmp_path, tiny_sd15_file):
    small = torch.zeros(2, 2)
    whole = tiny_sd15_file.path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(whole[: len(whole) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    files = {
        "truncated": truncated,
        "garbage": garbage,
        "sd3": _write(tmp_path / "sd3.safetensors", {"model.diffusion_model.joint_blocks.0.x": small}),
        "flux": _write(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": small}),
        "video": _write(tmp_path / "svd.safetensors", {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight": small,
        }),
        "turbo": _write(tmp_path / "sd_turbo.safetensors", {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "conditioner.embedders.0.model.ln_final.weight": torch.zeros(1024),
        }),
        "lora": _write(tmp_path / "style-lora.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": small}),
        "vae": _write(tmp_path / "vae-ft-mse.safetensors", {"encoder.down.0.block.0.conv1.weight": small}),
        "pickle": _write(tmp_path / "old.ckpt", {"x": small}),
        "missing": tmp_path / "nowhere.safetensors",
    }
    inpainting = tiny_checkpoint(str(tmp_path), Family.SD1, inpainting=True)
    specs = [ModelSpec(name, str(path)) for name, path in files.items()] + [
        ModelSpec("inpaint-as-base", str(inpainting.path)),
        ModelSpec("base-as-inpaint", str(tiny_sd15_file.path), inpaint_source=str(tiny_sd15_file.path)),
        ModelSpec("no-yaml", str(tiny_sd15_file.path), original_config=str(tmp_path / "gone.yaml")),
    ]
    with pytest.raises(ModelSourceError) as raised:
        check_model_sources(specs)
    lines = {line.split("'")[1]: line for line in str(raised.value).splitlines()[1:]}
    assert set(lines) == {spec.name for spec in specs}
    expected = {
        "truncated": "truncated.safetensors is truncated",
        "garbage": "garbage.safetensors is not a safetensors file, or it is corrupt",
        "sd3": "an SD3 / SD3.5 model",
        "flux": "a Flux model",
        "video": "a video model",
        "turbo": "sd_turbo.safetensors is an SD 2.x model in the newer (SD-Turbo) layout",
        "lora": "a LoRA, not a checkpoint: put it in the LoRA folder",
        "vae": "a VAE, not a checkpoint: put it in models/VAE",
        "pickle": "old.ckpt is truncated, corrupt, or a .ckpt in torch's old format",
        "missing": "nowhere.safetensors' does not exist",
        "inpaint-as-base": "is an inpainting checkpoint (a 9-channel UNet), which only inpaints",
        "base-as-inpaint": "inpaint_source: sd1.safetensors is not an inpainting checkpoint",
        "no-yaml": "original_config",
    }
    for name, words in expected.items():
        assert words in lines[name], lines[name]
    # The worker's loader says the same when a file went bad after start-up.
    with pytest.raises(ModelSourceError, match="'truncated'.*truncated.safetensors is truncated"):
        read_pipeline(ModelSpec("truncated", str(truncated)), torch.float32)


def test_the_single_file_load_benchmark_runs_on_the_tiny_sdxl_and_writes_its_json(tmp_path):
    """bench.single_file_load --tiny (its figures are not asserted, only that each step ran)."""
    from bench import single_file_load

    results = single_file_load.main([
        "--tiny", "--repeats", "1", "--model-cache", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "single_file_load-tiny-cpu.json").read_text())
    assert document["benchmark"] == "single_file_load-tiny" and document["results"] == json.loads(json.dumps(results))
    assert all(results[step]["n"] == 1 for step in ("inspect", "read", "place"))
    assert results["file_mib"] > 0


def test_an_inpainting_single_file_serves_its_base_models_inpaint_jobs(monkeypatch, tmp_path, checkpoints_dir, tiny_configs_dir):
    """A base file with an inpainting file as its inpaint_source: inpaint jobs run the
    9-channel UNet read from that file, and the base's own config (here a folder of its
    4-channel shapes) is not applied to its partner."""
    import numpy as np

    from inference import workflows
    from inference.common.protocol import ImageInput, InpaintOptions, JobKind
    from inference.models import PipelineCache
    from inference.upscale import Upscalers

    monkeypatch.setenv(MODEL_CONFIGS_VARIABLE, str(tiny_configs_dir))
    base = tiny_checkpoint(checkpoints_dir, Family.SD1)
    inpainting = tiny_checkpoint(checkpoints_dir, Family.SD1, inpainting=True)
    spec = base.spec("painter", inpaint_source=str(inpainting.path), family="sd1")
    check_model_sources([spec])
    cache = PipelineCache((spec,), torch.device("cpu"), torch.float32, max_loaded=2)
    partner = cache.get_inpaint("painter")
    assert type(partner) is StableDiffusionInpaintPipeline
    assert_same_weights(inpainting.pipe, partner)

    source = tmp_path / "source.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(source)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    channels = []
    hook = partner.unet.register_forward_pre_hook(lambda module, args: channels.append(args[0].shape[1]))
    try:
        request = tiny_request(
            kind=JobKind.INPAINT, model="painter", steps=2, image=ImageInput(str(source), 0.75),
            inpaint=InpaintOptions(str(tmp_path / "mask.png"), mask_blur=0),
        )
        [image] = workflows.run_workflow(
            cache, Upscalers((), torch.device("cpu"), torch.float32, 0, 0), request, lambda *progress: None, lambda: False
        )
    finally:
        hook.remove()
    assert channels and set(channels) == {9}
    kept = np.asarray(image)[mask == 0]
    assert (kept == 200).all()


def test_a_bad_family_or_prediction_type_is_refused_naming_the_model(tiny_sd15_file):
    with pytest.raises(ModelSourceError, match=r"model 'odd' \(.*sd1\.safetensors\): prediction type 'v' is not one of"):
        read_pipeline(tiny_sd15_file.spec("odd", prediction_type="v"), torch.float32)
    with pytest.raises(ModelSourceError, match=r"model 'odd' .*family 'sd15' is not one of sd1, sd2, sdxl"):
        read_pipeline(tiny_sd15_file.spec("odd", family="sd15"), torch.float32)


@pytest.mark.parametrize("family", [Family.SD1, Family.SDXL])
def test_a_clip_kept_without_its_text_model_level_loads_as_a1111_reads_it(tmp_path, checkpoints_dir, family):
    """Older converters saved OpenAI's CLIP one level flatter ("...transformer.embeddings.");
    A1111 renames those keys, and so do we, so the file loads with every weight."""
    from safetensors.torch import load_file

    checkpoint = tiny_checkpoint(checkpoints_dir, family)
    tensors = load_file(str(checkpoint.path))
    flat = {key.replace("transformer.text_model.", "transformer."): value for key, value in tensors.items()}
    assert flat.keys() != tensors.keys()
    path = _write(tmp_path / f"flat-{family}.safetensors", flat)
    check_model_sources([ModelSpec("flat", str(path))])
    pipe = read_pipeline(ModelSpec("flat", str(path), original_config=str(checkpoint.config)), torch.float32)
    assert_same_weights(checkpoint.pipe, pipe)


def test_a_ckpt_loads_when_its_pickle_holds_only_weights_and_is_refused_otherwise(tmp_path, checkpoints_dir):
    """A .ckpt is told apart without torch and without running its pickle: one of plain weights
    (nested under "state_dict", as training saves it) loads with every weight; one whose pickle
    names anything else, or that is cut short, is refused naming why."""
    from safetensors.torch import load_file

    checkpoint = tiny_checkpoint(checkpoints_dir, Family.SD1)
    weights = load_file(str(checkpoint.path))
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": weights, "global_step": 10}, plain)
    unsafe = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": weights, "callbacks": {Path("pickled-object"): 1}}, unsafe)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])

    check_model_sources([ModelSpec("plain", str(plain))])
    assert_same_weights(checkpoint.pipe, read_pipeline(ModelSpec("plain", str(plain), original_config=str(checkpoint.config)), torch.float32))
    # An old one keeping CLIP without its text_model level too (the renaming reads the .ckpt).
    flat = tmp_path / "flat.ckpt"
    torch.save({key.replace("transformer.text_model.", "transformer."): value for key, value in weights.items()}, flat)
    assert_same_weights(checkpoint.pipe, read_pipeline(ModelSpec("flat", str(flat), original_config=str(checkpoint.config)), torch.float32))
    with pytest.raises(ModelSourceError) as raised:
        check_model_sources([ModelSpec("unsafe", str(unsafe)), ModelSpec("cut", str(cut))])
    message = str(raised.value)
    assert "lightning.ckpt needs an unsafe pickle to load (it names pathlib." in message
    assert "cut.ckpt is truncated, corrupt" in message
