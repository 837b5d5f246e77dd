"""A1111's "Lora hashes" and "TI hashes" infotext keys, without torch.

A1111 names every LoRA and embedding a job used, with a 12-digit hash Civitai finds them by:
a LoRA's is the "addnet" hash when it is a .safetensors file (the sha256 of the bytes after
the header, so that editing its metadata keeps the hash), else the file's sha256; an
embedding's is the file's sha256. The worker hashes a file the first time a job uses it, on
its saving thread (off the GPU's path), and remembers it while the file keeps its size and
modification time.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Mapping
from pathlib import Path

from inference.common.sources import file_sha256

# A1111's network and embedding "shorthash".
SHORT_HASH_DIGITS = 12
LORA_HASHES = "Lora hashes"
TI_HASHES = "TI hashes"


def addnet_sha256(path: Path) -> str:
    """The sha256 of a safetensors file's tensor bytes: everything after its header."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(8 + length)
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class NetworkHashes:
    """Short hashes of LoRA and embedding files, remembered by (size, mtime_ns)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, bool], tuple[int, int, str]] = {}
        self._lock = threading.Lock()  # saving threads may ask at once

    def short_hash(self, path: Path, *, lora: bool) -> str | None:
        """The file's A1111 short hash; None when it cannot be read (gone since the job ran)."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (str(path), lora)
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        try:
            use_addnet = lora and path.suffix.lower() == ".safetensors"
            digest = addnet_sha256(path) if use_addnet else file_sha256(path)
        except (OSError, struct.error):
            return None
        with self._lock:
            self._known[key] = (stat.st_size, stat.st_mtime_ns, digest[:SHORT_HASH_DIGITS])
        return digest[:SHORT_HASH_DIGITS]

    def infotext_pairs(self, loras: Mapping[str, Path], embeddings: Mapping[str, Path]) -> dict[str, str]:
        """{"Lora hashes": "name: hash, ...", "TI hashes": ...} for the files a job used; a key
        is left out when the job used none."""
        pairs = {}
        for key, files, lora in ((LORA_HASHES, loras, True), (TI_HASHES, embeddings, False)):
            listed = [
                f"{_listed_name(name)}: {short}"
                for name, path in files.items()
                if (short := self.short_hash(path, lora=lora)) is not None
            ]
            if listed:
                pairs[key] = ", ".join(listed)
        return pairs


def _listed_name(name: str) -> str:
    # A1111 drops the characters that would break its "name: hash, name: hash" list.
    return name.replace(":", "").replace(",", "")
