"""Particle Gibbs and parallel tempering over reasoning steps (Puri et al., 2025, "A Probabilistic
Inference Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods",
arXiv 2502.01618; docs/strategies/particle_gibbs.md says which version and code this follows).

Particle Gibbs repeats the particle filter (`ParticleFilter`), each sweep after the first
conditioned on a reference particle drawn from the previous sweep's final particles (conditional
SMC): the reference is kept, its prefixes compete in every round's resampling with the free
particles, and free particles that draw it continue from its prefix. Parallel tempering runs
several such chains whose reward likelihoods are tempered by different exponents and proposes
exchanging their reference particles between sweeps. The kernels (weights, resamplers, the swap
acceptance) are in `ttc.smc`; a sweep is `ParticleFilter._sweep`; this module is the loop over
sweeps and chains.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.infos import ParticleGibbsInfo, ParticleRound, StopReason, Swap, TemperingInfo
from ttc.prompts import ChatPrompt
from ttc.smc import Resampler, multinomial, softmax, swap_acceptance, swap_pairs
from ttc.steps import STEP_PARAMS, Node, StepConfig
from ttc.strategies.particle import ParticleFilter, Sweep
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel

__all__ = ["ParallelTempering", "ParticleGibbs", "check_temperatures", "temperature_ladder"]


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
    """Positive, finite, strictly increasing temperatures (the first is the target chain's)."""
    temps = tuple(temperatures) if isinstance(temperatures, (list, tuple)) else ()
    if not temps or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf")
                        for t in temps):
        raise InvalidInput(f"temperatures must be a non-empty list of positive finite numbers, got {temperatures!r}")
    if any(b <= a for a, b in zip(temps, temps[1:], strict=False)):
        raise InvalidInput(f"temperatures must be strictly increasing (the first, the lowest, is the target "
                           f"chain's), got {temperatures!r}")
    return tuple(float(t) for t in temps)


def temperature_ladder(chains: int, hottest_beta: float) -> tuple[float, ...]:
    """`chains` temperatures whose inverses (the likelihood exponents beta) fall geometrically from
    1 (the target chain) to `hottest_beta` in (0, 1): beta_c = hottest_beta^(c / (chains - 1)), the
    usual geometric ladder (3 chains, 0.25: temperatures 1, 2, 4)."""
    if isinstance(chains, bool) or not isinstance(chains, int) or chains < 1:
        raise InvalidInput(f"chains must be a positive integer, got {chains!r}")
    if isinstance(hottest_beta, bool) or not isinstance(hottest_beta, (int, float)) or not 0 < hottest_beta < 1:
        raise InvalidInput(f"hottest_beta must be in (0, 1) (the hottest chain's likelihood exponent), "
                           f"got {hottest_beta!r}")
    if chains == 1:
        return (1.0,)
    return tuple(hottest_beta ** (-c / (chains - 1)) for c in range(chains))


class ParticleGibbs(ParticleFilter):
    """Particle Gibbs: `iterations` particle-filter sweeps, each after the first conditioned on a
    reference particle (Puri et al., 2025; its authors' `particle_gibbs.py` and its_hub's
    `ParticleGibbs`).

    Sweep 0 is `ParticleFilter(particles)`. After each sweep one reference particle is drawn among
    its finished particles with probability softmax(logit(r) / temperature) of their final PRM
    scores r. The next sweep runs `particles - 1` free particles from the root; in its round t the
    reference's prefix of t + 1 steps joins the population for the weighting, with the weight of
    that prefix's own PRM score (logit(r_t) / temperature, scored when the reference was built), not
    its final score, as its_hub's issue #54 proposed (a full-trace weight against one-step weights
    gives the reference an unfair advantage, and a resampled reference could never be changed).
    its_hub's PR #84 set out to do this, but its 1.2.0 still weights the reference by its final
    score (the reference is a stopped particle, and stopped particles compete with their last
    weight); it does truncate a copy of the reference, as here. The free particles are resampled
    from all N: one that draws the reference continues from that prefix (a copy of its first t + 1
    steps), so the reference's early steps can be kept and its later ones replaced. The reference
    itself is never resampled away and ends the sweep among the final particles. The answer is
    chosen (`select`) among the last sweep's final particles, the reference included.

    Deviations: the authors' code weights the reference in round t by its score after t + 2 steps
    (`rewards[step]` against the free particles' `rewards[-1]` after t + 1; an off-by-one), and
    its_hub 1.2.0 by its final score (above); neither is followed: the reference's prefix has the
    free particles' depth. Only finished particles can be the reference (a budget-stopped sweep ends
    the iterations). The sweeps are sequential (each needs the previous reference), every sweep re-
    samples the steps of its free particles, and the token and verifier budgets are shared by all
    sweeps: a sweep the budget stops is the last. The paper's ancestor sampling (PGAS) is not
    implemented (its_hub raises NotImplementedError for it as well). One reference per sweep
    (its_hub's `num_ref_particles=1`, the authors' code).
    `details["history"]` holds every round of every sweep (`ParticleRound.iteration`, and
    `reference`: the index of the reference's prefix in `nodes`), `details["references"]` the
    reference (tree node id) each later sweep was conditioned on.

    Args:
        particles: N, the particles of each sweep (the reference is one of them after sweep 0).
        iterations: the number of sweeps (1: a plain particle filter).
        prm, temperature, resampling, select, aggregation, weight_by, resample_threshold, steps,
            params, prompt: as for `ParticleFilter` (`temperature` also tempers the reference's
            draw).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> pg = ttc.ParticleGibbs(particles=4, iterations=3, prm=prm)
        >>> r = pg.solve("3 + 4?", Scripted(["The answer is 7."]), seed=0)
        >>> (r.answer, r.details["iterations"], len(r.details["references"]))
        ('7', 3, 2)
    """

    name = "particle_gibbs"

    def __init__(self, particles: int = 4, iterations: int = 2, prm: ProcessRewardModel | None = None,
                 temperature: float = 1.0, *, resampling: str | Resampler = "multinomial", select: str = "best",
                 aggregation: str = "last", weight_by: str = "last", resample_threshold: float | None = None,
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        super().__init__(particles, prm, temperature, resampling=resampling, select=select, aggregation=aggregation,
                         weight_by=weight_by, resample_threshold=resample_threshold, steps=steps, params=params,
                         prompt=prompt)
        self.iterations = check_positive("iterations", iterations)
        if self.iterations > 1 and self.particles < 2:
            raise InvalidInput(f"{type(self).__name__} needs particles >= 2 for iterations > 1 (one of them is the "
                               f"reference), got particles={particles}")

    def choose_reference(self, population: Sequence[Node], rng: random.Random, temperature: float) -> Node | None:
        """A finished particle drawn with probability softmax(logit(r) / temperature) of the final
        PRM scores r (None when none has finished)."""
        finished = [p for p in population if p.finished and p.step_scores is not None]
        if not finished:
            return None
        weights = softmax([self.log_weight(p) for p in finished], temperature)
        return finished[multinomial(rng, weights, 1)[0]]

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        rounds: list[ParticleRound] = []
        references: list[int] = []
        reference: Node | None = None
        sweep: Sweep | None = None
        for k in range(self.iterations):
            sweep = await self._sweep(problem, ctx, stepper, tree, reference, iteration=k)
            rounds += sweep.rounds
            if sweep.stop != "all_finished" or k == self.iterations - 1:
                break
            reference = self.choose_reference(sweep.population, ctx.rng, self.temperature)
            if reference is None:
                break
            references.append(reference.id)
        assert sweep is not None
        return self._finish(problem, ctx, tree, sweep.population, rounds, sweep.stop, info=ParticleGibbsInfo,
                            iterations=self.iterations, references=tuple(references))


class ParallelTempering(ParticleGibbs):
    """Particle Gibbs with parallel tempering: one particle Gibbs chain per temperature T_c, whose
    reference particles are proposed for exchange between sweeps (Puri et al., 2025, who propose
    it alongside particle Gibbs; the swap rule is the textbook one, Geyer, 1991).

    What is tempered is the reward likelihood's exponent: chain c weights particles by
    softmax(logit(r) / T_c), i.e. it targets p_LM(x) L(x)^beta_c with L = exp(logit(r)) the PRM's
    likelihood and beta_c = 1 / T_c; the sampling temperature of the steps (`params`) is the same
    in every chain. Why: the exchange is only a valid Metropolis move if both chains' target
    densities can be evaluated at both states, and with a tempered likelihood their ratio is
    exp((beta_i - beta_j)(l_j - l_i)) (l = logit of the final PRM score; the language model's own
    probability cancels), known from the scores alone. A tempered sampling temperature changes each
    token's distribution, whose sequence-level density (the per-token normalisers) is not
    available, so its swaps could not be accepted correctly. Hot chains (large T) resample almost
    uniformly and keep diverse traces alive; a good trace found there moves down to the target
    chain through accepted swaps.

    Each iteration runs every chain's sweep concurrently (one shared tree and budget), draws each
    chain's next reference from its own final particles (at its own temperature), then proposes
    swaps between adjacent chains, (0, 1), (2, 3), ... after even sweeps and (1, 2), ... after odd
    ones (`ttc.smc.swap_pairs`), each accepted with probability
    min(1, exp((beta_i - beta_j)(l_j - l_i))) (`ttc.smc.swap_acceptance`). Chain 0 (the lowest
    temperature, usually 1) is the target: the answer is chosen among its last sweep's particles.

    Deviations: as `ParticleGibbs`; the paper's text of this algorithm could not be read here
    (docs/strategies/particle_gibbs.md), and its authors' code has no parallel tempering, so the
    exchange is the standard one, not checked against theirs. No swap is proposed after the last
    sweep (it could not change the answer). `details["swaps"]` records every proposal
    (`ttc.infos.Swap`), `details["chain_references"]` each chain's references.

    Args:
        particles: N, the particles of each sweep of each chain.
        iterations: sweeps per chain.
        temperatures: the chains' likelihood temperatures, strictly increasing; the first is the
            target chain's (its `temperature`).
        prm, resampling, select, aggregation, weight_by, resample_threshold, steps, params, prompt:
            as for `ParticleFilter`.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> pt = ttc.ParallelTempering(particles=3, iterations=2, temperatures=(1.0, 4.0), prm=prm)
        >>> r = pt.solve("3 + 4?", Scripted(["The answer is 7."]), seed=0)
        >>> (r.answer, len(r.details["swaps"]), r.details["swaps"][0]["acceptance"])  # equal scores always swap
        ('7', 1, 1.0)
    """

    name = "parallel_tempering"

    def __init__(self, particles: int = 4, iterations: int = 2, temperatures: Sequence[float] = (1.0, 2.0, 4.0),
                 prm: ProcessRewardModel | None = None, *, resampling: str | Resampler = "multinomial",
                 select: str = "best", aggregation: str = "last", weight_by: str = "last",
                 resample_threshold: float | None = None, steps: StepConfig | None = None,
                 params: SamplingParams = STEP_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.temperatures = check_temperatures(temperatures)
        super().__init__(particles, iterations, prm, self.temperatures[0], resampling=resampling, select=select,
                         aggregation=aggregation, weight_by=weight_by, resample_threshold=resample_threshold,
                         steps=steps, params=params, prompt=prompt)

    def propose_swaps(self, references: list[Node], iteration: int, rng: random.Random) -> list[Swap]:
        """Propose this iteration's exchanges of `references` (one per chain), in place."""
        swaps = []
        for i, j in swap_pairs(len(references), iteration):
            betas = (1.0 / self.temperatures[i], 1.0 / self.temperatures[j])
            ells = (self.log_weight(references[i]), self.log_weight(references[j]))
            acceptance = swap_acceptance(betas, ells)
            accepted = rng.random() < acceptance
            if accepted:
                references[i], references[j] = references[j], references[i]
            swaps.append(Swap(iteration=iteration, chains=(i, j), betas=betas, log_likelihoods=ells,
                              acceptance=acceptance, accepted=accepted))
        return swaps

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        chains = len(self.temperatures)
        rounds: list[ParticleRound] = []
        swaps: list[Swap] = []
        conditioned: list[list[int]] = [[] for _ in range(chains)]
        references: list[Node] | None = None
        sweeps: list[Sweep] = []
        for k in range(self.iterations):
            sweeps = list(await asyncio.gather(*(
                self._sweep(problem, ctx, stepper, tree, None if references is None else references[c],
                            self.temperatures[c], iteration=k, chain=c) for c in range(chains))))
            rounds += [r for s in sweeps for r in s.rounds]
            if any(s.stop != "all_finished" for s in sweeps) or k == self.iterations - 1:
                break
            drawn = [self.choose_reference(s.population, ctx.rng, t) for s, t in zip(sweeps, self.temperatures,
                                                                                      strict=True)]
            if any(d is None for d in drawn):
                break
            references = [d for d in drawn if d is not None]
            swaps += self.propose_swaps(references, k, ctx.rng)
            for c, ref in enumerate(references):
                conditioned[c].append(ref.id)
        stop: StopReason = next((s.stop for s in sweeps if s.stop != "all_finished"), "all_finished")
        return self._finish(problem, ctx, tree, sweeps[0].population, rounds, stop, info=TemperingInfo,
                            iterations=self.iterations, references=tuple(conditioned[0]),
                            temperatures=self.temperatures, swaps=tuple(swaps),
                            chain_references=tuple(tuple(c) for c in conditioned))
