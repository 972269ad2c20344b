"""A generator that draws each prompt's samples once and lets every later request reuse them.

Why: comparing strategies at n = 1, 4, 8 on the same problems with fresh samples for every
setting costs 1 + 4 + 4 + 8 + 8 = 25 samples a problem; the comparison is as fair, and paired
(each setting sees the same candidates), with the first k of one pool of 8 samples: 8 samples a
problem. `SharedSamples` does that under the unchanged strategies: a request for k candidates of a
prompt gets the first k candidates ever drawn for that prompt and those sampling settings,
drawing only the ones still missing. The strategies run exactly as they would on fresh samples.

Each returned `Generation` counts what one request for k candidates would have cost (the prompt
billed once, the k completions' tokens), so a result's usage is what its strategy spends on its
own; the compute actually spent is lower, since the candidates are shared. Prefix-cache counts
are not carried over (`cached_prompt_tokens` = 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import Generation, Generator
from ttc.types import Completion, Prompt, SamplingParams

_MASK63 = (1 << 63) - 1


def extra_draw_seed(seed: int | None, drawn: int) -> int | None:
    """The seed of a request that extends a pool already holding `drawn` samples.

    A backend derives sample i of a seeded request from (seed, i), so asking again with the
    request's own seed would repeat the samples already drawn; this mixes in the pool's size.
    """
    if seed is None or drawn == 0:
        return seed
    return (seed * 1_000_003 + drawn * 0x9E3779B97F4A7C15) & _MASK63


@dataclass
class _Pool:
    """The samples drawn so far for one (prompt, sampling settings)."""

    prompt_tokens: int = 0
    completions: list[Completion] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    estimated: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, generation: Generation) -> None:
        self.prompt_tokens = generation.prompt_tokens
        self.estimated = self.estimated or generation.estimated
        for i, completion in enumerate(generation.completions):
            self.completions.append(completion)
            self.tokens.append(generation.tokens_of(i))

    def first(self, k: int) -> Generation:
        return Generation(prompt_tokens=self.prompt_tokens, completions=list(self.completions[:k]),
                          completion_tokens=tuple(self.tokens[:k]), estimated=self.estimated)


class SharedSamples(Generator):
    """Wrap `generator` so that requests for the same prompt and settings share their samples.

    The pool key is the prompt and the sampling parameters without `n` and `seed` (a strategy's
    seed differs from run to run only in which samples it draws). The first request for a key
    decides its samples; a seeded run stays reproducible as long as the settings run in the same
    order.
    """

    def __init__(self, generator: Generator):
        self.generator = generator
        self._pools: dict[tuple[Any, SamplingParams], _Pool] = {}
        self.drawn = 0  # samples actually generated, all prompts together

    # what strategies read off a backend comes from the wrapped one
    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        return self.generator.capabilities

    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        return self.generator.tokenizer

    @property
    def eos_token_ids(self) -> frozenset[int]:  # type: ignore[override]
        return self.generator.eos_token_ids

    @property
    def model_name(self) -> str:
        return self.generator.model_name

    async def detect_capabilities(self) -> frozenset[str]:
        return await self.generator.detect_capabilities()

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.generator.decode(token_ids)

    @property
    def can_decode(self) -> bool:
        return self.generator.can_decode

    async def tokenize(self, text: str) -> list[int]:
        return await self.generator.tokenize(text)

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        return await self.generator.chat_prompt(messages)

    def tokens_generated(self) -> int | None:
        return self.generator.tokens_generated()

    async def aclose(self) -> None:
        await self.generator.aclose()

    async def close_loop(self) -> None:
        await self.generator.close_loop()

    def describe(self) -> dict[str, Any]:
        return {**self.generator.describe(), "shared_samples": True}

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """The first `params.n` samples of this prompt and settings, drawing the missing ones."""
        key = (prompt if isinstance(prompt, str) else tuple(prompt), params.replace(n=1, seed=None))
        pool = self._pools.setdefault(key, _Pool())
        async with pool.lock:  # concurrent requests for one key draw once
            missing = params.n - len(pool.completions)
            if missing > 0:
                seed = extra_draw_seed(params.seed, len(pool.completions))
                pool.add(await self.generator.generate(prompt, params.replace(n=missing, seed=seed)))
                self.drawn += missing
            return pool.first(params.n)
