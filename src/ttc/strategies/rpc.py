"""RPC: Reasoning-pruning Perplexity Consistency (Zhou et al., 2025, "Bridging Internal Probability and
Self-Consistency for Effective and Efficient LLM Reasoning"; and "A Theoretical Study on Bridging Internal
Probability and Self-Consistency for LLM Reasoning", NeurIPS 2025; code: github.com/WNJXYK/RPC).

Perplexity Consistency (PC): an answer's score is the sum of the model's own probabilities of the distinct
sampled reasoning paths that reach it (self-consistency counts the paths instead). Reasoning Pruning (RP):
before the vote, paths whose probability belongs to the low mode of the probabilities are dropped.

Choices the papers leave open, or that we made where their code and ours differ:
- Probability of a path: exp(mean token logprob), the length-normalised probability (the geometric mean
  token probability), as the authors' code does (`np.exp(mean_logprob)`). `normalise=False` uses the
  product of token probabilities, exp(sum of logprobs), which the paper's notation p(t | x) suggests but
  which favours short paths by orders of magnitude.
- Distinct paths: paths with identical text count once (the code keys each answer's probabilities by
  the completion text: a path sampled twice already has its probability; counting it twice would count
  frequency on top). `dedup=False` counts every sample.
- Pruning rule (the code's): fit a mixture of two Weibull distributions to the n path probabilities by
  maximum likelihood (weight of the first in [0.2, 0.8], shapes and scales >= 0.01, start
  (0.5, 1, 1, 1.5, 2), L-BFGS-B via scipy); the component with the higher mean is "high". A path is
  pruned when its posterior membership of the low component exceeds that of the high one AND its
  probability is below the mean probability. Deviation for robustness: the likelihood's densities are
  floored at 1e-300 so that one point of zero density does not make it infinite; a fit at which some
  path's density is floored is not accepted (the floor can let L-BFGS-B stop on a plateau where every
  density is floored, which prunes nothing): it is redone as the authors' code does it (unfloored),
  and a fit that still leaves a path with zero density (or a non-finite parameter) prunes nothing.
  `prune="none"` skips pruning (PC alone).
- Everything pruned: the mean condition keeps the most probable path, so pruning never empties the pool;
  but the paths kept may all lack an answer. Then the vote falls back to PC over every path with an
  answer, and info["fallback"] says so.
- Paths without an extractable answer take part in the mixture fit and the mean (they are samples of the
  model's distribution) but do not vote (as everywhere in ttc, `ttc.votes`).
- Ties: the answer group seen first wins and info["tie"] lists the tied answers
  (`ttc.votes.weighted_vote`); the authors' evaluation splits the
  credit of a tie instead, which a strategy returning one answer cannot do.
- Grouping: answers vote together when `ttc.answers.equivalent` says they are equal (the code uses its
  math_equal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ttc._extras import require, require_extra
from ttc.context import Context
from ttc.errors import InvalidInput, Unsupported
from ttc.needs import Needs
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.wrapping import check_n, sampler_for
from ttc.types import Candidate, Problem, Result
from ttc.votes import weighted_vote

PRUNING = ("mixture", "none")
#: details["fallback"] when every path kept by pruning lacks an answer
ALL_PRUNED_FALLBACK = "no path kept by pruning has an answer: perplexity consistency over every path"


def path_probability(logprob_sum: float, token_count: int, normalise: bool = True) -> float:
    """A path's probability: exp(mean token logprob) (normalise=True), else exp(sum of logprobs)."""
    if token_count <= 0:
        return 0.0
    return math.exp(logprob_sum / token_count if normalise else logprob_sum)


def _weibull_pdf(x: np.ndarray, k: float, lam: float) -> np.ndarray:
    return (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))


def _weibull_mean(k: float, lam: float) -> float:
    return lam * math.gamma(1 + 1 / k)


def _mixture_nll(data: np.ndarray, params: Sequence[float], floor: float = 0.0) -> float:
    """The mixture's negative log-likelihood of `data`; densities floored at `floor` (0: none, the
    authors' objective, +inf when a density underflows to 0)."""
    w, k1, l1, k2, l2 = params
    with np.errstate(all="ignore"):
        pdf = w * _weibull_pdf(data, k1, l1) + (1 - w) * _weibull_pdf(data, k2, l2)
        return float(-np.sum(np.log(np.maximum(pdf, floor))))


def _minimise_nll(data: np.ndarray, floor: float) -> tuple[float, ...] | None:
    """The authors' L-BFGS-B fit (start, bounds) of the NLL floored at `floor`; None unless the
    parameters are finite and every density at them is positive (unfloored NLL finite): a fit
    where some path has zero density does not describe the paths (with the floor, L-BFGS-B can
    stop in a flat region where every density is floored: the audit's finding N2)."""
    minimize = require("scipy.optimize", "rpc", "RPC's Weibull-mixture pruning").minimize

    with np.errstate(all="ignore"):
        fit = minimize(lambda params: _mixture_nll(data, params, floor), np.array([0.5, 1.0, 1.0, 1.5, 2.0]),
                       bounds=[(0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None)])
    params = tuple(float(v) for v in fit.x)
    if not all(math.isfinite(v) for v in params) or not math.isfinite(_mixture_nll(data, params)):
        return None
    return params


def fit_weibull_mixture(probs: Sequence[float]) -> tuple[float, float, float, float, float] | None:
    """(w_high, k_high, lam_high, k_low, lam_low): a two-Weibull mixture fitted to `probs` by maximum
    likelihood, the high component (higher mean) first; None when the fit fails.

    The NLL is minimised with densities floored at 1e-300 (so one underflowing point does not make
    the objective infinite). That fit is kept only if no density at it is floored (there the floored
    NLL is the authors' NLL); otherwise the floor may have let L-BFGS-B stop on a plateau where every
    density is floored (finding N2 of the 4e644bc audit), and the authors' own fit (`compute_rpc.py`:
    the unfloored NLL) is used if it has no zero density either; else the fit fails."""
    data = np.asarray(probs, dtype=float)
    params = _minimise_nll(data, 1e-300) or _minimise_nll(data, 0.0)
    if params is None:
        return None
    w, k1, l1, k2, l2 = params
    if _weibull_mean(k1, l1) < _weibull_mean(k2, l2):
        w, k1, l1, k2, l2 = 1 - w, k2, l2, k1, l1
    return w, k1, l1, k2, l2


def prune_mask(probs: Sequence[float]) -> list[bool]:
    """True for each path Reasoning Pruning drops: more likely in the low-probability Weibull component
    than in the high one, and below the mean probability."""
    if len(probs) < 2:
        return [False] * len(probs)
    data = np.asarray(probs, dtype=float)
    mean = float(np.mean(data))
    if not np.any(data < mean):
        return [False] * len(probs)
    fit = fit_weibull_mixture(probs)
    if fit is None:
        return [False] * len(probs)
    w, k1, l1, k2, l2 = fit
    with np.errstate(all="ignore"):
        high = w * _weibull_pdf(data, k1, l1)
        low = (1 - w) * _weibull_pdf(data, k2, l2)
    return [bool(lo > hi and p < mean) for lo, hi, p in zip(low, high, data, strict=True)]


def rpc_vote(answers: Sequence[str | None], logprob_sums: Sequence[float], token_counts: Sequence[int], *,
             texts: Sequence[str] | None = None, prune: str = "mixture", normalise: bool = True,
             dedup: bool = True) -> tuple[str | None, dict[str, Any]]:
    """(answer, info): RPC over recorded paths (one answer, summed token logprob and token count each).

    `texts` (the paths' texts) are needed for `dedup`, which counts identical paths once. info holds the
    path probabilities ("probs"), the pruned indices ("pruned"), each answer's total ("votes"), the
    answers' normalised confidences ("confidence") and, when it was used, "fallback".
    """
    n = len(answers)
    if len(logprob_sums) != n or len(token_counts) != n or (texts is not None and len(texts) != n):
        raise InvalidInput(f"rpc_vote needs one logprob sum, token count (and text) per answer: {n} answers, "
                           f"{len(logprob_sums)} sums, {len(token_counts)} counts")
    if prune not in PRUNING:
        raise InvalidInput(f"unknown pruning {prune!r}; known: {', '.join(PRUNING)}")
    probs = [path_probability(s, c, normalise) for s, c in zip(logprob_sums, token_counts, strict=True)]
    pruned = prune_mask(probs) if prune == "mixture" else [False] * n
    info: dict[str, Any] = {"probs": probs, "pruned": [i for i in range(n) if pruned[i]]}

    def weights(keep: Sequence[bool]) -> list[float]:
        seen: set[str] = set()
        out = []
        for i in range(n):
            w = probs[i] if keep[i] else 0.0
            if dedup and texts is not None and keep[i]:
                if texts[i] in seen:
                    w = 0.0
                seen.add(texts[i])
            out.append(w)
        return out

    kept = [not p for p in pruned]
    voting = [a if k else None for a, k in zip(answers, kept, strict=True)]
    if all(a is None for a in voting) and any(a is not None for a in answers):
        kept = [True] * n
        voting = list(answers)
        info["fallback"] = ALL_PRUNED_FALLBACK
    answer, votes, vote_info = weighted_vote(voting, weights(kept))
    info.update(vote_info)
    total = math.fsum(votes.values())
    info["votes"] = votes
    info["confidence"] = {a: v / total for a, v in votes.items()} if total > 0 else {}
    return answer, info


def candidate_logprobs(candidate: Candidate) -> tuple[float, int]:
    """(sum of token logprobs, token count) of a sampled candidate; Unsupported when it has none."""
    completion = candidate.completion
    if completion is None:
        raise InvalidInput("RPC needs candidates that carry their completion (token logprobs)")
    if completion.logprobs is None:
        if not (completion.token_ids or completion.text):
            return 0.0, 0
        raise Unsupported("RPC weighs paths by the model's own token probabilities: sample with "
                          "SamplingParams(logprobs=True), on a backend that returns them (this completion has none)")
    return math.fsum(completion.logprobs), len(completion.logprobs)


class RPC(Strategy):
    """Reasoning-pruning Perplexity Consistency: sample n paths, drop the low-probability ones, and return
    the answer with the largest total path probability (see the module docstring for every choice).

    Source: Zhou et al., 2025, "Bridging Internal Probability and Self-Consistency for Effective and
    Efficient LLM Reasoning" (and its theoretical companion); their code, github.com/WNJXYK/RPC.
    Deviations (all in the module docstring): length-normalised path probability and distinct paths
    as in the authors' code; floored mixture densities (a fit that
    needs the floor is redone unfloored, as the authors'); a fallback vote
    when the kept paths have no answer; ties go to the answer seen first.

    Args:
        n: paths sampled.
        sample: the single-candidate strategy repeated, as for MajorityVote; asked for token logprobs
            (`needs`: one whose params leave them unset is copied with `logprobs=True`; an explicit
            `logprobs=False` is an InvalidInput; a backend that returns none is refused with Unsupported).
        prune: "mixture" (the paper's Weibull-mixture pruning) or "none" (Perplexity Consistency alone).
        normalise: length-normalised path probability (the authors' code) or the raw product.
        dedup: identical paths count once.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> paths = [ScriptedResponse("It is 3.", (-1.5,) * 4)] * 3 + [ScriptedResponse("It is 8.", (-0.01,) * 4)]
        >>> ttc.RPC(n=4).solve("q", Scripted(paths)).answer  # one sure path outweighs a thrice-sampled unsure one
        '8'
    """

    name = "rpc"
    #: RPC weighs each path by the model's own token probabilities
    needs = Needs(logprobs=True)

    def __init__(self, n: int = 8, sample: Sampler | None = None, prune: str = "mixture", normalise: bool = True,
                 dedup: bool = True):
        if prune not in PRUNING:
            raise InvalidInput(f"unknown pruning {prune!r}; known: {', '.join(PRUNING)}")
        if prune == "mixture":  # said here, not once per problem mid-run
            require_extra("rpc", "RPC's Weibull-mixture pruning (prune='none' needs no scipy)")
        self.n = check_n(n)
        self.sample = sampler_for(sample, None, holder="RPC", needs=self.needs)
        self.prune = prune
        self.normalise = normalise
        self.dedup = dedup

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.sample.candidates(problem, ctx, self.n)
        sums, counts = zip(*(candidate_logprobs(c) for c in candidates), strict=True)
        answer, info = rpc_vote([c.answer for c in candidates], sums, counts, texts=[c.text for c in candidates],
                                prune=self.prune, normalise=self.normalise, dedup=self.dedup)
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage,
                      strategy=self.name, details=info)
