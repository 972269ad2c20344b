"""Fast replays of sample-based strategies on one problem's recorded samples.

Each `Family` holds a list of settings (a strategy and its parameters) and evaluates all of them on
one ordering of a problem's samples (a permutation: its first n are "the first n samples drawn"),
returning one row per setting: (correct, tokens, requests, latency). Tokens are what ttc's `Usage`
bills: the prompt once per request plus the completion tokens of every sample drawn. MajorityVote,
BestOfN, AdaptiveVote and RPC replays give exactly the real classes' answers on `BankReplay`
(tests/test_tune.py); DeepConf-online, FirstFinish and routing are approximations stated below.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc.bank.arrays import ProblemArrays

#: columns of a replay row
CORRECT, TOKENS, REQUESTS, LATENCY, GROUP = range(5)
COLUMNS = 5


@dataclass(frozen=True)
class TuneSetting:
    """One replayed configuration: `strategy` (a registry name, or "route"), `n` (most samples it
    may draw) and its own `options`. `label` is what reports show."""

    strategy: str
    n: int
    options: tuple[tuple[str, Any], ...] = ()
    bank: str = ""

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        base = f"{self.strategy}(n={self.n}{',' + opts if opts else ''})"
        return f"{self.bank}:{base}" if self.bank else base

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def fixed(self) -> bool:
        """A plain fixed-n baseline: one sample, or an unweighted majority vote (self-consistency)
        at a fixed n, what one runs without tuning."""
        return self.strategy in ("sample", "majority") and not self.options


def _leaders(p: ProblemArrays, perm: np.ndarray, weights: np.ndarray | None) -> list[int]:
    """The winning group after each prefix (-1: no answer yet): the largest (weighted) total, ties
    to the group seen first (`ttc.votes.weighted_vote`). Only the group just added can overtake."""
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    out = []
    leader = -1
    groups = p.group
    for pos, i in enumerate(perm):
        g = int(groups[i])
        if g >= 0:
            if g not in totals:
                first[g] = pos
                totals[g] = 0.0
            totals[g] += 1.0 if weights is None else float(weights[i])
            if leader < 0 or totals[g] > totals[leader] or (totals[g] == totals[leader] and first[g] < first[leader]):
                leader = g
        out.append(leader)
    return out


class Family:
    """Settings evaluated together on one ordering of one problem's samples."""

    settings: list[TuneSetting]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:  # rows: settings x 4
        raise NotImplementedError


@dataclass
class Vote(Family):
    """MajorityVote(n) for every n in `ns` (n = 1 is plain sampling), optionally weighted by a score
    (log-scale scores exponentiated, as `ttc.votes.vote_weights`)."""

    ns: Sequence[int]
    weight: str | None = None
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        opts = (("verifier", self.weight),) if self.weight else ()
        self.settings = [TuneSetting("sample" if n == 1 and not self.weight else "majority", n,
                                     opts if n > 1 else ()) for n in self.ns]
        if self.weight:
            self.settings = [s for s in self.settings if s.n > 1]
            self.ns = [n for n in self.ns if n > 1]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        weights = None
        if self.weight:
            s = p.scores[self.weight]
            weights = np.exp(s) if self.weight == "mean_logprob" else s
        leaders = _leaders(p, perm, weights) if weights is not None else _draw(p, perm).leaders
        cum = np.cumsum(p.tokens[perm])
        lat = p.prefix_latencies(perm)
        out = np.empty((len(self.ns), COLUMNS))
        for row, n in enumerate(self.ns):
            g = leaders[n - 1]
            out[row] = (g >= 0 and bool(p.correct[g]), p.prompt_tokens + cum[n - 1], 1, lat[n - 1], g)
        return out


@dataclass
class Best(Family):
    """BestOfN(n) by a recorded score: the first sample with the highest score."""

    ns: Sequence[int]
    score: str = "mean_logprob"
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.ns = [n for n in self.ns if n > 1]
        self.settings = [TuneSetting("best_of_n", n, (("verifier", self.score),)) for n in self.ns]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        s = p.scores[self.score][perm]
        cum = np.cumsum(p.tokens[perm])
        lat = p.prefix_latencies(perm)
        out = np.empty((len(self.ns), COLUMNS))
        best, chosen = -math.inf, 0
        upto = 0
        for row, n in enumerate(self.ns):
            while upto < n:
                if s[upto] > best or upto == 0:
                    best, chosen = s[upto], upto
                upto += 1
            i = perm[chosen]
            out[row] = (p.answers[i] is not None and bool(p.correct[i]), p.prompt_tokens + cum[n - 1], 1, lat[n - 1],
                        int(p.group[i]))
        return out


@dataclass
class Adaptive(Family):
    """AdaptiveVote(max_n, batch, stop): rounds of `batch` samples until the real rule stops."""

    max_ns: Sequence[int]
    batch: int
    rule: Any
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        stop = _rule_label(self.rule)
        self.settings = [TuneSetting("adaptive_vote", n, (("batch", min(self.batch, n)), ("stop", stop)))
                         for n in self.max_ns]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        d = _draw(p, perm)
        out = np.empty((len(self.max_ns), COLUMNS))
        walked: dict[int, tuple[int, int, float, int | None]] = {}  # max_n -> (drawn, requests, latency, window)
        top = max(self.max_ns)
        if all(n % min(self.batch, n) == 0 and min(self.batch, n) == min(self.batch, top) for n in self.max_ns):
            # every max_n is a whole number of equal rounds: one walk to the largest serves them all
            rounds = self._walk(p, d, top)
            for max_n in self.max_ns:
                r = next(r for r in rounds if r[3] or r[0] >= max_n)
                walked[max_n] = r[:3] + (r[4] if r[3] else None,)
        for row, max_n in enumerate(self.max_ns):
            if max_n not in walked:
                last = self._walk(p, d, max_n)[-1]
                walked[max_n] = last[:3] + (last[4] if last[3] else None,)
            drawn, requests, latency, window = walked[max_n]
            if window is not None:  # ESC: the first unanimous window answers
                g = d.groups[window]
            else:
                g = d.leaders[drawn - 1]
            out[row] = (g >= 0 and bool(p.correct[g]), requests * p.prompt_tokens + d.cum[drawn - 1], requests,
                        latency, g)
        return out

    def _walk(self, p: ProblemArrays, d: _Draw, max_n: int) -> list[tuple[int, int, float, bool, int | None]]:
        """After each round: (drawn, requests, latency so far, stopped, start of ESC's unanimous window)."""
        batch = min(self.batch, max_n)
        drawn, requests, latency = 0, 0, 0.0
        out = []
        counts: dict[int, int] = {}
        scale = p.latency / (float(p.tokens.max()) or 1.0)
        while drawn < max_n:
            take = min(batch, max_n - drawn)
            latency += scale * max(d.tokens[drawn:drawn + take])
            for g in d.groups[drawn:drawn + take]:
                if g >= 0:
                    counts[g] = counts.get(g, 0) + 1
            drawn += take
            requests += 1
            stopped, start = stop_decision(self.rule, counts, p, d, drawn)
            out.append((drawn, requests, latency, stopped, start))
            if stopped:
                break
        return out


def stop_decision(rule: Any, counts: dict[int, int], p: ProblemArrays, d: _Draw, n: int) -> tuple[bool, int | None]:
    """Whether `rule` stops after the first n samples of ordering `d` (`counts`: their answer groups'
    counts), and for ESC the start of its unanimous window there (else None). Beta and ESC are
    decided from the group counts; any other rule is asked on the samples' answers, and refused when
    it would vote with only a part of them."""
    from ttc.stopping import BetaStop, NeverStop, WindowStop

    if type(rule) is NeverStop:
        return False, None
    if type(rule) is BetaStop:
        return _beta_decides(rule, sorted(counts.values(), reverse=True)[:2], n), None
    if type(rule) is WindowStop:
        start = _window_start(d.groups[:n], rule.window)
        return start is not None, start
    answers = [p.rep[i] for i in d.perm[:n]]
    stop = rule.should_stop(answers)
    if stop and rule.voters(answers) != list(range(n)):
        raise NotImplementedError(f"replaying {rule!r}: a rule whose voters are a part of the samples "
                                  "other than ESC's window")
    return stop, None


_BETA: dict[tuple, bool] = {}


def _beta_decides(rule: Any, top: list[int], drawn: int) -> bool:
    """`BetaStop.decide` on the two largest vote counts, memoised (it depends on nothing else)."""
    key = (rule.confidence, rule.min_samples, tuple(top), drawn >= rule.min_samples)
    if key not in _BETA:
        _BETA[key] = rule.decide(list(top), drawn)
    return _BETA[key]


def _window_start(groups: list[int], w: int) -> int | None:
    """`WindowStop.unanimous_window` on group ids."""
    for start in range(0, len(groups) - w + 1, w):
        first = groups[start]
        if first >= 0 and all(g == first for g in groups[start + 1:start + w]):
            return start
    return None


@dataclass
class _Draw:
    """One ordering of a problem's samples, as plain lists, with the unweighted leader after each prefix."""

    perm: np.ndarray
    groups: list[int]
    tokens: list[int]
    cum: list[int]
    leaders: list[int]


_LAST: list[_Draw | None] = [None]


def _draw(p: ProblemArrays, perm: np.ndarray) -> _Draw:
    """The `_Draw` of (p, perm), computed once for all families that replay this ordering."""
    last = _LAST[0]
    if last is not None and last.perm is perm:
        return last
    tokens = p.tokens[perm].tolist()
    d = _Draw(perm, p.group[perm].tolist(), tokens, list(itertools.accumulate(tokens)), _leaders(p, perm, None))
    _LAST[0] = d
    return d


def _rule_label(rule: Any) -> str:
    if getattr(rule, "name", "") == "beta":
        return f"beta{rule.confidence:g}"
    if getattr(rule, "name", "") == "esc":
        return f"esc{rule.window}"
    return getattr(rule, "name", type(rule).__name__)


@dataclass
class Rpc(Family):
    """RPC(n) through the real `ttc.strategies.rpc.rpc_vote` on the first n samples."""

    ns: Sequence[int]
    prune: str = "mixture"
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.ns = [n for n in self.ns if n > 1]
        opts = (("prune", self.prune),) if self.prune != "mixture" else ()
        self.settings = [TuneSetting("rpc", n, opts) for n in self.ns]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        cum = np.cumsum(p.tokens[perm])
        lat = p.prefix_latencies(perm)
        out = np.empty((len(self.ns), COLUMNS))
        for row, n in enumerate(self.ns):
            g = _rpc_group(p, perm[:n], self.prune)
            out[row] = (g >= 0 and bool(p.correct[g]), p.prompt_tokens + cum[n - 1], 1, lat[n - 1], g)
        return out


def _rpc_group(p: ProblemArrays, idx: np.ndarray, prune: str) -> int:
    """`ttc.strategies.rpc.rpc_vote` on group ids: path probabilities exp(mean logprob), identical
    texts counted once, pruning by the real `prune_mask`, the all-pruned fallback, ties to the
    group seen first."""
    from ttc.strategies.rpc import path_probability, prune_mask

    probs = [path_probability(float(p.logprob_sum[i]), int(p.tokens[i])) for i in idx]
    pruned = prune_mask(probs) if prune == "mixture" else [False] * len(idx)
    kept = [not x for x in pruned]
    if all(p.group[i] < 0 or not k for i, k in zip(idx, kept, strict=True)) and any(p.group[i] >= 0 for i in idx):
        kept = [True] * len(idx)
    seen: set[str] = set()
    weights = []
    for j, i in enumerate(idx):
        w = probs[j] if kept[j] else 0.0
        if kept[j]:
            if p.texts[i] in seen:
                w = 0.0
            seen.add(p.texts[i])
        weights.append(w)
    voting = np.array([i for j, i in enumerate(idx) if kept[j] and p.group[i] >= 0], dtype=int)
    if not len(voting):
        return -1
    w = np.zeros(p.k)
    w[idx] = weights  # a sample appears once in idx
    return _vote_with_fallback(p, voting, w)


def _vote_with_fallback(p: ProblemArrays, voting: np.ndarray, weights: np.ndarray) -> int:
    """`ttc.votes.weighted_vote` on group ids: the largest total, ties to the group seen first; when
    every total is 0, the unweighted plurality."""
    g = _leaders(p, voting, weights)[-1]
    totals: dict[int, float] = {}
    for i in voting:
        totals[int(p.group[i])] = totals.get(int(p.group[i]), 0.0) + float(weights[i])
    if all(v == 0 for v in totals.values()):
        g = _leaders(p, voting, None)[-1]
    return g


@dataclass
class FirstFinishReplay(Family):
    """FirstFinish(n): the shortest of the first n samples wins (ties: the first); every stream is
    billed its prompt and the winner's length (all decode at one speed: an approximation)."""

    ns: Sequence[int]
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.ns = [n for n in self.ns if n > 1]
        self.settings = [TuneSetting("first_finish", n) for n in self.ns]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        lengths = p.tokens[perm]
        out = np.empty((len(self.ns), COLUMNS))
        for row, n in enumerate(self.ns):
            j = int(np.argmin(lengths[:n]))
            i = perm[j]
            short = int(lengths[j])
            out[row] = (p.answers[i] is not None and bool(p.correct[i]), n * (p.prompt_tokens + short), n,
                        p.request_latency([i]), int(p.group[i]))
        return out


@dataclass
class DeepConfOnline(Family):
    """DeepConf-online (registry defaults: warm-up min(16, n // 2), keep, window): the warm-up traces
    set the bar; each later trace is truncated at the first check (every `every` tokens, and at its
    end) where the mean confidence of its last `window` tokens falls under the bar, billed to there
    (its prompt once: a server with prefix caching), and dropped from the vote. An approximation of
    the chunked live run (whose chunk requests re-send the prompt)."""

    ns: Sequence[int]
    keep: float = 0.1
    window: int = 64
    every: int = 32
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.ns = [n for n in self.ns if n > 1]
        self.settings = [TuneSetting("deepconf", n, (("keep", self.keep),)) for n in self.ns]
        self._cache: dict[str, list[np.ndarray]] = {}

    def _windows(self, p: ProblemArrays) -> tuple[np.ndarray, np.ndarray]:
        """(positions, confidences): per sample (rows), its online checks' positions and the window
        confidence there (padded with +inf: never under a bar)."""
        if p.problem_id not in self._cache:
            from ttc.probes.confidence import token_confidences

            rows = []
            for s in p.samples:
                conf = token_confidences(s.logprobs, s.top_logprobs, "topk")
                csum = np.concatenate([[0.0], np.cumsum(conf)])
                points = sorted(set(range(self.every, len(conf) + 1, self.every)) | {len(conf)}) if len(conf) else []
                rows.append([(c, (csum[c] - csum[max(0, c - self.window)]) / min(self.window, c)) for c in points])
            width = max(1, max(len(r) for r in rows))
            pos = np.zeros((len(rows), width))
            val = np.full((len(rows), width), np.inf)
            for i, r in enumerate(rows):
                if r:
                    pos[i, :len(r)], val[i, :len(r)] = zip(*r, strict=True)
            self._cache = {p.problem_id: (pos, val)}  # one problem at a time
        return self._cache[p.problem_id]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        from ttc.strategies.deepconf import percentile_threshold

        pos, val = self._windows(p)
        conf = p.lowest_conf
        out = np.empty((len(self.ns), COLUMNS))
        for row, n in enumerate(self.ns):
            warm = min(16, max(1, n // 2))
            idx = perm[:n]
            finite = [conf[i] for i in idx[:warm] if math.isfinite(conf[i])]
            bar = percentile_threshold(finite, self.keep) if finite else -math.inf
            voters = [i for i in idx[:warm] if conf[i] >= bar]
            online = idx[warm:]
            under = val[online] < bar
            cut = under.any(axis=1)
            first = under.argmax(axis=1)
            spent = np.where(cut, pos[online, first], p.tokens[online])
            tokens = p.prompt_tokens * (1 + len(online)) + int(p.tokens[idx[:warm]].sum()) + int(spent.sum())
            voters += [i for i, c in zip(online, cut, strict=True) if not c and conf[i] >= bar]
            longest = float(spent.max()) if len(online) else 0.0
            latency = p.request_latency(idx[:warm]) + p.latency * longest / (float(p.tokens.max()) or 1.0)
            voting = np.array([i for i in voters if p.group[i] >= 0], dtype=int)
            g = _vote_with_fallback(p, voting, np.maximum(conf, 0.0)) if len(voting) else -1
            out[row] = (g >= 0 and bool(p.correct[g]), tokens, 1 + len(online), latency, g)
        return out


@dataclass
class Route(Family):
    """Per-problem routing learned from the bank: draw `m` samples; where they all agree, answer;
    where they disagree, draw up to `n` in all (a second request) and take the majority. Which
    (m, n) is best is what tuning learns (fit on one split, checked on the other)."""

    pairs: Sequence[tuple[int, int]]
    settings: list[TuneSetting] = field(init=False)

    def __post_init__(self) -> None:
        self.settings = [TuneSetting("route", n, (("first", m),)) for m, n in self.pairs]

    def run(self, p: ProblemArrays, perm: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.pairs), COLUMNS))
        leaders = _draw(p, perm).leaders
        for row, (m, n) in enumerate(self.pairs):
            first = p.group[perm[:m]]
            agree = first[0] >= 0 and bool(np.all(first == first[0]))
            drawn = m if agree else n
            requests = 1 if agree else 2
            g = leaders[drawn - 1]
            latency = p.request_latency(perm[:m]) + (0.0 if agree else p.request_latency(perm[m:n]))
            out[row] = (g >= 0 and bool(p.correct[g]), requests * p.prompt_tokens + int(p.tokens[perm[:drawn]].sum()),
                        requests, latency, g)
        return out
