"""A bank problem as arrays: what every replay reads, computed once per problem."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ttc.bank.format import BankProblem
from ttc.probes.confidence import group_confidences, token_confidences


@dataclass
class ProblemArrays:
    """Per-sample arrays of one problem (K samples, recorded order).

    `group[i]`: the sample's answer group (-1: no answer); `rep[i]`: the group's representative
    answer string (None: no answer), what a replayed vote compares; `group_correct[g]`: whether group
    g's answer is right. `scores[name][i]`: verifier scores (mean_logprob, self_certainty when top
    logprobs were recorded, and every verifier recorded with the bank). `lowest_conf[i]`: DeepConf's
    trace confidence (lowest sliding-window group confidence from the top logprobs)."""

    problem_id: str
    prompt_tokens: int
    latency: float
    tokens: np.ndarray
    group: np.ndarray
    rep: list[str | None]
    answers: list[str | None]
    correct: np.ndarray
    logprob_sum: np.ndarray
    texts: list[str]
    finish: list[str]
    scores: dict[str, np.ndarray]
    lowest_conf: np.ndarray
    samples: tuple

    @property
    def k(self) -> int:
        return len(self.tokens)

    def request_latency(self, indices: np.ndarray | list[int]) -> float:
        """A request of these samples, estimated from the recorded request of all K: decoding time is
        set by the longest sequence, so the recorded latency x (longest here / longest recorded)."""
        if not len(indices):
            return 0.0
        return self.latency * float(self.tokens[indices].max()) / (float(self.tokens.max()) or 1.0)

    def prefix_latencies(self, perm: np.ndarray) -> np.ndarray:
        """`request_latency(perm[:n])` for every n (index n - 1)."""
        return self.latency * np.maximum.accumulate(self.tokens[perm]) / (float(self.tokens.max()) or 1.0)


def problem_arrays(problem: BankProblem, window: int = 64) -> ProblemArrays:
    samples = problem.samples
    k = len(samples)
    group = np.array([-1 if s.group is None else s.group for s in samples], dtype=int)
    rep = [None if s.group is None else samples[s.group].answer for s in samples]
    correct = np.array([bool(s.correct) for s in samples], dtype=bool)
    logprob_sum = np.array([s.logprob_sum for s in samples], dtype=float)
    tokens = np.array([s.tokens for s in samples], dtype=int)
    scores: dict[str, np.ndarray] = {}
    if all(s.logprobs is not None for s in samples):
        scores["mean_logprob"] = np.array([_verifier_score("mean_logprob", s) for s in samples], dtype=float)
    if all(s.top_logprobs is not None for s in samples):
        scores["self_certainty"] = np.array([_verifier_score("self_certainty", s) for s in samples], dtype=float)
    for name in sorted({n for s in samples for n in s.scores}):
        scores[name] = np.array([s.scores.get(name, -math.inf) for s in samples], dtype=float)
    lowest = np.full(k, -math.inf)
    if all(s.top_logprobs is not None or s.logprobs is not None for s in samples):
        for i, s in enumerate(samples):
            conf = token_confidences(s.logprobs, s.top_logprobs, "topk")
            groups = group_confidences(conf, window)
            lowest[i] = float(groups.min()) if len(groups) else -math.inf
    return ProblemArrays(problem.problem_id, problem.prompt_tokens, problem.latency_s, tokens, group, rep,
                         [s.answer for s in samples], correct, logprob_sum, [s.text for s in samples],
                         [s.finish_reason for s in samples], scores, lowest, samples)


def _verifier_score(kind: str, sample) -> float:  # noqa: ANN001
    """The real `LogprobConfidence(kind)` score of a recorded sample (so replayed best-of-n is exact)."""
    from ttc.backends.bank_replay import _completion
    from ttc.verifiers.confidence import mean_logprob, self_certainty

    fn = mean_logprob if kind == "mean_logprob" else self_certainty
    return float(fn(_completion(sample)))
