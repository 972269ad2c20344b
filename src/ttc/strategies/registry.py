"""Strategies by name, for the CLI and the evaluation harness."""

from __future__ import annotations

from typing import Any, Callable

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


#: name -> factory(n, verifier, sampling params); later strategies register here too
STRATEGIES: dict[str, Callable[[int, Verifier | None, Any], Strategy]] = {
    "sample": _sample,
    "majority": _majority,
    "best_of_n": _best_of_n,
    "first_finish": _first_finish,
    "early_exit": _early_exit,
}
ALIASES = {"self_consistency": "majority", "vote": "majority", "bon": "best_of_n", "best-of-n": "best_of_n"}
ALIASES.update({"ffs": "first_finish", "first-finish": "first_finish", "early-exit": "early_exit"})


def make_strategy(name: str, n: int = 8, verifier: Verifier | None = None, params: Any = DEFAULT_PARAMS) -> Strategy:
    """The strategy called `name`, configured with n candidates; unknown names list the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[key](n, verifier, params)
