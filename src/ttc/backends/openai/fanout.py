"""n samples of one prompt: one request with `n`, or n single requests where the server ignores
or rejects `n` (sample i seeded seed + i, vLLM's rule). What the first answer shows is recorded
in `features.n`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ttc.backends.base import Generation, combine_generations
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.payloads import MENTIONS_N
from ttc.errors import MalformedResponse
from ttc.types import SamplingParams

__all__ = ["with_n"]


async def with_n(params: SamplingParams, once: Callable[[SamplingParams], Awaitable[Generation]],
                 features: ServerFeatures) -> Generation:
    """Run `once(params)`; where the server ignores or rejects n > 1, make up the n samples with
    single requests. Never fewer than n."""
    n = params.n
    if n == 1:
        return await once(params)

    def single(i: int) -> SamplingParams:
        return params.replace(n=1, seed=None if params.seed is None else params.seed + i)

    if features.n in ("ignored", "rejected"):
        return combine_generations(await asyncio.gather(*(once(single(i)) for i in range(n))))
    try:
        first = await once(params)
    except RequestRejected as exc:
        if features.n is not None or not MENTIONS_N.search(exc.server_message):
            raise
        parts = await asyncio.gather(*(once(single(i)) for i in range(n)))
        features.n = "rejected"
        return combine_generations(parts)
    got = len(first.completions)
    if got == n:
        features.n = "honoured"
        return first
    if got == 1 and features.n is None:
        features.n = "ignored"
        rest = await asyncio.gather(*(once(single(i)) for i in range(1, n)))
        return combine_generations([first, *rest])
    error = MalformedResponse(f"asked for {n} completions, the server returned {got}")
    error.usage = first.usage()
    raise error
