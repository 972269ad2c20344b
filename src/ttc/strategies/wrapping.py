"""Shared setup of the wrapping strategies (vote, best-of-N): their sampler and their n."""

from __future__ import annotations

import copy
from typing import Any

from ttc.errors import InvalidInput, check_positive
from ttc.strategies.base import Sampler
from ttc.strategies.sample import Sample
from ttc.types import SamplingParams
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


def sampler_for(sample: Sampler | None, verifier: Verifier | None) -> Sampler:
    """The sampler to repeat: the given one, or plain sampling asking for what the verifier needs.

    A given sampler whose `params` ask for fewer top logprobs than the verifier needs (e.g.
    `LogprobConfidence("self_certainty")`) is copied with `top_logprobs` raised; the caller's
    object is not changed. A sampler without `params` cannot be adjusted and is refused.
    """
    needed = verifier.required_top_logprobs if verifier is not None else 0
    if sample is not None:
        if not isinstance(sample, Sampler):
            raise InvalidInput(f"sample= must be a single-candidate strategy (a ttc Sampler), "
                               f"got {type(sample).__name__}")
        if not needed:
            return sample
        params = getattr(sample, "params", None)
        if not isinstance(params, SamplingParams):
            raise InvalidInput(
                f"verifier {verifier.name!r} needs the top-{needed} logprobs of every token, and sample="
                f"{type(sample).__name__} has no `params` to ask for them: make it sample with "
                f"SamplingParams(top_logprobs={needed}), or use a verifier that needs none "
                f"(e.g. LogprobConfidence('mean_logprob'))")
        if (params.top_logprobs or 0) >= needed:
            return sample
        adjusted = copy.copy(sample)
        adjusted.params = params.replace(top_logprobs=needed)
        return adjusted
    default = Sample()
    if needed:
        default = Sample(params=default.params.replace(top_logprobs=needed))
    return default
