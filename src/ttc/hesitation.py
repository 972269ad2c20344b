"""Hesitation words: where Solve-Detect-Verify (Zhong et al., 2025) looks for a finished solution.

A reasoning trace that hesitates ("wait", "hmm", "let me check") has often already written its
answer. The detector (`ttc.probes.SolutionComplete`) asks at these words whether the solution is
complete, and the verifier (`ttc.verifiers.FlexVerifier`) numbers a solution's paragraphs by cutting
it before them, as the authors' code does. Pure functions, shared by both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ttc.forcing import marker_token_ids, prompt_state
from ttc.thinking import ThinkingFormat, opened_by_text

#: the authors' hesitation keywords (`solve_detect_verify.py`, `MathProblemSolver.hesitation_keywords`)
HESITATION_WORDS: tuple[str, ...] = ("wait", "double-check", "alternatively", "hmm", "let me check",
                                     "let me double-check", "make sure", "another way", "let me verify",
                                     "to confirm")
#: what a reasoning model's fast check writes as its thinking (the authors' placeholder)
DONE_THINKING = "\nOkay, I think I have finished thinking.\n"
#: the text after a closed thinking, before the model's answer (the authors' "\n</think>\n\n")
AFTER_THINKING = "\n\n"
#: a step boundary: the start of the text, a line break, or the end of a sentence and a space
_BOUNDARY = r"(?:^|(?<=\n)|(?<=[.!?:]\s)|(?<=[.!?:]\s\s))"


def hesitation_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """The regex that finds any of `words` (any case) at a step boundary, as a whole word."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(_BOUNDARY + r"[ \t\"'*(]*(" + alternatives + r")(?![A-Za-z])", re.IGNORECASE)


def find_hesitations(text: str, pattern: re.Pattern[str], start: int = 0) -> list[tuple[int, str]]:
    """(character offset, word) of every hesitation word of `text` that begins at or after `start`."""
    return [(m.start(1), m.group(1)) for m in pattern.finditer(text) if m.start(1) >= start]


def split_paragraphs(text: str, pattern: re.Pattern[str]) -> list[str]:
    """`text` cut before each hesitation word: the paragraphs the verifier indexes from 0 (empty
    pieces dropped, as the authors' `split_solution_by_hesitation` does)."""
    cuts = [0] + [at for at, _ in find_hesitations(text, pattern)] + [len(text)]
    pieces = (text[a:b].strip() for a, b in zip(cuts, cuts[1:], strict=False))
    return [p for p in pieces if p]


def closing_placeholder(fmt: ThinkingFormat, opened: bool | None) -> str:
    """What closes a reasoning model's thinking at once, the authors' way (their fast checks and
    completeness question): the placeholder thinking and the end marker after a prompt that opened
    the thinking; the start marker first where the prompt holds none; nothing where it is closed."""
    if opened is False:
        return ""
    return ("" if opened else fmt.start) + DONE_THINKING + fmt.end + AFTER_THINKING


async def close_thinking(generator: Any, prompt: str | Sequence[int], fmt: ThinkingFormat) -> str | list[int]:
    """`prompt` (text or token ids) followed by `closing_placeholder`: the model then answers at once."""
    if isinstance(prompt, str):  # a chat endpoint's messages are continued, not extended as text
        return generator.continue_prompt(prompt, closing_placeholder(fmt, opened_by_text(prompt, fmt)))
    close = closing_placeholder(fmt, prompt_state(prompt, await marker_token_ids(generator, fmt)))
    return list(prompt) + list(await generator.tokenize(close)) if close else list(prompt)
