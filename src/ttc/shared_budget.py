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
The waves are planned by `WavePlanner`, which does no I/O: this runner sends the rounds it plans,
and `ttc tune`'s replay (`ttc.bank.shared`) settles the same plan from a bank's recorded samples.

Only votes can be run this way: `AdaptiveVote` (its stopping rule decides) and an unweighted
`MajorityVote(n)` (never decided early: it samples up to n), each with plain `Sample` sampling
(the worst case of a sample must be known in advance). Samples are drawn in rounds of one request
each (`AdaptiveVote.batch`; n for `MajorityVote`), so `AdaptiveVote(stream=True)` runs as rounds here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def check_allocation(allocation: str) -> None:
    """Refuse an allocation mode other than ALLOCATIONS (before any prompt is tokenized)."""
    if allocation not in ALLOCATIONS:
        raise InvalidInput(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")


@dataclass(frozen=True)
class Round:
    """One request of k samples for problem `index`, `reserved` at its worst case before it is sent."""

    index: int
    k: int
    reserved: int


class WavePlanner:
    """The scheduling of a shared total, without I/O: the live runner sends the rounds it plans and
    `ttc tune`'s replay (`ttc.bank.shared.allocate`) settles them from a bank's recorded lengths, so
    both run this one plan. Refuses a total below one worst-case sample per problem (or, uniform, a
    share below one)."""

    def __init__(self, prompts: Sequence[int], total: int, allocation: str, *, batch: int, max_n: int,
                 max_tokens: int):
        check_allocation(allocation)
        one_each = sum(n + max_tokens for n in prompts)
        if one_each > total:
            raise InvalidInput(f"total_budget of {total} tokens is below one sample per problem: {len(prompts)} "
                               f"problems need {one_each} tokens at worst (each its prompt, {min(prompts)}-"
                               f"{max(prompts)} tokens, + max_tokens={max_tokens})")
        self.prompts, self.batch, self.max_n, self.max_tokens = list(prompts), batch, max_n, max_tokens
        self.adaptive = allocation == "adaptive"
        self.shares: list[int | None] = [None] * len(prompts)
        if self.adaptive:
            self.pools = [TokenPool(total)] * len(prompts)
        else:
            base, extra = divmod(total, len(prompts))
            self.shares = [base + (i < extra) for i in range(len(prompts))]
            short = [i for i, (s, n) in enumerate(zip(self.shares, prompts, strict=True)) if s < n + max_tokens]
            if short:
                raise InvalidInput(f"total_budget of {total} tokens split uniformly gives problem {short[0]} "
                                   f"{self.shares[short[0]]} tokens, below one sample ({prompts[short[0]]} prompt + "
                                   f"max_tokens={max_tokens}); raise the total or use allocation='adaptive'")
            self.pools = [TokenPool(s) for s in self.shares]
        self.waves = 0

    def cost(self, i: int, k: int) -> int:
        """The worst case of k samples for problem i: its prompt + k x max_tokens."""
        return self.prompts[i] + k * self.max_tokens

    def next_wave(self, waiting: Mapping[int, int]) -> tuple[list[Round], list[int]]:
        """The next wave's rounds, reserved, for the open problems (`waiting`: index -> samples so far),
        and the problems the budget stops. Call it once every round of the previous wave is settled.
        No rounds: the run is over."""
        order = sorted(waiting, key=lambda i: (waiting[i], i))  # fewest samples first
        sizes = {i: min(self.batch, self.max_n - waiting[i]) for i in order}
        if self.waves == 0 and self.adaptive:  # wave 0: every first round of one size, shrunk until all fit
            k = min(self.batch, self.max_n)
            while k > 1 and sum(self.cost(i, k) for i in order) > self.pools[0].available():
                k -= 1
            sizes = dict.fromkeys(order, k)
        wave, stopped = [], []
        for i in order:  # each reservation leaves less for the next
            k = sizes[i]
            while k > 0 and self.cost(i, k) > self.pools[i].available():
                k -= 1
            if k > 0:
                self.pools[i].reserve(self.cost(i, k))
                wave.append(Round(i, k, self.cost(i, k)))
            elif not self.adaptive:
                stopped.append(i)  # its own share cannot pay for one more sample, now or later
        if not wave:  # nothing sent: nothing can free tokens, the rest is out of budget
            return [], order
        self.waves += 1
        return wave, stopped

    def settle(self, round: Round, spent: int) -> None:
        """A round returned: its real usage replaces its reservation."""
        self.pools[round.index].settle(round.reserved, spent)

    def spent(self) -> int:
        return sum(p.spent for p in {id(p): p for p in self.pools}.values())


@dataclass
class _Problem:
    index: int
    problem: Problem
    ctx: Context
    candidates: list[Candidate] = field(default_factory=list)
    rounds: int = 0
    reason: StopReason | None = None
    error: BaseException | None = None

    def open(self) -> bool:
        return self.reason is None and self.error is None


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
    check_allocation(allocation)
    if concurrency <= 0:
        raise InvalidInput(f"concurrency must be positive, got {concurrency}")
    plan = vote_plan(strategy)
    items = [Problem.coerce(p).validate() for p in problems]
    if not items:
        return Results()
    lengths = [await _prompt_tokens(plan.sample, p, generator) for p in items]
    planner = WavePlanner(lengths, total_budget.tokens, allocation, batch=plan.batch, max_n=plan.max_n,
                          max_tokens=plan.sample.params.max_tokens)
    states = [_Problem(i, p, Context(generator, budget, None if seed is None else seed + i))
              for i, p in enumerate(items)]
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=f"{plan.name} (shared {allocation})", disable=not progress,
               dynamic_ncols=True)

    async def round_of(planned: Round) -> None:
        state = states[planned.index]
        async with semaphore:
            before = state.ctx.usage.total_tokens
            try:
                state.candidates += await draw_round(plan.sample, state.problem, state.ctx, planned.k)
                state.rounds += 1
            except BudgetExhausted as exc:  # the problem's own budget= (the shared pool is checked before)
                if state.candidates:
                    state.reason = "budget"
                else:
                    state.error = exc
            except Exception as exc:  # one bad problem never loses the others
                state.error = exc
            finally:
                planner.settle(planned, state.ctx.usage.total_tokens - before)
        if state.error is not None or state.reason is not None:
            return
        if plan.rule.should_stop([c.answer for c in state.candidates]):
            state.reason = "decided"
        elif len(state.candidates) >= plan.max_n:
            state.reason = "max_n"

    while True:  # each wave planned (all its rounds reserved) once the previous one has returned
        wave, stopped = planner.next_wave({s.index: len(s.candidates) for s in states if s.open()})
        for i in stopped:
            states[i].reason = "budget"
        if not wave:
            break
        await asyncio.gather(*(round_of(planned) for planned in wave))
        _update_bar(bar, states)
    bar.close()
    spent = planner.spent()
    results = Results()
    for state, share in zip(states, planner.shares, strict=True):
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
            shared_budget={"total": total_budget.tokens, "spent": spent, "waves": planner.waves})
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


__all__ = ["ALLOCATIONS", "Allocation", "Round", "TokenPool", "VotePlan", "WavePlanner", "allocation_table",
           "asolve_shared", "check_allocation", "vote_plan"]
