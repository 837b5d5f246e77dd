"""[describe] in config.toml: /describe's models and the interrogator a server uses until its
admins pick one. A section of bot.config's Settings, kept apart to keep that module short."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from bot.config_errors import ConfigError
from inference.common.protocol import CLIP_INTERROGATOR, INTERROGATORS, TAGGER_INTERROGATOR, DescribeModels
from inference.common.sources import SourceKind, classify_source


@dataclass(frozen=True)
class DescribeSettings(DescribeModels):
    """[describe]: /describe's models (inference.common.protocol.DescribeModels, which the
    worker gets as they are) and the interrogator a server uses until its admins pick one
    (/admin describe)."""

    interrogator: str = CLIP_INTERROGATOR

    def __post_init__(self) -> None:
        if self.interrogator not in INTERROGATORS:
            raise ConfigError(f"describe.interrogator must be one of {', '.join(INTERROGATORS)}, got {self.interrogator!r}")
        if not 0.0 < self.tag_threshold < 1.0:
            raise ConfigError(f"describe.tag_threshold must be between 0 and 1, got {self.tag_threshold}")
        if bool(self.caption_model) != bool(self.clip_model):
            raise ConfigError(
                'describe: the "clip" interrogator needs both caption_model and clip_model '
                f"(got caption_model {self.caption_model!r}, clip_model {self.clip_model!r})"
            )
        for key in ("caption_model", "clip_model"):
            source = getattr(self, key)
            if source and classify_source(source) is SourceKind.LOCAL_FOLDER and not Path(source).expanduser().is_dir():
                raise ConfigError(f"describe.{key} {source!r} is neither a folder nor a hub id (\"owner/name\")")
        for name in ("model.onnx", "selected_tags.csv"):
            if self.tagger and not (Path(self.tagger) / name).is_file():
                raise ConfigError(
                    f"describe.tagger {self.tagger!r} must be a folder holding model.onnx and selected_tags.csv "
                    f"(a WD14 tagger as A1111's tagger extension keeps it): {name} is missing"
                )
        if self.categories_dir and not any(Path(self.categories_dir).glob("*.txt")):
            raise ConfigError(f"describe.categories_dir {self.categories_dir!r} holds no .txt list")

    @property
    def available(self) -> tuple[str, ...]:
        """The interrogators whose models are configured."""
        configured = {CLIP_INTERROGATOR: bool(self.caption_model), TAGGER_INTERROGATOR: bool(self.tagger)}
        return tuple(name for name in INTERROGATORS if configured[name])

    def models(self) -> DescribeModels:
        return DescribeModels(**{option.name: getattr(self, option.name) for option in fields(DescribeModels)})
