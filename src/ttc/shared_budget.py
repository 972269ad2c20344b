"""One token budget for a whole batch of problems: `ttc.solve_many(..., total_budget=, allocation=)`.

A vote that is 7 to 0 after a few samples does not need more; the tokens it does not spend are
better spent on problems whose vote is still open. This module runs votes incrementally, in
waves of rounds, against one pool of tokens:

- allocation="uniform": every problem gets an equal share of the total (T // P, the remainder
  spread over the first problems) and samples within it; what a problem does not spend is lost.
- allocation="adaptive": one pool for all. Wave 0 gives every problem its first round (reserved
  for all problems before any request, so every problem gets at least one sample whatever the
  order). After each wave the problems the stopping rule has not decided (and below max_n) get
  another round, fewest samples first, as long as the pool can pay for it: tokens saved by
  problems that stopped early go to the undecided ones.

The total is never exceeded: before a round is sent, its worst case (prompt + k x max_tokens, the
prompt measured by tokenizing it) is reserved in the pool, and the reservation is replaced by the
round's real usage when it returns. (This holds when the backend bills a prompt at the length ttc
measured, as every ttc backend does; `Context` charges at least that length, never less.) A total
below one worst-case sample per problem is refused before anything is generated.

Only votes can be run this way: `AdaptiveVote` (its stopping rule decides) and an unweighted
`MajorityVote(n)` (never decided early: it samples up to n), each with plain `Sample` sampling
(the worst case of a sample must be known in advance). Samples are drawn in rounds of one request
each (`AdaptiveVote.batch`; n for `MajorityVote`), so `AdaptiveVote(stream=True)` runs as rounds here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ttc._progress import tqdm
from ttc.backends.base import Generator
from ttc.context import Budget, Context
from ttc.errors import BudgetExhausted, InvalidInput, Unsupported
from ttc.stopping import NeverStop, StoppingRule, StopReason
from ttc.strategies.adaptive_vote import AdaptiveVote, draw_round, vote_result
from ttc.strategies.base import Strategy
from ttc.strategies.majority import MajorityVote
from ttc.strategies.sample import Sample
from ttc.types import Candidate, Problem, Result, Results

Allocation = Literal["uniform", "adaptive"]
ALLOCATIONS: tuple[Allocation, ...] = ("uniform", "adaptive")
SUPPORTED = "AdaptiveVote, MajorityVote (without a verifier)"


@dataclass(frozen=True)
class VotePlan:
    """How to run a strategy incrementally: its sampler, at most max_n samples in rounds of batch."""

    name: str
    sample: Sample
    max_n: int
    batch: int
    rule: StoppingRule


def vote_plan(strategy: Strategy) -> VotePlan:
    """The incremental form of `strategy`, or a ttc error naming the strategies that have one."""
    if isinstance(strategy, AdaptiveVote):
        plan = VotePlan(strategy.name, strategy.sample, strategy.max_n, strategy.batch, strategy.stop)
    elif type(strategy) is MajorityVote and strategy.verifier is None:
        plan = VotePlan(strategy.name, strategy.sample, strategy.n, strategy.n, NeverStop())
    else:
        raise Unsupported(f"a shared total_budget needs a strategy that can sample incrementally: {SUPPORTED}; "
                          f"got {type(strategy).__name__}"
                          + (" with a verifier" if isinstance(strategy, MajorityVote) else ""))
    if type(plan.sample) is not Sample:
        raise Unsupported(f"a shared total_budget needs plain Sample sampling (the worst-case cost of a sample, "
                          f"prompt + max_tokens, must be known before it is sent); got sample="
                          f"{type(plan.sample).__name__}")
    return plan


class TokenPool:
    """Tokens of a shared total: spent (real usage) + reserved (worst case of rounds in flight)."""

    def __init__(self, total: int):
        self.total = total
        self.spent = 0
        self.reserved = 0

    def available(self) -> int:
        return self.total - self.spent - self.reserved

    def reserve(self, tokens: int) -> None:
        if tokens > self.available():
            raise AssertionError(f"reserving {tokens} of {self.available()} tokens")  # the scheduler checks first
        self.reserved += tokens

    def settle(self, reserved: int, spent: int) -> None:
        self.reserved -= reserved
        self.spent += spent


@dataclass
class _Problem:
    index: int
    problem: Problem
    ctx: Context
    prompt_tokens: int
    pool: TokenPool
    candidates: list[Candidate] = field(default_factory=list)
    rounds: int = 0
    reason: StopReason | None = None
    error: BaseException | None = None

    def open(self) -> bool:
        return self.reason is None and self.error is None

    def cost(self, k: int, max_tokens: int) -> int:
        return self.prompt_tokens + k * max_tokens


async def _prompt_tokens(sample: Sample, problem: Problem, generator: Generator) -> int:
    prompt = await sample.prompt.render(problem, generator, sample.params)
    return len(await generator.tokenize(prompt)) if isinstance(prompt, str) else len(prompt)


async def asolve_shared(strategy: Strategy, problems: Iterable[Problem | str], generator: Generator, *,
                        total_budget: Budget, allocation: Allocation = "uniform", concurrency: int = 32,
                        budget: Budget | None = None, seed: int | None = None, progress: bool = True,
                        on_result: Callable[[int, Result], None] | None = None) -> Results:
    """`asolve_many` with one token budget shared by all problems (see the module docstring).

    Each Result's `details["allocation"]` reports what its problem got: samples, rounds, tokens,
    its share (uniform) and the stop reason; `details["shared_budget"]` the total and what the
    whole run spent. `budget=` still limits each problem on its own.
    """
    if not isinstance(total_budget, Budget) or total_budget.tokens is None:
        raise InvalidInput(f"total_budget must be a ttc.Budget with tokens=..., got {total_budget!r}")
    if allocation not in ALLOCATIONS:
        raise InvalidInput(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    if concurrency <= 0:
        raise InvalidInput(f"concurrency must be positive, got {concurrency}")
    plan = vote_plan(strategy)
    items = [Problem.coerce(p).validate() for p in problems]
    if not items:
        return Results()
    max_tokens = plan.sample.params.max_tokens
    lengths = [await _prompt_tokens(plan.sample, p, generator) for p in items]
    total = total_budget.tokens
    one_each = sum(n + max_tokens for n in lengths)
    if one_each > total:
        raise InvalidInput(f"total_budget of {total} tokens is below one sample per problem: {len(items)} problems "
                           f"need {one_each} tokens at worst (each its prompt, {min(lengths)}-{max(lengths)} tokens, "
                           f"+ max_tokens={max_tokens})")
    shares: list[int | None] = [None] * len(items)
    if allocation == "uniform":
        base, extra = divmod(total, len(items))
        shares = [base + (i < extra) for i in range(len(items))]
        short = [i for i, (s, n) in enumerate(zip(shares, lengths, strict=True)) if s < n + max_tokens]
        if short:
            raise InvalidInput(f"total_budget of {total} tokens split uniformly gives problem {short[0]} "
                               f"{shares[short[0]]} tokens, below one sample ({lengths[short[0]]} prompt + "
                               f"max_tokens={max_tokens}); raise the total or use allocation='adaptive'")
        pools = [TokenPool(s) for s in shares]
    else:
        pools = [TokenPool(total)] * len(items)
    states = [_Problem(i, p, Context(generator, budget, None if seed is None else seed + i), lengths[i], pools[i])
              for i, p in enumerate(items)]
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=f"{plan.name} (shared {allocation})", disable=not progress,
               dynamic_ncols=True)

    async def round_of(state: _Problem, k: int, reserved: int) -> None:
        async with semaphore:
            before = state.ctx.usage.total_tokens
            try:
                state.candidates += await draw_round(plan.sample, state.problem, state.ctx, k)
                state.rounds += 1
            except BudgetExhausted as exc:  # the problem's own budget= (the shared pool is checked before)
                if state.candidates:
                    state.reason = "budget"
                else:
                    state.error = exc
            except Exception as exc:  # one bad problem never loses the others
                state.error = exc
            finally:
                state.pool.settle(reserved, state.ctx.usage.total_tokens - before)
        if state.error is not None or state.reason is not None:
            return
        if plan.rule.should_stop([c.answer for c in state.candidates]):
            state.reason = "decided"
        elif len(state.candidates) >= plan.max_n:
            state.reason = "max_n"

    # wave 0: every problem's first round, all reserved before any is sent
    k0 = [min(plan.batch, plan.max_n)] * len(items)
    if allocation == "adaptive":
        while k0[0] > 1 and sum(s.cost(k0[0], max_tokens) for s in states) > total:
            k0 = [k0[0] - 1] * len(items)
    else:
        k0 = [max(k for k in range(1, k0[0] + 1) if s.cost(k, max_tokens) <= s.pool.total) for s in states]
    wave = []
    for state, k in zip(states, k0, strict=True):
        state.pool.reserve(state.cost(k, max_tokens))
        wave.append(round_of(state, k, state.cost(k, max_tokens)))
    await asyncio.gather(*wave)
    _update_bar(bar, states)
    waves = 1
    while True:
        waiting = sorted((s for s in states if s.open()), key=lambda s: (len(s.candidates), s.index))
        if not waiting:
            break
        wave = []
        for state in waiting:
            k = min(plan.batch, plan.max_n - len(state.candidates))
            while k > 0 and state.cost(k, max_tokens) > state.pool.available():
                k -= 1
            if k > 0:
                state.pool.reserve(state.cost(k, max_tokens))
                wave.append(round_of(state, k, state.cost(k, max_tokens)))
            elif allocation == "uniform":
                state.reason = "budget"  # its own share cannot pay for one more sample, now or later
        if not wave:  # nothing was sent: nothing can free tokens, the rest is out of budget
            for state in waiting:
                state.reason = state.reason or "budget"
            break
        await asyncio.gather(*wave)
        waves += 1
        _update_bar(bar, states)
    bar.close()
    spent = sum(p.spent for p in {id(p): p for p in pools}.values())
    results = Results()
    for state, share in zip(states, shares, strict=True):
        usage = state.ctx.finish()
        if state.error is not None:
            result = Result.failed(state.problem, plan.name, state.error, usage)
            result.candidates = state.candidates
        else:
            result = vote_result(plan.name, state.problem, state.ctx, state.candidates, state.reason or "max_n",
                                 state.rounds, plan.rule)
            result.usage = usage
        result.details = result.details.with_extra(
            allocation={"mode": allocation, "samples": len(state.candidates), "rounds": state.rounds,
                        "tokens": usage.total_tokens, "share": share,
                        "stop_reason": state.reason if state.error is None else "error"},
            shared_budget={"total": total, "spent": spent, "waves": waves})
        results.append(result)
        if on_result is not None:
            on_result(state.index, result)
    return results


def allocation_table(results: Sequence[Result]) -> list[dict]:
    """One row per problem: id, samples, rounds, tokens, share, stop reason (from a shared-budget run)."""
    return [{"id": r.problem.id, **r.details.get("allocation", {})} for r in results]


def _update_bar(bar: tqdm, states: list[_Problem]) -> None:
    done = sum(not s.open() for s in states)
    bar.update(done - bar.n)


__all__ = ["ALLOCATIONS", "Allocation", "TokenPool", "VotePlan", "allocation_table", "asolve_shared", "vote_plan"]
