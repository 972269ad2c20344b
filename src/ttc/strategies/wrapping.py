"""Shared setup of the wrapping strategies (vote, best-of-N): their sampler and their n."""

from __future__ import annotations

from typing import Any

from ttc.errors import InvalidInput, check_positive
from ttc.needs import NOTHING, Needs, needs_of
from ttc.strategies.base import Sampler
from ttc.strategies.sample import Sample
from ttc.verifiers.base import Verifier


def check_n(n: int) -> int:
    return check_positive("n", n)


def as_verifier(verifier: Any) -> Verifier | None:
    """`verifier=` as a Verifier: a Verifier as is, a plain `fn(problem, candidate) -> float`
    wrapped as `Programmatic` (named after the function), None as None."""
    if verifier is None or isinstance(verifier, Verifier):
        return verifier
    if callable(verifier):
        from ttc.verifiers.programmatic import Programmatic

        name = getattr(verifier, "__name__", None)
        return Programmatic(verifier, name=name if name and name != "<lambda>" else "programmatic")
    raise InvalidInput(f"verifier= must be a ttc Verifier or a function fn(problem, candidate) -> float, "
                       f"got {type(verifier).__name__}")


def sampler_for(sample: Sampler | None, verifier: Verifier | None, *, holder: str,
                needs: Needs = NOTHING) -> Sampler:
    """The sampler to repeat (the given one, or plain sampling), asked for what the verifier needs
    and what the holding strategy itself `needs` (`Sampler.with_needs`: the caller's object is not
    changed). An explicit setting of the sampler that refuses a need raises `InvalidInput`
    naming both, here, when the holding strategy is built."""
    if sample is None:
        sample = Sample()
    elif not isinstance(sample, Sampler):
        raise InvalidInput(f"sample= must be a single-candidate strategy (a ttc Sampler), "
                           f"got {type(sample).__name__}")
    verifier_needs = needs_of(verifier) if verifier is not None else NOTHING
    who = [holder] if needs.sampling else []
    if verifier is not None and verifier_needs.sampling:
        who.append(f"the verifier {verifier.name!r} ({type(verifier).__name__}) of {holder}")
    return sample.with_needs(needs | verifier_needs, " and ".join(who))
