"""When is a vote decided? Stopping rules for adaptive self-consistency, as small pure objects.

A rule sees the answers drawn so far, in order (None = a sample without an extractable answer),
and says whether to stop sampling. `AdaptiveVote` asks it after each round of samples; the
shared-budget runner (`ttc.solve_many(..., total_budget=)`) asks it to decide which problems
still get samples. The maths is here, free of any generator, so it is tested on scripted streams.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from math import comb
from typing import get_args

from ttc import answers as _answers
from ttc.errors import InvalidInput
from ttc.infos import AdaptiveStop

#: Why an adaptive vote stopped sampling (a closed set):
#: "decided": the stopping rule said the vote is settled;
#: "max_n": max_n samples were drawn without the rule deciding;
#: "budget": the token budget (the problem's, or its share of a shared total) could not pay for
#: another sample.
StopReason = AdaptiveStop  # the adaptive family of ttc.infos.StopReason
STOP_REASONS: tuple[StopReason, ...] = get_args(AdaptiveStop)


@lru_cache(maxsize=4096)
def _groups_of_distinct(distinct: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(g) for g in _answers.group(list(distinct)))


def answer_counts(answers: Sequence[str | None]) -> list[int]:
    """Votes per distinct answer (answers grouped by `ttc.answers.equivalent`), largest first.
    Samples without an answer (None) do not vote. Equal strings are counted first and only the
    distinct ones are compared (equivalence is slow; a rule is asked after every round), and
    the grouping of a set of distinct strings is cached."""
    counts = Counter(a for a in answers if a is not None)
    distinct = tuple(counts)
    groups = _groups_of_distinct(distinct)
    return sorted((sum(counts[distinct[i]] for i in g) for g in groups), reverse=True)


class StoppingRule(abc.ABC):
    """Decides from the answers so far whether the vote is settled."""

    name: str = "rule"

    @abc.abstractmethod
    def should_stop(self, answers: Sequence[str | None]) -> bool:
        """True when sampling may stop: the answers so far settle the vote."""

    def voters(self, answers: Sequence[str | None]) -> list[int]:
        """The indices of the answers that vote once this rule has stopped sampling: every answer
        drawn, unless the rule's source decides with a part of them (`WindowStop`)."""
        return list(range(len(answers)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class WindowStop(StoppingRule):
    """ESC's rule (Li et al., 2024, "Escape Sky-high Cost: Early-stopping Self-Consistency for
    Multi-step Reasoning", ICLR): the samples are cut into disjoint windows of `window` in drawing
    order (samples 1..w, w+1..2w, ...); sampling stops as soon as every answer of one complete
    window is the same (zero answer entropy within the window). The answer is then that window's
    answer (`voters`: the first unanimous window votes alone), as the authors' code does
    (`Yiwei98/ESC`, `early_stop_gsm8k.py`: on a unanimous window it breaks with the window's
    predictions only); when no window decides, every sample drawn votes. The authors' code uses
    windows of 5 with at most 40 samples; the default window of 4 here divides the default max_n of 16.

    Deviation, stated: a sample without an extractable answer (None) is a distinct non-answer, so a
    window with one is never unanimous (the authors' code turns a missing number into -1000, which
    then counts as an answer).
    """

    name = "esc"

    def __init__(self, window: int = 4):
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise InvalidInput(f"WindowStop.window must be a positive integer, got {window!r}")
        self.window = window

    def unanimous_window(self, answers: Sequence[str | None]) -> int | None:
        """The start of the first complete window whose answers all agree (None: no such window)."""
        w = self.window
        for start in range(0, len(answers) - w + 1, w):
            chunk = answers[start:start + w]
            if None not in chunk and len(answer_counts(chunk)) == 1:
                return start
        return None

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        return self.unanimous_window(answers) is not None

    def voters(self, answers: Sequence[str | None]) -> list[int]:
        """The first unanimous window's samples (ESC's answer), else every sample."""
        start = self.unanimous_window(answers)
        return list(range(len(answers))) if start is None else list(range(start, start + self.window))


def beta_leader_probability(leader: int, runner_up: int) -> float:
    """P(p > 1/2) for p ~ Beta(leader + 1, runner_up + 1): the posterior probability, under a uniform
    prior on the leader's share p of the top two answers' votes, that the current leader is the more
    likely of the two. Exact for integer counts: P(p > 1/2) = P(Binomial(leader + runner_up + 1, 1/2)
    <= leader) (the Beta-binomial identity I_x(a, b) = P(Binomial(a + b - 1, x) >= a))."""
    if leader < 0 or runner_up < 0:
        raise InvalidInput(f"vote counts must be non-negative, got {leader}, {runner_up}")
    n = leader + runner_up + 1
    return sum(comb(n, j) for j in range(leader + 1)) / 2**n


class BetaStop(StoppingRule):
    """Adaptive-Consistency's Beta rule (Aggarwal et al., 2023, "Let's Sample Step by Step:
    Adaptive-Consistency for Efficient Reasoning and Coding with LLMs", EMNLP; the paper's default
    criterion): with v1 >= v2 the votes of the two most frequent answers, stop when

        P(p > 1/2 | v1, v2) >= confidence,   p ~ Beta(v1 + 1, v2 + 1)

    i.e. the posterior probability (uniform Beta(1, 1) prior on p, the leader's share of the two
    answers' votes) that the leader stays the leader. This is the quantity the authors' code
    integrates numerically (x^v1 (1 - x)^v2 over [1/2, 1] against [0, 1]); here it is computed exactly
    (`beta_leader_probability`). Their default threshold is 0.95.

    Deviations, stated: the paper's Dirichlet variant (all answers, not just the top two) is not
    implemented: the paper reports the Beta variant as accurate and much cheaper. Samples without an
    answer do not vote. `min_samples` (default 1, the paper's behaviour) can forbid stopping earlier.
    With v1 = k unanimous votes, P = 1 - 2^-(k+1): c = 0.95 stops after 4 agreeing answers, 6 of 7, ...
    """

    name = "beta"

    def __init__(self, confidence: float = 0.95, min_samples: int = 1):
        if not 0.5 <= confidence < 1:
            raise InvalidInput(f"BetaStop.confidence must be in [0.5, 1), got {confidence!r}")
        if not isinstance(min_samples, int) or min_samples < 1:
            raise InvalidInput(f"BetaStop.min_samples must be a positive integer, got {min_samples!r}")
        self.confidence = confidence
        self.min_samples = min_samples

    def leader_probability(self, answers: Sequence[str | None]) -> float:
        return self.probability(answer_counts(answers))

    @staticmethod
    def probability(counts: Sequence[int]) -> float:
        """P(leader stays the leader) from the votes per answer (any order); 0 with no votes."""
        top = sorted(counts, reverse=True) + [0, 0]
        return beta_leader_probability(top[0], top[1]) if top[0] > 0 else 0.0

    def decide(self, counts: Sequence[int], drawn: int) -> bool:
        """The rule on vote counts: `drawn` samples so far (answered or not), `counts` votes per answer."""
        return drawn >= self.min_samples and self.probability(counts) >= self.confidence

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        return self.decide(answer_counts(answers), len(answers))


class NeverStop(StoppingRule):
    """Never decided: sample up to max_n (MajorityVote run incrementally)."""

    name = "never"

    def should_stop(self, answers: Sequence[str | None]) -> bool:
        return False


def as_rule(stop: StoppingRule | str | None) -> StoppingRule:
    """`stop=` as a rule: a StoppingRule as is; "beta" / "esc" with their defaults; None -> BetaStop()."""
    if stop is None or stop == "beta":
        return BetaStop()
    if stop == "esc":
        return WindowStop()
    if isinstance(stop, StoppingRule):
        return stop
    raise InvalidInput(f"stop= must be a ttc stopping rule (ttc.stopping.BetaStop, WindowStop) or 'beta'/'esc', "
                       f"got {stop!r}")
