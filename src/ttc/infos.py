"""What a strategy did, as typed frozen records: `Result.details`.

One record per strategy family: `VoteInfo` (votes), `SelectionInfo` (best-of-N's choice),
`SearchInfo` and its `BeamInfo` / `AStarInfo` / `ParticleInfo` (step searches; a particle filter
keeps one `ParticleRound` per round). Each is also a read-only mapping over its `to_dict()`, so
`result.details["votes"]` reads as it always did, and `to_dict()` is exactly what results files
hold (JSON-ready, keys in the order they were always written). `extra` holds keys added after the
run (the runner's truncation warning): `info.with_extra(key=value)` returns a new record.

`StopReason` is the closed set of reasons a search gives in `stopped_by`. To add one (a new
adaptive strategy's), add its string to the family's `Literal` below (or a new family `Literal`
to `StopReason`'s): type checkers then check every use, and `check_stop_reason` accepts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ttc.errors import InvalidInput

#: why the searches' growth round stopped: the budget ran out before the search did
BudgetStop = Literal["verifier_budget", "token_budget"]
#: why a search ended on its own: beam search (no beam left or max steps), A* (a goal popped,
#: the pop cap, nothing left to pop), particle filtering (every particle finished or max steps)
SearchStop = Literal["search_complete", "solved", "max_expansions", "open_set_empty", "all_finished"]
#: why an adaptive vote stopped sampling (`ttc.AdaptiveVote`, `ttc.stopping`): its rule said the
#: vote is decided, it drew max_n, or the problem's budget could not pay for another round
AdaptiveStop = Literal["decided", "max_n", "budget"]
#: why adaptive best-of-N stopped (`ttc.AdaptiveBestOfN`): the model no longer expects a restart to
#: do better, it drew max_n, or the budget could not pay for another round
SelfEvalStop = Literal["confident", "max_n", "budget"]
#: every stop reason (`Literal` of `Literal`s flattens); extend it with a new family's Literal
StopReason = Literal[BudgetStop, SearchStop, AdaptiveStop, SelfEvalStop]
STOP_REASONS: tuple[str, ...] = tuple(dict.fromkeys(
    get_args(BudgetStop) + get_args(SearchStop) + get_args(AdaptiveStop) + get_args(SelfEvalStop)))


def check_stop_reason(reason: str) -> str:
    if reason not in STOP_REASONS:
        raise InvalidInput(f"unknown stop reason {reason!r}; known: {', '.join(STOP_REASONS)}")
    return reason


@dataclass(frozen=True, eq=False, kw_only=True)
class Info(Mapping[str, Any]):
    """The base record: no fields of its own (plain sampling), plus `extra` keys."""

    extra: Mapping[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """A fresh JSON-ready dict (what `ttc eval` writes as `details`)."""
        return self._fields() | dict(self.extra)

    def with_extra(self, **values: Any) -> Info:
        return dataclasses.replace(self, extra={**self.extra, **values})

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _choice(chosen: int | None, votes: Mapping[str, float] | None, vote_fallback: str | None,
            tie: tuple[str, ...] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if chosen is not None:
        out["chosen"] = chosen
    if votes is not None:
        out["votes"] = dict(votes)
    if vote_fallback is not None:
        out["vote_fallback"] = vote_fallback
    if tie is not None:
        out["tie"] = list(tie)
    return out


@dataclass(frozen=True, eq=False, kw_only=True)
class VoteInfo(Info):
    """A vote over candidates' answers (MajorityVote): the total weight per answer,
    `vote_fallback` when every weight was 0 and the unweighted plurality decided, and `tie`: the
    answers that shared the largest total, the winner (seen first) first; None without a tie
    (`ttc.votes`)."""

    votes: Mapping[str, float]
    vote_fallback: str | None = None
    tie: tuple[str, ...] | None = None

    def _fields(self) -> dict[str, Any]:
        return _choice(None, self.votes, self.vote_fallback, self.tie)


@dataclass(frozen=True, eq=False, kw_only=True)
class AdaptiveVoteInfo(VoteInfo):
    """An adaptive vote: the samples that voted, those cancelled in flight, why sampling stopped
    and by which rule; rounds (batch mode) or launched samples and finish order (stream mode)."""

    samples: int
    cancelled: int
    stop_reason: AdaptiveStop
    stop_rule: str
    rounds: int | None = None
    launched: int | None = None
    finish_order: tuple[int, ...] | None = None

    def _fields(self) -> dict[str, Any]:
        out = _choice(None, self.votes, self.vote_fallback, self.tie) | {"samples": self.samples,
                                                                         "cancelled": self.cancelled}
        if self.rounds is not None:
            out["rounds"] = self.rounds
        out |= {"stop_reason": self.stop_reason, "stop_rule": self.stop_rule}
        if self.launched is not None:
            out["launched"] = self.launched
        if self.finish_order is not None:
            out["finish_order"] = list(self.finish_order)
        return out


@dataclass(frozen=True, eq=False, kw_only=True)
class ConfidenceVoteInfo(VoteInfo):
    """DeepConf's vote: the confidence bar, every trace's confidence, and which traces voted."""

    threshold: float
    keep: float
    warmup: int
    online: int
    confidences: tuple[float, ...]
    voters: tuple[int, ...]
    stopped: int

    def _fields(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "keep": self.keep, "warmup": self.warmup, "online": self.online,
                "confidences": list(self.confidences), "voters": list(self.voters), "votes": dict(self.votes),
                "stopped": self.stopped} | _choice(None, None, self.vote_fallback, self.tie)


@dataclass(frozen=True, eq=False, kw_only=True)
class FirstFinishInfo(VoteInfo):
    """FirstFinish's vote over the first finishers, with every candidate's finish time."""

    chosen: tuple[int, ...]
    latency_seconds: float
    finish_seconds: tuple[float | None, ...]
    finish_order: tuple[int, ...]
    cancelled: int
    failed: int

    def _fields(self) -> dict[str, Any]:
        return {"chosen": list(self.chosen), "votes": dict(self.votes), "latency_seconds": self.latency_seconds,
                "finish_seconds": list(self.finish_seconds), "finish_order": list(self.finish_order),
                "cancelled": self.cancelled, "failed": self.failed} | _choice(None, None, None, self.tie)


@dataclass(frozen=True, eq=False, kw_only=True)
class SelectionInfo(Info):
    """Best-of-N: the index of the chosen candidate and every candidate's score."""

    chosen: int
    scores: tuple[float, ...]

    def _fields(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "scores": list(self.scores)}


@dataclass(frozen=True, eq=False, kw_only=True)
class SearchInfo(Info):
    """A step search: how the answer was chosen among the final nodes (`chosen`: the best one's
    index among the candidates, or `votes`, with `tie` as in `VoteInfo`), the tree's size, and why
    the search stopped."""

    select: str
    nodes: int
    finished: int
    generated: int
    stopped_by: StopReason
    chosen: int | None = None
    votes: Mapping[str, float] | None = None
    vote_fallback: str | None = None
    tie: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_stop_reason(self.stopped_by)

    def _head(self) -> dict[str, Any]:
        return {"select": self.select, "nodes": self.nodes, "finished": self.finished} | _choice(
            self.chosen, self.votes, self.vote_fallback, self.tie)

    def _fields(self) -> dict[str, Any]:
        return self._head() | {"generated": self.generated, "stopped_by": self.stopped_by}


@dataclass(frozen=True, eq=False, kw_only=True)
class BeamInfo(SearchInfo):
    """BeamSearch / DVTS: rounds run and the beam's shape."""

    rounds: int
    width: int
    expansions: int
    diverse: bool

    def _fields(self) -> dict[str, Any]:
        return self._head() | {"rounds": self.rounds, "width": self.width, "expansions": self.expansions,
                               "diverse": self.diverse, "generated": self.generated, "stopped_by": self.stopped_by}


@dataclass(frozen=True, eq=False, kw_only=True)
class AStarInfo(SearchInfo):
    """AStar: pops that expanded a node, and f = g + h of each final node (by node id)."""

    expanded: int
    expansions: int
    cost_weight: float
    f: Mapping[int, float]

    def _fields(self) -> dict[str, Any]:
        return self._head() | {"expanded": self.expanded, "generated": self.generated, "expansions": self.expansions,
                               "cost_weight": self.cost_weight, "f": dict(self.f), "stopped_by": self.stopped_by}


@dataclass(frozen=True)
class ParticleRound:
    """One round of particle filtering (Puri et al., 2025, Algorithm 1): the population after
    each particle was extended by one step (tree node ids), the PRM score of each one's latest
    step, the normalised weights, their effective sample size, and the ancestors: for each
    particle of the next population, the index (into `nodes`) it descends from. `resampled` is
    False when ESS-triggered resampling skipped the round (then `ancestors` is 0..N-1)."""

    round: int
    nodes: tuple[int, ...]
    scores: tuple[float | None, ...]
    weights: tuple[float, ...]
    ess: float
    ancestors: tuple[int, ...]
    resampled: bool = True
    #: particle Gibbs (`ttc.ParticleGibbs`): the index in `nodes` of the reference particle's
    #: prefix (it is weighted with the others but not resampled); None in a plain particle filter
    reference: int | None = None
    #: particle Gibbs: which sweep (0 = the plain particle filter); parallel tempering: which chain
    iteration: int = 0
    chain: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"round": self.round, "nodes": list(self.nodes), "scores": list(self.scores),
               "weights": list(self.weights), "ess": self.ess, "resampled": list(self.ancestors)}
        if not self.resampled:
            out["resampling_skipped"] = True
        if self.reference is not None:
            out["reference"] = self.reference
        if self.iteration:
            out["iteration"] = self.iteration
        if self.chain is not None:
            out["chain"] = self.chain
        return out


@dataclass(frozen=True)
class Swap:
    """One proposed exchange of reference particles between two tempered chains (parallel
    tempering, `ttc.ParallelTempering`): after sweep `iteration`, chains `chains` = (i, j) at
    inverse temperatures `betas` held references with final log-likelihoods `log_likelihoods`
    (logit of their final PRM score); the swap was accepted with probability `acceptance`."""

    iteration: int
    chains: tuple[int, int]
    betas: tuple[float, float]
    log_likelihoods: tuple[float, float]
    acceptance: float
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "chains": list(self.chains), "betas": list(self.betas),
                "log_likelihoods": list(self.log_likelihoods), "acceptance": self.acceptance,
                "accepted": self.accepted}


@dataclass(frozen=True, eq=False, kw_only=True)
class ParticleInfo(SearchInfo):
    """ParticleFilter: its settings, every round's record, and how many final particles share
    each candidate (`multiplicity`)."""

    particles: int
    temperature: float
    resampling: str
    history: tuple[ParticleRound, ...]
    multiplicity: tuple[int, ...]
    resample_threshold: float | None = None
    weight_by: str = "last"

    def _fields(self) -> dict[str, Any]:
        out = self._head() | {"particles": self.particles, "temperature": self.temperature,
                              "resampling": self.resampling}
        if self.resample_threshold is not None:
            out["resample_threshold"] = self.resample_threshold
        if self.weight_by != "last":
            out["weight_by"] = self.weight_by
        return out | {"rounds": len(self.history), "ess": [r.ess for r in self.history],
                      "history": [r.to_dict() for r in self.history], "multiplicity": list(self.multiplicity),
                      "generated": self.generated, "stopped_by": self.stopped_by}


@dataclass(frozen=True, eq=False, kw_only=True)
class ParticleGibbsInfo(ParticleInfo):
    """ParticleGibbs: a ParticleInfo over every sweep (`history` holds the rounds of all of them,
    each with its `iteration`), plus the number of sweeps and the reference particle (tree node
    id) each sweep after the first was conditioned on."""

    iterations: int
    references: tuple[int, ...]

    def _fields(self) -> dict[str, Any]:
        return super()._fields() | {"iterations": self.iterations, "references": list(self.references)}


@dataclass(frozen=True, eq=False, kw_only=True)
class TemperingInfo(ParticleGibbsInfo):
    """ParallelTempering: a ParticleGibbsInfo of every chain's sweeps (rounds carry their
    `chain`; `references` are the target chain's), the chains' temperatures (chain 0, the
    lowest, is the target: the answer is chosen among its final particles), every proposed swap,
    and each chain's reference node after each iteration (`chain_references[c]`)."""

    temperatures: tuple[float, ...]
    swaps: tuple[Swap, ...]
    chain_references: tuple[tuple[int, ...], ...]

    def _fields(self) -> dict[str, Any]:
        accepted = sum(s.accepted for s in self.swaps)
        return super()._fields() | {"temperatures": list(self.temperatures),
                                    "swaps": [s.to_dict() for s in self.swaps],
                                    "swap_rate": accepted / len(self.swaps) if self.swaps else None,
                                    "chain_references": [list(r) for r in self.chain_references]}


#: what an aggregation call did: named the best (GenSelect), wrote new candidates from several (RSA,
#: Fuse), ordered them (Rank), or judged one (Critique)
AggregationKind = Literal["select", "aggregate", "fuse", "rank", "critique"]


@dataclass(frozen=True)
class Aggregation:
    """One aggregation call of a combining strategy (`ttc.aggregation`): which candidates it read.

    `inputs`: the candidates shown, in the order shown (indices into `Result.candidates`; the one
    labelled "Solution 1" first). `outputs`: the candidates it wrote (RSA, Fuse), else (). `chosen`:
    what it named, as candidate indices: the winner (select) or the order (rank); () when it wrote or
    judged. `parsed`: False when its text named nothing usable and the documented fallback decided.
    `round`: the tournament round or RSA round (0-based). `text`: the selector's, ranker's or critic's
    text (None for calls that wrote candidates: those are in `Result.candidates`). `prompt_tokens`:
    the prompt's length as ttc measured it before sending (None when it did not need to)."""

    kind: AggregationKind
    round: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...] = ()
    chosen: tuple[int, ...] = ()
    parsed: bool = True
    text: str | None = None
    prompt_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "round": self.round, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "chosen": list(self.chosen), "parsed": self.parsed, "text": self.text,
                "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True, eq=False, kw_only=True)
class CombineInfo(Info):
    """A strategy that combines candidates (GenSelect, RSA, Archon's layers): every aggregation call
    in order (those of the strategies it wraps first: indices stay valid because a layer's
    candidates are its inner strategy's followed by its own), `outputs` (the candidates this layer
    passes on, best first where it ranks), `chosen` (the candidate whose answer is the answer, None
    when a vote decided), `votes` (RSA's vote over its final population) and `fallback` (why a
    documented fallback decided, else None)."""

    aggregations: tuple[Aggregation, ...]
    outputs: tuple[int, ...]
    chosen: int | None = None
    votes: Mapping[str, float] | None = None
    fallback: str | None = None
    tie: tuple[str, ...] | None = None

    def _fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"aggregations": [a.to_dict() for a in self.aggregations],
                               "outputs": list(self.outputs), "chosen": self.chosen}
        if self.votes is not None:
            out["votes"] = dict(self.votes)
        if self.tie is not None:
            out["tie"] = list(self.tie)
        out["fallback"] = self.fallback
        return out
