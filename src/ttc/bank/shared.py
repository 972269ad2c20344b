"""Replay of one token budget shared across problems (`ttc.solve_many(..., total_budget=, allocation=)`).

Unlike the other replays, a shared budget couples the problems: what one problem may draw depends on
what the others spent. So it is replayed across all problems of a set at once, for one ordering of
each problem's samples, by `allocate`, which runs the live runner's own planner
(`ttc.shared_budget.WavePlanner`) and settles its rounds from the recorded lengths. That scheduling
is deterministic: a wave's reservations are all made before any of its rounds is sent, and the next
wave is planned only after all of them returned, so neither timing nor concurrency changes what a
problem draws. The replay therefore gives, per problem, exactly the answer, tokens and requests of
the real runner on `BankReplay` (tests/test_tune_shared.py). Budgets are per-problem averages: a set
of P problems shares B x P."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc.bank.arrays import ProblemArrays
from ttc.bank.replays import COLUMNS, TuneSetting, _Draw, _leaders, _rule_label, stop_decision
from ttc.errors import InvalidInput
from ttc.shared_budget import ALLOCATIONS, WavePlanner
from ttc.stopping import BetaStop, NeverStop, StoppingRule


@dataclass
class ProblemRun:
    """What the shared runner gave one problem: the samples drawn, the size of each round, the
    tokens billed (its prompt per round + the samples' tokens) and why it stopped."""

    drawn: int = 0
    rounds: list[int] = field(default_factory=list)
    tokens: int = 0
    reason: str | None = None


def allocate(prompts: Sequence[int], lengths: Sequence[Sequence[int]], decided: Sequence[Sequence[bool]], *,
             total: int, allocation: str, batch: int, max_n: int, max_tokens: int) -> list[ProblemRun]:
    """`asolve_shared`'s allocation on recorded samples: its `WavePlanner`, each round settled at
    the recorded tokens. Problem i has prompt `prompts[i]` tokens; its samples, in the order drawn,
    have `lengths[i]` tokens; `decided[i][d]` says whether the stopping rule stops after its first
    d samples. Rounds of at most `batch` samples (at most `max_n` in all)."""
    planner = WavePlanner(prompts, total, allocation, batch=batch, max_n=max_n, max_tokens=max_tokens)
    runs = [ProblemRun() for _ in prompts]
    while True:
        wave, stopped = planner.next_wave({i: run.drawn for i, run in enumerate(runs) if run.reason is None})
        for i in stopped:
            runs[i].reason = "budget"
        if not wave:
            return runs
        for planned in wave:  # the wave returns, then the stopping rule is asked
            run = runs[planned.index]
            spent = prompts[planned.index] + sum(lengths[planned.index][run.drawn:run.drawn + planned.k])
            planner.settle(planned, spent)
            run.drawn += planned.k
            run.rounds.append(planned.k)
            run.tokens += spent
            if decided[planned.index][run.drawn]:
                run.reason = "decided"
            elif run.drawn >= max_n:
                run.reason = "max_n"


@dataclass(frozen=True)
class SharedVote:
    """The vote run under a shared budget: `AdaptiveVote(max_n, batch, stop=rule)`, or, with
    `rule=None`, an unweighted `MajorityVote(n=max_n)` (one round of max_n, never decided early)."""

    rule: StoppingRule | None = None
    batch: int = 0

    def __post_init__(self) -> None:
        if self.rule is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise InvalidInput(f"SharedVote with a stopping rule needs batch >= 1 (samples per round), got "
                               f"{self.batch!r}")

    def options(self) -> tuple[tuple[str, Any], ...]:
        if self.rule is None:
            return (("vote", "majority"),)
        return (("vote", "adaptive_vote"), ("batch", self.batch), ("stop", _rule_label(self.rule)))


@dataclass
class SharedBudget:
    """Every (vote, allocation, per-problem budget) under one token total shared by a set of problems.
    Runs across problems: `run_all(problems, perms)` returns rows settings x problems x COLUMNS."""

    budgets: Sequence[int]
    votes: Sequence[SharedVote]
    max_n: int
    max_tokens: int
    allocations: Sequence[str] = ALLOCATIONS
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.budgets = [int(b) for b in self.budgets]
        self.settings = [TuneSetting("shared_budget", self.max_n, (("budget", b), ("allocation", a)) + v.options())
                         for v in self.votes for a in self.allocations for b in self.budgets]

    def run_all(self, problems: Sequence[ProblemArrays], perms: Sequence[np.ndarray]) -> np.ndarray:
        short = [p.problem_id for p in problems if p.k < self.max_n]
        if short:
            raise InvalidInput(f"SharedBudget(max_n={self.max_n}) needs {self.max_n} samples per problem; "
                               f"{short[0]} has fewer")
        out = np.empty((len(self.settings), len(problems), COLUMNS))
        draws = [draw_of(p, perm) for p, perm in zip(problems, perms, strict=True)]
        prompts = [p.prompt_tokens for p in problems]
        row = 0
        for vote in self.votes:
            rule = vote.rule or NeverStop()
            batch = vote.batch if vote.rule is not None else self.max_n
            decided, windows = zip(*(_decisions(p, d, rule, self.max_n) for p, d in zip(problems, draws, strict=True)),
                                   strict=True)
            for allocation in self.allocations:
                for budget in self.budgets:
                    runs = allocate(prompts, [d.tokens for d in draws], decided, total=budget * len(problems),
                                    allocation=allocation, batch=batch, max_n=self.max_n, max_tokens=self.max_tokens)
                    for j, (p, d, run) in enumerate(zip(problems, draws, runs, strict=True)):
                        window = windows[j][run.drawn] if run.reason == "decided" else None
                        g = d.groups[window] if window is not None else d.leaders[run.drawn - 1]
                        scale = p.latency / (float(p.tokens.max()) or 1.0)
                        latency, start = 0.0, 0
                        for k in run.rounds:
                            latency += scale * max(d.tokens[start:start + k])
                            start += k
                        out[row, j] = (g >= 0 and bool(p.correct[g]), run.tokens, len(run.rounds), latency, g)
                    row += 1
        return out


def draw_of(p: ProblemArrays, perm: np.ndarray) -> _Draw:
    """One ordering of a problem's samples as plain lists (not `replays._draw`'s one-entry cache,
    which is keyed by the ordering alone: here many problems may share one)."""
    tokens = p.tokens[perm].tolist()
    return _Draw(perm, p.group[perm].tolist(), tokens, list(itertools.accumulate(tokens)), _leaders(p, perm, None))


def _decisions(p: ProblemArrays, d: _Draw, rule: StoppingRule, max_n: int) -> tuple[list[bool], list[int | None]]:
    """(decided[n], window[n]) for n = 0..max_n: whether `rule` stops after the first n samples of
    the ordering, and (ESC) the start of its unanimous window there. A round may end at any n here
    (a tight budget shrinks rounds), so every prefix is asked."""
    decided: list[bool] = [False]
    windows: list[int | None] = [None]
    counts: dict[int, int] = {}
    for n in range(1, max_n + 1):
        g = d.groups[n - 1]
        if g >= 0:
            counts[g] = counts.get(g, 0) + 1
        stop, start = stop_decision(rule, counts, p, d, n)
        decided.append(stop)
        windows.append(start)
    return decided, windows


def default_shared(bank_k: int, max_tokens: int | None, arrays: Sequence[ProblemArrays],
                   budgets: Sequence[float] = ()) -> SharedBudget | None:
    """The shared-budget settings `ttc tune` replays by default: MajorityVote(K) and AdaptiveVote(K)
    (Beta 0.8 and 0.95, rounds of 2 and 4), each with uniform and adaptive allocation, at the given
    per-problem budgets and at the mean tokens of a fixed majority vote at n = 2, 4, 8, ... K (so they
    meet the fixed votes at equal tokens). Budgets below one worst-case sample per problem (the
    largest prompt + max_tokens) are left out: the real runner refuses them. None without a known
    max_tokens (the worst case of a sample must be known)."""
    if not max_tokens or not arrays:
        return None
    prompt = float(np.mean([p.prompt_tokens for p in arrays]))
    length = float(np.mean([p.tokens.mean() for p in arrays]))
    grid = {round(prompt + n * length) for n in (2, 4, 8, 16, 32, 64, 128) if n <= bank_k}
    floor = max(p.prompt_tokens for p in arrays) + max_tokens
    usable = sorted(b for b in grid | {int(b) for b in budgets} if b >= floor)
    if not usable:
        return None
    votes = [SharedVote()] + [SharedVote(BetaStop(c), b) for b in (2, 4) for c in (0.8, 0.95)]
    return SharedBudget(usable, votes, max_n=bank_k, max_tokens=int(max_tokens))
