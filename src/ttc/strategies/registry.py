"""Strategies by name, for the CLI and the evaluation harness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ttc.errors import InvalidInput
from ttc.strategies.base import Strategy
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.majority import MajorityVote
from ttc.strategies.sample import DEFAULT_PARAMS, Sample
from ttc.verifiers.base import Verifier
from ttc.verifiers.confidence import LogprobConfidence


def _sample(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    return Sample(params=params)


def _majority(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    return MajorityVote(n=n, sample=Sample(params=params), verifier=verifier)


def _best_of_n(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    verifier = verifier or LogprobConfidence()
    if verifier.required_top_logprobs:
        params = params.replace(top_logprobs=verifier.required_top_logprobs)
    return BestOfN(n=n, verifier=verifier, sample=Sample(params=params))


def _first_finish(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    from ttc.strategies.first_finish import FirstFinish

    return FirstFinish(n=n, params=params)


def _early_exit(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """Early exit by answer consistency; n > 1 votes over n early-exited candidates."""
    from ttc.probes import AnswerConsistency
    from ttc.strategies.early_exit import EarlyExit

    sample = EarlyExit(AnswerConsistency(), params=params)
    return sample if n == 1 else MajorityVote(n=n, sample=sample, verifier=verifier)


def _deepconf(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """DeepConf-online over n traces: the first min(16, n // 2) are the per-question warm-up
    (the paper: 16 of 256); traces vote weighted by their own confidence (a verifier is not used)."""
    from ttc.strategies.deepconf import DeepConf

    return DeepConf(n=n, warmup=min(16, max(1, n // 2)), params=params)


def _step_search_args(verifier: Any, params: Any) -> dict[str, Any]:
    """PRM, step config and step sampling for a step search built by name.

    `verifier` may be a process reward model (or a PRM wrapped as a verifier); None gives the
    default `LLMJudge()`, which judges with the generator the search runs on. An outcome verifier
    cannot guide a step search. The sampling params' max_tokens becomes the per-step budget.
    """
    from ttc.steps import StepConfig
    from ttc.verifiers.process import PRMVerifier, ProcessRewardModel

    if isinstance(verifier, PRMVerifier):
        verifier = verifier.prm
    if verifier is not None and not isinstance(verifier, ProcessRewardModel):
        raise InvalidInput(f"step searches need a process reward model, not the outcome verifier "
                           f"{getattr(verifier, 'name', type(verifier).__name__)!r}; leave it out to use "
                           f"ttc.verifiers.LLMJudge() on the same model")
    return {"prm": verifier, "steps": StepConfig(max_step_tokens=params.max_tokens), "params": params}


def _beam(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """n = steps sampled per round (Snell et al.'s N): max(1, n // 4) beams of n // beams expansions
    (16: 4 x 4; 10: 2 x 5; n < 8: one beam of n), as docs/strategies/step_search.md says."""
    from ttc.strategies.beam import BeamSearch

    width = max(1, n // 4)
    return BeamSearch(width=width, expansions=max(1, n // width), **_step_search_args(verifier, params))


def _dvts(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """n = steps sampled per round: max(1, n // 4) subtrees of n // subtrees expansions."""
    from ttc.strategies.beam import DVTS

    subtrees = max(1, n // 4)
    return DVTS(subtrees=subtrees, expansions=max(1, n // subtrees), **_step_search_args(verifier, params))


def _astar(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """n = steps sampled per expansion."""
    from ttc.strategies.astar import AStar

    return AStar(expansions=n, **_step_search_args(verifier, params))


def _particle(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """n = particles."""
    from ttc.strategies.particle import ParticleFilter

    return ParticleFilter(particles=n, **_step_search_args(verifier, params))


def _rpc(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """RPC over n paths (a verifier is not used: the paths' own probabilities weigh the vote)."""
    from ttc.strategies.rpc import RPC

    return RPC(n=n, sample=Sample(params=params))


def _adaptive_best_of_n(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    """Adaptive best-of-N with at most n samples (the model's self-evaluation decides; no verifier)."""
    from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN

    return AdaptiveBestOfN(max_n=n, sample=Sample(params=params))


#: name -> factory(n, verifier, sampling params); later strategies register here too
STRATEGIES: dict[str, Callable[[int, Verifier | None, Any], Strategy]] = {
    "sample": _sample,
    "majority": _majority,
    "best_of_n": _best_of_n,
    "first_finish": _first_finish,
    "early_exit": _early_exit,
    "deepconf": _deepconf,
    "beam": _beam,
    "dvts": _dvts,
    "astar": _astar,
    "particle": _particle,
    "rpc": _rpc,
    "adaptive_best_of_n": _adaptive_best_of_n,
}
ALIASES = {"self_consistency": "majority", "vote": "majority", "bon": "best_of_n", "best-of-n": "best_of_n"}
ALIASES.update({"ffs": "first_finish", "first-finish": "first_finish", "early-exit": "early_exit"})
ALIASES.update({"deepconf_online": "deepconf", "deepconf-online": "deepconf"})
ALIASES.update({"beam_search": "beam", "beam-search": "beam", "a*": "astar", "a_star": "astar",
                "particle_filter": "particle", "particle-filter": "particle", "pf": "particle"})


def make_strategy(name: str, n: int = 8, verifier: Verifier | None = None, params: Any = DEFAULT_PARAMS) -> Strategy:
    """The strategy called `name`, configured with n candidates; unknown names list the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[key](n, verifier, params)
