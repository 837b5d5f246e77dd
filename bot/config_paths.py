"""Relative paths in a config file are read from the file's folder, not the current directory.

`sdbot --config other/config.toml generate` must find `other/tiny` when the file says
`source = "tiny"`, and keep its database in `other/data/`, wherever it is started from. So
before the settings are built, every relative path the file gives, and every relative default
it leaves as it is, is made absolute against the file's folder. Values from environment
variables are left alone: they are read from the current directory, as a shell reads them.

A model source (and the safety checker's, and TAESD's) may be a hub id or a folder: it becomes
a path only where it names something in the file's folder, or is written as a path
(`./tiny`, `models/a/b`); "owner/name" stays a hub id.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from inference.common.sources import looks_like_path

# (table, key) of the settings holding one folder ("" when top-level) or a list of folders.
FOLDER_SETTINGS = (
    ("", "outputs_dir"),
    ("", "vae_dirs"),
    ("images", "upscaler_dirs"),
    ("prompts", "embedding_dirs"),
    ("prompts", "lora_dirs"),
    ("worker", "compile_cache_dir"),
    ("a1111", "root"),
    ("describe", "tagger"),
    ("describe", "categories_dir"),
)
# (table, key) of the settings holding a hub id or a folder; models' sources are handled apart.
SOURCE_SETTINGS = (
    ("policy", "safety_checker"), ("worker", "taesd_source"), ("worker", "taesdxl_source"),
    ("describe", "caption_model"), ("describe", "clip_model"),
    ("images", "segmentation_model"),
)
MODEL_SOURCE_KEYS = ("source", "inpaint_source")


def resolve_against_folder(data: dict[str, Any], folder: Path, defaults: Mapping[tuple[str, str], Any]) -> None:
    """Make the relative paths of a config file's `data` absolute against `folder`, in place;
    `defaults` (same keys as FOLDER_SETTINGS, and ("", "database_url")) fill in the ones the
    file leaves out, resolved the same way. Values of the wrong type are left for the settings'
    own checks to name."""
    folder = folder.resolve()
    if folder == Path.cwd().resolve():
        return  # read from the current directory already
    for table, key in (*FOLDER_SETTINGS, ("", "database_url")):
        section = _table(data, table)
        if section is not None and key not in section and (table, key) in defaults:
            section[key] = defaults[table, key]
    for table, key in FOLDER_SETTINGS:
        _update(data, table, key, lambda value: _folder(value, folder))
    _update(data, "", "database_url", lambda value: _database_url(value, folder))
    for table, key in SOURCE_SETTINGS:
        _update(data, table, key, lambda value: _source(value, folder))
    models = data.get("models")
    if isinstance(models, list):
        for model in models:
            if isinstance(model, dict):
                for key in MODEL_SOURCE_KEYS:
                    if isinstance(model.get(key), str):
                        model[key] = _source(model[key], folder)


def _table(data: dict[str, Any], table: str) -> dict[str, Any] | None:
    if not table:
        return data
    section = data.setdefault(table, {})
    return section if isinstance(section, dict) else None


def _update(data: dict[str, Any], table: str, key: str, resolve: Any) -> None:
    section = _table(data, table)
    if section is None or key not in section:
        return
    value = section[key]
    if isinstance(value, str):
        section[key] = resolve(value)
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        section[key] = [resolve(item) for item in value]


def _folder(value: str, folder: Path) -> str:
    if not value or value.startswith("~") or Path(value).is_absolute():
        return value  # "" means "none" (compile_cache_dir); ~ is the admin's home
    return str(folder / value)


def _source(value: str, folder: Path) -> str:
    stripped = value.strip()
    if not stripped or stripped.startswith("~") or Path(stripped).is_absolute():
        return value
    if (folder / stripped).exists() or looks_like_path(stripped):
        return str(folder / stripped)
    return value  # a hub id


def _database_url(value: str, folder: Path) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        return value  # named by the database's own error
    database = url.database
    if url.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return value
    if Path(database).is_absolute() or database.startswith("~"):
        return value
    return url.set(database=str(folder / database)).render_as_string(hide_password=False)
