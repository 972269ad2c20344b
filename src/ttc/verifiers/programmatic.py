"""Verifiers from plain Python callables: unit tests, answer checkers, oracles."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from ttc.context import Context
from ttc.needs import NOTHING, Needs, needs_of
from ttc.types import Candidate, Problem
from ttc.verifiers.base import Verifier, as_numbers

ScoreFn = Callable[[Problem, Candidate], float | Awaitable[float]]


class Programmatic(Verifier):
    """Scores each candidate with `fn(problem, candidate) -> float` (sync or async).

    `log_scale=True` declares the scores log-probabilities (weighted votes use exp(score)).
    `needs` declares what `fn` reads beyond the text (e.g. `ttc.Needs(logprobs=True)` for a
    function of `candidate.completion.logprobs`): the holding strategy asks its sampler for it.

    Source: none (a plain callable). Deviations: none.

    Args:
        fn: `fn(problem, candidate) -> float`, sync or async.
        name: the score's name.
        log_scale: the scores are log-probabilities.
        needs: what `fn` reads from each candidate's completion (default: nothing but the text).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> check = ttc.verifiers.Programmatic(lambda problem, c: float(c.answer == "7"))
        >>> ttc.BestOfN(n=2, verifier=check).solve("3 + 4?", Scripted(["The answer is 5.", "The answer is 7."])).answer
        '7'
    """

    def __init__(self, fn: ScoreFn, name: str = "programmatic", log_scale: bool = False, needs: Needs = NOTHING):
        self.fn = fn
        self.name = name
        self.log_scale = bool(log_scale)
        self.needs = needs
        needs_of(self)  # refuses anything but a Needs, naming it

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        scores = []
        for candidate in candidates:
            value = self.fn(problem, candidate)
            if inspect.isawaitable(value):
                value = await value
            scores.append(value)
        return as_numbers(self, scores)


def gold_answer_oracle() -> Programmatic:
    """1.0 when a candidate's answer matches the problem's gold answer, else 0.0 (for tests and ceilings)."""
    from ttc.answers import equivalent

    return Programmatic(lambda p, c: float(c.answer is not None and equivalent(c.answer, p.answer)),
                        name="oracle")
