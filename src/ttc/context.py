"""The per-problem context: which generator to call, the budget, and the running usage.

Every generator request and verifier call of a strategy goes through its `Context`, which is
what makes budgets enforced (not just reported) and usage exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from ttc.backends.base import Delta, Generator
from ttc.errors import BudgetExhausted, GenerationError, InvalidInput, Unsupported
from ttc.types import Completion, Prompt, SamplingParams, Usage


@dataclass(frozen=True)
class Budget:
    """Hard limits for one problem.

    tokens: billed prompt tokens + completion tokens the generator may spend (`Usage.total_tokens`:
        a prompt counts once per request, as servers bill it, whatever n is; the processed and
        cached prompt counts are reported beside it in `Usage`). A request's prompt is charged
        at least its own length, even if a backend reports less.
    seconds: wall-clock time; requests still running at the deadline are cancelled.
    verifier_calls: candidates or steps a verifier may score.
    min_candidate_tokens: a request whose per-candidate share of the remaining token budget falls
        under this (or under its own max_tokens, if smaller) fails with `BudgetExhausted` instead
        of producing a uselessly truncated candidate; above it, max_tokens is cut to fit.
    """

    tokens: int | None = None
    seconds: float | None = None
    verifier_calls: int | None = None
    min_candidate_tokens: int = 16

    def __post_init__(self) -> None:
        for name in ("tokens", "seconds", "verifier_calls"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidInput(f"Budget.{name} must be positive, got {value!r}")


class Context:
    """Generator access for one problem, with budget enforcement and usage accounting."""

    def __init__(self, generator: Generator, budget: Budget | None = None, seed: int | None = None):
        if not isinstance(generator, Generator):
            raise InvalidInput(f"expected a ttc Generator backend, got {type(generator).__name__}")
        self.generator = generator
        self.budget = budget or Budget()
        self.seed = seed
        self.rng = random.Random(seed)
        self._seed_rngs: dict[int, random.Random] = {}
        self.usage = Usage()
        self._reserved_tokens = 0
        #: verifier tokens that count against `Budget.tokens` (`verifier_generate`'s requests)
        self._budgeted_verifier_tokens = 0
        self._start = time.monotonic()
        self._deadline = None if self.budget.seconds is None else self._start + self.budget.seconds

    def next_seed(self, seed: int | None = None) -> int | None:
        """The seed of this run's next sampling request: ttc's one seed rule.

        Every sampling request of a seeded run gets its own seed, drawn in order from one RNG:
        `Random(seed)` when the sampler's own `SamplingParams.seed` is given (one such RNG per
        seed and run, so that seed alone makes the run reproducible), else the run's RNG
        (`solve(..., seed=)`; `solve_many` gives problem i the seed `seed + i`). An unseeded run
        returns None: the backend picks. Draw before the request's first await, so that the
        order of draws, and with it every seed, is the same in every run.
        """
        if seed is not None:
            rng = self._seed_rngs.setdefault(seed, random.Random(seed))
        elif self.seed is not None:
            rng = self.rng
        else:
            return None
        return rng.getrandbits(31)

    # -- time ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def remaining_seconds(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def finish(self) -> Usage:
        """Stamp the elapsed wall time on the running usage and return it."""
        self.usage.wall_seconds = self.elapsed()
        return self.usage

    # -- tokens -------------------------------------------------------------------------------
    def remaining_tokens(self) -> int | None:
        if self.budget.tokens is None:
            return None
        return (self.budget.tokens - self.usage.total_tokens - self._reserved_tokens
                - self._budgeted_verifier_tokens)

    async def _prompt_length(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return len(await self.generator.tokenize(prompt))
        return len(prompt)

    def _fit_to_budget(self, prompt_len: int, params: SamplingParams) -> SamplingParams:
        left = self.remaining_tokens()
        if left is None:
            return params
        per_candidate = (left - prompt_len) // params.n
        needed = min(params.max_tokens, self.budget.min_candidate_tokens)
        if per_candidate < needed:
            raise BudgetExhausted(
                f"token budget exhausted: {max(left, 0)} of {self.budget.tokens} tokens left, a request "
                f"of {params.n} candidate(s) needs {prompt_len} prompt tokens + at least {needed} per candidate")
        if per_candidate < params.max_tokens:
            params = params.replace(max_tokens=per_candidate)
        return params

    async def _reserve(self, prompt: Prompt, params: SamplingParams) -> tuple[SamplingParams, int]:
        """Validate the request, fit it to the token budget and reserve its worst-case cost."""
        if isinstance(prompt, str) and not prompt:
            raise InvalidInput("empty prompt")
        if not isinstance(prompt, str) and len(prompt) == 0:
            raise InvalidInput("empty prompt (no token ids)")
        self._check_time()
        if self.budget.tokens is None:
            return params, 0
        prompt_len = await self._prompt_length(prompt)
        params = self._fit_to_budget(prompt_len, params)
        reserved = prompt_len + params.n * params.max_tokens
        self._reserved_tokens += reserved
        return params, reserved

    @contextlib.asynccontextmanager
    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Stream]:
        """Stream one completion within the budget; leaving the block early stops the request.

            async with ctx.stream(prompt, params) as s:
                async for delta in s:
                    if enough(s.text):
                        break
            completion, usage = s.completion(), s.usage   # tokens received so far, counted
        """
        params, reserved = await self._reserve(prompt, params.replace(n=1))
        if reserved:
            prompt_tokens = reserved - params.max_tokens
        else:
            try:
                prompt_tokens = await self._prompt_length(prompt)
            except Unsupported:  # no /tokenize and no local tokenizer: the server's stream usage counts it
                prompt_tokens = 0
        handle = Stream(self, self.generator.stream(prompt, params), prompt_tokens, prompt, params,
                        settle=lambda text, ids, so_far: self.generator.closed_stream_usage(prompt, text, ids, so_far))
        try:
            yield handle
        finally:
            try:
                await handle.close()
            finally:
                self._reserved_tokens -= reserved

    async def generate(self, prompt: Prompt, params: SamplingParams) -> list[tuple[Completion, Usage]]:
        """Run one request within the budget; return each completion with the usage it accounts for.

        The first completion's usage carries the request's prompt tokens (billed, processed and
        cached) and the generator call, every completion carries its own completion tokens, so
        the usages sum to the request's cost. A request that failed after the backend had
        spent tokens (e.g. an answer ttc rejects) still adds them to the problem's usage.
        """
        params, reserved = await self._reserve(prompt, params)
        prompt_len = reserved - params.n * params.max_tokens if reserved else 0
        try:
            timeout = self.remaining_seconds()
            try:
                gen = await asyncio.wait_for(self.generator.generate(prompt, params), timeout)
            except asyncio.TimeoutError:
                raise BudgetExhausted(f"time budget of {self.budget.seconds} s exhausted") from None
            except GenerationError as exc:
                if isinstance(exc.usage, Usage):
                    self.usage.add(_at_least(exc.usage, prompt_len, params.n))
                raise
        finally:
            self._reserved_tokens -= reserved
        out = []
        request = _at_least(gen.usage(), prompt_len, len(gen.completions))
        for i, completion in enumerate(gen.completions):
            u = Usage(completion_tokens=gen.tokens_of(i), reasoning_tokens=gen.reasoning_of(i))
            if i == 0:
                u.prompt_tokens = request.prompt_tokens
                u.processed_prompt_tokens = request.processed_prompt_tokens
                u.cached_prompt_tokens = request.cached_prompt_tokens
                u.generator_calls = request.generator_calls
            u.estimated = request.estimated
            self.usage.add(u)
            out.append((completion, u))
        return out

    def _check_time(self) -> None:
        left = self.remaining_seconds()
        if left is not None and left <= 0:
            raise BudgetExhausted(f"time budget of {self.budget.seconds} s exhausted")

    # -- verifiers ----------------------------------------------------------------------------
    def reserve_verifier_calls(self, calls: int) -> None:
        """Check that `calls` more verifier calls fit the budget, then count them."""
        limit = self.budget.verifier_calls
        if limit is not None and self.usage.verifier_calls + calls > limit:
            raise BudgetExhausted(
                f"verifier budget exhausted: {self.usage.verifier_calls} of {limit} calls used, {calls} more asked")
        self._check_time()
        self.usage.verifier_calls += calls

    def verifier_calls_left(self) -> int | None:
        """Verifier calls the budget still allows (None: unlimited)."""
        limit = self.budget.verifier_calls
        return None if limit is None else max(0, limit - self.usage.verifier_calls)

    def record_verifier_tokens(self, tokens: int) -> None:
        self.usage.verifier_tokens += tokens

    async def verifier_generate(self, prompt: Prompt, params: SamplingParams,
                                generator: Generator | None = None) -> list[tuple[Completion, int]]:
        """A generative verifier's request, on `generator` (default: this context's): one verifier
        call (counted, and checked against `Budget.verifier_calls`, before it is sent) whose tokens
        (prompt + completions, as the backend counted them) are recorded as `Usage.verifier_tokens`
        and count against `Budget.tokens` like the policy's own (max_tokens is cut to fit, or
        `BudgetExhausted`).
        Returns each completion with its own completion tokens (the first also carries the prompt's).
        """
        generator = generator or self.generator
        self._check_time()
        reserved = 0
        if self.budget.tokens is not None:
            prompt_len = len(await generator.tokenize(prompt)) if isinstance(prompt, str) else len(prompt)
            params = self._fit_to_budget(prompt_len, params)
            reserved = prompt_len + params.n * params.max_tokens
            self._reserved_tokens += reserved
        try:
            # counted before the request, so that checks sent together cannot overrun the call budget
            self.reserve_verifier_calls(1)
            try:
                gen = await asyncio.wait_for(generator.generate(prompt, params), self.remaining_seconds())
            except asyncio.TimeoutError:
                raise BudgetExhausted(f"time budget of {self.budget.seconds} s exhausted") from None
        finally:
            self._reserved_tokens -= reserved
        out = [(c, gen.tokens_of(i) + (gen.prompt_tokens if i == 0 else 0)) for i, c in enumerate(gen.completions)]
        spent = sum(tokens for _, tokens in out)
        self.record_verifier_tokens(spent)
        self._budgeted_verifier_tokens += spent
        return out



def split_verifier_cost(usages: Sequence[Usage], tokens: int, free: bool = False) -> None:
    """Charge a verifier invocation to the `usages` it scored for: one verifier call each (none
    when the verifier is free) and an equal share of the `tokens` it spent, the remainder one
    token each to the first ones, so that the shares add up to `tokens` exactly. The one place
    where verifier cost is split (outcome verifiers, PRMs, hidden-state probes)."""
    if not usages:
        return
    share, extra = divmod(tokens, len(usages))
    for i, usage in enumerate(usages):
        usage.verifier_calls += 0 if free else 1
        usage.verifier_tokens += share + (1 if i < extra else 0)


def _at_least(usage: Usage, prompt_len: int, sequences: int) -> Usage:
    """`usage` with its prompt charged at least `prompt_len` tokens (the length ttc measured
    before sending), so a backend that reports less (or nothing) cannot under-count a budget."""
    if usage.prompt_tokens >= prompt_len:
        return usage
    out = Usage()
    out.add(usage)
    out.prompt_tokens = prompt_len
    out.processed_prompt_tokens = max(usage.processed_prompt_tokens, sequences * prompt_len)
    return out


class Stream:
    """One streamed completion: iterate for deltas; tokens are counted in usage as they arrive.

    Deltas carry the whole output as generated (a reasoning model's thinking and markers included:
    `text` and `token_ids` here are that); `completion()` splits the thinking off as `generate`
    would (`Generator.split_thinking`) and counts its tokens in `usage.reasoning_tokens`.
    """

    def __init__(self, ctx: Context, deltas: AsyncIterator[Delta], prompt_tokens: int,
                 prompt: Prompt | None = None, params: SamplingParams | None = None,
                 settle: Callable[[str, list[int], Usage], Usage | None] | None = None):
        self._ctx = ctx
        self._prompt = prompt
        self._params = params
        self._reasoning_counted = False
        self._settle = settle  # the backend's account of a stream closed before its end
        self._deltas = deltas
        self._prompt_len = prompt_tokens
        self.usage = Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens, generator_calls=1)
        ctx.usage.add(self.usage)
        self.token_ids: list[int] = []
        self.logprobs: list[float] | None = None
        self.text = ""
        self.finish_reason: str | None = None

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Delta:
        if self.finish_reason is not None:
            raise StopAsyncIteration
        try:
            delta = await asyncio.wait_for(self._deltas.__anext__(), self._ctx.remaining_seconds())
        except asyncio.TimeoutError:
            raise BudgetExhausted(f"time budget of {self._ctx.budget.seconds} s exhausted") from None
        self.text += delta.text
        self.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(delta.logprobs)
        if delta.usage is not None:
            self._take_over(delta.usage)
        else:
            n = len(delta.token_ids)
            self.usage.completion_tokens += n
            self._ctx.usage.completion_tokens += n
        self.finish_reason = delta.finish_reason
        return delta

    def _take_over(self, reported: Usage) -> None:
        """Replace this stream's counts by the backend's (prompt charged at least its length)."""
        new = Usage(prompt_tokens=max(reported.prompt_tokens, self._prompt_len),
                    processed_prompt_tokens=max(reported.processed_prompt_tokens, self._prompt_len),
                    cached_prompt_tokens=reported.cached_prompt_tokens,
                    completion_tokens=reported.completion_tokens, generator_calls=1,
                    estimated=reported.estimated)
        if reported.reasoning_tokens and not self._reasoning_counted:  # the backend's count (a server's report)
            self._reasoning_counted = True
            self.usage.reasoning_tokens += reported.reasoning_tokens
            self._ctx.usage.reasoning_tokens += reported.reasoning_tokens
        total = self._ctx.usage
        for name in ("prompt_tokens", "processed_prompt_tokens", "cached_prompt_tokens", "completion_tokens"):
            setattr(total, name, getattr(total, name) + getattr(new, name) - getattr(self.usage, name))
            setattr(self.usage, name, getattr(new, name))
        self.usage.estimated = new.estimated
        total.estimated = total.estimated or new.estimated

    async def close(self) -> None:
        """Stop the request if it is still running (the backend aborts it; tokens it generated
        after the last one received are not counted: `Usage.closed_streams` says so)."""
        closed = self.finish_reason is None
        if closed:
            self.finish_reason = "cancelled"
            self.usage.closed_streams = 1
            self._ctx.usage.closed_streams += 1
        await self._deltas.aclose()
        if closed and self._settle is not None:
            settled = self._settle(self.text, self.token_ids, dataclasses.replace(self.usage))
            if settled is not None:
                self._take_over(settled)

    def completion(self) -> Completion:
        """What was received, as a Completion: a reasoning model's thinking split off (its thinking
        tokens counted in `usage.reasoning_tokens`, once)."""
        whole = Completion(text=self.text, token_ids=tuple(self.token_ids),
                           finish_reason=self.finish_reason or "cancelled",
                           logprobs=None if self.logprobs is None else tuple(self.logprobs))
        if self._prompt is None or self._params is None:
            return whole
        done = self._ctx.generator.split_thinking(whole, self._prompt, self._params)
        if not self._reasoning_counted:
            self._reasoning_counted = True
            self.usage.reasoning_tokens += done.reasoning_tokens
            self._ctx.usage.reasoning_tokens += done.reasoning_tokens
        return done
