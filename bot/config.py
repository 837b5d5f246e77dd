"""One typed settings object, loaded from TOML with environment overrides.

Order of precedence, lowest first: the defaults below (which `config.example.toml` documents
one for one; a test keeps the two in step), then `config.toml`, then environment variables:
`SDBOT__SECTION__KEY=value` (or `SDBOT__KEY` for top-level keys; values are read as TOML
literals when they parse as one, else as strings), and `DISCORD_TOKEN` for the token.
The token is never printed: it is excluded from the dataclass repr, and a configuration error
names a secret setting without its value (SECRET_SETTINGS, without_password).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

from bot.config_describe import DescribeSettings
from bot.config_errors import ConfigError
from bot.config_paths import FOLDER_SETTINGS, resolve_against_folder
from bot.config_sections import (
    FLAGGED_ACTIONS,
    MAX_RETENTION_DAYS,
    ImageSettings,
    LimitSettings,
    PolicySettings,
    PromptSettings,
    QueueSettings,
)
from bot.discovered_models import merged_model_entries
from bot.jobs.worker_process import START_METHODS
from inference.common.protocol import (
    MAX_SEGMENT_DILATION,
    RNG_SOURCES,
    COMPILE_MODES,
    FACE_RESTORERS,
    LANCZOS,
    LOW_MEMORY_MODES,
    MAX_CLIP_SKIP,
    PREVIEW_METHODS,
    ModelSource,
    ModelSpec,
    WorkerConfig,
    WorkerOptions,
)
from inference.common.checkpoints import Family
from inference.common.model_folders import CheckpointInspector, CheckpointScan, SkippedFile, scan_checkpoints
from inference.common.upscaler_files import upscaler_files
from inference.common.vae_files import AUTOMATIC, UnknownVaeError, resolve_vae, vae_files
from inference.common.sampler_catalog import checked_choice
from inference.common.sources import family_base_size

ENV_PREFIX = "SDBOT__"
PREDICTION_TYPES = ("epsilon", "v_prediction")
# Checkpoint headers already read, by path, size and mtime: a reload or rescan of the [a1111]
# folders reads only the files that changed.
SHARED_INSPECTOR = CheckpointInspector()
# Settings whose value no message shows, even a wrong one: an error names the setting and the
# type it was given, since a mistyped secret is still most of the secret.
SECRET_SETTINGS = frozenset({"discord.token"})
# Requests a second Discord allows a bot token across all its servers.
DISCORD_GLOBAL_LIMIT_PER_S = 50.0
# The password of a URL (postgresql://user:password@host/db), up to the last "@" before the host.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^\s]*@")


@dataclass(frozen=True)
class ModelSettings(ModelSource):
    """[[models]]: one checkpoint (ModelSource's fields, shared with the worker's ModelSpec) and
    what only the bot uses. A single file's family is filled in for the checkpoints found under
    [a1111], and its .yaml config found beside it there."""

    # The short side of an image at aspect ratios: 512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL.
    # 0 (the default): the model's family's, read from its folder (512 when it cannot tell).
    base_size: int = 0
    # Left out of the model lists and autocomplete (still usable by name, and by /pnginfo).
    hidden: bool = False

    def __post_init__(self) -> None:
        if not self.base_size:
            object.__setattr__(self, "base_size", family_base_size(self.source, self.family, self.prediction_type))
        where = f"models {self.name!r}"
        if self.family not in ("", *(str(f) for f in Family)):
            raise ConfigError(f"{where}: family must be one of {', '.join(Family)} (or left out), got {self.family!r}")
        if self.prediction_type not in ("", *PREDICTION_TYPES):
            raise ConfigError(f"{where}: prediction_type must be {' or '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        if not 0 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise ConfigError(f"{where}: clip_skip must be 1 to {MAX_CLIP_SKIP} (0: the family's default), got {self.clip_skip}")
        if self.base_size < 64 or self.base_size % 8:
            raise ConfigError(f"{where}: base_size must be a multiple of 8 of at least 64, got {self.base_size}")

    def spec(self, sha256: str = "") -> ModelSpec:
        """What the worker is told of this model; ``sha256`` its file's hash when known."""
        shared = {each.name: getattr(self, each.name) for each in fields(ModelSource)}
        return ModelSpec(**shared, default_size=self.base_size, sha256=sha256)


@dataclass(frozen=True)
class WorkerSettings(WorkerOptions):
    """[worker]: the worker's own options (inference.common.protocol.WorkerOptions, which
    WorkerConfig carries to it as they are) and how the bot runs its process."""

    # Kept across restarts by default (WorkerOptions' "" leaves torch's folder, under /tmp).
    compile_cache_dir: str = "cache/torch-compile"
    # Seconds to wait for the worker to load its models at start-up.
    startup_timeout_s: float = 600.0
    # On SIGTERM or SIGINT, seconds the running job may take to finish before it goes back to
    # the queue (no attempt counted) and the bot exits.
    shutdown_grace_s: float = 30.0
    # How the worker's process starts (bot/jobs/worker_process.py): "spawn", or "forkserver"
    # (Linux, macOS), whose restarts skip the imports at the cost of a process holding them.
    start_method: str = "spawn"
    # false: the bot starts no worker of its own; workers started apart (`sdbot worker`, one per
    # GPU, on this machine or others sharing outputs_dir) claim from the database, and the bot
    # delivers what they report (docs/scaling.md).
    builtin: bool = True
    # Separate workers write their row this often; one silent for lease_timeout_s is gone, and
    # its job goes back to the queue (counted as an attempt).
    heartbeat_s: float = 5.0
    lease_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name, choices in (
            ("torch_compile", COMPILE_MODES),
            ("preview_method", PREVIEW_METHODS),
            ("low_memory", LOW_MEMORY_MODES),
            ("start_method", START_METHODS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"worker.{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.preview_method == "taesd" and not self.taesd_source:
            raise ConfigError('worker.preview_method = "taesd" needs worker.taesd_source (a hub id or a folder)')
        if self.start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError(f'worker.start_method = "{self.start_method}" is not available on this system: use "spawn"')
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"worker.shutdown_grace_s must be at least 0, got {self.shutdown_grace_s}")
        if not 0 < self.heartbeat_s < self.lease_timeout_s:
            raise ConfigError(
                f"worker.heartbeat_s must be above 0 and below worker.lease_timeout_s, got {self.heartbeat_s} "
                f"and {self.lease_timeout_s}"
            )
        if self.model_memory_budget_mb < 0:
            raise ConfigError(f"worker.model_memory_budget_mb must be at least 0, got {self.model_memory_budget_mb}")


@dataclass(frozen=True)
class DiscordSettings:
    # Kept out of repr so it never lands in a log line.
    token: str | None = field(default=None, repr=False)
    # Commands are synced to this guild at start-up (instant); globally otherwise (up to an hour).
    dev_guild_id: int | None = None
    # Seconds between two edits of a job's progress message (Discord rate-limits edits).
    progress_edit_interval_s: float = 1.5
    # Interaction tokens live 15 minutes; past this age results go out as channel messages.
    interaction_token_lifetime_s: float = 14 * 60
    # Variation strengths of the V buttons and "Vary (subtle)" / "Vary (strong)".
    variation_subtle: float = 0.15
    variation_strong: float = 0.6
    # The request budget (bot.request_budget): requests a second with the bot's own token
    # (Discord allows about 50), and progress edits a second by any token, dropped first.
    bot_token_requests_per_s: float = 40.0
    progress_edits_per_s: float = 20.0
    # None: one gateway connection. "auto": as many shards as Discord recommends
    # (commands.AutoShardedBot); a number: that many, all in this process.
    shards: int | str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.bot_token_requests_per_s <= DISCORD_GLOBAL_LIMIT_PER_S:
            raise ConfigError(f"discord.bot_token_requests_per_s must be above 0 and at most {DISCORD_GLOBAL_LIMIT_PER_S:g} "
                              f"(Discord's limit for a bot token), got {self.bot_token_requests_per_s:g}")
        if self.progress_edits_per_s <= 0:
            raise ConfigError(f"discord.progress_edits_per_s must be above 0, got {self.progress_edits_per_s:g}")
        if self.shards is not None and self.shards != "auto" and (not isinstance(self.shards, int) or self.shards < 1):
            raise ConfigError(f'discord.shards must be "auto" or a number of shards from 1, got {self.shards!r}')


@dataclass(frozen=True)
class A1111Settings:
    """[a1111]: serve an AUTOMATIC1111 (or Forge, SD.Next) install's models folder as it is.

    With ``root`` set, every checkpoint under ``checkpoint_dirs`` becomes a model named as
    A1111 names it, and the other folders are searched beside the [prompts] and [images] ones.
    The folders are relative to ``root`` (absolute paths are taken as they are).
    """

    root: str = ""
    checkpoint_dirs: tuple[str, ...] = ("models/Stable-diffusion",)
    vae_dirs: tuple[str, ...] = ("models/VAE",)
    lora_dirs: tuple[str, ...] = ("models/Lora", "models/LyCORIS")
    embedding_dirs: tuple[str, ...] = ("embeddings",)
    upscaler_dirs: tuple[str, ...] = ("models/ESRGAN", "models/RealESRGAN", "models/SwinIR", "models/DAT")
    face_restorer_dirs: tuple[str, ...] = ("models/GFPGAN", "models/Codeformer")
    # Minutes between two looks for new, changed and removed checkpoints (only their sizes and
    # times are read, and the headers of the files that changed); 0: only /admin models refresh.
    rescan_minutes: float = 5.0

    def folders(self, kind: str) -> tuple[str, ...]:
        """The folders of one kind ("lora_dirs"...), resolved against root; none without root."""
        if not self.root:
            return ()
        root = Path(self.root).expanduser().resolve()  # hashes are kept by absolute path
        return tuple(str(root / folder) for folder in getattr(self, kind))


def _default_models() -> tuple[ModelSettings, ...]:
    return (
        ModelSettings(
            name="sd15",
            source="stable-diffusion-v1-5/stable-diffusion-v1-5",
            description="Stable Diffusion 1.5",
        ),
    )


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///data/sdbot.sqlite3"
    outputs_dir: str = "outputs"
    # VAE files (.safetensors, .pt, .ckpt), walked recursively; a VAE's name is its file name.
    # A1111 keeps them in models/VAE.
    vae_dirs: tuple[str, ...] = ("models/VAE",)
    default_model: str = "sd15"
    models: tuple[ModelSettings, ...] = field(default_factory=_default_models)
    limits: LimitSettings = field(default_factory=LimitSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    a1111: A1111Settings = field(default_factory=A1111Settings)
    describe: DescribeSettings = field(default_factory=DescribeSettings)
    # The [[models]] tables as written (internal, not a setting): a rescan of the [a1111]
    # folders merges them with the checkpoints found again (bot.model_catalog).
    model_entries: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        names = [model.name for model in self.models]
        if not names:
            raise ConfigError("no models configured: add at least one [[models]] entry, or set [a1111] root")
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}")
        if self.default_model not in names:
            raise ConfigError(f"default_model {self.default_model!r} is not one of the models {names}")
        self._check_sampling_defaults()
        for name, value in (("limits.min_size", self.limits.min_size), ("limits.max_size", self.limits.max_size)):
            if value % 8:
                raise ConfigError(f"{name} must be a multiple of 8, got {value}")

        self._check_model_vaes()
        images = self.images
        if images.default_upscaler != LANCZOS and images.default_upscaler not in upscaler_files(images.upscaler_dirs):
            raise ConfigError(
                f"images.default_upscaler {images.default_upscaler!r} is neither {LANCZOS!r} nor a .pth/.safetensors "
                f"file in images.upscaler_dirs {list(images.upscaler_dirs)}"
            )
        if images.default_face_restorer not in FACE_RESTORERS:
            raise ConfigError(
                f"images.default_face_restorer must be one of {', '.join(FACE_RESTORERS)}, got {images.default_face_restorer!r}"
            )
        if self.policy.flagged_action not in FLAGGED_ACTIONS:
            raise ConfigError(
                f"policy.flagged_action must be one of {', '.join(FLAGGED_ACTIONS)}, got {self.policy.flagged_action!r}"
            )
        for name in ("max_upload_bytes", "max_upload_pixels", "max_upscaled_side", "max_hires_side", "max_loopback"):
            if getattr(images, name) < 1:
                raise ConfigError(f"images.{name} must be at least 1, got {getattr(images, name)}")
        if not 0 < images.segment_threshold < 1 or not 0 <= images.segment_dilation <= MAX_SEGMENT_DILATION:
            raise ConfigError(
                f"images.segment_threshold must be above 0 and below 1 (got {images.segment_threshold!r}) and "
                f"images.segment_dilation from 0 to {MAX_SEGMENT_DILATION} pixels (got {images.segment_dilation!r})"
            )
        for name, days in (("images.keep_days", images.keep_days), ("policy.audit_retention_days", self.policy.audit_retention_days)):
            if not 0 <= days <= MAX_RETENTION_DAYS:
                raise ConfigError(f"{name} must be a number of days from 0 (keep forever) to {MAX_RETENTION_DAYS}, got {days}")

    def _check_sampling_defaults(self) -> None:
        """limits.default_sampler (an A1111 1.10 name, or a combined one such as "DPM++ 2M
        Karras"), default_rng and default_ensd, each named with what is allowed."""
        limits = self.limits
        try:
            checked_choice(limits.default_sampler)
        except ValueError as error:
            raise ConfigError(f"limits.default_sampler: {error}") from None
        if limits.default_rng not in RNG_SOURCES:
            raise ConfigError(f"limits.default_rng must be one of {', '.join(RNG_SOURCES)}, got {limits.default_rng!r}")
        if not 0 <= limits.default_ensd < 2**32:
            raise ConfigError(f"limits.default_ensd must be between 0 and {2**32 - 1}, got {limits.default_ensd}")

    def _check_model_vaes(self) -> None:
        files = vae_files(self.vae_dirs, [m.source for m in self.models])
        for model in self.models:
            try:
                resolve_vae(AUTOMATIC, model.source, model.vae, files)
            except UnknownVaeError as error:
                raise ConfigError(
                    f"model {model.name!r}: vae {model.vae!r} is not a file in vae_dirs {list(self.vae_dirs)} "
                    f'(write "None" for the VAE baked into the model). {error}'
                ) from None

    def with_models(self, tables: Sequence[Mapping[str, Any]]) -> Settings:
        """These settings serving the models of ``tables`` ([[models]] tables, as a rescan of
        the [a1111] folders merges them); ConfigError when one is wrong or the default is gone."""
        models = tuple(_build(ModelSettings, table, f"models[{i}].") for i, table in enumerate(tables))
        return replace(self, models=models)

    def model(self, name: str) -> ModelSettings | None:
        return next((model for model in self.models if model.name == name), None)

    def worker_config(self, hashes: Mapping[str, str] | None = None) -> WorkerConfig:
        """The worker's start-up config; ``hashes`` are the sha256 of model files already
        known, by path (bot.model_catalog), so the worker never hashes them itself."""
        tuned = {option.name: getattr(self.worker, option.name) for option in fields(WorkerOptions)}
        hashes = hashes or {}
        return WorkerConfig(
            models=tuple(m.spec(hashes.get(m.source, "")) for m in self.models),
            default_model=self.default_model,
            outputs_dir=str(Path(self.outputs_dir).resolve()),
            preload=(self.default_model,),
            upscaler_dirs=tuple(str(Path(d).resolve()) for d in self.images.upscaler_dirs),
            face_restorer_dirs=tuple(str(Path(d).resolve()) for d in self.images.face_restorer_dirs),
            upscale_tile=self.images.upscale_tile,
            upscale_tile_overlap=self.images.upscale_tile_overlap,
            embedding_dirs=tuple(str(Path(d).resolve()) for d in self.prompts.embedding_dirs),
            lora_dirs=tuple(str(Path(d).resolve()) for d in self.prompts.lora_dirs),
            vae_dirs=tuple(str(Path(d).resolve()) for d in self.vae_dirs),
            safety_checker=self.policy.safety_checker,
            describe=self.describe.models(),
            segmentation_model=self.images.segmentation_model,
            # What /imagine makes when given nothing: the default model's square, default count.
            warmup_shape=(self.model(self.default_model).base_size,) * 2 + (self.limits.default_count,),
            **{
                **tuned,
                "compile_cache_dir": str(Path(self.worker.compile_cache_dir).resolve()) if self.worker.compile_cache_dir else "",
            },
        )

def load_settings(
    path: str | Path | None = "config.toml", environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the TOML file at `path` when it exists, then the environment.

    Relative paths in the file, and the relative defaults it leaves out, are read from the
    file's folder (bot.config_paths); those in the environment from the current directory.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None and Path(path).is_file():
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from error
        resolve_against_folder(data, Path(path).parent, _relative_path_defaults())
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX):
            parts = key.removeprefix(ENV_PREFIX).lower().split("__")
            _set_nested(data, parts, _parse_env_value(raw))
    if environ.get("DISCORD_TOKEN") and not data.get("discord", {}).get("token"):
        _set_nested(data, ["discord", "token"], environ["DISCORD_TOKEN"])
    a1111 = _build(A1111Settings, data.get("a1111", {}), "a1111.")
    if a1111.root:
        _add_a1111_models(data, a1111)
    return _build(Settings, data, "")


def discover(entries: Sequence[Any], a1111: A1111Settings) -> tuple[list[dict[str, Any]], CheckpointScan, list[SkippedFile]]:
    """The [[models]] tables merged with the checkpoints under [a1111]'s folders, the scan, and
    every file skipped with its reason. Only headers of new or changed files are read."""
    scan = scan_checkpoints(a1111.folders("checkpoint_dirs"), SHARED_INSPECTOR)
    tables, left_out = merged_model_entries(entries, scan)
    return tables, scan, [*scan.skipped, *left_out]


def _add_a1111_models(data: dict[str, Any], a1111: A1111Settings) -> None:
    """Discovered checkpoints as [[models]], A1111's folders before the configured LoRA,
    embedding and upscaler folders, and its first checkpoint as default model when none is set."""
    root = Path(a1111.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"a1111.root {a1111.root!r} is not a folder: give the stable-diffusion-webui folder")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ConfigError("models must be an array of [[models]] tables")
    tables, _scan, skipped = discover(entries, a1111)
    if not tables:
        reasons = "".join(f"\n  - {file.path}: {file.reason}" for file in skipped[:5])
        raise ConfigError(
            f"no models: [a1111] found no checkpoint it can serve in {', '.join(a1111.folders('checkpoint_dirs'))}"
            f" and no [[models]] are configured{reasons}"
        )
    data["model_entries"] = entries
    data["models"] = tables
    if "default_model" not in data:
        data["default_model"] = next((t["name"] for t in tables if not t.get("hidden")), tables[0]["name"])
    for table, key, kind in (
        ("prompts", "lora_dirs", "lora_dirs"),
        ("prompts", "embedding_dirs", "embedding_dirs"),
        ("images", "upscaler_dirs", "upscaler_dirs"),
        ("images", "face_restorer_dirs", "face_restorer_dirs"),
    ):
        section = data.setdefault(table, {})
        if isinstance(section, dict):
            configured = section.get(key, getattr(_SECTIONS[table], key))
            if isinstance(configured, list | tuple):
                section[key] = [*a1111.folders(kind), *(d for d in configured if d not in a1111.folders(kind))]
    configured = data.get("vae_dirs", Settings.vae_dirs)  # a top-level setting, not a section's
    if isinstance(configured, list | tuple):
        data["vae_dirs"] = [*a1111.folders("vae_dirs"), *(d for d in configured if d not in a1111.folders("vae_dirs"))]


_SECTIONS: dict[str, type] = {
    "": Settings, "images": ImageSettings, "prompts": PromptSettings, "worker": WorkerSettings, "a1111": A1111Settings,
    "describe": DescribeSettings,
}


def _relative_path_defaults() -> dict[tuple[str, str], Any]:
    """The defaults of the path settings (bot.config_paths.FOLDER_SETTINGS and the database)."""
    tables = _SECTIONS
    return {
        (table, key): getattr(tables[table], key)
        for table, key in (*FOLDER_SETTINGS, ("", "database_url"))
    }


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_nested(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """A dataclass from a TOML table, refusing unknown keys and values of the wrong type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a table")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if not f.metadata.get("internal")}
    if cls is Settings and "model_entries" in data:  # put there by load_settings, never by a file
        known.add("model_entries")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(where + k for k in unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{where}{name}"
        hint = hints[name]
        if name == "models":
            if not isinstance(value, list) or not value:
                raise ConfigError("models must be a non-empty array of [[models]] tables")
            values[name] = tuple(_build(ModelSettings, item, f"models[{i}].") for i, item in enumerate(value))
        elif name == "model_entries":
            values[name] = tuple(dict(item) for item in value if isinstance(item, Mapping))
        elif isinstance(hint, type) and is_dataclass(hint):
            values[name] = _build(hint, value, f"{key}.")
        else:
            values[name] = _check_type(key, value, hint)
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"{where or 'config'}: {error}") from error


def _check_type(key: str, value: Any, hint: Any) -> Any:
    if getattr(hint, "__origin__", None) is tuple:  # tuple[str, ...]: a TOML array of strings
        item = hint.__args__[0]
        if isinstance(value, list) and all(isinstance(v, item) for v in value):
            return tuple(value)
        raise ConfigError(f"{key} must be an array of {item.__name__}, got {_shown(key, value)}")
    allowed = getattr(hint, "__args__", (hint,))
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(t is not type(None) and isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed):
        return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed if t is not type(None))
    raise ConfigError(f"{key} must be {names}, got {_shown(key, value)}")


def without_password(text: str) -> str:
    """Text with the password of every URL in it replaced by ***: a database URL may hold one,
    and the URL is printed (the CLI) or echoed by a configuration error."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _shown(key: str, value: Any) -> str:
    if key in SECRET_SETTINGS:
        return f"a {type(value).__name__} (not shown: it is a secret)"
    return without_password(repr(value))

