"""Clip skip (A1111's CLIP_stop_at_last_layers) in the conditioning and the infotext, and the
infotext's "Lora hashes" / "TI hashes" as A1111 writes them."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from inference.common.infotext import network_hashes_entries, parse_infotext, request_infotext
from inference.common.protocol import JobCompleted, JobFailed
from inference.conditioning import effective_clip_skip, encode_conditioning, encode_for_pass
from tests.inference_fixtures import tiny_request
from tests.test_inference_networks import make_runner, run, write_kohya_lora


def a1111_clip_skip(pipe, text: str, clip_skip: int) -> torch.Tensor:
    """A1111's encode_with_transformers for SD 1.x, straight from transformers: the hidden
    state clip_skip layers from the end, through the final layer norm."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        outputs = pipe.text_encoder(ids, output_hidden_states=True)
        final_norm = getattr(pipe.text_encoder, "text_model", pipe.text_encoder).final_layer_norm
        return final_norm(outputs.hidden_states[-clip_skip])


def test_clip_skip_2_reads_the_penultimate_layer_as_a1111(tiny_pipe):
    plain, _ = encode_conditioning(tiny_pipe, "a photo of a cat", "", 20).at_step(0)
    skipped, uncond = encode_conditioning(tiny_pipe, "a photo of a cat", "", 20, clip_skip=2).at_step(0)
    assert not torch.allclose(plain, skipped, atol=1e-3)
    torch.testing.assert_close(skipped, a1111_clip_skip(tiny_pipe, "a photo of a cat", 2))
    torch.testing.assert_close(uncond, a1111_clip_skip(tiny_pipe, "", 2))
    # 1 is the last layer: exactly what CLIP's last hidden state is.
    torch.testing.assert_close(plain, a1111_clip_skip(tiny_pipe, "a photo of a cat", 1))


def test_the_request_s_clip_skip_reaches_the_encoding(tiny_pipe):
    plain = encode_for_pass(tiny_pipe, tiny_request(), 3).at_step(0)[0]
    skipped = encode_for_pass(tiny_pipe, tiny_request(clip_skip=2), 3).at_step(0)[0]
    torch.testing.assert_close(skipped, a1111_clip_skip(tiny_pipe, tiny_request().prompt, 2))
    assert not torch.allclose(plain, skipped, atol=1e-3)


def test_clip_skip_is_kept_within_the_encoder_and_sd2_ignores_it(tiny_pipe, monkeypatch):
    layers = tiny_pipe.text_encoder.config.num_hidden_layers
    assert effective_clip_skip(tiny_pipe, 12) == layers  # the first layer, past the encoder's depth
    with pytest.raises(ValueError, match="between 1 and 12"):
        effective_clip_skip(tiny_pipe, 13)
    # OpenCLIP's encoder (SD 2.x, "gelu") is always read as it is, as A1111 reads it.
    monkeypatch.setattr(tiny_pipe.text_encoder.config, "hidden_act", "gelu")
    assert effective_clip_skip(tiny_pipe, 2) == 1


def test_infotext_writes_clip_skip_only_above_1_in_a1111_order():
    assert "Clip skip" not in request_infotext(tiny_request(), 0)
    text = request_infotext(tiny_request(clip_skip=2), 0, version=None)
    assert text.endswith("Seed: 1234, Size: 64x64, Model: tiny, Clip skip: 2")
    assert parse_infotext(text)["Clip skip"] == "2"


def test_network_hashes_are_written_as_a1111_writes_them():
    entries = network_hashes_entries({"add_detail": "7c6bad76eb54", "a:b,c": "0123456789ab"}, {"easyneg": "c74b4e810b03"})
    assert entries == {"Lora hashes": "add_detail: 7c6bad76eb54, abc: 0123456789ab", "TI hashes": "easyneg: c74b4e810b03"}
    text = request_infotext(tiny_request(), 0, network_hashes=entries, version="v1")
    assert text.endswith(
        'Lora hashes: "add_detail: 7c6bad76eb54, abc: 0123456789ab", TI hashes: "easyneg: c74b4e810b03", Version: v1'
    )
    assert parse_infotext(text)["Lora hashes"] == "add_detail: 7c6bad76eb54, abc: 0123456789ab"
    assert network_hashes_entries({}, {}) == {}


def test_a_job_s_infotext_has_the_lora_addnet_hash_and_the_embedding_sha256(tiny_model_dir, tmp_path):
    from inference.models import load_pipeline
    from inference.common.protocol import ModelSpec

    pipe = load_pipeline(ModelSpec("tiny", str(tiny_model_dir)), torch.device("cpu"), torch.float32)
    lora = write_kohya_lora(pipe, tmp_path / "loras" / "Style.safetensors", seed=1)
    embedding = tmp_path / "embeddings" / "Sparkle.safetensors"
    embedding.parent.mkdir()
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    save_file({"emb_params": torch.randn(1, width)}, embedding)
    runner = make_runner(pipe, tmp_path, lora_dirs=(str(lora.parent),), embedding_dirs=(str(embedding.parent),))
    done = run(runner, prompt="a sparkle cat <lora:style:0.8>", clip_skip=2)
    assert isinstance(done, JobCompleted), done

    data = lora.read_bytes()
    header = int.from_bytes(data[:8], "little")
    addnet = hashlib.sha256(data[8 + header :]).hexdigest()[:12]
    whole = hashlib.sha256(embedding.read_bytes()).hexdigest()[:12]
    params = parse_infotext(done.images[0].infotext)
    # The LoRA by the name its tag wrote, the embedding by its file's name.
    assert params["Lora hashes"] == f"style: {addnet}"
    assert params["TI hashes"] == f"Sparkle: {whole}"
    assert params["Clip skip"] == "2"
    assert params["Prompt"] == "a sparkle cat <lora:style:0.8>"


def test_a_clip_skip_out_of_range_fails_the_job_by_name(tiny_pipe, tmp_path):
    runner = make_runner(tiny_pipe, tmp_path)
    failed = run(runner, clip_skip=13)
    assert isinstance(failed, JobFailed) and "clip skip must be between 1 and 12, got 13" in failed.message


def test_file_hash_is_a1111_s_and_follows_a_replaced_file(tmp_path):
    import os

    from inference.common.file_hashes import file_hash

    path = tmp_path / "net.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"ss_note": "a"})
    data = path.read_bytes()
    tensors = data[8 + int.from_bytes(data[:8], "little") :]
    assert file_hash(path) == hashlib.sha256(data).hexdigest()
    assert file_hash(path, addnet=True) == hashlib.sha256(tensors).hexdigest()
    # Metadata edited: the addnet hash stays, the file's changes (a new size and mtime).
    save_file({"w": torch.ones(2)}, path, metadata={"ss_note": "a longer note"})
    os.utime(path, ns=(1, 1))
    assert file_hash(path, addnet=True) == hashlib.sha256(tensors).hexdigest()
    assert file_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest() != hashlib.sha256(data).hexdigest()
    # Any other file's addnet hash is its whole sha256, as A1111's.
    pickle = tmp_path / "net.pt"
    pickle.write_bytes(b"weights")
    assert file_hash(pickle, addnet=True) == hashlib.sha256(b"weights").hexdigest()
