"""Confidence from the generator's own token log-probabilities: free, no extra model call."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttc.context import Context
from ttc.errors import InvalidInput, Unsupported, check_positive
from ttc.needs import Needs
from ttc.types import Candidate, Completion, Problem
from ttc.verifiers.base import Verifier

KINDS = ("mean_logprob", "self_certainty")


def mean_logprob(completion: Completion) -> float:
    """Mean log-probability of the sampled tokens (length-normalised sequence likelihood)."""
    if not completion.logprobs:
        return -math.inf
    return math.fsum(completion.logprobs) / len(completion.logprobs)


def self_certainty(completion: Completion) -> float:
    """Self-certainty (Kang et al., 2025, "Scalable Best-of-N Selection for LLMs via Self-Certainty").

    The paper averages KL(U || p) over positions, which needs the full next-token distribution.
    Deviation: engines return only the top-k logprobs, so we use the top-k form
    mean_i [ -(1/k) sum_{j<=k} log p_ij - log k ], the same quantity DeepConf calls token
    confidence up to the constant log k. Higher means more peaked (more certain) predictions.
    """
    if not completion.top_logprobs:
        return -math.inf
    per_token = []
    for top in completion.top_logprobs:
        k = len(top)
        if k:
            per_token.append(-math.fsum(top.values()) / k - math.log(k))
    return math.fsum(per_token) / len(per_token) if per_token else -math.inf


class LogprobConfidence(Verifier):
    """Scores a candidate by the model's own confidence in it: `mean_logprob` or `self_certainty`.

    It declares what it reads (`needs`): `mean_logprob` the token logprobs, `self_certainty` the
    top-`top_k` logprobs of every token; a strategy holding it asks its sampler for them.

    `mean_logprob` is a log-probability (<= 0): it declares `log_scale`, so a weighted vote uses
    exp(mean logprob), the geometric-mean token probability. `self_certainty` is >= 0 (the top-k
    mean of -log p is at least log k) and weights votes as it is.

    Source: mean token log-probability (length-normalised likelihood), and self-certainty (Kang et
    al., 2025, "Scalable Best-of-N Selection for LLMs via Self-Certainty"). Deviations: self-certainty
    is computed from the top-k logprobs, not the full next-token distribution (see `self_certainty`).

    Args:
        kind: "mean_logprob" or "self_certainty".
        top_k: top logprobs per token for `self_certainty`.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> unsure, sure = ScriptedResponse("It is 5.", (-3.0,) * 5), ScriptedResponse("It is 7.", (-0.1,) * 5)
        >>> llm = Scripted([unsure, sure])
        >>> ttc.BestOfN(n=2, verifier=ttc.verifiers.LogprobConfidence()).solve("3 + 4?", llm).answer
        '7'
    """

    free = True

    def __init__(self, kind: str = "mean_logprob", top_k: int = 5):
        if kind not in KINDS:
            raise InvalidInput(f"unknown confidence kind {kind!r}; known: {', '.join(KINDS)}")
        self.kind = kind
        self.name = kind
        if kind == "self_certainty":
            self.needs = Needs(top_logprobs=check_positive("LogprobConfidence.top_k", top_k))
        else:
            self.needs = Needs(logprobs=True)
        self.log_scale = kind == "mean_logprob"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        fn = mean_logprob if self.kind == "mean_logprob" else self_certainty
        scores = []
        for candidate in candidates:
            completion = candidate.completion
            if completion is None:
                raise InvalidInput(f"{self.kind} needs candidates that carry their completion")
            has_tokens = bool(completion.token_ids or completion.text)
            if self.kind == "mean_logprob" and completion.logprobs is None and has_tokens:
                raise Unsupported("mean_logprob needs token logprobs: sample with SamplingParams(logprobs=True), "
                                  "on a backend that returns them (this completion has none)")
            if self.kind == "self_certainty" and completion.top_logprobs is None and has_tokens:
                raise Unsupported("self_certainty needs top-k logprobs: sample with SamplingParams(top_logprobs=k), "
                                  "on a backend that returns them (this completion has none)")
            scores.append(fn(completion))
        return scores
