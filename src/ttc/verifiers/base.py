"""The outcome-verifier interface, and the one place where verifier cost is accounted."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from ttc.context import Context, split_verifier_cost
from ttc.errors import InvalidInput
from ttc.needs import NOTHING, Needs
from ttc.types import Candidate, Problem
from ttc.votes import check_scores


class Verifier(abc.ABC):
    """Scores whole candidates; higher is better. Implement `score`; call through `score_candidates`.

    `free` verifiers (computed from what generation already returned, like logprob confidence)
    spend no verifier calls; all others count one call per candidate scored.

    Scores follow one rule everywhere (`ttc.votes`): NaN and +inf are refused, -inf means "the
    worst" (weight 0, probability 0). A verifier whose scores are log-probabilities declares
    `log_scale = True`; weighted votes then use exp(score). Other scores must be >= 0 to weight
    a vote.

    A verifier that reads more than a candidate's text declares it in `needs` (`ttc.needs.Needs`:
    token logprobs, top logprobs, hidden states); every strategy that holds the verifier asks its
    sampler for them when it is built (see docs/verifiers.md, "Declared needs").
    """

    name: str = "verifier"
    free: bool = False
    #: what this verifier reads from each sampled candidate beyond its text
    needs: Needs = NOTHING
    #: scores are log-probabilities (<= 0): weighted votes exponentiate them
    log_scale: bool = False

    @abc.abstractmethod
    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        """One score per candidate, in order."""


def as_numbers(verifier: Verifier, values: Sequence[object]) -> list[float]:
    """The scores as floats; None, a string or anything float() refuses raises InvalidInput
    naming the verifier (instead of a bare TypeError from deep inside a strategy)."""
    out = []
    for i, value in enumerate(values):
        try:
            if value is None or isinstance(value, (str, bytes, bool)):
                raise TypeError
            out.append(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"verifier {verifier.name!r} ({type(verifier).__name__}) returned {value!r} "
                               f"for candidate {i}: a score must be a number") from None
    return out


async def score_candidates(verifier: Verifier, problem: Problem, candidates: Sequence[Candidate],
                           ctx: Context) -> list[float]:
    """Score `candidates`, enforce the verifier budget, and charge each candidate its share.

    Each scored candidate is charged one verifier call (unless the verifier is free); verifier
    tokens spent by this call are split over the candidates so that the totals stay exact.
    """
    if not candidates:
        return []
    if not verifier.free:
        ctx.reserve_verifier_calls(len(candidates))
    tokens_before = ctx.usage.verifier_tokens
    scores = check_scores(verifier.name, as_numbers(verifier, await verifier.score(problem, candidates, ctx)))
    if len(scores) != len(candidates):
        raise InvalidInput(f"verifier {verifier.name!r} returned {len(scores)} scores for {len(candidates)} candidates")
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.scores[verifier.name] = score
    split_verifier_cost([c.usage for c in candidates], ctx.usage.verifier_tokens - tokens_before, verifier.free)
    return scores
