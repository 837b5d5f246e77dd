"""A LoRA's or embedding's family from its header (inference.common.network_families), and the
bot's refusal of one made for another family than the job's model (no torch, no worker)."""

from __future__ import annotations

import os

import pytest

from bot.config import PromptSettings
from bot.errors import InvalidOption
from bot.prompts.networks import check_network_families
from inference.common.checkpoints import TensorHeader
from inference.common.network_families import embedding_family, lora_family, network_file_family
from tests.network_family_files import (
    SD1_EMBEDDING,
    SD1_LORA,
    SD2_EMBEDDING,
    SD2_LORA,
    SDXL_EMBEDDING,
    SDXL_LORA,

)
from tests.webui_folders import write_safetensors


def headers(shapes: dict[str, tuple[int, ...]]) -> dict[str, TensorHeader]:
    return {name: TensorHeader("F16", shape) for name, shape in shapes.items()}


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        (SD1_LORA, "sd1"),
        (SD2_LORA, "sd2"),
        (SDXL_LORA, "sdxl"),
        # SDXL UNet-only, diffusers' block names: the 2048-wide cross attention tells.
        ({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)}, "sdxl"),
        # SDXL's deeper transformers (only SDXL has a second block per attention), LoKr factors.
        ({"lora_unet_input_blocks_7_1_transformer_blocks_3_attn1_to_q.lokr_w1": (4, 4)}, "sdxl"),
        # LyCORIS LoHa on SD 1.x / SD 2.x's text encoder only.
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b": (4, 768)}, "sd1"),
        ({"lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight": (4, 1024)}, "sd2"),
        # diffusers' old attention-processor names and PEFT's.
        ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": (4, 768)}, "sd1"),
        ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 1024)}, "sd2"),
        ({"text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 1280)}, "sdxl"),
        # Cannot tell: a LoCon of convolutions only, a tiny test model's width, nothing.
        ({"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": (4, 320, 3, 3)}, ""),
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (2, 32)}, ""),
        ({}, ""),
    ],
)
def test_a_loras_family_from_its_names_and_widths(shapes, family):
    assert lora_family(headers(shapes)) == family


@pytest.mark.parametrize(
    ("content", "family"),
    [
        (headers(SDXL_EMBEDDING), "sdxl"),
        (headers(SD1_EMBEDDING), "sd1"),
        (headers(SD2_EMBEDDING), "sd2"),
        ({"string_to_param": {"*": TensorHeader("F32", (3, 1024))}, "name": "x", "step": 1}, "sd2"),
        ({"<cat-toy>": TensorHeader("F32", (768,))}, "sd1"),  # diffusers' learned_embeds.bin
        ({"emb_params": TensorHeader("F32", (1, 32))}, ""),  # a tiny test model's width
        ({"string_to_param": {}}, ""),
    ],
)
def test_an_embeddings_family_from_its_vectors(content, family):
    assert embedding_family(content) == family


def test_torch_saved_embeddings_and_loras_are_read_without_unpickling_code(tmp_path):
    torch = pytest.importorskip("torch")
    a1111 = tmp_path / "old-style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(2, 1024)}, "name": "x"}, a1111)
    learned = tmp_path / "learned_embeds.bin"
    torch.save({"<cat>": torch.zeros(768)}, learned)
    lora = tmp_path / "detail.ckpt"
    torch.save({name: torch.zeros(shape) for name, shape in SDXL_LORA.items()}, lora)
    assert network_file_family(a1111, "embedding") == "sd2"
    assert network_file_family(learned, "embedding") == "sd1"
    assert network_file_family(lora, "lora") == "sdxl"


def test_unreadable_files_cannot_tell_and_changes_are_read_again(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"x")
    assert network_file_family(broken, "lora") == ""
    assert network_file_family(tmp_path / "gone.safetensors", "lora") == ""
    path = write_safetensors(tmp_path / "style.safetensors", SD1_LORA)
    assert network_file_family(path, "lora") == "sd1"
    write_safetensors(path, SDXL_LORA)  # replaced in place: another size and time
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert network_file_family(path, "lora") == "sdxl"


@pytest.fixture
def prompt_settings(tmp_path) -> PromptSettings:
    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    write_safetensors(loras / "detail.safetensors", SDXL_LORA)
    write_safetensors(loras / "sd-style.safetensors", SD1_LORA)
    write_safetensors(embeddings / "xl-neg.safetensors", SDXL_EMBEDDING)
    write_safetensors(embeddings / "Easy Negative.safetensors", SD1_EMBEDDING)
    (loras / "unknown.safetensors").write_bytes(b"x")
    return PromptSettings(embedding_dirs=(str(embeddings),), lora_dirs=(str(loras),))


def test_networks_of_the_models_family_or_of_none_known_pass(prompt_settings):
    check_network_families(prompt_settings, "sd15", "sd1", "a cat <lora:sd-style:0.5> <lora:unknown>", "easy  negative")
    check_network_families(prompt_settings, "xl", "sdxl", "a cat <lora:DETAIL:1>, xl-neg", None)
    check_network_families(prompt_settings, "hub-model", "", "<lora:detail> <lora:sd-style>, xl-neg")
    # A name inside another word is no embedding, and the LoRA's tag is no prompt text.
    check_network_families(prompt_settings, "sd15", "sd1", "my-xl-negative <lora:sd-style>", "")


@pytest.mark.parametrize(
    ("model", "family", "prompt", "negative", "message"),
    [
        ("sd15", "sd1", "a cat <lora:detail:0.8>", "", "`detail` is an SDXL LoRA; `sd15` is an SD 1.x model."),
        ("xl", "sdxl", "a cat <lora:sd-style>", "", "`sd-style` is an SD 1.x LoRA; `xl` is an SDXL model."),
        ("v2", "sd2", "a cat", "blurry, Easy Negative", "`Easy Negative` is an SD 1.x embedding; `v2` is an SD 2.x model."),
        ("sd15", "sd1", "a cat, XL-NEG", None, "`xl-neg` is an SDXL embedding; `sd15` is an SD 1.x model."),
    ],
)
def test_a_network_of_another_family_is_refused_naming_both(prompt_settings, model, family, prompt, negative, message):
    with pytest.raises(InvalidOption) as caught:
        check_network_families(prompt_settings, model, family, prompt, negative)
    assert caught.value.message.startswith(message), caught.value.message



def test_sdbot_generate_refuses_it_before_queuing(tmp_path, capsys, settings):
    from bot import cli
    from tests.test_startup_and_cli import write_config

    config = write_config(tmp_path / "config.toml", settings)
    write_safetensors(tmp_path / "loras" / "sd-style.safetensors", SD1_LORA)
    with config.open("a", encoding="utf-8") as file:
        file.write(
            f'[[models]]\nname = "xl"\nsource = "{settings.models[0].source}"\nfamily = "sdxl"\nbase_size = 64\n'
            f'[prompts]\nlora_dirs = ["{tmp_path / "loras"}"]\n'
        )
    assert cli.main(["--config", str(config), "generate", "a cat <lora:sd-style>", "--model", "xl"]) == 2
    assert "`sd-style` is an SD 1.x LoRA; `xl` is an SDXL model." in capsys.readouterr().err
