"""The face restorers (GFPGAN, CodeFormer) and A1111's "Restore faces" on a job's images.

The restorers' weights load through spandrel as the upscalers do (inference.upscale's
load_upscaler: the same pickle allow-list and dtype choice); CodeFormer's architecture is in
spandrel_extra_arches, which A1111 1.10 uses too. Each image goes through A1111's
restore_with_face_helper: detect (inference.faces.retinaface), align each face to the template
and restore it at 512 px in [-1, 1], paste it back (inference.faces.alignment); then the
Extras tab's "visibility" blends the result over the original.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import spandrel
import spandrel_extra_arches
import torch
from PIL import Image

from inference import images, upscale
from inference.common import infotext
from inference.common.face_restorer_files import face_model_files, missing_face_models
from inference.common.protocol import CODEFORMER, FACE_RESTORERS, GenerateRequest, JobKind, RestoreFacesOptions
from inference.faces import alignment, retinaface
from inference.generate import InvalidRequestError, IsCancelled, JobCancelledError, OnStep
from inference.models import free_accelerator_memory
from inference.upscale import UpscalerLoadError, load_upscaler

log = logging.getLogger(__name__)

# CodeFormer (and the other extra architectures) become known to spandrel's loader.
spandrel_extra_arches.install(ignore_duplicates=True)

NO_FACES_NOTE = "No faces were found: the image is unchanged."

# (faces done, faces in the image)
OnFace = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RestoredImage:
    image: Image.Image
    faces: int  # how many faces were found and restored


class FaceRestorers:
    """The restorers and the detector in the configured folders, loaded on first use.

    One restorer at a time stays loaded (about 350 MB each in fp32), with the detector (about
    110 MB); a file replaced under the same name is loaded again.
    """

    def __init__(self, dirs: Iterable[str | Path], device: torch.device, dtype: torch.dtype):
        self.dirs = tuple(str(folder) for folder in dirs)
        self.device = torch.device(device)
        self.dtype = dtype
        self._restorer: tuple[Path, int, spandrel.ImageModelDescriptor] | None = None
        self._detector: tuple[Path, int, retinaface.RetinaFace] | None = None

    def check(self, options: RestoreFacesOptions) -> None:
        """InvalidRequestError naming what is wrong or missing, before any work is done."""
        if options.restorer not in FACE_RESTORERS:
            raise InvalidRequestError(
                f"unknown face restorer {options.restorer!r}; choose one of {', '.join(FACE_RESTORERS)}"
            )
        for name, value in (("visibility", options.visibility), ("CodeFormer weight", options.codeformer_weight)):
            if not 0.0 <= value <= 1.0:
                raise InvalidRequestError(f"face restoration {name} must be between 0 and 1, got {value:g}")
        missing = missing_face_models(self.dirs, options.restorer)
        if missing:
            raise InvalidRequestError(
                f"face restoration with {options.restorer} is not set up: an admin must add {missing} "
                f"to the face restorer folders ({', '.join(self.dirs) or 'none configured'})"
            )

    def restore(
        self,
        image: Image.Image,
        options: RestoreFacesOptions,
        is_cancelled: IsCancelled = lambda: False,
        on_face: OnFace | None = None,
    ) -> RestoredImage:
        """``image`` with every face found restored; unchanged (the same object) when none is."""
        self.check(options)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        detector = self._load_detector()
        faces = retinaface.detect_faces(detector, rgb)
        if not faces:
            return RestoredImage(image, 0)
        model = self._load_restorer(options.restorer)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1).to(self.device)
        restored = pixels
        for done, face in enumerate(faces):
            if is_cancelled():
                raise JobCancelledError
            crop, matrix = alignment.crop_face(pixels, face.landmarks)
            restored = alignment.paste_face(restored, self._run(model, crop, options), matrix)
            if on_face is not None:
                on_face(done + 1, len(faces))
        result = _to_image(restored)
        if options.visibility < 1.0:
            result = Image.blend(rgb, result, options.visibility)
        return RestoredImage(result, len(faces))

    @torch.inference_mode()
    def _run(
        self, model: spandrel.ImageModelDescriptor, crop: torch.Tensor, options: RestoreFacesOptions
    ) -> torch.Tensor:
        """One aligned face (3, 512, 512 in 0-255) restored, in 0-255, rounded as facexlib's
        tensor2img rounds it."""
        face = (crop / 255.0 * 2 - 1)[None].to(model.device, model.dtype)
        if options.restorer == CODEFORMER:
            output = model.model(face, weight=options.codeformer_weight, adain=True)[0]
        else:
            output = model.model(face, return_rgb=False)[0]
        return ((output[0].float().clamp(-1, 1) + 1) / 2 * 255).round()

    def _load_detector(self) -> retinaface.RetinaFace:
        _, path = face_model_files(self.dirs)
        assert path is not None, "check() makes sure the detector is there"
        mtime = path.stat().st_mtime_ns
        if self._detector is None or self._detector[:2] != (path, mtime):
            log.info("loading face detector %s", path)
            try:
                self._detector = (path, mtime, retinaface.load_detector(path, self.device))
            except Exception as exc:  # a truncated file, another network's weights
                raise UpscalerLoadError(f"face detector file {path} could not be loaded ({type(exc).__name__}: {exc})") from exc
        return self._detector[2]

    def _load_restorer(self, name: str) -> spandrel.ImageModelDescriptor:
        found, _ = face_model_files(self.dirs)
        path = found[name]
        mtime = path.stat().st_mtime_ns
        if self._restorer is not None and self._restorer[:2] == (path, mtime):
            return self._restorer[2]
        if self._restorer is not None:
            self._restorer = None  # free the other restorer before loading this one
            free_accelerator_memory()
        model = load_upscaler(path, self.device, self.dtype)
        if model.architecture.id != name:
            raise UpscalerLoadError(
                f"face restorer file {path} holds a {model.architecture.name} model, not {name}: "
                "rename or remove it"
            )
        self._restorer = (path, mtime, model)
        return model


def _to_image(pixels: torch.Tensor) -> Image.Image:
    array = pixels.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def extras_parameters(options: RestoreFacesOptions) -> dict[str, str]:
    """The keys A1111's Extras tab adds for face restoration (scripts/postprocessing_gfpgan.py
    and postprocessing_codeformer.py): the visibility, and CodeFormer's weight."""
    params = {f"{options.restorer} visibility": infotext.format_number(round(options.visibility, 3))}
    if options.restorer == CODEFORMER:
        params["CodeFormer weight"] = infotext.format_number(round(options.codeformer_weight, 3))
    return params


def source_image(request: GenerateRequest) -> Image.Image:
    """A RESTORE_FACES job's source image, read whole (the file may be replaced later)."""
    if request.image is None or request.restore_faces is None:
        raise InvalidRequestError("a face restoration job needs a source image and face restoration options")
    with Image.open(request.image.path) as source:
        source.load()
        return source.convert("RGB") if source.mode != "RGB" else source.copy()


def restore_images(
    restorers: FaceRestorers, made: list, options: RestoreFacesOptions, on_step: OnStep, is_cancelled: IsCancelled
) -> tuple[list, list[str]]:
    """Each image with its faces restored, and a note for each where none was found.
    Progress is counted in faces, image by image (no latents, so no previews)."""
    restorers.check(options)
    restored, notes = [], []
    for image in made:
        result = restorers.restore(
            image, options, is_cancelled, on_face=lambda done, total: on_step(done, total, None)
        )
        restored.append(result.image)
        notes.append("" if result.faces else NO_FACES_NOTE)
    return restored, notes


def extras_infotext(request: GenerateRequest) -> str:
    """The infotext of an upscale or a face restoration job: the source's, with A1111's
    Extras keys added to its last line (the upscale's first, as Extras runs it first)."""
    if request.kind == JobKind.UPSCALE:
        text = upscale.upscale_infotext(request)
    else:
        text = (images.read_infotext(request.image.path) or "").strip() if request.image else ""
    if request.restore_faces is None:
        return text
    extras = ", ".join(f"{key}: {value}" for key, value in extras_parameters(request.restore_faces).items())
    return f"{text.rstrip()}, {extras}" if text else extras
