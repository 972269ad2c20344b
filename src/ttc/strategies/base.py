"""What every strategy is: a small configured object whose `run(problem, ctx)` returns a Result."""

from __future__ import annotations

import abc
import asyncio

from ttc.backends.base import Generator
from ttc.context import Budget, Context
from ttc.runner import closing_loop, run_sync, solve_one
from ttc.types import Candidate, Problem, Result


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
    """

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
