"""Process reward models: score every step of a (partial) solution, many traces per call.

A PRM takes the problem and, for each trace, the texts of its steps (delimiters removed) and
returns one score per step, a probability that the step is correct. Step searches (beam search,
DVTS, A*, particle filtering) call it through `score_steps`, the one place where PRM cost is
accounted: one verifier call per trace scored per invocation, checked against
`Budget.verifier_calls` before the PRM runs, and the verifier tokens it spent split exactly over
the traces' usages.

Step scores are combined with one vocabulary everywhere (`AGGREGATIONS`):
`last` (the latest step's score), `min`, `mean` and `prod`.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ttc.context import Context, split_verifier_cost
from ttc.errors import InvalidInput
from ttc.needs import NOTHING, Needs, needs_of, thinking_text
from ttc.types import Candidate, Problem, Usage
from ttc.verifiers.base import Verifier
from ttc.verifiers.loading import load_prm

#: how step scores combine into one trace score
AGGREGATIONS = ("last", "min", "mean", "prod")


def check_aggregation(how: str) -> str:
    if how not in AGGREGATIONS:
        raise InvalidInput(f"unknown aggregation {how!r}; known: {', '.join(AGGREGATIONS)}")
    return how


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """Combine step scores: `last`, `min`, `mean` or `prod` (of probabilities)."""
    check_aggregation(how)
    if not scores:
        raise InvalidInput("no step scores to aggregate (a trace without steps)")
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "mean":
        return math.fsum(scores) / len(scores)
    return float(math.prod(scores))


class ProcessRewardModel(abc.ABC):
    """Scores every step of many traces in one batched call; higher is better (a probability).

    Implement `score`; strategies call it through `score_steps`, which enforces the verifier
    budget and accounts the cost. A PRM with `free = True` spends no verifier calls; none of
    ttc's is free (programmatic oracles count calls too, so that budgets compare).

    A PRM declares what it reads beyond the step texts in `needs` (`ttc.needs.Needs`), as a
    verifier does; a step search (and `PRMVerifier`) asks its sampling for it. ttc's PRMs read text only.
    """

    name: str = "prm"
    free: bool = False
    #: what this PRM reads from the sampled steps beyond their text
    needs: Needs = NOTHING

    @abc.abstractmethod
    async def score(self, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context) -> list[list[float]]:
        """For each trace (the texts of its steps, in order), one score per step.

        Spent verifier tokens are recorded with `ctx.record_verifier_tokens`; verifier calls are
        counted by the caller (`score_steps`).
        """

    @classmethod
    def from_pretrained(cls, path: str, format: str = "auto", **kwargs: Any) -> ProcessRewardModel:
        """A Hugging Face PRM from a local folder (or a hub id with a local hub cache).

        format: "qwen" (Qwen2.5-Math-PRM style: a 2-class head read at each `<extra_0>` step
        separator), "math-shepherd" (a causal LM whose '+'/'-' logits at each step tag 'ки' give
        P(correct)), or "auto" (from the config's architecture). Forwards to `ttc.verifiers.loading.load_prm`;
        the model classes are in `ttc.verifiers.reward_models`.
        """
        return load_prm(path, format=format, **kwargs)

    def as_verifier(self, aggregation: str = "last", delimiter: str = "\n\n", split: bool = True) -> PRMVerifier:
        """This PRM as an outcome `Verifier` (for BestOfN, weighted voting); `split=False` scores
        each whole solution as a single step (an outcome judge)."""
        return PRMVerifier(self, aggregation=aggregation, delimiter=delimiter, split=split)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_scores(prm: ProcessRewardModel, traces: Sequence[Sequence[str]], scores: Any) -> list[list[float]]:
    if len(scores) != len(traces):
        raise InvalidInput(f"PRM {prm.name!r} returned {len(scores)} score lists for {len(traces)} traces")
    out = []
    for steps, row in zip(traces, scores, strict=False):
        row = [float(s) for s in row]
        if len(row) != len(steps):
            raise InvalidInput(f"PRM {prm.name!r} returned {len(row)} scores for a trace of {len(steps)} steps")
        if not all(math.isfinite(s) for s in row):
            raise InvalidInput(f"PRM {prm.name!r} returned a non-finite score: {row}")
        out.append(row)
    return out


async def score_steps(prm: ProcessRewardModel, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context,
                      usages: Sequence[Usage] | None = None) -> list[list[float]]:
    """Score every step of `traces` with one PRM invocation, within the verifier budget.

    Counts one verifier call per trace (unless the PRM is free), raising `BudgetExhausted` before
    running the PRM when they do not fit. When `usages` is given (one per trace, e.g. the search
    tree nodes the traces end in), each gets its call and its exact share of the verifier tokens
    the invocation spent, so that the usages still add up to `ctx.usage`. Calls on one context
    must not overlap (the token share is measured on the context).
    """
    if usages is not None and len(usages) != len(traces):
        raise InvalidInput(f"score_steps got {len(usages)} usages for {len(traces)} traces")
    if not traces:
        return []
    for steps in traces:
        if not steps:
            raise InvalidInput("a trace to score has no steps")
    if not prm.free:
        ctx.reserve_verifier_calls(len(traces))
    before = ctx.usage.verifier_tokens
    scores = _check_scores(prm, traces, await prm.score(problem, [list(s) for s in traces], ctx))
    if usages is not None:
        split_verifier_cost(usages, ctx.usage.verifier_tokens - before, prm.free)
    return scores


StepFn = Callable[[Problem, list[str]], float | Awaitable[float]]


class ProgrammaticPRM(ProcessRewardModel):
    """A PRM from a callable: `fn(problem, steps_so_far) -> score of the last of those steps`.

    Every step k of a trace is scored as `fn(problem, steps[:k + 1])` (sync or async). Used as
    an oracle in tests, or to plug in a rule-based checker.

    Source: none (a plain callable). Deviations: none.

    Args:
        fn: `fn(problem, steps_so_far) -> float`, sync or async.
        name: the score's name.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.BeamSearch(width=1, expansions=2, prm=prm).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    def __init__(self, fn: StepFn, name: str = "programmatic_prm"):
        if not callable(fn):
            raise InvalidInput(f"ProgrammaticPRM needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name

    async def score(self, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context) -> list[list[float]]:
        out = []
        for steps in traces:
            row = []
            for k in range(len(steps)):
                value = self.fn(problem, list(steps[: k + 1]))
                if inspect.isawaitable(value):
                    value = await value
                row.append(float(value))
            out.append(row)
        return out


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """The steps of a whole solution text: its non-empty pieces between delimiters, stripped."""
    pieces = [p.strip() for p in text.split(delimiter)] if delimiter else [text.strip()]
    pieces = [p for p in pieces if p]
    return pieces or [text.strip()]


class PRMVerifier(Verifier):
    """A PRM used as an outcome verifier: a candidate's score is its aggregated step scores.

    Steps come from the candidate's trace when it has one (step searches), else from splitting
    its text at `delimiter`; with `split=False` the whole text is one step. One verifier call per
    candidate, as for any verifier.

    Source: PRM scores aggregated over steps as an outcome score (Lightman et al., 2023, "Let's
    Verify Step by Step", rank solutions by their step scores). Deviations: the aggregation is a
    choice (`last`, `min`, `mean`, `prod`), default `last`.

    Args:
        prm: the process reward model.
        aggregation: how step scores combine (`ttc.verifiers.AGGREGATIONS`).
        delimiter: where a whole text is split into steps.
        split: False scores each whole text as one step.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.BestOfN(n=2, verifier=prm.as_verifier("min")).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    def __init__(self, prm: ProcessRewardModel, aggregation: str = "last", delimiter: str = "\n\n",
                 split: bool = True):
        if not isinstance(prm, ProcessRewardModel):
            raise InvalidInput(f"PRMVerifier needs a ProcessRewardModel, got {type(prm).__name__}")
        self.prm = prm
        self.aggregation = check_aggregation(aggregation)
        self.delimiter = delimiter
        self.split = split
        self.name = f"{prm.name}_{aggregation}" if split else prm.name
        self.free = prm.free
        self.needs = needs_of(prm)

    def _steps(self, candidate: Candidate) -> list[str]:
        """The steps the PRM scores: the final content's; a PRM with `Needs(thinking=True)` gets
        the thinking's steps first (a step search's trace already holds its whole output)."""
        thinking = thinking_text(candidate, f"the PRM {self.prm.name!r}") if self.needs.thinking else ""
        if not self.split:
            whole = f"{thinking}\n\n{candidate.text or ''}" if thinking else candidate.text or ""
            return [whole.strip()]
        if candidate.trace is not None and candidate.trace.steps:
            return candidate.trace.step_texts(self.delimiter)
        head = split_steps(thinking, self.delimiter) if thinking.strip() else []
        return head + split_steps(candidate.text or "", self.delimiter)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        traces = [self._steps(c) for c in candidates]
        scores = _check_scores(self.prm, traces, await self.prm.score(problem, traces, ctx))
        return [aggregate(row, self.aggregation) for row in scores]
