"""What every strategy is: a small configured object whose `run(problem, ctx)` returns a Result."""

from __future__ import annotations

import abc
import asyncio
import copy

from ttc.backends.base import Generator
from ttc.context import Budget, Context
from ttc.errors import InvalidInput
from ttc.needs import Needs, fill
from ttc.runner import closing_loop, run_sync, solve_one
from ttc.types import Candidate, Problem, Result, SamplingParams


class Strategy(abc.ABC):
    """A test-time-compute strategy. Subclasses implement `run`; users call `solve` or `arun`."""

    name: str = "strategy"

    @abc.abstractmethod
    async def run(self, problem: Problem, ctx: Context) -> Result:
        """Solve `problem`, issuing every generator and verifier call through `ctx`."""

    async def arun(self, problem: Problem | str, generator: Generator, *, budget: Budget | None = None,
                   seed: int | None = None) -> Result:
        """Async entry point: solve one problem with `generator`."""
        return await solve_one(self, problem, generator, budget=budget, seed=seed)

    def solve(self, problem: Problem | str, generator: Generator, *, budget: Budget | None = None,
              seed: int | None = None) -> Result:
        """Sync entry point (works in a notebook cell too)."""
        return run_sync(closing_loop(generator, self.arun(problem, generator, budget=budget, seed=seed)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Sampler(Strategy):
    """A strategy that produces candidate solutions; wrappers (vote, best-of-N) repeat it.

    Subclasses implement `candidate` (one solution) and may override `candidates` to produce k
    at once more cheaply (plain sampling asks the backend for n=k in one request).

    A wrapper whose verifier needs more than text asks its sampler for it with `with_needs`;
    the default fills in the sampler's `params` (`ttc.needs.fill`). A sampler without `params`
    overrides `with_needs` to provide them, or is refused beside a verifier that needs them.
    """

    def with_needs(self, needs: Needs, who: str) -> Sampler:
        """This sampler, or a changed copy (the caller's object is never changed), whose candidates
        carry what `needs` asks; `InvalidInput` naming `who` when its explicit settings refuse it."""
        needs = needs.sampling
        if not needs:
            return self
        params = getattr(self, "params", None)
        if not isinstance(params, SamplingParams):
            raise InvalidInput(
                f"{who} needs {needs.describe()}, and sample={type(self).__name__} has no `params` to ask for "
                f"them: make it sample with SamplingParams({needs.settings()}) and override Sampler.with_needs, "
                f"or use a scorer that needs none")
        filled = fill(params, needs, who=who, where=f"sample={type(self).__name__}")
        if filled == params:
            return self
        adjusted = copy.copy(self)
        adjusted.params = filled  # type: ignore[attr-defined]
        return adjusted

    @abc.abstractmethod
    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        """One candidate solution."""

    async def candidates(self, problem: Problem, ctx: Context, k: int) -> list[Candidate]:
        """k candidates, produced concurrently so the backend can batch them."""
        return list(await asyncio.gather(*(self.candidate(problem, ctx) for _ in range(k))))

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidate = await self.candidate(problem, ctx)
        return Result(problem=problem, answer=candidate.answer, candidates=[candidate],
                      usage=ctx.usage, strategy=self.name)
