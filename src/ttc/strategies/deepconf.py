"""DeepConf-online with the paper's per-question warm-up: the first traces set the threshold the
rest are stopped by, so it cannot be a set of independent concurrent candidates."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.infos import ConfidenceVoteInfo
from ttc.needs import Needs, fill
from ttc.probes.base import DROP
from ttc.probes.confidence import TokenConfidence, lowest_group_confidence, scored_part
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Strategy
from ttc.strategies.early_exit import DROPPED, EarlyExit
from ttc.strategies.sample import DEFAULT_PARAMS, Sample
from ttc.strategies.wrapping import check_n
from ttc.types import Candidate, Problem, Result, SamplingParams
from ttc.votes import weighted_vote


def percentile_threshold(scores: Sequence[float], keep: float) -> float:
    """The confidence bar that keeps the top `keep` fraction of `scores`: their (1 - keep) x 100-th
    percentile, linearly interpolated (`np.percentile`, as DeepConf's `deepconf-online.py`)."""
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        raise InvalidInput("DeepConf's threshold needs at least one warm-up trace with a finite confidence")
    return float(np.percentile(finite, (1.0 - keep) * 100.0))


class DeepConf(Strategy):
    """DeepConf-online (Fu, Wang, Tian and Zhao, 2025, "Deep Think with Confidence"), with the
    per-question warm-up of the paper and of its code (`facebookresearch/deepconf`,
    `deepconf-online.py`).

    1. Warm-up: `warmup` traces of this question are generated to the end (one request, n=warmup),
       with the top-`top_k` logprobs of every token. Each trace's confidence is its lowest group
       confidence: token confidence C_i = -mean of the top-k logprobs at position i, averaged over
       sliding windows of `window` tokens (one mean for a shorter trace), the minimum taken.
    2. The bar s is the (1 - keep) x 100-th percentile of the warm-up confidences: keep=0.1 is
       DeepConf-low (the paper's 90th percentile), keep=0.9 DeepConf-high.
    3. Only then are the other `n - warmup` traces started, concurrently, each stopped (dropped) as
       soon as a window's group confidence falls under s (`EarlyExit(TokenConfidence(...))`, chunk
       mode: streams carry no top-k logprobs).
    4. Vote: the warm-up traces whose confidence reaches s and the online traces that were not
       stopped (and whose confidence reaches s) vote with their confidence as weight (a
       confidence-weighted majority vote, as the paper's code), over `ttc.answers` equivalence groups.

    Deviations: the default window is 64 tokens (the paper's 2048 is longer than a small model's
    whole trace; pass window=2048 to match); answers vote by math-verify equivalence rather than
    string equality; the online stop is checked every `every` tokens in chunks (each check scans
    every window, so the stop is placed where the dip happened, but the rest of the chunk was
    generated and is counted), where the paper stops inside vLLM at the token (a dip in a trace's
    last chunk, which is not probed, is caught afterwards: that trace does not vote, as in the
    paper's code, which also drops final traces whose confidence is under the bar); the paper's adaptive
    sampling (stop drawing traces once the vote's consensus reaches tau) is not implemented: all
    n traces are drawn. A trace the token budget cannot start is left out (the others still vote).
    `details` records the bar, every trace's confidence and which traces voted.

    `TokenConfidence` alone (as an EarlyExit probe, or `.filter()` as an offline verifier) keeps a
    user-set threshold; this strategy is the per-question form.

    Args:
        n: traces in all (warm-up included).
        warmup: warm-up traces that set the bar (the paper: 16).
        keep: the fraction of warm-up confidences above the bar (0.1: DeepConf-low, 0.9: -high).
        window: tokens per confidence group.
        top_k: top logprobs per token in the token confidence.
        every: tokens between the online checks.
        params, prompt: sampling parameters and chat prompt; token logprobs and the top-`top_k`
            logprobs are asked for where `params` leave them unset (explicitly fewer is refused).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> sure = ScriptedResponse("It is 7.", (-0.01,) * 5, ({1: -0.01, 2: -6.0},) * 5)
        >>> unsure = ScriptedResponse("Maybe 5.", (-0.7,) * 3, ({1: -0.7, 2: -0.7},) * 3)
        >>> r = ttc.DeepConf(n=4, warmup=2, window=2, top_k=2).solve("3 + 4?", Scripted([sure, unsure]))
        >>> r.answer, r.details["voters"]
        ('7', [0, 2])
    """

    name = "deepconf"

    def __init__(self, n: int = 32, warmup: int = 16, keep: float = 0.1, window: int = 64, top_k: int = 20,
                 every: int = 32, params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.n = check_n(n)
        if not isinstance(warmup, int) or isinstance(warmup, bool) or not 1 <= warmup <= n:
            raise InvalidInput(f"DeepConf.warmup must be an integer in [1, n={n}], got {warmup!r}")
        if not 0 < keep <= 1:
            raise InvalidInput(f"DeepConf.keep must be in (0, 1], got {keep!r}")
        check_positive("DeepConf.top_k", top_k, "integer (top logprobs per token)")
        check_positive("DeepConf.window", window)
        self.warmup = warmup
        self.keep = float(keep)
        self.window = window
        self.top_k = top_k
        self.every = every
        self.params = fill(params, Needs(logprobs=True, top_logprobs=top_k), who=f"DeepConf(top_k={top_k})",
                           where="its params")
        self.prompt = prompt

    def _confidence(self, candidate: Candidate) -> float:
        completion = candidate.completion
        if completion is None:
            raise InvalidInput("DeepConf needs candidates that carry their completion")
        part = scored_part(completion)  # the thinking, on a reasoning model
        if part.token_ids and not part.top_logprobs:
            raise InvalidInput(f"DeepConf needs top-{self.top_k} logprobs per token, which the backend did not return")
        conf = lowest_group_confidence(completion, self.window, "topk")
        candidate.scores["lowest_group_confidence"] = conf
        return conf

    async def run(self, problem: Problem, ctx: Context) -> Result:
        warm = await Sample(self.params, self.prompt).candidates(problem, ctx, self.warmup)
        warm_conf = [self._confidence(c) for c in warm]
        bar = percentile_threshold(warm_conf, self.keep)
        probe = TokenConfidence(window=self.window, threshold=bar, action=DROP, top_k=self.top_k, every=self.every)
        online_sampler = EarlyExit(probe, params=self.params, prompt=self.prompt, mode="chunks")

        async def one() -> Candidate | None:
            try:
                return await online_sampler.candidate(problem, ctx)
            except BudgetExhausted:
                return None

        online = [c for c in await asyncio.gather(*(one() for _ in range(self.n - self.warmup))) if c is not None]
        online_conf = [self._confidence(c) for c in online]
        candidates = warm + online
        confs = warm_conf + online_conf
        voters = [i for i, (c, conf) in enumerate(zip(candidates, confs, strict=False))
                  if conf >= bar and c.answer is not None and c.finish_reason != DROPPED]
        answer, votes, info = weighted_vote([candidates[i].answer for i in voters], [confs[i] for i in voters])
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage, strategy=self.name,
                      details=ConfidenceVoteInfo(
                          threshold=bar, keep=self.keep, warmup=len(warm), online=len(online), confidences=tuple(confs),
                          voters=tuple(voters), votes=votes, stopped=sum(c.finish_reason == DROPPED for c in online),
                          **info))
