"""A1111's extra networks without torch: finding embedding and LoRA files, reading <lora:...> tags.

The bot imports this module to offer and check names (autocomplete, refusing an unknown LoRA
before anything is queued) and the bot never imports torch; inference/networks.py uses the same
lookups and the same tag parser to load the files, so both sides agree on what a prompt means.

Syntax, as AUTOMATIC1111 writes it:
- an embedding (textual inversion) is used by writing its name, the file name without suffix,
  as a word of the prompt;
- a LoRA is used with ``<lora:name>``, ``<lora:name:weight>`` or ``<lora:name:te:unet>`` (one
  weight for the text encoder and another for the UNet), or the named forms ``te=``/``unet=``.
  ``<lyco:...>`` is A1111's alias of ``<lora:...>``. The tag is taken out of the prompt.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

# A1111 reads embeddings from .pt/.bin (pickled; the worker unpickles them with
# torch.load(weights_only=True), which cannot run code) and .safetensors. Earlier in the tuple
# wins when one folder holds the same name twice: safetensors cannot carry code at all.
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
# A1111's Lora folder takes the same three kinds; diffusers converts kohya/A1111 key names from
# a state dict whatever file it came from, so the worker reads .pt/.ckpt safely itself.
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# How many names an "unknown LoRA" message lists, and how much of each it shows: Discord
# refuses a reply over 2,000 characters, and the member then hears nothing.
MAX_LISTED_NAMES = 10
LISTED_NAME_LIMIT = 40

# The tag types we read. Other <word:...> tags are left in the prompt as text: they are not ours.
_LORA_TYPES = ("lora", "lyco")
_HYPERNET = "hypernet"
_TAG_START = re.compile(r"<\s*(lora|lyco|hypernet)\s*:", re.IGNORECASE)
_TAG = re.compile(r"<\s*(?:lora|lyco)\s*:[^<>]*>", re.IGNORECASE)
# Plain decimal numbers only: float() would also take "nan", "inf" and "1_0".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class MalformedNetworkError(ValueError):
    """A <lora:...> tag that cannot be read, or an extra network we do not support.

    The message quotes the tag and says how to write it; it is shown to the user as it is.
    """


@dataclass(frozen=True, slots=True)
class LoraUse:
    """One <lora:...> tag: the LoRA's name and its strength.

    ``weight`` is A1111's first number (the text encoder's multiplier, and the UNet's too unless
    ``unet_weight`` is given: the second number, or ``unet=``).
    """

    name: str
    weight: float = 1.0
    unet_weight: float | None = None

    @property
    def text_encoder(self) -> float:
        return self.weight

    @property
    def unet(self) -> float:
        return self.weight if self.unet_weight is None else self.unet_weight


# --- files ---------------------------------------------------------------------------------


def embedding_files(dirs: Iterable[str | Path]) -> dict[str, Path]:
    """Embedding name (the file name without suffix) -> file, sorted by name.

    Folders are walked recursively, as A1111 walks embeddings/ (people sort embeddings into
    subfolders). The first folder listed wins a name; within a folder, the shallower file.
    """
    return _find_files(dirs, EMBEDDING_SUFFIXES)


def lora_files(dirs: Iterable[str | Path]) -> dict[str, Path]:
    """LoRA name (the file name without suffix) -> file, sorted by name; walked as embeddings."""
    return _find_files(dirs, LORA_SUFFIXES)


def find_lora(name: str, files: Mapping[str, Path]) -> Path | None:
    """The file of a LoRA named in a tag: its exact name, else the same name in another case.

    Prompts copied from elsewhere often differ from the file name in case only; on a case
    sensitive file system two files may differ so too, and then the first sorted one wins.
    """
    if name in files:
        return files[name]
    folded = name.casefold()
    return next((path for known, path in files.items() if known.casefold() == folded), None)


def unknown_lora_message(name: str, known: Iterable[str]) -> str:
    """The user-facing refusal of a LoRA name: the bot and the worker say the same."""
    names = sorted(known, key=str.casefold)
    if not names:
        return f"Unknown LoRA `{_excerpt(name)}`: this server has no LoRAs installed."
    listed = ", ".join(_excerpt(known_name, LISTED_NAME_LIMIT) for known_name in names[:MAX_LISTED_NAMES])
    more = f" and {len(names) - MAX_LISTED_NAMES} more" if len(names) > MAX_LISTED_NAMES else ""
    return f"Unknown LoRA `{_excerpt(name)}`. Available: {listed}{more}."


def _find_files(dirs: Iterable[str | Path], suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue  # a missing folder means "none there": the defaults name A1111's folders
        files = [path for path in walk_files(folder) if path.suffix.lower() in suffixes]
        # Shallower first, then by name, then by suffix preference: the same on every system.
        files.sort(
            key=lambda path: (
                len(path.relative_to(folder).parts),
                str(path.parent),
                path.stem,
                suffixes.index(path.suffix.lower()),
            )
        )
        for path in files:
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def walk_files(folder: Path) -> Iterable[Path]:
    """Files under ``folder``, following links (A1111 does) but never around a link loop.

    Hidden files and folders (a leading dot: .git, .cache, editors' temporaries) are skipped.
    """
    seen: set[str] = set()
    for root, subdirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        for name in names:
            path = Path(root, name)
            if not name.startswith(".") and path.is_file():
                yield path


# --- <lora:...> tags -----------------------------------------------------------------------


def find_loras(prompt: str) -> list[LoraUse]:
    """The LoRA tags of a prompt, in order (a LoRA named twice is listed twice).

    Raises MalformedNetworkError for a tag that cannot be read (``<lora:>``, a weight that is
    not a number, a tag without its ``>``) and for ``<hypernet:...>``.
    """
    uses = []
    for start in _TAG_START.finditer(prompt):
        kind = start.group(1).lower()
        end = _tag_end(prompt, start.end())
        if end is None:
            excerpt = _excerpt(prompt[start.start() :])
            raise MalformedNetworkError(f"`{excerpt}` is not closed: write `<{kind}:name:weight>`.")
        tag = prompt[start.start() : end + 1]
        if kind == _HYPERNET:
            raise MalformedNetworkError(
                f"`{_excerpt(tag)}`: hypernetworks are not supported; use a LoRA "
                "(`<lora:name:weight>`) or an embedding instead."
            )
        uses.append(_parse_lora(tag, prompt[start.end() : end]))
    return uses


def strip_loras(prompt: str) -> str:
    """The prompt without its <lora:...>/<lyco:...> tags, as A1111 removes them (nothing else
    changes: the text around a tag stays as written)."""
    return _TAG.sub("", prompt)


def _tag_end(prompt: str, body_start: int) -> int | None:
    """Where the tag's ``>`` is, or None when another ``<`` or the end comes first."""
    for index in range(body_start, len(prompt)):
        if prompt[index] == ">":
            return index
        if prompt[index] == "<":
            return None
    return None


def _parse_lora(tag: str, body: str) -> LoraUse:
    parts = [part.strip() for part in body.split(":")]
    name, args = parts[0], parts[1:]
    if not name:
        raise MalformedNetworkError(f"`{_excerpt(tag)}` has no LoRA name: write `<lora:name:weight>`.")
    positional: list[float] = []
    named: dict[str, float] = {}
    for arg in args:
        key, equals, value = arg.partition("=")
        key = key.strip().lower() if equals else ""
        if equals and key not in ("te", "unet", "dyn"):
            raise MalformedNetworkError(
                f"`{_excerpt(tag)}`: unknown option `{key}`; LoRA tags take `te=` and `unet=`."
            )
        number = _weight(tag, value if equals else arg)
        if key:
            named[key] = number
        else:
            positional.append(number)
    if len(positional) > 2 and "dyn" not in named:
        named["dyn"] = positional[2]
    if "dyn" in named:
        # A1111's third number cuts the LoRA to fewer dimensions; diffusers has no such thing,
        # and running it whole would silently differ from what the prompt asks.
        raise MalformedNetworkError(
            f"`{_excerpt(tag)}`: the LoRA dimension option (a third number, `dyn=`) is not "
            "supported; write `<lora:name:weight>` or `<lora:name:te_weight:unet_weight>`."
        )
    weight = named.get("te", positional[0] if positional else 1.0)
    unet = named.get("unet", positional[1] if len(positional) > 1 else None)
    return LoraUse(name, weight, unet)


def _weight(tag: str, text: str) -> float:
    text = text.strip()
    if not _NUMBER.fullmatch(text) or not math.isfinite(value := float(text)):
        shown = text or "nothing"
        raise MalformedNetworkError(
            f"`{_excerpt(tag)}`: the weight must be a number such as 0.8, got `{shown}`."
        )
    return value


def _excerpt(text: str, limit: int = 80) -> str:
    """Text from a prompt, quoted in a message between backticks: one line, short, no backtick
    to end the quote, no mention (@everyone) that pings."""
    text = " ".join(text.split()).replace("`", "'").replace("@", "@\u200b")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- embeddings in prompts ---------------------------------------------------------------


def token_text(name: str) -> str:
    """A name as CLIP's tokenizer normalises text (NFC, single spaces, lower case), so the token
    made from it is found in prompts the tokenizer normalised the same way."""
    return unicodedata.normalize("NFC", " ".join(name.split())).lower()


@lru_cache(maxsize=8)
def embedding_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """Where the names stand in a prompt as whole words (no letter, digit or underscore touching
    them), in any case and with any white space between their words, as the tokenizer sees it.
    Longest first, so "bad-hands" wins over "bad" at the same place."""
    alternatives = "|".join(
        r"\s+".join(re.escape(word) for word in name.split(" "))
        for name in sorted(names, key=len, reverse=True)
    )
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def used_embeddings(prompts: Sequence[str], names: tuple[str, ...]) -> list[str]:
    """The names (as token_text writes them) of the embeddings the prompts use; ``names`` are
    the folder's, normalised by token_text."""
    pattern = embedding_pattern(names)
    return sorted({token_text(match.group(0)) for prompt in prompts for match in pattern.finditer(prompt)})
