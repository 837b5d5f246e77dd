"""What every prompt a job will run is checked for before its row is written.

Its LoRA tags against this server's files (bot.prompts.networks), and its prompt editing and
alternation within what is read (inference.common.prompt_parser.schedule_problem: past that bound a
prompt would be used as it is, its [from:to:when] left as text), and the positive prompt's AND
weights (inference.common.prompt_parser.and_weight_problem: A1111 would keep a weight that is not
a number as text). /imagine's prompts, with
their styles and inline parameters applied, and each X/Y plot cell's (Prompt S/R makes new
ones) go through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import InvalidOption
from bot.prompts.networks import check_networks
from inference.common.network_files import strip_loras
from inference.common.prompt_parser import and_weight_problem, schedule_problem

if TYPE_CHECKING:
    from bot.config import PromptSettings, Settings


def check_prompt_texts(settings: Settings | PromptSettings, *texts: str | None) -> None:
    """Raise InvalidOption, in words for the member, for the first problem in ``texts`` (the
    prompt, the negative prompt...; None and "" are skipped). The first is the positive prompt:
    AND is read there only, as in A1111."""
    check_networks(settings, *texts)
    for text in texts:
        problem = schedule_problem(text) if text else None
        if problem:
            raise InvalidOption(f"Prompt editing and alternation can't be read in this prompt: {problem}.")
    problem = and_weight_problem(strip_loras(texts[0])) if texts and texts[0] else None
    if problem:
        raise InvalidOption(f"AND can't be read in this prompt: {problem}.")
