"""Face restoration in the worker: the detector's decoding, the alignment and paste-back, and
the restorers (GFPGAN, CodeFormer) in their real architectures with random weights.

The restorers run at 512 px whatever the image (their architectures fix it), which costs
seconds per face on a CPU: only two tests run one, each on one planted face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.common.face_restorer_files import (
    face_model_files,
    face_restoration_status,
    missing_face_models,
    usable_face_restorers,
)
from inference import images
from inference.common import infotext
from inference.common.protocol import (
    LANCZOS,
    ImageInput,
    ImageResult,
    JobCompleted,
    JobKind,
    ModelSpec,
    RestoreFacesOptions,
    SegmentOptions,
    UpscaleOptions,
    WorkerConfig,
)
from inference.faces import alignment, retinaface
from inference.faces.restore import NO_FACES_NOTE, FaceRestorers, extras_parameters
from inference.generate import InvalidRequestError
from tests.face_fixtures import planted_offsets, write_face_models
from tests.inference_fixtures import tiny_request

IMAGE_SIZE = (480, 360)  # the detector sees it at 853 x 640
DETECTION_SCALE = 360 / 640


def face_image() -> Image.Image:
    """A smooth synthetic picture: gradients, so that a paste-back shows where it happened."""
    width, height = IMAGE_SIZE
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 / width, ys * 255 / height, np.full_like(xs, 128.0)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def face_models(tmp_path_factory) -> tuple[Path, Path]:
    return write_face_models(tmp_path_factory.mktemp("webui"), detection_scale=DETECTION_SCALE)


@pytest.fixture(scope="module")
def planted_faces(face_models) -> list[retinaface.Face]:
    """What the planted detector finds in face_image(), found once (a 640 px ResNet-50 pass)."""
    _, detector_path = face_model_files(face_models)
    return retinaface.detect_faces(retinaface.load_detector(detector_path, torch.device("cpu")), face_image())


# --- detector ------------------------------------------------------------------------------


def test_priors_follow_facexlib_layout():
    priors = retinaface.prior_boxes(64, 96)
    # 8 x 12 positions x 2 anchors at stride 8, then 4 x 6 x 2, then 2 x 3 x 2.
    assert priors.shape == (8 * 12 * 2 + 4 * 6 * 2 + 2 * 3 * 2, 4)
    assert priors[0].tolist() == pytest.approx([4 / 96, 4 / 64, 16 / 96, 16 / 64])
    assert priors[1].tolist() == pytest.approx([4 / 96, 4 / 64, 32 / 96, 32 / 64])
    assert priors[2].tolist() == pytest.approx([12 / 96, 4 / 64, 16 / 96, 16 / 64])  # next column
    assert priors[-1].tolist() == pytest.approx([80 / 96, 48 / 64, 512 / 96, 512 / 64])


def test_decoding_inverts_the_training_encoding():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.75, 0.1, 0.4]])
    boxes = torch.tensor([[0.42, 0.38, 0.62, 0.66], [0.2, 0.5, 0.3, 0.9]])
    # facexlib's encode(): centre offsets over variance * prior size, log size ratios over variance.
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    offsets = torch.cat([(centres - priors[:, :2]) / (0.1 * priors[:, 2:]), torch.log(sizes / priors[:, 2:]) / 0.2], 1)
    assert torch.allclose(retinaface.decode_boxes(offsets, priors), boxes, atol=1e-6)
    points = torch.tensor([[[0.45, 0.45], [0.55, 0.45], [0.5, 0.5], [0.46, 0.56], [0.54, 0.56]]] * 2)
    landmark_offsets = ((points - priors[:, None, :2]) / (0.1 * priors[:, None, 2:])).reshape(2, 10)
    assert torch.allclose(retinaface.decode_landmarks(landmark_offsets, priors), points, atol=1e-6)


def test_selection_thresholds_scores_and_suppresses_overlaps():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32)
    scores = torch.tensor([0.98, 0.99, 0.975, 0.5])
    landmarks = torch.zeros(4, 5, 2)
    # The second overlaps the first at IoU 0.68 and scores higher; the last is below 0.97.
    assert retinaface.select_faces(boxes, scores, landmarks) == [1, 2]


def test_facexlib_weights_load_and_a_planted_face_decodes_where_planted(planted_faces):
    # Every 512 px anchor scores as a face with the same huge box; NMS keeps one of them.
    assert len(planted_faces) == 1
    face = planted_faces[0]
    centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    assert face.landmarks - centre == pytest.approx(planted_offsets(), abs=0.05)
    assert face.score > 0.99


# --- alignment -----------------------------------------------------------------------------


def test_similarity_transform_recovers_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[10.0, 20.0], [40.0, 22.0], [25.0, 35.0], [12.0, 50.0], [38.0, 49.0]])
    target = source @ (scale * rotation).T + shift
    matrix = alignment.similarity_transform(source, target)
    assert matrix == pytest.approx(np.hstack([scale * rotation, shift[:, None]]), abs=1e-9)


def test_crop_puts_the_landmarks_on_the_template_and_pastes_back_only_around_the_face():
    image = torch.from_numpy(np.asarray(face_image(), dtype=np.float32)).permute(2, 0, 1)
    centre = np.array([240.0, 180.0])
    landmarks = planted_offsets() + centre
    crop, matrix = alignment.crop_face(image, landmarks)
    assert crop.shape == (3, 512, 512)
    # The image's gradient, sampled at a landmark, lands on the template's point in the crop.
    for point, template_point in zip(landmarks, alignment.FFHQ_TEMPLATE):
        x, y = np.round(template_point).astype(int)
        assert float(crop[0, y, x]) == pytest.approx(point[0] * 255 / 480, abs=1.5)
    # Beyond the image (the crop reaches 3 times the face's size) the crop is facexlib's grey.
    far = alignment.crop_face(image, planted_offsets() + [5.0, 5.0])[0]
    assert far[:, 0, 0].tolist() == pytest.approx(list(alignment.BORDER_RGB))
    white = torch.full_like(crop, 255.0)
    pasted = alignment.paste_face(image, white, matrix)
    assert float(pasted[:, 180, 240].min()) == pytest.approx(255.0, abs=0.5)  # the face's centre
    assert torch.equal(pasted[:, :, :60], image[:, :, :60])  # far from it: untouched
    edge = pasted[0, 180, 240 - 75 : 240 + 75]  # softly blended towards the square's edge
    assert float(edge[0]) < float(edge[40]) < 255.5


# --- restorers and jobs --------------------------------------------------------------------


def test_gfpgan_restores_the_planted_face_and_leaves_the_rest(face_models, planted_faces):
    restorers = FaceRestorers(face_models, torch.device("cpu"), torch.float32)
    source = face_image()
    done = []
    result = restorers.restore(source, RestoreFacesOptions("GFPGAN"), on_face=lambda *step: done.append(step))
    assert result.faces == 1 and done == [(1, 1)]
    x, y = np.round(planted_faces[0].landmarks.mean(axis=0)).astype(int)
    before, after = np.asarray(source, dtype=int), np.asarray(result.image, dtype=int)
    changed = np.abs(after - before).max(axis=-1) > 0
    assert changed[y, x]  # the face was repainted
    # The crop's square is 512 * 0.3 = 154 px wide around the face: beyond, nothing changed.
    ys, xs = np.mgrid[0 : IMAGE_SIZE[1], 0 : IMAGE_SIZE[0]]
    assert not changed[np.hypot(xs - x, ys - y) > 110].any()
    loaded = restorers._restorer
    assert loaded is not None and loaded[2].architecture.id == "GFPGAN"
    assert restorers._load_restorer("GFPGAN") is loaded[2]  # kept loaded for the next image


def job_runner(face_dirs, tmp_path: Path):
    """A JobRunner that may load no checkpoint, with the face restorers in ``face_dirs``."""
    from inference import upscale
    from inference.jobs import JobRunner
    from inference.models import PipelineCache

    config = WorkerConfig(
        models=(ModelSpec("tiny", str(tmp_path / "no-model")),), default_model="tiny",
        outputs_dir=str(tmp_path / "out"), face_restorer_dirs=tuple(map(str, face_dirs)),
    )
    cpu = torch.device("cpu")

    def no_pipelines(*args):
        raise AssertionError("face restoration and upscales load no checkpoint")

    cache = PipelineCache(config.models, cpu, torch.float32, loader=no_pipelines)
    return JobRunner(config, cache, upscale.Upscalers((), cpu, torch.float32))


def run_job(face_dirs, tmp_path: Path, request) -> ImageResult:
    """The request run by job_runner(); its one image's result."""
    sent = []
    job_runner(face_dirs, tmp_path).run(request, lambda: False, sent.append)
    assert isinstance(sent[-1], JobCompleted), sent
    return sent[-1].images[0]


def test_a_mask_preview_leaves_face_restoration_to_its_inpaint(tmp_path):
    # A SEGMENT job carries the options of the inpaint its "Looks right" queues: its preview
    # is not restored (here restoring would fail: no face models anywhere).
    runner = job_runner([], tmp_path)
    made, options = [face_image()], RestoreFacesOptions("GFPGAN")
    steps = lambda *step: None  # noqa: E731
    preview = tiny_request(kind=JobKind.SEGMENT, segment=SegmentOptions("a face"), restore_faces=options)
    assert runner._restore_faces(preview, made, steps, lambda: False) == (made, [""])
    with pytest.raises(InvalidRequestError, match="GFPGAN is not set up"):
        runner._restore_faces(tiny_request(kind=JobKind.INPAINT, restore_faces=options), made, steps, lambda: False)


def test_a_codeformer_job_restores_and_writes_a1111_extras_keys(face_models, tmp_path):
    source_path = images.save_png(face_image(), tmp_path / "source.png", "a face\nSteps: 3, Seed: 5")
    options = RestoreFacesOptions("CodeFormer", visibility=0.8, codeformer_weight=0.7)
    request = tiny_request(
        kind=JobKind.RESTORE_FACES, width=480, height=360, image=ImageInput(str(source_path)), restore_faces=options
    )
    image = run_job(face_models, tmp_path, request)
    assert image.note == ""
    assert image.infotext == "a face\nSteps: 3, Seed: 5, CodeFormer visibility: 0.8, CodeFormer weight: 0.7"
    assert (image.width, image.height) == IMAGE_SIZE
    assert not np.array_equal(np.asarray(Image.open(image.path)), np.asarray(face_image()))


def test_an_upscale_then_restore_without_faces_comes_back_upscaled_with_a_note(tmp_path):
    folder = write_face_models(tmp_path / "webui", restorers=("GFPGAN",), finds_a_face=False)[0]
    source_path = images.save_png(face_image(), tmp_path / "source.png", "")
    request = tiny_request(
        kind=JobKind.UPSCALE, width=960, height=720, image=ImageInput(str(source_path)),
        upscale=UpscaleOptions(2.0, LANCZOS), restore_faces=RestoreFacesOptions("GFPGAN", visibility=0.5),
    )
    image = run_job([folder], tmp_path, request)
    assert image.note == NO_FACES_NOTE
    assert image.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, GFPGAN visibility: 0.5"
    assert (image.width, image.height) == (960, 720)


def test_generation_infotext_names_the_restorer_after_the_seed():
    request = tiny_request(restore_faces=RestoreFacesOptions("CodeFormer"))
    text = infotext.request_infotext(request, 0)
    assert "Seed: 1234, Face restoration: CodeFormer, Size: 64x64" in text
    assert "Face restoration" not in infotext.request_infotext(tiny_request(), 0)


def test_no_face_leaves_the_image_as_it_was_with_a_note(tmp_path):
    folder = write_face_models(tmp_path, restorers=("GFPGAN",), finds_a_face=False)[0]
    restorers = FaceRestorers([folder], torch.device("cpu"), torch.float32)
    source = face_image()
    result = restorers.restore(source, RestoreFacesOptions("GFPGAN"))
    # The detector loads (facexlib's layout, heads that score every anchor as background) and
    # finds nothing.
    assert result.faces == 0 and result.image is source
    assert restorers._restorer is None  # no face: the restorer is not even loaded
    assert NO_FACES_NOTE.startswith("No faces")


def test_missing_models_and_bad_options_are_named(tmp_path):
    gfpgan_dir, codeformer_dir = tmp_path / "GFPGAN", tmp_path / "Codeformer"
    gfpgan_dir.mkdir()
    restorers = FaceRestorers([gfpgan_dir, codeformer_dir], torch.device("cpu"), torch.float32)
    with pytest.raises(InvalidRequestError, match=r"must add CodeFormer's weights .*and the face detector's weights"):
        restorers.check(RestoreFacesOptions("CodeFormer"))
    with pytest.raises(InvalidRequestError, match="unknown face restorer 'RestoreFormer'"):
        restorers.check(RestoreFacesOptions("RestoreFormer"))
    assert face_restoration_status([gfpgan_dir]) == (
        "face restoration is off: add GFPGAN's or CodeFormer's weights (GFPGANv1.4.pth, codeformer-v0.1.0.pth) "
        f"and detection_Resnet50_Final.pth to one of the face restorer folders ({gfpgan_dir})"
    )
    (gfpgan_dir / "GFPGANv1.4.pth").write_bytes(b"x")
    (gfpgan_dir / "detection_Resnet50_Final.pth").write_bytes(b"x")
    assert usable_face_restorers([gfpgan_dir, codeformer_dir]) == ("GFPGAN",)
    assert face_restoration_status([gfpgan_dir, codeformer_dir]) == "face restoration: GFPGAN"
    assert missing_face_models([gfpgan_dir], "GFPGAN") == ""
    with pytest.raises(InvalidRequestError, match="visibility must be between 0 and 1, got 1.5"):
        restorers.check(RestoreFacesOptions("GFPGAN", visibility=1.5))
    assert extras_parameters(RestoreFacesOptions("GFPGAN", visibility=0.25)) == {"GFPGAN visibility": "0.25"}
