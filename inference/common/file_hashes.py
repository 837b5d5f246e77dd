"""The hashes A1111 writes into infotexts, computed once per file version, without torch.

AUTOMATIC1111 (modules/hashes.py) knows two hashes of a file:
- ``sha256``: of the whole file; "Model hash" and "VAE hash" are its first 10 hex digits,
  "TI hashes" (textual inversion) its first 12;
- the "addnet" hash (``addnet_hash_safetensors``, kohya's sd-scripts): the sha256 of a
  .safetensors file's tensor data only, after its JSON header, so that editing the metadata
  keeps the hash. A1111's "Lora hashes" are its first 12 hex digits (a LoRA that is not a
  .safetensors file gets the whole file's sha256).

``file_hash`` is the one function every hash goes through: results are kept in this process,
keyed by the file's path, size and modification time, so a file is read once while it stays
the same and again when it is replaced.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

# A1111's lengths: hashes.sha256()[0:10] for models and VAEs, shorthash = hash[0:12] for
# LoRAs and embeddings.
MODEL_HASH_LENGTH = 10
NETWORK_HASH_LENGTH = 12
_BLOCK = 1 << 20

# (real path, size, mtime in ns, addnet) -> full hex digest
_cache: dict[tuple[str, int, int, bool], str] = {}
_lock = threading.Lock()


def file_hash(path: str | Path, *, addnet: bool = False) -> str:
    """The file's full sha256 as hex (``addnet``: of a .safetensors file's tensor data only,
    A1111's LoRA hash; for any other file the whole file's), computed once per file version.

    Raises OSError when the file cannot be read, ValueError for a .safetensors file too short
    to hold its header.
    """
    path = Path(path).expanduser()
    stat = path.stat()
    use_addnet = addnet and path.suffix.lower() == ".safetensors"
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, use_addnet)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    digest = _addnet_sha256(path) if use_addnet else _sha256(path)
    with _lock:
        _cache[key] = digest
    return digest


def _sha256(path: Path, offset: int = 0) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        file.seek(offset)
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _addnet_sha256(path: Path) -> str:
    """A1111's addnet_hash_safetensors: skip the 8-byte header length and the JSON header."""
    with path.open("rb") as file:
        header = file.read(8)
    if len(header) != 8:
        raise ValueError(f"{path.name} is too short to be a .safetensors file")
    return _sha256(path, offset=8 + int.from_bytes(header, "little"))
