"""Best-of-N: a verifier picks one of n sampled candidates."""

from __future__ import annotations

from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.infos import SelectionInfo
from ttc.smc import softmax
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.wrapping import as_verifier, check_n, sampler_for
from ttc.types import Problem, Result
from ttc.verifiers.base import Verifier, score_candidates

SELECTIONS = ("max", "softmax")


class BestOfN(Strategy):
    """Best-of-N sampling (rejection sampling with a reward model, as in Cobbe et al., 2021,
    "Training Verifiers to Solve Math Word Problems"): sample n candidates, score each with the
    verifier, return the highest-scoring one (ties: the first).

    `selection="softmax"` is Soft Best-of-N (Verdun et al., 2025, "Soft Best-of-n Sampling for
    Model Alignment"): pick candidate i with probability proportional to exp(score_i / temperature),
    drawn from the run's seeded RNG; temperature -> 0 recovers the max.

    Scores follow `ttc.votes`: NaN and +inf are refused (naming the verifier), -inf is the worst
    (never chosen by softmax unless every score is -inf).

    Deviations: the verifier is any ttc verifier (Cobbe et al. train a dedicated one); ties go to
    the first candidate.

    Args:
        n: candidates sampled (a positive int).
        verifier: scores the candidates (a `Verifier` or a plain `fn(problem, candidate)`).
        sample: the single-candidate strategy repeated n times (default `Sample()`).
        selection: "max" (the best score) or "softmax" (Soft Best-of-N).
        temperature: the softmax temperature (positive).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(["The answer is 5.", "The answer is 7."])
        >>> ttc.BestOfN(n=2, verifier=lambda problem, c: float(c.answer == "7")).solve("3 + 4?", llm).answer
        '7'
    """

    name = "best_of_n"

    def __init__(self, n: int = 8, verifier: Verifier | None = None, sample: Sampler | None = None,
                 selection: str = "max", temperature: float = 1.0):
        if verifier is None:
            raise InvalidInput("BestOfN needs a verifier= to choose with (e.g. ttc.verifiers.LogprobConfidence())")
        if selection not in SELECTIONS:
            raise InvalidInput(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
        if temperature <= 0:
            raise InvalidInput(f"temperature must be positive, got {temperature!r}")
        self.n = check_n(n)
        self.verifier = verifier = as_verifier(verifier)
        self.selection = selection
        self.temperature = temperature
        self.sample = sampler_for(sample, verifier, holder="BestOfN")

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.sample.candidates(problem, ctx, self.n)
        scores = await score_candidates(self.verifier, problem, candidates, ctx)
        if self.selection == "max":
            chosen = max(range(len(scores)), key=scores.__getitem__)
        else:
            chosen = ctx.rng.choices(range(len(scores)), weights=softmax(scores, self.temperature))[0]
        return Result(problem=problem, answer=candidates[chosen].answer, candidates=candidates,
                      usage=ctx.usage, strategy=self.name, details=SelectionInfo(chosen=chosen, scores=tuple(scores)))

