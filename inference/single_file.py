"""Loading an A1111-style single-file checkpoint (``.safetensors``, or a ``.ckpt`` of plain
weights) with diffusers, offline.

diffusers' ``from_single_file`` converts the original key layout itself, but it needs the
diffusers configs of the model the file is a finetune of, and would download them from the hub.
They ship in inference/assets/model_configs (one folder per real model, written from the
published configs), so a file loads with ``local_files_only=True`` and never reaches the network;
the tokenizers are built from the one CLIP vocabulary in inference/assets/clip_tokenizer rather
than shipped per family.

Which config a file gets is decided as A1111 decides it (modules/sd_models_config.py): its
family and inpainting UNet from the tensor names and shapes (inference.common.checkpoints);
for SD 2.x, v-prediction (the 768-v model) or epsilon (512 base) from ModelSpec.prediction_type,
else the file's metadata, else an A1111 ``.yaml`` (``parameterization: "v"``), else by running
the UNet once, A1111's test. An A1111 ``.yaml`` beside the checkpoint (same stem) or named by
ModelSpec.original_config is honoured as A1111 honours it: the UNet and VAE are shaped from it.
ModelSpec.original_config may also name a diffusers config folder instead of the shipped one,
for a checkpoint of shapes no shipped config has; SDBOT_MODEL_CONFIGS_DIR replaces the shipped
folder as a whole (the tests' tiny configs). A file whose CLIP lacks the "text_model." key level
is read as A1111 reads it, renaming those keys.

SDXL v-prediction finetunes (NoobAI-XL V-Pred and the like) declare themselves with a ``v_pred``
marker tensor or model-spec metadata; their scheduler predicts v, and when the file also carries
the ``ztsnr`` marker its betas are rescaled to zero terminal SNR, as Forge and ComfyUI do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import SingleFileComponentError
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from inference.common.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    Family,
    inspect_checkpoint,
    read_tensor_headers,
)
from inference.common.protocol import ModelSpec
from inference.common.sources import ModelSourceError, a1111_config_of, config_folder_of
from inference.tiny import TOKENIZER_DIR

__all__ = [
    "MODEL_CONFIGS_DIR",
    "MODEL_CONFIGS_VARIABLE",
    "model_configs_dir",
    "config_folder_name",
    "read_single_file",
    "uses_v_prediction",
]

log = logging.getLogger(__name__)


class _NoEmptyFloat32Warning(logging.Filter):
    """diffusers' single-file loader casts each model after reading it and warns about the
    modules that should stay in float32 even when there are none ("...: []"): a warning on
    every load that asks the admin nothing, so it is left out. A real list still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and ": []." in message)


logging.getLogger("diffusers.models.modeling_utils").addFilter(_NoEmptyFloat32Warning())

MODEL_CONFIGS_DIR = Path(__file__).parent / "assets" / "model_configs"
# An environment variable naming another folder of the same layout (one config folder per
# name in _CONFIG_FOLDERS) to read instead: the tests' tiny configs, or an admin's own.
MODEL_CONFIGS_VARIABLE = "SDBOT_MODEL_CONFIGS_DIR"

# (family, inpainting UNet, v-prediction) -> the shipped config folder of the model it finetunes.
# Only SD 2.x has two base models told apart by their prediction; any other v-prediction
# finetune (SDXL's NoobAI V-Pred, the odd SD 1.x one) keeps its base's shapes and gets its
# prediction type on the scheduler (see _set_prediction_type).
_CONFIG_FOLDERS: dict[tuple[Family, bool, bool], str] = {
    (Family.SD1, False, False): "stable-diffusion-v1-5",
    (Family.SD1, True, False): "stable-diffusion-inpainting",
    (Family.SD2, False, False): "stable-diffusion-2-1-base",
    (Family.SD2, False, True): "stable-diffusion-2-1",
    (Family.SD2, True, False): "stable-diffusion-2-inpainting",
    (Family.SDXL, False, False): "stable-diffusion-xl-base-1.0",
    (Family.SDXL, True, False): "stable-diffusion-xl-1.0-inpainting-0.1",
    (Family.SDXL_REFINER, False, False): "stable-diffusion-xl-refiner-1.0",
}

# model_index.json "_class_name" -> the class whose from_single_file reads the file; also the
# classes inference.models loads folders and hub ids with.
PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    cls.__name__: cls
    for cls in (
        StableDiffusionPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionXLPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLImg2ImgPipeline,
    )
}

V_PREDICTION = "v_prediction"
EPSILON = "epsilon"


def model_configs_dir() -> Path:
    """Where the per-family config folders are read from (read at each load, so a test may set it)."""
    return Path(os.environ.get(MODEL_CONFIGS_VARIABLE) or MODEL_CONFIGS_DIR)


def config_folder_name(family: Family, inpainting: bool, v_prediction: bool) -> str:
    """The shipped config folder for a file; ModelSourceError for combinations no real model has."""
    v_prediction = v_prediction and family is Family.SD2 and not inpainting
    try:
        return _CONFIG_FOLDERS[(family, inpainting, v_prediction)]
    except KeyError:
        what = f"{family}{' inpainting' if inpainting else ''}"
        raise ModelSourceError(f"no shipped config for an {what} checkpoint (the SDXL refiner has no inpainting variant)") from None


def read_single_file(spec: ModelSpec, dtype: torch.dtype) -> DiffusionPipeline:
    """The checkpoint file ``spec.source`` as a diffusers pipeline in CPU memory, in ``dtype``;
    ModelSourceError naming the model and the file when it cannot be."""
    where = f"model {spec.name!r} ({spec.source})"
    try:
        return _read(spec, Path(spec.source).expanduser(), dtype)
    except CheckpointError as exc:
        raise ModelSourceError(f"{where}: {exc}") from exc
    except ModelSourceError as exc:
        raise ModelSourceError(f"{where}: {exc}") from exc


def _read(spec: ModelSpec, path: Path, dtype: torch.dtype) -> DiffusionPipeline:
    if spec.prediction_type not in ("", EPSILON, V_PREDICTION):  # before reading gigabytes
        raise ModelSourceError(f"prediction type {spec.prediction_type!r} is not one of {EPSILON}, {V_PREDICTION}")
    info = inspect_checkpoint(path)
    family = _family(spec, info)
    config_override = config_folder_of(spec)
    yaml_config = a1111_config_of(spec)
    prediction = spec.prediction_type or info.prediction_type or _yaml_prediction_type(yaml_config)
    if config_override is not None:
        config_folder = config_override
    else:
        config_folder = model_configs_dir() / config_folder_name(family, info.inpainting, prediction == V_PREDICTION)
    pipeline_class = _pipeline_class(config_folder)
    log.info(
        "loading model %r from the single file %s as %s (%s%s, config %s%s)",
        spec.name, path, dtype, family, " inpainting" if info.inpainting else "",
        config_folder.name, f", {yaml_config.name}" if yaml_config else "",
    )
    try:
        pipe = pipeline_class.from_single_file(
            str(path),
            config=str(config_folder),
            original_config=str(yaml_config) if yaml_config else None,
            local_files_only=True,
            torch_dtype=dtype,
            **_tokenizers(pipeline_class),
            **_no_safety_checker(pipeline_class),
            **_unnested_clip_text_encoder(path, config_folder, dtype),
        )
    except (ValueError, KeyError, SingleFileComponentError) as exc:
        # A tensor of another shape or missing: a finetune whose architecture differs from the
        # model its family names. A1111 takes a .yaml beside the file for such models.
        raise ModelSourceError(
            f"its tensors do not fit the {config_folder.name} config ({_first_line(exc)}). "
            f"If it is an unusual architecture, put its A1111 config beside it as "
            f"{path.with_suffix('.yaml').name}, or set original_config"
        ) from exc
    if not prediction and family is Family.SD2 and not info.inpainting:
        # A1111's test; only SD 2.x non-inpainting files need it (both 2.x bases share shapes).
        prediction = V_PREDICTION if uses_v_prediction(pipe.unet) else EPSILON
        log.info("model %r predicts %s (found by running its UNet once, as A1111 does)", spec.name, prediction)
        if prediction == V_PREDICTION and config_override is None:
            _take_v_model_settings(pipe)
    if prediction:
        _set_prediction_type(pipe, prediction, zero_terminal_snr=info.zero_terminal_snr)
    return pipe


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _family(spec: ModelSpec, info: CheckpointInfo) -> Family:
    if not spec.family:
        return info.family
    try:
        family = Family(spec.family)
    except ValueError:
        known = ", ".join(f.value for f in Family)
        raise ModelSourceError(f"family {spec.family!r} is not one of {known}") from None
    if family is not info.family:
        log.warning(
            "model %r: configured as %s, but its tensors look like %s; loading it as %s",
            spec.name, family, info.family, family,
        )
    return family


def _pipeline_class(config_folder: Path) -> type[DiffusionPipeline]:
    class_name = DiffusionPipeline.load_config(str(config_folder)).get("_class_name")
    try:
        return PIPELINE_CLASSES[class_name]
    except KeyError:
        supported = ", ".join(PIPELINE_CLASSES)
        raise ModelSourceError(
            f"config {config_folder} names pipeline class {class_name!r}, which a single file "
            f"cannot be loaded as (supported: {supported})"
        ) from None


# Where OpenAI's CLIP sits in a file (SD 1.x; SDXL's first encoder). Some files keep it one
# level flatter than the rest ("...transformer.embeddings." without "text_model."), as older
# transformers and converters saved it; A1111 renames those keys on load
# (sd_models.checkpoint_dict_replacements), diffusers would not recognise the encoder.
_CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
_CLIP_MARKER = "embeddings.position_embedding.weight"


def _unnested_clip_text_encoder(path: Path, config_folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    """``{"text_encoder": model}`` read from a file whose CLIP lacks the "text_model." level;
    {} for the usual layout, which from_single_file reads itself."""
    tensors, _ = read_tensor_headers(path)
    prefix = next((p for p in _CLIP_PREFIXES if p + _CLIP_MARKER in tensors), None)
    if prefix is None:
        return {}
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(config_folder / "text_encoder"))
    nested = next(iter(model.state_dict())).startswith("text_model.")  # transformers 4's layout
    wanted = [key for key in tensors if key.startswith(prefix) and not key.endswith("position_ids")]
    state = {
        ("text_model." if nested else "") + key.removeprefix(prefix): tensor.to(dtype)
        for key, tensor in _read_tensors(path, wanted).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ModelSourceError(
            f"its CLIP text encoder does not fit the {config_folder.name} config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    log.info("%s keeps CLIP without its text_model level; read as A1111 reads it", path.name)
    return {"text_encoder": model.eval()}


def _read_tensors(path: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Some tensors of a checkpoint file, the rest left on disk (memory-mapped)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as file:
            return {key: file.get_tensor(key) for key in keys}
    # A .ckpt whose pickle inspect_checkpoint found to hold only weights, loaded as diffusers does.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    while isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {key: state[key] for key in keys}


def _tokenizers(pipeline_class: type[DiffusionPipeline]) -> dict[str, Any]:
    """CLIP's tokenizer for every text encoder: OpenAI's CLIP pads with its end token, OpenCLIP
    (SD 2.x, SDXL's second encoder) with "!", id 0, which changes the padded positions' features."""
    from transformers import CLIPTokenizer

    if pipeline_class is StableDiffusionXLImg2ImgPipeline:  # the refiner: OpenCLIP only
        return {"tokenizer": None, "tokenizer_2": CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")}
    if pipeline_class in (StableDiffusionXLPipeline, StableDiffusionXLInpaintPipeline):
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
            "tokenizer_2": CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        }
    return {"tokenizer": CLIPTokenizer.from_pretrained(TOKENIZER_DIR)}


def _no_safety_checker(pipeline_class: type[DiffusionPipeline]) -> dict[str, Any]:
    # Moderation is the bot's business (channel rules), as for folders (inference.models).
    if pipeline_class in (StableDiffusionPipeline, StableDiffusionInpaintPipeline):
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return {}


def _yaml_prediction_type(yaml_config: Path | None) -> str:
    """"v_prediction" when an A1111 .yaml says ``parameterization: "v"``; "" when it says nothing."""
    if yaml_config is None:
        return ""
    import yaml

    try:
        config = yaml.safe_load(yaml_config.read_text(encoding="utf-8"))
        parameterization = config["model"]["params"].get("parameterization", "eps")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ModelSourceError(f"cannot read the A1111 config {yaml_config}: {exc}") from exc
    return V_PREDICTION if parameterization == "v" else EPSILON


@torch.no_grad()
def uses_v_prediction(unet: torch.nn.Module) -> bool:
    """A1111's is_using_v_parameterization_for_sd2: one UNet step on a flat grey latent at the
    last timestep; an epsilon model answers with roughly the noise it was given, a v model with
    something far below it. Run in float32 on the CPU, as A1111 does."""
    dtype = unet.dtype
    unet.float()
    try:
        latent = torch.full((1, unet.config.in_channels, 8, 8), 0.5)
        context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5)
        output = unet(latent, torch.tensor([999]), encoder_hidden_states=context).sample
        return (output - latent).mean().item() < -1
    finally:
        unet.to(dtype)


def _take_v_model_settings(pipe: DiffusionPipeline) -> None:
    """The 768-v model's scheduler and default size for a file loaded with the 512 base's
    config (the two share every tensor shape, so the weights stay as they are)."""
    v_folder = model_configs_dir() / config_folder_name(Family.SD2, False, True)
    scheduler_class = type(pipe.scheduler)
    pipe.scheduler = scheduler_class.from_config(scheduler_class.load_config(v_folder / "scheduler"))
    v_unet = pipe.unet.load_config(v_folder / "unet")
    pipe.unet.register_to_config(sample_size=v_unet["sample_size"])


def _set_prediction_type(pipe: DiffusionPipeline, prediction: str, *, zero_terminal_snr: bool) -> None:
    overrides: dict[str, Any] = {"prediction_type": prediction}
    if zero_terminal_snr and prediction == V_PREDICTION:
        overrides["rescale_betas_zero_snr"] = True
    if all(pipe.scheduler.config.get(key) == value for key, value in overrides.items()):
        return
    # The samplers registry swaps schedulers with from_config, so these settings carry over.
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **overrides)
