"""Majority vote over sampled answers (self-consistency)."""

from __future__ import annotations

from ttc.context import Context
from ttc.infos import VoteInfo
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.wrapping import as_verifier, check_n, sampler_for
from ttc.types import Problem, Result
from ttc.verifiers.base import Verifier, score_candidates
from ttc.votes import vote_weights, weighted_vote


class MajorityVote(Strategy):
    """Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning
    in Language Models"): sample n reasoning paths, extract each final answer, return the most
    frequent one. Answers vote together when `ttc.answers.equivalent` says they are equal.

    With a `verifier`, each vote is weighted by the candidate's score (weighted self-consistency,
    as in Li et al., 2023, "Making Language Models Better Reasoners with Step-Aware Verifier"),
    by the rule of `ttc.votes`: scores of a log-scale verifier (`mean_logprob`) are exponentiated,
    -inf weighs 0, other negative scores and NaN/+inf are refused. Ties go to the answer seen
    first, and `details["tie"]` lists the tied answers. If every weight is 0 (a confidence filter
    that dropped every trace), the unweighted plurality decides and `details["vote_fallback"]`
    says so. Candidates without an extractable answer do not vote.

    Deviations: answers vote together by `ttc.answers.equivalent` (math-verify equivalence), where
    the paper compares parsed answers for equality; ties go to the answer seen first.

    Args:
        n: candidates sampled (a positive int).
        sample: the single-candidate strategy repeated n times (default `Sample()`; e.g. `EarlyExit`).
        verifier: weights each vote by its score (a `Verifier` or a plain `fn(problem, candidate)`).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(["The answer is 7.", "The answer is 7.", "The answer is 5."])
        >>> ttc.MajorityVote(n=3).solve("3 + 4?", llm).details["votes"]
        {'7': 2.0, '5': 1.0}
    """

    name = "majority"

    def __init__(self, n: int = 8, sample: Sampler | None = None, verifier: Verifier | None = None):
        self.n = check_n(n)
        self.verifier = verifier = as_verifier(verifier)
        self.sample = sampler_for(sample, verifier, holder="MajorityVote")

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.sample.candidates(problem, ctx, self.n)
        weights = [1.0] * len(candidates)
        if self.verifier is not None:
            scores = await score_candidates(self.verifier, problem, candidates, ctx)
            weights = vote_weights(self.verifier.name, scores, self.verifier.log_scale)
        answer, votes, info = weighted_vote([c.answer for c in candidates], weights)
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage,
                      strategy=self.name, details=VoteInfo(votes=votes, **info))
