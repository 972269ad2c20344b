"""Plain sampling: the single-candidate strategy every wrapper repeats by default."""

from __future__ import annotations

from ttc.candidates import from_completion
from ttc.context import Context
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler
from ttc.types import Candidate, Problem, SamplingParams

DEFAULT_PARAMS = SamplingParams(temperature=0.7, max_tokens=256, logprobs=True)


class Sample(Sampler):
    """One sampled solution per candidate. k candidates are one request with n=k, so the
    backend prefills the prompt once and decodes the k samples as one batch.

    Each request of a seeded run gets its own seed by the seed rule (`Context.next_seed`): drawn
    from `Random(params.seed)` when the params carry a seed, else from the run's RNG
    (`solve(..., seed=)`). So two calls in one run sample differently, and a run is reproducible.

    Source: plain temperature sampling, the single-candidate strategy (no paper). Deviations: none.

    Args:
        params: sampling parameters (temperature, max_tokens, seed, logprobs, ...); n is set per call.
        prompt: the chat prompt the question is rendered into.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> ttc.Sample().solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "sample"

    def __init__(self, params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.params = params
        self.prompt = prompt

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        return (await self.candidates(problem, ctx, 1))[0]

    async def candidates(self, problem: Problem, ctx: Context, k: int) -> list[Candidate]:
        seed = ctx.next_seed(self.params.seed)  # drawn before any await: the same run gives the same seeds
        prompt = await self.prompt.render(problem, ctx.generator, self.params)
        params = self.params.replace(n=k, seed=seed)
        return [from_completion(c, usage) for c, usage in await ctx.generate(prompt, params)]
