"""Aligning a face to the restorers' 512 px template and pasting the restored face back.

facexlib's FaceRestoreHelper, as A1111 uses it (upscale factor 1, crop ratio 1), without
OpenCV: the similarity transform (rotation, uniform scale, shift) that takes the 5 detected
landmarks closest to the FFHQ template, the image warped through it into a 512 x 512 crop
with facexlib's grey border, and the restored crop warped back through the inverse and
blended in with a soft mask. The mask is facexlib's without face parsing: the crop's square
eroded by 2 px, eroded again by a tenth of the face's size and blurred by as much, so the
restored face fades into the image before the crop's edge. (A1111 asks for parsing,
``use_parse=True``, which shapes the mask to the face's skin and hair with a second network.)

Warps run in torch (``grid_sample``) on the device the restorer uses. Coordinates are
OpenCV's: pixel (x, y) is the centre of column x, row y.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

FACE_SIZE = 512
# facexlib's FFHQ 5-point template for a 512 px face: eyes, nose tip, mouth corners.
FFHQ_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]]
)
# The colour facexlib fills the crop with where it reaches past the image (BGR 135, 133, 132).
BORDER_RGB = (132.0, 133.0, 135.0)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation, uniform scale and shift taking ``source`` points
    closest to ``target`` points in least squares (Umeyama, without reflection): what
    cv2.estimateAffinePartial2D finds for five points that fit well."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (centred_source**2).sum() / len(source)
    scale = (singular * sign).sum() / variance
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """cv2.invertAffineTransform."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(pixels: torch.Tensor, matrix: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """cv2.warpAffine with bilinear sampling and a zero border: (C, H, W) -> (C, height, width)
    where output pixel p takes the input at matrix^-1 p. ``size`` is (width, height)."""
    width, height = size
    inverse = torch.tensor(invert_affine(matrix), dtype=torch.float32, device=pixels.device)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=pixels.device),
        torch.arange(width, dtype=torch.float32, device=pixels.device),
        indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inverse.T  # (H, W, 2) input x, y
    in_height, in_width = pixels.shape[1:]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels, as OpenCV's.
    grid = torch.stack(
        [points[..., 0] / max(in_width - 1, 1) * 2 - 1, points[..., 1] / max(in_height - 1, 1) * 2 - 1], dim=-1
    )
    warped = F.grid_sample(
        pixels[None].float(), grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped[0]


def crop_face(image: torch.Tensor, landmarks: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The face at ``landmarks`` as a (3, 512, 512) crop of ``image`` ((3, H, W), 0-255), and
    the matrix that made it; beyond the image the crop is facexlib's grey."""
    matrix = similarity_transform(landmarks, FFHQ_TEMPLATE * FACE_SIZE / 512)
    ones = torch.ones((1, *image.shape[1:]), device=image.device)
    warped = warp_affine(torch.cat([image.float(), ones]), matrix, (FACE_SIZE, FACE_SIZE))
    border = torch.tensor(BORDER_RGB, device=image.device)[:, None, None]
    inside = warped[3:]
    return warped[:3] + (1 - inside) * border, matrix


def _erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.erode of a (H, W) mask with a size x size square (anchor at its centre); pixels
    beyond the edge do not erode, as OpenCV's default border."""
    if size <= 1:
        return mask
    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(mask[None, None], (before, after, before, after), value=float("inf"))
    return -F.max_pool2d(-padded, size, stride=1)[0, 0]


def _blur(mask: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.GaussianBlur with an odd ``size`` and sigma 0 (OpenCV's sigma for that size)."""
    if size <= 1:
        return mask
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    return gaussian_blur(mask[None, None], [size, size], [sigma, sigma])[0, 0]


def paste_face(image: torch.Tensor, restored: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """``image`` ((3, H, W) float, 0-255) with the restored crop ((3, 512, 512), 0-255) warped
    back through the inverse of ``matrix`` and blended in with facexlib's soft mask."""
    height, width = image.shape[1:]
    inverse = invert_affine(matrix)
    back = warp_affine(restored, inverse, (width, height))
    square = torch.ones((1, FACE_SIZE, FACE_SIZE), device=image.device)
    mask = _erode(warp_affine(square, inverse, (width, height))[0], 2)
    pasted = mask[None] * back
    edge = int(float(mask.sum()) ** 0.5) // 20
    soft = _blur(_erode(mask, edge * 2), edge * 2 + 1)[None]
    return soft * pasted + (1 - soft) * image
