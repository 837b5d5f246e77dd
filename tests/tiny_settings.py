"""The settings every bot test and bot benchmark starts from: the tiny random-weight model
(inference.tiny) at 64 px and a few steps, with the database, outputs, upscalers, embeddings
and LoRA folders under one work folder. The tests' ``settings`` fixture (tests/conftest.py)
and the bot benchmarks (bench/simulated.py) differ only in what they pass here."""

from __future__ import annotations

from pathlib import Path

from bot.config import ImageSettings, LimitSettings, ModelSettings, PromptSettings, QueueSettings, Settings, WorkerSettings

DATABASE_FILE = "sdbot.sqlite3"  # in the work folder


def tiny_settings(
    workdir: Path,
    model_folder: Path,
    *,
    worker: WorkerSettings,
    description: str = "tiny test model",
    max_size: int = 128,
    max_pending_per_user: int = 5,
) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / DATABASE_FILE}",
        outputs_dir=str(workdir / "outputs"),
        default_model="tiny",
        models=(ModelSettings(name="tiny", source=str(model_folder), description=description, base_size=64),),
        limits=LimitSettings(min_size=64, max_size=max_size, max_pixels=max_size * max_size, default_steps=3, max_steps=60),
        queue=QueueSettings(max_pending_per_user=max_pending_per_user),
        worker=worker,
        images=ImageSettings(upscaler_dirs=(str(workdir / "upscalers"),)),
        prompts=PromptSettings(embedding_dirs=(str(workdir / "embeddings"),), lora_dirs=(str(workdir / "loras"),)),
    )
