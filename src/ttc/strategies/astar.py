"""A*-decoding: best-first search over partial solutions, prioritised by PRM scores."""

from __future__ import annotations

import heapq
import itertools

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.infos import AStarInfo, StopReason
from ttc.prompts import ChatPrompt
from ttc.steps import STEP_PARAMS, Node, SearchTree, StepConfig
from ttc.strategies.stepwise import Request, StepSearch, each_capped
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel


class AStar(StepSearch):
    """A*-decoding (Chatziveroglou, 2025, "A*-Decoding: Token-Efficient Inference Scaling").

    Decoding as a search in the space of partial solutions. A priority queue (the open set)
    holds scored partial traces; each iteration pops the one with the lowest f = g + h, samples
    `expansions` candidate next steps from it (one request), scores them with the PRM in one
    batched call and pushes them all. The heuristic is h(s) = 1 - r(s), with r(s) the PRM score
    of the partial trace (aggregated with `aggregation`, default the latest step's): ttc's choice,
    not taken from the paper (whose g/h decomposition we could not read); h is neither 0 at goals
    nor admissible, so the search is a best-first heuristic search with no optimality guarantee.
    The search stops when a finished trace is popped (the A* goal test), after `solutions` finished
    traces if more are asked for, after `max_expansions` pops, or
    when the token or PRM-call budget runs out; then the answer is taken from the finished traces
    popped (best: lowest f; `select="weighted"`: a vote weighted by PRM score), else from those
    generated, else from the best partial trace. Because a poor branch is abandoned as soon as a
    sibling elsewhere looks better, and a good one is followed without widening every level,
    it generates far fewer steps than beam search when the PRM is informative.

    Deviations (only the abstract and a summary of the paper were available to us): the unit of
    a continuation is a step (text up to `steps.delimiter`), not a fixed number of tokens; the
    path cost is g(s') = g(s) + cost_weight * (1 - r_last(s')), the accumulated "badness" of the
    steps on the path as judged by the PRM (cost_weight=0 gives greedy best-first search on the
    PRM); the budget is counted in pops (`max_expansions`, default 2 x steps.max_steps) on top
    of ttc's token and verifier-call budgets. Ties in f go to the earlier-generated state.

    Args:
        expansions: next steps sampled per expansion of a node.
        max_expansions: node pops allowed (default: 2 x steps.max_steps).
        cost_weight: the weight of the path cost g against the PRM heuristic.
        solutions: finished traces to collect before stopping.
        prm, aggregation, select, steps, params, prompt: as for every step search (`StepSearch`):
            the PRM (default `LLMJudge()`), how step scores combine, how the answer is chosen,
            what a step is, how steps are sampled, the chat prompt.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.AStar(prm, expansions=2).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "astar"

    def __init__(self, prm: ProcessRewardModel | None = None, expansions: int = 4, *,
                 max_expansions: int | None = None, cost_weight: float = 1.0, solutions: int = 1,
                 aggregation: str = "last", select: str = "best", steps: StepConfig | None = None,
                 params: SamplingParams = STEP_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        super().__init__(prm, aggregation=aggregation, select=select, steps=steps, params=params, prompt=prompt)
        self.expansions = check_positive("expansions", expansions)
        self.max_expansions = (2 * self.steps.max_steps if max_expansions is None
                               else check_positive("max_expansions", max_expansions))
        if not isinstance(cost_weight, (int, float)) or cost_weight < 0:
            raise InvalidInput(f"cost_weight must be a number >= 0, got {cost_weight!r}")
        self.cost_weight = float(cost_weight)
        self.solutions = check_positive("solutions", solutions)

    @property
    def n(self) -> int:
        """Steps sampled per expansion."""
        return self.expansions

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        counter = itertools.count()  # ties in f: the earlier-generated state first
        g: dict[int, float] = {0: 0.0}
        f: dict[int, float] = {0: 0.0}
        open_set: list[tuple[float, int, Node]] = [(0.0, next(counter), tree.root)]
        goals: list[Node] = []
        expanded = 0
        stop: StopReason | None = None
        while open_set and stop is None:
            _, _, node = heapq.heappop(open_set)
            if node.finished:  # the goal test
                goals.append(node)
                stop = "solved" if len(goals) >= self.solutions else None
                continue
            if expanded >= self.max_expansions:
                stop = "max_expansions"
                break
            growth = await self._grow(problem, ctx, stepper, tree, [Request(node, self.expansions)], each_capped,
                                      expanded)
            expanded += bool(growth.new)
            stop = growth.stop
            if stop:
                break
            for child in growth.new:
                g[child.id] = g[node.id] + self.cost_weight * (1.0 - child.score)
                f[child.id] = g[child.id] + (1.0 - child.value)
                heapq.heappush(open_set, (f[child.id], next(counter), child))
            if growth.exhausted:
                stop = "token_budget"
        return self._finish(problem, ctx, tree, goals, f, expanded, stop or "open_set_empty")

    def _finish(self, problem: Problem, ctx: Context, tree: SearchTree, goals: list[Node], f: dict[int, float],
                expanded: int, stop: StopReason) -> Result:
        """The answer among the goals popped, else (the budget ended the search first) the finished
        traces generated, else the best partial one."""
        final = goals
        if not final:
            ranked = sorted((n for n in tree if n.id in f and n.id != 0), key=lambda n: (f[n.id], n.id))
            final = [n for n in ranked if n.finished] or ranked[:1]
        weights = [-f[n.id] for n in final] if self.select == "best" else [n.value for n in final]
        return self._result(problem, ctx, tree, final, weights, info=AStarInfo, expanded=expanded,
                            expansions=self.expansions, cost_weight=self.cost_weight,
                            f={n.id: f[n.id] for n in final}, stopped_by=stop)
