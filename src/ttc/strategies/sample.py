"""Plain sampling: the single-candidate strategy every wrapper repeats by default."""

from __future__ import annotations

from ttc.answers import answer_fields
from ttc.context import Context
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler
from ttc.types import Candidate, Problem, SamplingParams

DEFAULT_PARAMS = SamplingParams(temperature=0.7, max_tokens=256, logprobs=True)


class Sample(Sampler):
    """One sampled solution per candidate. k candidates are one request with n=k, so the
    backend prefills the prompt once and decodes the k samples as one batch.

    A request's seed is `params.seed`, else the run's seed (`solve(..., seed=)`).
    """

    name = "sample"

    def __init__(self, params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.params = params
        self.prompt = prompt

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        return (await self.candidates(problem, ctx, 1))[0]

    async def candidates(self, problem: Problem, ctx: Context, k: int) -> list[Candidate]:
        prompt = await self.prompt.render(problem, ctx.generator)
        seed = self.params.seed if self.params.seed is not None else ctx.seed
        params = self.params.replace(n=k, seed=seed)
        return [
            Candidate(text=c.text, **answer_fields(c.text, c.finish_reason != "length"), completion=c, usage=usage,
                      finish_reason=c.finish_reason)
            for c, usage in await ctx.generate(prompt, params)
        ]
