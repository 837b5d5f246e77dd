"""The boundaries between the bot, the GPU worker and the database: import-linter checks the
contracts in pyproject.toml ([tool.importlinter]) over every import, indirect ones included,
and the bot's own process is checked to load no machine-learning library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
HEAVY = ("torch", "torchvision", "diffusers", "transformers", "spandrel", "safetensors", "accelerate", "peft")


def test_the_import_contracts_are_kept():
    done = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_bot_with_every_command_loaded_imports_no_machine_learning_library():
    """What the contracts cannot see: an import made at run time (importlib, a plugin)."""
    code = (
        "import importlib, sys\n"
        "import bot.cli, bot.client\n"
        "for extension in bot.client.EXTENSIONS:\n"
        "    importlib.import_module(extension)\n"
        f"heavy = [name for name in {HEAVY!r} if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
