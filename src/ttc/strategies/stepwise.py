"""What every step-level search shares: its PRM, what a step is, how steps are sampled, scoring
of new tree nodes, and the Result (candidates, answer, search tree, usage)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive  # noqa: F401 (re-exported)
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


class StepSearch(Strategy):
    """Base of BeamSearch, AStar and ParticleFilter (not used directly).

    prm: the process reward model (default: `LLMJudge()`, judging with the policy's generator).
    aggregation: how a trace's step scores combine (last|min|mean|prod).
    select: how the answer is chosen among finished traces (best|weighted|majority).
    steps: what a step is (delimiter, max steps, max tokens per step).
    params: how steps are sampled (temperature, top_p, seed; max_tokens and stop come from `steps`).
    prompt: how the problem becomes the chat prompt.
    """

    def __init__(self, prm: ProcessRewardModel | None = None, *, aggregation: str = "last", select: str = "best",
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        if prm is None:
            from ttc.verifiers.judge import LLMJudge

            prm = LLMJudge()
        if not isinstance(prm, ProcessRewardModel):
            raise InvalidInput(f"{type(self).__name__} needs a process reward model (ttc.verifiers.ProcessRewardModel), "
                               f"got {type(prm).__name__}")
        if steps is not None and not isinstance(steps, StepConfig):
            raise InvalidInput(f"steps= must be a ttc.steps.StepConfig, got {type(steps).__name__}")
        if not isinstance(params, SamplingParams):
            raise InvalidInput(f"params= must be ttc.SamplingParams, got {type(params).__name__}")
        self.prm = prm
        self.aggregation = check_aggregation(aggregation)
        self.select = check_selection(select)
        self.steps = steps or StepConfig()
        self.params = params
        self.prompt = prompt

    async def _begin(self, problem: Problem, ctx: Context) -> tuple[Stepper, SearchTree]:
        stepper = await Stepper(problem, ctx, self.steps, self.params, self.prompt).start()
        return stepper, SearchTree()

    async def _score(self, problem: Problem, ctx: Context, nodes: Sequence[Node]) -> bool:
        """Score new nodes in one PRM call (score, step_scores, value); False if the budget ran out."""
        if not nodes:
            return True
        traces = [n.trace.step_texts(self.steps.delimiter) for n in nodes]
        try:
            scores = await score_steps(self.prm, problem, traces, ctx, usages=[n.usage for n in nodes])
        except BudgetExhausted:
            return False
        for node, row in zip(nodes, scores):
            node.step_scores = row
            node.score = row[-1]
            for step, s in zip(node.trace.steps, row):
                step.score = s
            node.value = aggregate(row, self.aggregation)
        return True

    def _result(self, problem: Problem, ctx: Context, tree: SearchTree, final: Sequence[Node],
                weights: Sequence[float] | None = None, details: dict[str, Any] | None = None,
                select: str | None = None) -> Result:
        """Candidates from `final` nodes (weights default to their values) and the chosen answer
        (by `select`, default the strategy's)."""
        final = list(final)
        if weights is None:
            weights = [n.value if n.value is not None else float("-inf") for n in final]
        candidates = [make_candidate(tree, n, self.prm.name, n.value) for n in final]
        answer, chosen = select_answer(candidates, list(weights), select or self.select, name=self.prm.name)
        info = {"select": self.select, "nodes": len(tree), "finished": sum(n.finished for n in final)}
        info.update(chosen)
        info.update(details or {})
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage, strategy=self.name,
                      details=info, tree=tree)
