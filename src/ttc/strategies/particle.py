"""Particle filtering over reasoning steps, weighted by a PRM."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.prompts import ChatPrompt
from ttc.steps import STEP_PARAMS, Node, StepConfig
from ttc.strategies.stepwise import StepSearch
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel

RESAMPLING = ("multinomial", "systematic")
_EPS = 1e-7


def logit(p: float) -> float:
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7]."""
    p = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(values / temperature); -inf values get weight 0 (all -inf: uniform)."""
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return [1.0 / len(values)] * len(values)
    top = max(finite)
    weights = [0.0 if v == -math.inf else math.exp((v - top) / temperature) for v in values]
    total = math.fsum(weights)
    return [w / total for w in weights]


def effective_sample_size(weights: Sequence[float]) -> float:
    """ESS = 1 / sum(w_i^2) of the normalised weights: N for equal weights, 1 for a single one."""
    total = math.fsum(weights)
    if total <= 0:
        raise InvalidInput("effective_sample_size needs weights with a positive sum")
    return 1.0 / math.fsum((w / total) ** 2 for w in weights)


def resample(weights: Sequence[float], n: int, rng: random.Random, method: str = "multinomial") -> list[int]:
    """n indices drawn in proportion to `weights`.

    multinomial: n independent draws. systematic: one uniform offset u in [0, 1/n) and the points
    u + k/n on the cumulative weights; every index i is drawn floor(n w_i) or ceil(n w_i) times
    (lower variance, same expectation).
    """
    if method not in RESAMPLING:
        raise InvalidInput(f"unknown resampling {method!r}; known: {', '.join(RESAMPLING)}")
    total = math.fsum(weights)
    if not weights or total <= 0 or any(w < 0 for w in weights):
        raise InvalidInput("resample needs non-negative weights with a positive sum")
    if method == "multinomial":
        return rng.choices(range(len(weights)), weights=weights, k=n)
    cumulative, running = [], 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    cumulative[-1] = 1.0
    u = rng.random() / n
    out, i = [], 0
    for k in range(n):
        point = u + k / n
        while point >= cumulative[i] and i < len(cumulative) - 1:
            i += 1
        out.append(i)
    return out


def check_probability(prm: ProcessRewardModel, score: float | None) -> None:
    """Refuse a PRM score that is not a probability: the particle weights are logits of probabilities."""
    if score is not None and not 0.0 <= score <= 1.0:
        raise InvalidInput(f"ParticleFilter weights particles by logit(PRM score), so PRM {prm.name!r} must "
                           f"return probabilities in [0, 1]; it returned {score!r} (rescale its scores, e.g. "
                           f"with a sigmoid, in a ProcessRewardModel wrapper)")


class ParticleFilter(StepSearch):
    """Particle filtering (Puri et al., 2025, "A Probabilistic Inference Approach to Inference-Time
    Scaling of LLMs using Particle-Based Monte Carlo Methods").

    `particles` partial solutions evolve together. Each round extends every live particle by one
    step (particles sharing a prefix share one request with n = their number; all requests
    concurrent), scores the new steps with the PRM (one batched call), weights every particle by
    softmax(logit(r) / temperature) with r the PRM score of its latest step, records the
    effective sample size, and resamples `particles` particles from those weights (multinomial,
    or `resampling="systematic"`). Finished particles are not extended but stay in the
    population with their final weight, so a good finished solution is duplicated and a bad one
    dies out; the filter ends when every particle is finished (or at the budget). The answer is
    that of the final particle with the best PRM score (`select="best"`), or a vote over the final
    particles weighted by their PRM scores (`select="weighted"`; "majority": by count).

    The PRM's scores must be probabilities in [0, 1] (the weights are their logits): a score
    outside is refused with an error naming the PRM, rather than clipped (clipping would give
    5.0 and 2.0 the same weight).

    Deviations: the budget is enforced mid-filter: a round is only started if the PRM budget
    covers every live particle, and when the token budget refuses some requests those particles
    keep their previous step. When the budget stops the filter while some particles are still
    unfinished, the answer is chosen among the finished ones if there are any (an unfinished
    particle's text has no final answer yet), as BeamSearch and AStar do; only when none has
    finished do the partial particles compete. `details["history"]` records, per round, the
    particles' tree nodes, scores, normalised weights, ESS and resampled indices.

    Args:
        particles: the number of particles N.
        temperature: the softmax temperature of the resampling weights.
        resampling: the resampler ("multinomial", "systematic", ...).
        prm, aggregation, select, steps, params, prompt: as for every step search (`StepSearch`):
            the PRM (default `LLMJudge()`), how step scores combine, how the answer is chosen,
            what a step is, how steps are sampled, the chat prompt.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.ParticleFilter(particles=4, prm=prm).solve("3 + 4?", Scripted(["The answer is 7."]), seed=0).answer
        '7'
    """

    name = "particle"

    def __init__(self, particles: int = 8, prm: ProcessRewardModel | None = None, temperature: float = 1.0, *,
                 resampling: str = "multinomial", select: str = "best", aggregation: str = "last",
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        super().__init__(prm, aggregation=aggregation, select=select, steps=steps, params=params, prompt=prompt)
        self.particles = check_positive("particles", particles)
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise InvalidInput(f"temperature must be positive, got {temperature!r}")
        if resampling not in RESAMPLING:
            raise InvalidInput(f"unknown resampling {resampling!r}; known: {', '.join(RESAMPLING)}")
        self.temperature = float(temperature)
        self.resampling = resampling

    @property
    def n(self) -> int:
        return self.particles

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        particles: list[Node] = [tree.root] * self.particles
        history: list[dict] = []
        stop = None
        for round_ in range(self.steps.max_steps):
            live = [i for i, p in enumerate(particles) if not p.finished]
            if not live:
                break
            left = ctx.verifier_calls_left()
            if left is not None and left < len(live):
                stop = "verifier_budget"
                break
            by_node: dict[int, list[int]] = {}
            for i in live:
                by_node.setdefault(particles[i].id, []).append(i)
            plan = [(tree[node_id], idxs) for node_id, idxs in by_node.items()]
            results, exhausted = await stepper.expand_many([(node.trace, len(idxs)) for node, idxs in plan])
            new: list[Node] = []
            moved: list[tuple[int, Node]] = []
            for (node, idxs), expansions in zip(plan, results):
                node.expanded = round_
                for i, expansion in zip(idxs, expansions):
                    child = tree.add(node, expansion)
                    moved.append((i, node))
                    particles[i] = child
                    new.append(child)
            if not new:
                stop = "token_budget"
                break
            if not await self._score(problem, ctx, new):
                for i, parent in moved:  # unscored steps cannot be weighted: undo them
                    particles[i] = parent
                stop = "verifier_budget"
                break
            for node in new:
                check_probability(self.prm, node.score)
            scores = [p.score for p in particles]
            logits = [-math.inf if s is None else logit(s) for s in scores]
            weights = softmax(logits, self.temperature)
            ess = effective_sample_size(weights)
            chosen = resample(weights, self.particles, ctx.rng, self.resampling)
            history.append({"round": round_, "nodes": [p.id for p in particles], "scores": scores,
                            "weights": weights, "ess": ess, "resampled": chosen})
            particles = [particles[i] for i in chosen]
            if exhausted:
                stop = "token_budget"
                break
        if any(p.finished for p in particles):  # a budget stop: partial particles have no answer yet
            particles = [p for p in particles if p.finished]
        counts = Counter(p.id for p in particles if p.value is not None)
        final = [tree[node_id] for node_id in counts]
        if self.select == "best":
            weights = [n.value for n in final]
        elif self.select == "weighted":
            weights = [counts[n.id] * n.value for n in final]
        else:
            weights = [float(counts[n.id]) for n in final]
        # majority counts particles, not distinct traces: a vote weighted by multiplicity
        return self._result(problem, ctx, tree, final, weights, select="best" if self.select == "best" else "weighted",
                            details={
                                "select": self.select, "particles": self.particles, "temperature": self.temperature,
                                "resampling": self.resampling, "rounds": len(history),
                                "ess": [h["ess"] for h in history], "history": history,
                                "multiplicity": [counts[n.id] for n in final], "generated": tree.generated,
                                "stopped_by": stop or "all_finished"})
