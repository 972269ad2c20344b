"""What every step-level search shares: its PRM, what a step is, how steps are sampled, the growth
round (trim to the verifier budget -> expand -> add to the tree -> score -> stop reason), and the
Result (candidates, answer, search tree, usage, a typed `ttc.infos.SearchInfo`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive  # noqa: F401 (re-exported)
from ttc.infos import SearchInfo, StopReason
from ttc.needs import fill, needs_of
from ttc.prompts import ChatPrompt
from ttc.steps import (
    STEP_PARAMS,
    Node,
    SearchTree,
    StepConfig,
    Stepper,
    check_selection,
    make_candidate,
    select_answer,
)
from ttc.strategies.base import Strategy
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel, aggregate, check_aggregation, score_steps

# -- trim rules: how many of the wanted samples a round may draw, given the verifier calls left ----
#: (samples wanted per request, verifier calls left) -> samples granted per request
TrimRule = Callable[[Sequence[int], int], list[int]]


def all_or_nothing(wanted: Sequence[int], left: int) -> list[int]:
    """Every request, or none if the budget cannot score them all (ParticleFilter: a particle
    left unextended could not be weighted with the others)."""
    return list(wanted) if sum(wanted) <= left else [0] * len(wanted)


def in_order(wanted: Sequence[int], left: int) -> list[int]:
    """Requests in order, each as far as the budget still goes (BeamSearch: the samples the budget
    can score, the first beams first)."""
    granted = []
    for k in wanted:
        granted.append(min(k, left))
        left -= granted[-1]
    return granted


def each_capped(wanted: Sequence[int], left: int) -> list[int]:
    """Each request capped at the calls left, independently (AStar: one request per pop)."""
    return [min(k, left) for k in wanted]


class Request(NamedTuple):
    """Sample `n` next steps of `node` (their tree nodes get `group`, default the parent's)."""

    node: Node
    n: int
    group: int | None = None


@dataclass(frozen=True)
class Growth:
    """What one growth round produced: the requests drawn (after the trim), each one's new scored
    children, why the search must stop now (`stop`: nothing usable was produced), and whether
    the token budget refused some request (`exhausted`: stop after using this round)."""

    requests: tuple[Request, ...] = ()
    children: tuple[tuple[Node, ...], ...] = ()
    stop: StopReason | None = None
    exhausted: bool = False

    @property
    def new(self) -> list[Node]:
        return [child for kids in self.children for child in kids]


class StepSearch(Strategy):
    """Base of BeamSearch, AStar and ParticleFilter (not used directly).

    prm: the process reward model (default: `LLMJudge()`, judging with the policy's generator).
    aggregation: how a trace's step scores combine (last|min|mean|prod).
    select: how the answer is chosen among finished traces (best|weighted|majority).
    steps: what a step is (delimiter, max steps, max tokens per step).
    params: how steps are sampled (temperature, top_p, seed; max_tokens and stop come from `steps`);
        what the PRM declares it reads (`prm.needs`, e.g. token logprobs) is asked for where unset.
    prompt: how the problem becomes the chat prompt.
    """

    def __init__(self, prm: ProcessRewardModel | None = None, *, aggregation: str = "last", select: str = "best",
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        if prm is None:
            from ttc.verifiers.judge import LLMJudge

            prm = LLMJudge()
        if not isinstance(prm, ProcessRewardModel):
            raise InvalidInput(
                f"{type(self).__name__} needs a process reward model (ttc.verifiers.ProcessRewardModel), "
                f"got {type(prm).__name__}"
            )
        if steps is not None and not isinstance(steps, StepConfig):
            raise InvalidInput(f"steps= must be a ttc.steps.StepConfig, got {type(steps).__name__}")
        if not isinstance(params, SamplingParams):
            raise InvalidInput(f"params= must be ttc.SamplingParams, got {type(params).__name__}")
        self.prm = prm
        self.aggregation = check_aggregation(aggregation)
        self.select = check_selection(select)
        self.steps = steps or StepConfig()
        self.params = fill(params, needs_of(prm), who=f"the PRM {prm.name!r} of {type(self).__name__}",
                           where="its params")
        self.prompt = prompt

    async def _begin(self, problem: Problem, ctx: Context) -> tuple[Stepper, SearchTree]:
        stepper = await Stepper(problem, ctx, self.steps, self.params, self.prompt).start()
        return stepper, SearchTree(split=stepper.split if ctx.generator.thinking is not None else None)

    async def _grow(self, problem: Problem, ctx: Context, stepper: Stepper, tree: SearchTree,
                    requests: Sequence[Request], trim: TrimRule, label: int) -> Growth:
        """One growth round: trim the requests to the verifier-call budget (`trim`), sample them
        (concurrently), add the new steps to the tree (their parents get `expanded = label`), and
        score them in one PRM call. Stops with "verifier_budget" when the trim leaves nothing or the
        PRM budget runs out while scoring (the new nodes stay in the tree, unscored), and with
        "token_budget" when no request produced a step."""
        left = ctx.verifier_calls_left()
        if left is not None:
            granted = trim([r.n for r in requests], left)
            requests = [r._replace(n=k) for r, k in zip(requests, granted, strict=True) if k]
        if not requests:
            return Growth(stop="verifier_budget")
        results, exhausted = await stepper.expand_many([(r.node.trace, r.n) for r in requests])
        children = []
        for r, expansions in zip(requests, results, strict=True):
            if expansions:
                r.node.expanded = label
            children.append(tuple(tree.add(r.node, e, group=r.group) for e in expansions))
        growth = Growth(tuple(requests), tuple(children), exhausted=exhausted)
        if not growth.new:
            return dataclasses.replace(growth, stop="token_budget")
        if not await self._score(problem, ctx, growth.new):
            return dataclasses.replace(growth, stop="verifier_budget")
        return growth

    async def _score(self, problem: Problem, ctx: Context, nodes: Sequence[Node]) -> bool:
        """Score new nodes in one PRM call (score, step_scores, value); False if the budget ran out."""
        if not nodes:
            return True
        traces = [n.trace.step_texts(self.steps.delimiter) for n in nodes]
        try:
            scores = await score_steps(self.prm, problem, traces, ctx, usages=[n.usage for n in nodes])
        except BudgetExhausted:
            return False
        for node, row in zip(nodes, scores, strict=False):
            node.step_scores = row
            node.score = row[-1]
            for step, s in zip(node.trace.steps, row, strict=False):
                step.score = s
            node.value = aggregate(row, self.aggregation)
        return True

    def _result(self, problem: Problem, ctx: Context, tree: SearchTree, final: Sequence[Node],
                weights: Sequence[float] | None = None, *, select: str | None = None,
                info: type[SearchInfo] = SearchInfo, **fields: Any) -> Result:
        """Candidates from `final` nodes (weights default to their values), the chosen answer
        (by `select`, default the strategy's), and the `info` record (`fields`: its own)."""
        final = list(final)
        if weights is None:
            weights = [n.value if n.value is not None else float("-inf") for n in final]
        candidates = [make_candidate(tree, n, self.prm.name, n.value) for n in final]
        answer, chosen = select_answer(candidates, list(weights), select or self.select, name=self.prm.name)
        details = info(select=self.select, nodes=len(tree), finished=sum(n.finished for n in final),
                       generated=tree.generated, **chosen, **fields)
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage, strategy=self.name,
                      details=details, tree=tree)
