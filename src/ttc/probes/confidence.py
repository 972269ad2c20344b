"""Sliding-window token confidence (DeepConf: Fu et al., 2025, "Deep Think with Confidence").

Token confidence C_i = -(1/k) sum_j log P_i(j) over the k most likely tokens at position i
(high when the distribution is peaked); group confidence = mean of C_i over a window of the
last `window` tokens. DeepConf-online stops a trace as soon as its group confidence falls
under a threshold calibrated on warm-up traces; DeepConf-offline filters finished traces by
their lowest group confidence before voting. Both are here: `TokenConfidence` as an EarlyExit
probe, `TokenConfidence.filter()` as a verifier for MajorityVote / BestOfN.

The probe keeps a user-set threshold (one bar for every question, e.g. from `calibrate_threshold`
on other problems' warm-up traces): that is a deviation from DeepConf-online, which calibrates the
bar per question on its first 16 traces, lets those warm-up traces vote, and weights the vote by
confidence. `ttc.DeepConf` is that per-question form. For the offline filter, `filter(keep=0.1,
weighted=True)` is DeepConf-offline's per-question top-eta filter with a confidence-weighted vote;
`filter()` without `keep` uses the absolute threshold instead (and can drop every trace of a
question; the vote then falls back to the unweighted plurality, see `ttc.votes`).

Without top-k logprobs (a stream, or a backend that returns only the sampled token's logprob)
the token confidence is that logprob instead (mean logprob over the window): a different
scale, so thresholds must be calibrated in the same mode they are used in.

On a reasoning model the confidence is taken over the thinking tokens (the paper's traces are
thinking traces): the markers and the final content are left out (`scored_part`; the probe reads
the thinking positions of the partial trace). A model without thinking is scored as before.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.needs import Needs
from ttc.probes.base import CONTINUE, DROP, EXIT, Decision, Probe, TraceState, thinking_view
from ttc.types import Candidate, Completion, Problem, Thinking
from ttc.verifiers.base import Verifier

MODES = ("topk", "logprob")


def token_confidences(logprobs: Sequence[float] | None, top_logprobs: Sequence[dict[int, float]] | None,
                      mode: str = "topk") -> np.ndarray:
    """Per-token confidence: -mean of the top-k logprobs ("topk"), or the sampled token's logprob
    ("logprob", also the fallback when top-k logprobs are absent)."""
    if mode == "topk" and top_logprobs:
        return np.array([-math.fsum(t.values()) / len(t) if t else 0.0 for t in top_logprobs], dtype=float)
    if logprobs is None:
        raise InvalidInput("token confidence needs logprobs: sample with SamplingParams(logprobs=True)")
    return np.asarray(logprobs, dtype=float)


def group_confidences(conf: np.ndarray, window: int) -> np.ndarray:
    """Mean confidence of every window of `window` consecutive tokens (one value for shorter traces)."""
    if len(conf) == 0:
        return np.zeros(0)
    if len(conf) <= window:
        return np.array([conf.mean()])
    csum = np.concatenate([[0.0], np.cumsum(conf)])
    return (csum[window:] - csum[:-window]) / window


def scored_part(completion: Completion) -> Completion | Thinking:
    """The part of `completion` whose tokens DeepConf scores: the thinking where there is one (the
    paper scores reasoning traces), else the whole output."""
    thinking = completion.thinking
    return thinking if thinking is not None and thinking.token_ids else completion


def lowest_group_confidence(completion: Completion, window: int, mode: str = "topk") -> float:
    """DeepConf's trace score: the minimum sliding-window group confidence (-inf for an empty trace),
    over the thinking tokens when the completion has a thinking (`scored_part`)."""
    part = scored_part(completion)
    conf = token_confidences(part.logprobs, part.top_logprobs, mode)
    groups = group_confidences(conf, window)
    return float(groups.min()) if len(groups) else -math.inf


def calibrate_threshold(warmup_scores: Sequence[float], keep: float = 0.9) -> float:
    """DeepConf's threshold: the score that keeps the top `keep` fraction of warm-up traces
    (keep=0.1 is DeepConf-low, keep=0.9 DeepConf-high), from their lowest group confidences: their
    (1 - keep) x 100-th percentile, linearly interpolated (`np.percentile`), as DeepConf's code
    (`deepconf-online.py`, `analysis_offline.py`) and `ttc.DeepConf` compute it. Non-finite scores
    are left out."""
    if not 0 < keep <= 1:
        raise InvalidInput(f"keep must be in (0, 1], got {keep!r}")
    scores = np.asarray([s for s in warmup_scores if np.isfinite(s)], dtype=float)
    if len(scores) == 0:
        raise InvalidInput("calibrate_threshold needs at least one finite warm-up score")
    return float(np.percentile(scores, (1.0 - keep) * 100.0))


class TokenConfidence(Probe):
    """Stop (drop, by default) a trace whose sliding-window confidence falls under `threshold`.

    Source: DeepConf-online (Fu et al., 2025); deviations (a user-set threshold instead of the
    per-question warm-up, which is `ttc.DeepConf`): see this module's docstring.

    Args:
        window: tokens per group.
        threshold: the group confidence under which the trace stops.
        action: "drop" (DeepConf: the trace does not vote) or "exit" (answer now).
        top_k: top logprobs asked per token (0: use the sampled token's logprob).
        every: tokens between checks in chunked mode (each check scans every new window, so a dip
            anywhere in the chunk is caught; the stop is placed where the dip happened).
        min_tokens: no check before this many tokens (default: `window`).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> from ttc.probes import TokenConfidence
        >>> shaky = Scripted([ScriptedResponse("Hmm, maybe 5.", (-3.0,) * 5)])
        >>> probe = TokenConfidence(window=2, threshold=-1.0, top_k=0, every=2)
        >>> ttc.EarlyExit(probe).solve("3 + 4?", shaky).candidates[0].finish_reason
        'dropped'
    """

    name = "token_confidence"
    scans_tokens = True

    def __init__(self, window: int = 64, threshold: float = 0.0, action: str = DROP, top_k: int = 5,
                 every: int = 32, min_tokens: int | None = None):
        check_positive("TokenConfidence.window", window)
        if action not in (DROP, EXIT):
            raise InvalidInput(f"TokenConfidence.action must be 'drop' or 'exit', got {action!r}")
        if top_k < 0:
            raise InvalidInput(f"TokenConfidence.top_k must be >= 0, got {top_k!r}")
        self.window = window
        self.threshold = float(threshold)
        self.action = action
        self.top_k = top_k
        self.every = every
        self.min_tokens = window if min_tokens is None else min_tokens
        self.mode = "topk" if top_k else "logprob"
        self.needs = Needs(logprobs=True, top_logprobs=top_k)

    def confidences(self, state: TraceState) -> np.ndarray:
        return token_confidences(state.logprobs, state.top_logprobs, self.mode)

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        conf = self.confidences(state)
        whole = len(conf)
        # a reasoning model's trace is scored over its thinking tokens (markers and content left out)
        view = await thinking_view(state, ctx)
        positions = [i for i in view.positions if i < whole] if view is not None else list(range(whole))
        conf = conf[positions]
        n = len(conf)
        if n < self.min_tokens:
            return Decision(CONTINUE)
        # windows ending at each token not yet scanned (ends from max(scanned, min_tokens) to n)
        scanned = bisect.bisect_left(positions, state.scanned)
        first_end = max(scanned, self.min_tokens, min(self.window, n))
        state.scanned = whole
        csum = np.concatenate([[0.0], np.cumsum(conf)])
        lowest = math.inf
        for end in range(first_end, n + 1):
            start = max(0, end - self.window)
            group = (csum[end] - csum[start]) / (end - start)
            lowest = min(lowest, group)
            if group < self.threshold:
                return Decision(self.action, at=positions[end - 1] + 1 if end else 0, score=float(group))
        return Decision(CONTINUE, score=None if lowest == math.inf else float(lowest))

    def score(self, completion: Completion) -> float:
        return lowest_group_confidence(completion, self.window, self.mode)

    def filter(self, weighted: bool = False, keep: float | None = None) -> ConfidenceFilter:
        """This probe as a verifier: 1 for traces whose lowest group confidence reaches the bar, else 0
        (`weighted=True`: the confidence itself instead of 1, for top-k confidences, which are positive).

        The bar is the probe's `threshold`, or with `keep` DeepConf-offline's own: the (1 - keep) x
        100-th percentile (linear, `calibrate_threshold`) of this question's candidates that have an
        answer (keep=0.1: the top 10%), as DeepConf's `filter_top_confidence` takes it over its valid
        traces; so a question never loses every answered trace.
        `MajorityVote(n, verifier=probe.filter(weighted=True, keep=0.1))` is DeepConf-offline
        (top-eta filter, then a confidence-weighted vote)."""
        return ConfidenceFilter(self, weighted, keep)


class ConfidenceFilter(Verifier):
    """DeepConf-offline as a free verifier: keep (1, or the confidence) or drop (0) each finished
    candidate, by the probe's threshold or by a per-question top-`keep` fraction.

    Source: DeepConf-offline (Fu et al., 2025); deviations as in this module's docstring.

    Args:
        probe: the `TokenConfidence` whose window, top_k and threshold are used.
        weighted: score 1 (False) or the confidence itself (True) for a kept trace.
        keep: keep this question's top `keep` fraction instead of the probe's threshold.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> from ttc.probes import TokenConfidence
        >>> shaky, sure = ScriptedResponse("Hmm, maybe 5.", (-3.0,) * 5), ScriptedResponse("It is 7.", (-0.1,) * 5)
        >>> keep = TokenConfidence(window=2, threshold=-1.0, top_k=0).filter()
        >>> ttc.MajorityVote(n=3, verifier=keep).solve("3 + 4?", Scripted([shaky, shaky, sure])).answer
        '7'
    """

    free = True

    def __init__(self, probe: TokenConfidence, weighted: bool = False, keep: float | None = None):
        if keep is not None and not 0 < keep <= 1:
            raise InvalidInput(f"keep must be in (0, 1], got {keep!r}")
        self.probe = probe
        self.weighted = weighted
        self.keep = keep
        self.name = "confidence_filter"
        self.needs = probe.needs

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        confs = []
        for c in candidates:
            if c.completion is None:
                raise InvalidInput("ConfidenceFilter needs candidates that carry their completion")
            if c.completion.logprobs is None and not c.completion.top_logprobs and c.completion.token_ids:
                raise InvalidInput("ConfidenceFilter needs logprobs: sample with SamplingParams(logprobs=True)")
            conf = self.probe.score(c.completion)
            c.scores["lowest_group_confidence"] = conf
            confs.append(conf)
        bar = self.probe.threshold
        if self.keep is not None:  # DeepConf-offline: the top `keep` fraction of this question's answered traces
            answered = [x for x, c in zip(confs, candidates, strict=True) if math.isfinite(x) and c.answer is not None]
            bar = calibrate_threshold(answered, self.keep) if answered else math.inf
        return [((max(conf, 0.0) if self.weighted else 1.0) if conf >= bar else 0.0) for conf in confs]
