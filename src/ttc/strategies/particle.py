"""Particle filtering over reasoning steps, weighted by a PRM.

The maths (weights, ESS, resamplers) lives in `ttc.smc`; this module is the loop over rounds.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.infos import ParticleInfo, ParticleRound, StopReason
from ttc.prompts import ChatPrompt
from ttc.smc import RESAMPLERS, Resampler, effective_sample_size, logit, resampler, softmax
from ttc.steps import STEP_PARAMS, Node, SearchTree, StepConfig, Stepper
from ttc.strategies.stepwise import Growth, Request, StepSearch, all_or_nothing
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel, aggregate, check_aggregation

__all__ = ["RESAMPLING", "ParticleFilter", "check_probability", "effective_sample_size", "logit", "resample",
           "softmax"]

RESAMPLING = tuple(RESAMPLERS)


@dataclass(frozen=True)
class Sweep:
    """What one particle filter sweep left: its final population (finished particles, and the
    unfinished ones if the budget or max_steps stopped it), its rounds, and why it ended."""

    population: list[Node]
    rounds: list[ParticleRound]
    stop: StopReason


def prefix_at(tree: SearchTree, node: Node, depth: int) -> Node:
    """`node`'s ancestor at `depth` steps (the node itself when it is not deeper): the prefix of a
    reference particle that competes with the free particles of the same depth."""
    while node.depth > depth and node.parent is not None:
        node = tree[node.parent]
    return node


def resample(weights: Sequence[float], n: int, rng: random.Random, method: str = "multinomial") -> list[int]:
    """n indices drawn in proportion to `weights` by the resampler named `method` (see `ttc.smc`)."""
    return resampler(method)(rng, weights, n)


def check_probability(prm: ProcessRewardModel, score: float | None) -> None:
    """Refuse a PRM score that is not a probability: the particle weights are logits of probabilities."""
    if score is not None and not 0.0 <= score <= 1.0:
        raise InvalidInput(f"ParticleFilter weights particles by logit(PRM score), so PRM {prm.name!r} must "
                           f"return probabilities in [0, 1]; it returned {score!r} (rescale its scores, e.g. "
                           f"with a sigmoid, in a ProcessRewardModel wrapper)")


class ParticleFilter(StepSearch):
    """Particle filtering (Puri et al., 2025, "A Probabilistic Inference Approach to Inference-Time
    Scaling of LLMs using Particle-Based Monte Carlo Methods").

    `particles` partial solutions evolve together. Each round (`ttc.infos.ParticleRound`)
    extends every live particle by one step (particles sharing a prefix share one request with
    n = their number; all requests concurrent), scores the new steps with the PRM (one batched
    call), weights every particle by softmax(logit(r) / temperature) with r the PRM score of its
    latest step, records the effective sample size, and resamples `particles` particles from
    those weights. Finished particles are not extended but stay in the population with their
    final weight, so a good finished solution is duplicated and a bad one dies out; the filter
    ends when every particle is finished (or at the budget). The answer is that of the final
    particle with the best PRM score (`select="best"`), or a vote over the final particles
    weighted by their PRM scores (`select="weighted"`; "majority": by count).

    resampling: "multinomial" (default, as the paper), "systematic", "stratified", "residual"
        (`ttc.smc`), or any function `(rng, weights, n) -> indices`.
    weight_by: which aggregate r of a particle's step scores gives its weight, logit(r): "last" (the
        default, the paper's: the latest step's score), or "min", "mean", "prod".
    aggregation: ranks the final particles (`select`) only; it never changes the weights.
    resample_threshold: None (default: resample every round, as the paper), or a fraction t in
        (0, 1]: resample only when ESS < t * particles; a round that skips keeps its population
        (its record has `resampled=False`).

    The PRM's scores must be probabilities in [0, 1] (the weights are their logits): a score
    outside is refused with an error naming the PRM, rather than clipped (clipping would give
    5.0 and 2.0 the same weight).

    Deviations: the budget is enforced mid-filter: a round is only started if the PRM budget
    covers every live particle, and when the token budget refuses some requests those particles
    keep their previous step. When the budget stops the filter while some particles are still
    unfinished, the answer is chosen among the finished ones if there are any (an unfinished
    particle's text has no final answer yet), as BeamSearch and AStar do; only when none has
    finished do the partial particles compete. The weight function is `weight_by` alone
    (`log_weight`): `aggregation`, shared with the other step searches, ranks the final particles
    for `select` and is never applied to the weights (it used to look as if it were). The ESS
    trigger (`resample_threshold`) is ours: the paper resamples every step. Weights are not
    carried over a skipped round: the PRM's score judges the whole prefix, so each round's
    weights are recomputed from the latest scores.
    `details["history"]` records, per round, the particles' tree nodes, scores, normalised
    weights, ESS and resampled indices.

    Args:
        particles: the number of particles N.
        temperature: the softmax temperature of the resampling weights.
        resampling: the resampler: a name ("multinomial", "systematic", "stratified", "residual")
            or a function `(rng, weights, n) -> indices` (see `ttc.smc`).
        weight_by: how a particle's step scores become its weight ("last", "min", "mean", "prod").
        resample_threshold: resample only when ESS < threshold * N (None: every round, as the paper).
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
                 resampling: str | Resampler = "multinomial", select: str = "best", aggregation: str = "last",
                 weight_by: str = "last", resample_threshold: float | None = None,
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        super().__init__(prm, aggregation=aggregation, select=select, steps=steps, params=params, prompt=prompt)
        self.particles = check_positive("particles", particles)
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise InvalidInput(f"temperature must be positive, got {temperature!r}")
        if resample_threshold is not None and (isinstance(resample_threshold, bool)
                                               or not isinstance(resample_threshold, (int, float))
                                               or not 0 < resample_threshold <= 1):
            raise InvalidInput(f"resample_threshold must be None or a number in (0, 1], got {resample_threshold!r}")
        self.temperature = float(temperature)
        self.resampling = resampling
        self._resample = resampler(resampling)
        self.weight_by = check_aggregation(weight_by)
        self.resample_threshold = resample_threshold

    @property
    def n(self) -> int:
        return self.particles

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        sweep = await self._sweep(problem, ctx, stepper, tree)
        return self._finish(problem, ctx, tree, sweep.population, sweep.rounds, sweep.stop)

    async def _sweep(self, problem: Problem, ctx: Context, stepper: Stepper, tree: SearchTree,
                     reference: Node | None = None, temperature: float | None = None, iteration: int = 0,
                     chain: int | None = None) -> Sweep:
        """One particle filter from the root (`ttc.infos.ParticleRound` per round). With a
        `reference` (a finished particle of an earlier sweep: particle Gibbs' conditional SMC), the
        sweep has `particles - 1` free particles; each round the reference's prefix of the same
        depth is weighted with them by its own PRM scores of that prefix (not by its final score)
        and can be drawn by the resampling (a free particle then continues from that prefix), but
        is itself never replaced; it ends the sweep in the population. `temperature` overrides the
        filter's (a tempered chain's)."""
        free = self.particles - (reference is not None)
        population: list[Node] = [tree.root] * free
        rounds: list[ParticleRound] = []
        stop: StopReason | None = None
        for t in range(self.steps.max_steps):
            live = self._live(population)
            if not live:
                break
            requests = [Request(population[idxs[0]], len(idxs)) for idxs in live]
            growth = await self._grow(problem, ctx, stepper, tree, requests, all_or_nothing, t)
            if growth.stop:
                stop = growth.stop  # unscored steps cannot be weighted: the population keeps its parents
                break
            population = self._extend(population, live, growth)
            pool = population if reference is None else [*population, prefix_at(tree, reference, t + 1)]
            record = self._reweight(pool, ctx.rng, t, free, temperature, reference=None if reference is None
                                    else len(population), iteration=iteration, chain=chain)
            rounds.append(record)
            population = [pool[i] for i in record.ancestors]
            if growth.exhausted:
                stop = "token_budget"
                break
        if reference is not None:
            population.append(reference)
        return Sweep(population, rounds, stop or "all_finished")

    @staticmethod
    def _live(population: Sequence[Node]) -> list[list[int]]:
        """The unfinished particles' indices, grouped by tree node (one request per node)."""
        by_node: dict[int, list[int]] = {}
        for i, p in enumerate(population):
            if not p.finished:
                by_node.setdefault(p.id, []).append(i)
        return list(by_node.values())

    def _extend(self, population: Sequence[Node], live: Sequence[list[int]], growth: Growth) -> list[Node]:
        """Each live particle moves to its new step (one refused by the token budget stays)."""
        out = list(population)
        for idxs, children in zip(live, growth.children, strict=True):
            for i, child in zip(idxs, children, strict=False):
                out[i] = child
        return out

    def log_weight(self, node: Node) -> float:
        """logit(r), r = the `weight_by` aggregate of the node's step scores; -inf when unscored."""
        if node.step_scores is None:
            return float("-inf")
        r = aggregate(node.step_scores, self.weight_by)
        check_probability(self.prm, r)
        return logit(r)

    def _reweight(self, population: Sequence[Node], rng: random.Random, t: int, draws: int,
                  temperature: float | None = None, **record: int | None) -> ParticleRound:
        """Weight the population (at `temperature`, default the filter's), and draw `draws` ancestors
        for the next one (unless the ESS trigger skips: then the first `draws` particles keep
        themselves)."""
        weights = softmax([self.log_weight(p) for p in population],
                          self.temperature if temperature is None else temperature)
        ess = effective_sample_size(weights)
        resampled = self.resample_threshold is None or ess < self.resample_threshold * len(population)
        ancestors = self._resample(rng, weights, draws) if resampled else range(draws)
        return ParticleRound(round=t, nodes=tuple(p.id for p in population), scores=tuple(p.score for p in population),
                             weights=tuple(weights), ess=ess, ancestors=tuple(ancestors), resampled=resampled,
                             **record)

    def _finish(self, problem: Problem, ctx: Context, tree: SearchTree, population: Sequence[Node],
                rounds: Sequence[ParticleRound], stop: StopReason, info: type[ParticleInfo] = ParticleInfo,
                **fields: Any) -> Result:
        """The answer among the final particles (the finished ones, if any: a budget stop leaves
        partial particles with no answer yet); `info` is the details record, `fields` its own."""
        if any(p.finished for p in population):
            population = [p for p in population if p.finished]
        counts = Counter(p.id for p in population if p.value is not None)
        final = [tree[node_id] for node_id in counts]
        if self.select == "best":
            weights = [n.value for n in final]
        elif self.select == "weighted":
            weights = [counts[n.id] * n.value for n in final]
        else:
            weights = [float(counts[n.id]) for n in final]
        # majority counts particles, not distinct traces: a vote weighted by multiplicity
        name = self.resampling if isinstance(self.resampling, str) else getattr(self.resampling, "__name__",
                                                                                 repr(self.resampling))
        return self._result(problem, ctx, tree, final, weights, select="best" if self.select == "best" else "weighted",
                            info=info, particles=self.particles, temperature=self.temperature,
                            resampling=name, history=tuple(rounds), multiplicity=tuple(counts[n.id] for n in final),
                            resample_threshold=self.resample_threshold, weight_by=self.weight_by, stopped_by=stop,
                            **fields)
