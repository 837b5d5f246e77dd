"""RetinaFace-ResNet50, the face detector A1111 uses through facexlib, in plain torch.

The modules and their attribute names are facexlib's (itself biubug6's Pytorch_Retinaface), so
the real ``detection_Resnet50_Final.pth`` loads as it is, strictly; facexlib is not a
dependency because it pulls in OpenCV, numba and filterpy, and downloads weights at import.
Detection follows facexlib's FaceRestoreHelper.get_face_landmarks_5 as A1111 calls it: the
image resized so that its shorter side is 640 px, BGR minus the Caffe means, prior boxes per
feature level, boxes and 5 landmarks decoded with variances (0.1, 0.2), scores above 0.97,
non-maximum suppression at IoU 0.4, and faces whose eyes are closer than 5 px dropped.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

# facexlib's cfg_re50: anchors per level, the levels' strides, the box encoding's variances.
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
# BGR means subtracted from the input (Caffe's ImageNet means, as the weights were trained).
BGR_MEANS = (104.0, 117.0, 123.0)
# What A1111 asks of facexlib: detect at a shorter side of 640 px, keep faces scored above
# 0.97 (FaceRestoreHelper's threshold), whose eyes are at least 5 px apart.
DETECTION_SIDE = 640
SCORE_THRESHOLD = 0.97
NMS_THRESHOLD = 0.4
EYE_DISTANCE_THRESHOLD = 5.0
DETECTOR_FILE = "detection_Resnet50_Final.pth"


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face in the image's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    # Left eye, right eye, nose, left and right mouth corners: (5, 2) x, y.
    landmarks: np.ndarray


def _conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, inplace=True)
    )


def _conv_bn_no_relu(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.BatchNorm2d(oup))


def _conv_bn_1x1(inp: int, oup: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, inplace=True)
    )


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.conv3X3 = _conv_bn_no_relu(in_channels, out_channels // 2)
        self.conv5X5_1 = _conv_bn(in_channels, out_channels // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn_no_relu(out_channels // 4, out_channels // 4)
        self.conv7X7_2 = _conv_bn(out_channels // 4, out_channels // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn_no_relu(out_channels // 4, out_channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv5X5_1(x)
        second = self.conv7X7_2(first)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(first), self.conv7x7_3(second)], dim=1))


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = _conv_bn_1x1(in_channels[0], out_channels, leaky)
        self.output2 = _conv_bn_1x1(in_channels[1], out_channels, leaky)
        self.output3 = _conv_bn_1x1(in_channels[2], out_channels, leaky)
        self.merge1 = _conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = _conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out1, out2, out3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[2:], mode="nearest"))
        return [out1, out2, out3]


class _Head(nn.Module):
    """A 1x1 convolution giving ``values`` numbers per anchor at every position."""

    def __init__(self, in_channels: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class _ResNetBody(nn.ModuleDict):
    """ResNet-50's modules up to layer4, under their own names (facexlib's weights name them
    body.conv1, body.layer1...), giving the outputs of layers 2, 3 and 4: what facexlib
    builds with torchvision's IntermediateLayerGetter, a private torchvision name."""

    OUTPUTS = ("layer2", "layer3", "layer4")

    def __init__(self, backbone: nn.Module) -> None:
        names = [name for name, _ in backbone.named_children()]
        super().__init__({name: getattr(backbone, name) for name in names[: names.index(self.OUTPUTS[-1]) + 1]})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for name, module in self.items():
            x = module(x)
            if name in self.OUTPUTS:
                outputs.append(x)
        return outputs


class RetinaFace(nn.Module):
    """The network: ResNet-50 body (layers 2-4), FPN, three SSH modules, three heads per level."""

    def __init__(self) -> None:
        super().__init__()
        backbone = torchvision.models.resnet50(weights=None)
        self.body = _ResNetBody(backbone)
        out_channels = 256
        self.fpn = FPN([512, 1024, 2048], out_channels)
        self.ssh1 = SSH(out_channels, out_channels)
        self.ssh2 = SSH(out_channels, out_channels)
        self.ssh3 = SSH(out_channels, out_channels)
        anchors = len(MIN_SIZES[0])
        self.ClassHead = nn.ModuleList(_Head(out_channels, anchors, 2) for _ in STEPS)
        self.BboxHead = nn.ModuleList(_Head(out_channels, anchors, 4) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(_Head(out_channels, anchors, 10) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(box offsets, face probabilities, landmark offsets) per prior, for a BGR batch
        with the means subtracted."""
        levels = self.fpn(self.body(x))
        features = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        classes = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, F.softmax(classes, dim=-1), landmarks


def load_detector(path: str | Path, device: torch.device) -> RetinaFace:
    """The detector with facexlib's weights file (a plain state dict; keys may carry the
    "module." of a DataParallel save, which facexlib strips too). Loaded with torch's
    weights-only unpickler: the file is a pickle."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = RetinaFace()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """facexlib's PriorBox: (cx, cy, w, h) per anchor, relative to the image, row-major per
    level, the level's anchors innermost."""
    anchors = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, columns = math.ceil(height / step), math.ceil(width / step)
        for row, column in itertools.product(range(rows), range(columns)):
            for size in sizes:
                anchors.append(((column + 0.5) * step / width, (row + 0.5) * step / height, size / width, size / height))
    return torch.tensor(anchors, dtype=torch.float32)


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(N, 4) offsets -> (x1, y1, x2, y2) relative to the image (SSD's encoding)."""
    centres = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCES[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(N, 10) offsets -> (N, 5, 2) points relative to the image."""
    points = offsets.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * VARIANCES[0] * priors[:, None, 2:]


def select_faces(
    boxes: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor,
    score_threshold: float = SCORE_THRESHOLD, nms_threshold: float = NMS_THRESHOLD,
) -> list[int]:
    """Indices of the detections kept: scored above the threshold, then non-maximum
    suppression, best first."""
    candidates = torch.nonzero(scores > score_threshold).flatten()
    if candidates.numel() == 0:
        return []
    kept = torchvision.ops.nms(boxes[candidates].float(), scores[candidates].float(), nms_threshold)
    return candidates[kept].tolist()


@torch.inference_mode()
def detect_faces(model: RetinaFace, image: Image.Image, side: int = DETECTION_SIDE) -> list[Face]:
    """The faces in ``image`` (RGB), as A1111's FaceRestoreHelper finds them."""
    width, height = image.size
    scale = min(width, height) / side
    resized = image.resize((int(width / scale), int(height / scale)), Image.Resampling.LANCZOS)
    device = next(model.parameters()).device
    pixels = torch.from_numpy(np.asarray(resized.convert("RGB"), dtype=np.float32)[:, :, ::-1].copy())
    pixels = (pixels - torch.tensor(BGR_MEANS)).permute(2, 0, 1)[None].to(device)
    offsets, probabilities, landmark_offsets = model(pixels)
    in_height, in_width = pixels.shape[2:]
    priors = prior_boxes(in_height, in_width).to(device)
    boxes = decode_boxes(offsets[0].float(), priors)
    points = decode_landmarks(landmark_offsets[0].float(), priors)
    scores = probabilities[0, :, 1].float()
    to_image = torch.tensor([in_width, in_height], device=device) * scale
    faces = []
    for index in select_faces(boxes, scores, points):
        box = (boxes[index].reshape(2, 2) * to_image).flatten().tolist()
        marks = (points[index] * to_image).cpu().numpy().astype(np.float64)
        if np.linalg.norm(marks[0] - marks[1]) < EYE_DISTANCE_THRESHOLD:
            continue  # a face seen from the side, or too small to restore
        faces.append(Face(tuple(box), float(scores[index]), marks))
    return faces
