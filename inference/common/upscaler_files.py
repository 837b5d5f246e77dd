"""Finding upscaler model files by name, without torch.

The bot imports this module to offer and check upscaler names (autocomplete, option checks), and
the bot never imports torch; inference/upscale.py uses the same lookup to load the files, so both
sides agree on which names exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# The files spandrel can load: pickled state dicts (.pth, .pt, .ckpt; spandrel unpickles them
# with an allow-list) and safetensors. A1111's ESRGAN folder takes .pt, .pth and .safetensors.
UPSCALER_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


def upscaler_files(dirs: Iterable[str | Path]) -> dict[str, Path]:
    """Model name (the file name without its suffix) -> file, sorted by name.

    Only files directly in each folder count: A1111's model folders are flat, and a recursive
    walk could pick up training checkpoints kept in subfolders. Missing folders are skipped (an
    admin may list A1111's ESRGAN and RealESRGAN folders when only one exists); when two folders
    hold the same name the first folder listed wins, so the order of ``dirs`` is the priority.
    """
    found: dict[str, Path] = {}
    for folder in dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        # Sorted so that, within one folder, "x.pth" beats "x.safetensors" the same way on
        # every file system.
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in UPSCALER_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))
