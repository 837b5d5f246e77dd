"""Prompt token counts for the user: the queued message's "Tokens" field, and a private
warning when a model that reads only one 75-token chunk is given a longer prompt.

Counting uses the bundled CLIP tokenizer on `tokenizers` (inference.common.clip_tokens), never
transformers. A positive prompt split by AND is counted as A1111 counts it: its longest part (each part is
encoded, and cut, on its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.common.clip_tokens import count_prompt_tokens, words_past_first_chunk
from inference.common.network_files import strip_loras
from inference.common.prompt_chunks import CHUNK_LENGTH
from inference.common.prompt_parser import composable_prompts
from inference.common.protocol import JobKind

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.jobs.params import JobParameters
    from db.models import Job

WARNING_QUOTE_LIMIT = 1500  # the warning must stay within a 2000-character message


def _counted(tokens: int, chunks: int) -> str:
    return f"{tokens} ({chunks} chunk{'s' if chunks != 1 else ''})"


def longest_and_part(prompt: str, steps: int) -> str:
    """The part of a positive prompt split by AND with the most tokens (LoRA tags removed
    first, as A1111 does); a prompt without AND as it is."""
    parts = composable_prompts(strip_loras(prompt))
    if len(parts) == 1:
        return prompt
    return max((text for text, _ in parts), key=lambda text: count_prompt_tokens(text, steps)[0])


def token_summary(job: Job | JobParameters) -> str | None:
    """"83 (2 chunks)", with the negative prompt's count after it when there is one; None for
    jobs that encode no prompt (upscales)."""
    if job.kind in (JobKind.UPSCALE, JobKind.RESTORE_FACES) or not job.prompt:
        return None
    summary = _counted(*count_prompt_tokens(longest_and_part(job.prompt, job.steps), job.steps))
    if job.negative_prompt:
        summary += f" · negative {_counted(*count_prompt_tokens(job.negative_prompt, job.steps))}"
    return summary


def cut_warning(settings: Settings, params: JobParameters) -> str | None:
    """What the model will not read of the prompts, for a model set to one chunk."""
    model = settings.model(params.model)
    if model is None or model.long_prompts or params.kind in (JobKind.UPSCALE, JobKind.RESTORE_FACES):
        return None
    parts = []
    prompt = longest_and_part(params.prompt, params.steps) if params.prompt else params.prompt
    for name, text in (("prompt", prompt), ("negative prompt", params.negative_prompt)):
        tokens, _ = count_prompt_tokens(text, params.steps) if text else (0, 1)
        if tokens > CHUNK_LENGTH:
            cut = words_past_first_chunk(text, params.steps)
            if len(cut) > WARNING_QUOTE_LIMIT // 2:
                cut = cut[: WARNING_QUOTE_LIMIT // 2 - 1] + "…"
            parts.append(f"The {name} has {tokens} tokens, so these words are cut: `{cut}`")
    if not parts:
        return None
    return (
        f"Model `{model.name}` reads only the first {CHUNK_LENGTH} tokens of a prompt. "
        + " ".join(parts)
        + ". Shorten it, or move what matters to the front."
    )
