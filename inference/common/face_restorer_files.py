"""Finding the face restorers' weights, as A1111 finds them, without torch.

A1111 keeps GFPGAN's weights in models/GFPGAN (a file whose name holds "GFPGAN", the newest
when there are several: GFPGANv1.4.pth) and CodeFormer's in models/Codeformer
(codeformer-v0.1.0.pth), and facexlib's face detector, ``detection_Resnet50_Final.pth``,
beside them (A1111 points facexlib's downloads at models/GFPGAN). The bot uses this to offer
the restorers that can run and to tell the admin what is missing; the worker uses it to load
the same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from inference.common.protocol import CODEFORMER, FACE_RESTORERS, GFPGAN
from inference.common.upscaler_files import UPSCALER_SUFFIXES

DETECTOR_NAME = "detection_Resnet50_Final"
# What a restorer's file name contains (case-insensitive), as A1111's model lists filter them.
_NAME_PARTS = {GFPGAN: "gfpgan", CODEFORMER: "codeformer"}


def face_model_files(dirs: Iterable[str | Path]) -> tuple[dict[str, Path], Path | None]:
    """(restorer name -> weights file, detector file or None) found directly in ``dirs``.

    For each restorer the newest matching file wins (A1111 takes the latest GFPGAN); the
    detector is the first ``detection_Resnet50_Final`` file in the order of ``dirs``.
    """
    candidates: dict[str, list[Path]] = {name: [] for name in FACE_RESTORERS}
    detector = None
    for folder in dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in UPSCALER_SUFFIXES or not path.is_file():
                continue
            if path.stem == DETECTOR_NAME:
                detector = detector or path
                continue
            for name, part in _NAME_PARTS.items():
                if part in path.stem.lower():
                    candidates[name].append(path)
    found = {name: max(paths, key=lambda p: p.stat().st_mtime_ns) for name, paths in candidates.items() if paths}
    return found, detector


def usable_face_restorers(dirs: Iterable[str | Path]) -> tuple[str, ...]:
    """The restorers a job may use: their weights and the detector are both there."""
    found, detector = face_model_files(dirs)
    return tuple(name for name in FACE_RESTORERS if name in found and detector is not None)


def missing_face_models(dirs: Iterable[str | Path], restorer: str) -> str:
    """What the admin must add for ``restorer`` to run ("GFPGAN's weights (such as
    GFPGANv1.4.pth) and the face detector's weights (...)"); "" when nothing is missing."""
    found, detector = face_model_files(dirs)
    missing = []
    if restorer not in found:
        example = "GFPGANv1.4.pth" if restorer == GFPGAN else "codeformer-v0.1.0.pth"
        missing.append(f"{restorer}'s weights (such as {example})")
    if detector is None:
        missing.append(f"the face detector's weights ({DETECTOR_NAME}.pth)")
    return " and ".join(missing)


def face_restoration_status(dirs: Iterable[str | Path]) -> str:
    """One line for the admin at start-up: the restorers members can use, or what is missing."""
    dirs = [str(d) for d in dirs]
    usable = usable_face_restorers(dirs)
    if usable:
        return f"face restoration: {', '.join(usable)}"
    return (
        f"face restoration is off: add GFPGAN's or CodeFormer's weights (GFPGANv1.4.pth, codeformer-v0.1.0.pth) "
        f"and {DETECTOR_NAME}.pth to one of the face restorer folders ({', '.join(dirs) or 'none configured'})"
    )
