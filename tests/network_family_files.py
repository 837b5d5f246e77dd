"""LoRA and embedding tensors (name -> shape) in each family's real key layout and widths, for
the family checks (written as zero-filled files by tests.webui_folders.write_safetensors): one
projection of each kind is enough to tell, so each file is a few KB."""

from __future__ import annotations

# SD 1.x/2.x kohya names (diffusers' module names with "_"); SDXL's in the same convention.
_SD_UNET_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
_SD_TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
_XL_UNET_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"


def kohya_lora(te_width: int, context_width: int) -> dict[str, tuple[int, ...]]:
    """An SD 1.x (768, 768) or SD 2.x (1024, 1024) kohya LoRA's tensors: name -> shape."""
    return {
        f"{_SD_UNET_K}.lora_down.weight": (4, context_width),
        f"{_SD_UNET_K}.lora_up.weight": (320, 4),
        f"{_SD_UNET_K}.alpha": (),
        f"{_SD_TE_Q}.lora_down.weight": (4, te_width),
        f"{_SD_TE_Q}.lora_up.weight": (te_width, 4),
    }


SD1_LORA = kohya_lora(768, 768)
SD2_LORA = kohya_lora(1024, 1024)
SDXL_LORA = {
    f"{_XL_UNET_K}.lora_down.weight": (8, 2048),
    f"{_XL_UNET_K}.lora_up.weight": (640, 8),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 768),
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 1280),
}
SD1_EMBEDDING = {"emb_params": (2, 768)}
SD2_EMBEDDING = {"emb_params": (2, 1024)}
SDXL_EMBEDDING = {"clip_l": (2, 768), "clip_g": (2, 1280)}

