"""A `Candidate` from a `Completion`: the one rule for where its answer comes from.

The answer is read from the final content only (`Completion.text`: for a reasoning model, what
follows its thinking), never from the thinking. A candidate cut inside its thinking has no answer
at all: its content never started (a strategy that forces an answer, such as an answer probe,
builds its candidate itself and says so). Votes, verifiers and PRMs see `Candidate.text`, the
content; the thinking is `Candidate.thinking`, for a scorer that declares `Needs(thinking=True)`.
"""

from __future__ import annotations

from typing import Any

from ttc.answers import answer_fields
from ttc.types import Candidate, Completion, Usage


def answer_of(completion: Completion) -> dict[str, Any]:
    """`answer`, `answer_source`, `thinking` and `thinking_closed` of a candidate built from `completion`."""
    thinking = completion.thinking
    if thinking is not None and not thinking.closed:
        fields: dict[str, Any] = {"answer": None, "answer_source": None}
    else:
        fields = answer_fields(completion.text, completion.finish_reason != "length")
    return fields | thinking_fields(completion)


def thinking_fields(completion: Completion | None) -> dict[str, Any]:
    """`thinking` and `thinking_closed` of a candidate built from `completion` (None without thinking)."""
    thinking = None if completion is None else completion.thinking
    if thinking is None:
        return {"thinking": None, "thinking_closed": None}
    return {"thinking": thinking.text, "thinking_closed": thinking.closed}


def from_completion(completion: Completion, usage: Usage, **fields: Any) -> Candidate:
    """The candidate of one sampled completion: its content as text, the answer read from it."""
    return Candidate(text=completion.text, **answer_of(completion), completion=completion, usage=usage,
                     finish_reason=completion.finish_reason, **fields)


__all__ = ["answer_of", "from_completion", "thinking_fields"]
