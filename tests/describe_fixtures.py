"""Tiny random-weight describe models, built by the tests: a BLIP captioner, a CLIP, and a
WD14-style ONNX tagger whose graph is written here (onnx), each in the folder layout the
worker loads (inference.describe).

Two are planted. The captioner's output layer favours "red", then "cat", so its captions are
made of words (random weights alone mostly say special tokens, which decode to nothing) and
its beams differ. The tagger's score for a tag is a sigmoid of a weighted sum of the image's
mean blue, green and red (its input is BGR), so a red image gets "red_hair" and a blue one
"blue_sky", and the tests know which tags must come out.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np

from inference.common.protocol import DescribeModels

CLIP_TOKENIZER = Path(__file__).resolve().parent.parent / "inference" / "assets" / "clip_tokenizer"
SIDE = 32  # the tiny models' image size
CAPTION_WORDS = ["a", "cat", "dog", "red", "blue", "house", "tree", "sky", "on", "the", "with", "painting", "photo"]
# The planted tagger: (name, category, weights on the mean blue, green, red in 0-1, bias).
TAGGER_TAGS = [
    ("general", 9, (0.0, 0.0, 0.0, 5.0)),  # a rating: never suggested, however sure
    ("red_hair", 0, (-8.0, -8.0, 12.0, -2.0)),
    ("blue_sky", 0, (12.0, -8.0, -8.0, -2.0)),
    ("1girl", 0, (0.0, 0.0, 0.0, 1.0)),  # 0.73 on any image
    ("hatsune_miku_(cosplay)", 4, (-8.0, -8.0, 10.0, -1.0)),
    ("^_^", 0, (-8.0, -8.0, 9.0, -2.0)),
]


@functools.cache
def build_caption_model(folder: str) -> str:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS]
    tokenizer = BertTokenizer(vocab={word: number for number, word in enumerate(vocab)})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": SIDE, "width": SIDE}), tokenizer=tokenizer
    )
    layers = dict(num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, hidden_size=32)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3,
            encoder_hidden_size=32, max_position_embeddings=64, **layers,
        ),
        vision_config=dict(image_size=SIDE, patch_size=8, **layers),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        bias = model.text_decoder.cls.predictions.bias
        bias[vocab.index("red")] += 12.0
        bias[vocab.index("cat")] += 11.0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@functools.cache
def build_clip_model(folder: str) -> str:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = Path(folder)
    layers = dict(num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, hidden_size=32)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, **layers),
        vision_config=dict(image_size=SIDE, patch_size=8, **layers),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}),
        tokenizer=CLIPTokenizer.from_pretrained(CLIP_TOKENIZER),
    )
    processor.save_pretrained(path)
    return str(path)


@functools.cache
def build_tagger(folder: str) -> str:
    """model.onnx (input NHWC BGR 0-255, output one sigmoid per tag) and selected_tags.csv."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    weights = np.array([tag[2][:3] for tag in TAGGER_TAGS], dtype=np.float32).T / 255.0  # (3, tags)
    bias = np.array([tag[2][3] for tag in TAGGER_TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits_unbiased"]),
            helper.make_node("Add", ["logits_unbiased", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [1, len(TAGGER_TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path / "model.onnx")
    with (path / "selected_tags.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["tag_id", "name", "category", "count"])
        for number, (name, category, _) in enumerate(TAGGER_TAGS):
            writer.writerow([number, name, category, 100])
    return str(path)


def tiny_describe_models(folder: Path, *, tag_threshold: float = 0.5) -> DescribeModels:
    """All three tiny models under ``folder`` (built once per folder and process)."""
    return DescribeModels(
        caption_model=build_caption_model(str(folder / "blip")),
        clip_model=build_clip_model(str(folder / "clip")),
        tagger=build_tagger(str(folder / "tagger")),
        tag_threshold=tag_threshold,
    )
