"""Shared setup of the wrapping strategies (vote, best-of-N): their sampler and their n."""

from __future__ import annotations

from ttc.errors import InvalidInput
from ttc.strategies.base import Sampler
from ttc.strategies.sample import Sample
from ttc.verifiers.base import Verifier


def check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise InvalidInput(f"n must be a positive integer, got {n!r}")
    return n


def sampler_for(sample: Sampler | None, verifier: Verifier | None) -> Sampler:
    """The sampler to repeat: the given one, or plain sampling asking for what the verifier needs."""
    if sample is not None:
        if not isinstance(sample, Sampler):
            raise InvalidInput(f"sample= must be a single-candidate strategy (a ttc Sampler), "
                               f"got {type(sample).__name__}")
        return sample
    default = Sample()
    needed = verifier.required_top_logprobs if verifier is not None else 0
    if needed:
        default = Sample(params=default.params.replace(top_logprobs=needed))
    return default
