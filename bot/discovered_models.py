"""The [[models]] tables merged with the checkpoints found in an A1111 models folder.

Works on the tables as TOML gives them (before bot.config builds its typed settings from
them), so that the checks and messages of configured models apply to discovered ones too,
and a rescan can merge the same tables with what is found then (bot.model_catalog).

A table whose ``source`` is a discovered checkpoint (its A1111 name, or its file) is that
checkpoint's overrides: its keys win over what the file says (description, base size, VAE,
clip skip, prediction type, inpainting partner, hidden) and the checkpoint is not listed a
second time. Every other discovered checkpoint becomes a model of its own, named as A1111
names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.common.model_folders import CheckpointScan, FoundCheckpoint, SkippedFile
from inference.common.sources import family_base_size

__all__ = ["merged_model_entries"]

# The longest model name: Discord's limit on an autocomplete choice, and the jobs table's column.
MAX_MODEL_NAME_LENGTH = 100
def merged_model_entries(
    entries: Sequence[Mapping[str, Any]], scan: CheckpointScan
) -> tuple[list[dict[str, Any]], list[SkippedFile]]:
    """The [[models]] tables to build: the configured ones (overrides merged into their
    checkpoint), then every other discovered checkpoint; and the discovered files left out,
    with the reason (a name a configured model already has, an inpainting file with no base)."""
    merged: list[dict[str, Any]] = []
    claimed: set[Path] = set()
    used_inpainting: set[Path] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            merged.append(entry)  # type: ignore[arg-type]  # named by the settings' own check
            continue
        table = dict(entry)
        found = scan.find(table["source"]) if isinstance(table.get("source"), str) else None
        if found is not None and not found.inpainting:
            claimed.add(found.path)
            table = {**_table_of(found), **table, "source": str(found.path)}
        inpaint = scan.find(table["inpaint_source"]) if isinstance(table.get("inpaint_source"), str) else None
        if inpaint is not None:
            used_inpainting.add(inpaint.path)
            table["inpaint_source"] = str(inpaint.path)
        merged.append(table)
    taken = {table.get("name") for table in merged if isinstance(table, Mapping)}
    skipped: list[SkippedFile] = []
    for found in scan.models:
        if found.path in claimed:
            continue
        if found.name in taken:
            skipped.append(SkippedFile(found.path, f"a [[models]] entry already has the name {found.name!r}"))
            continue
        if len(found.name) > MAX_MODEL_NAME_LENGTH:
            skipped.append(SkippedFile(
                found.path,
                f"its name is {len(found.name)} characters long, over Discord's {MAX_MODEL_NAME_LENGTH}: "
                "rename it, move it up a folder, or give it a short name in a [[models]] entry",
            ))
            continue
        merged.append(_table_of(found))
        if found.inpaint_path:
            used_inpainting.add(Path(found.inpaint_path))
    for found in scan.inpainting:
        if found.path not in used_inpainting:
            skipped.append(SkippedFile(
                found.path,
                "an inpainting checkpoint with no base model: name it '<base>-inpainting' beside its base, "
                "or give it as inpaint_source in a [[models]] entry",
            ))
    return merged, skipped


def _table_of(found: FoundCheckpoint) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": found.name,
        "source": str(found.path),
        "family": found.family,
        "base_size": family_base_size(str(found.path), found.family, found.prediction_type),
    }
    for key in ("prediction_type", "original_config"):
        if value := getattr(found, key):
            table[key] = value
    if found.inpaint_path:
        table["inpaint_source"] = found.inpaint_path
    return table
