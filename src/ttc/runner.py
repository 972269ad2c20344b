"""The sync edge: run ttc's coroutines from plain code and from Jupyter, and solve many problems.

All sync calls share one background event loop in a daemon thread. That works the same inside
a notebook's running loop and in a script, and keeps backends that bind to a loop (HTTP
sessions, vLLM's engine) on the same loop across calls.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ttc._progress import tqdm
from ttc.backends.base import Generator
from ttc.context import Budget, Context
from ttc.errors import InvalidInput, ProblemsFailed
from ttc.types import Problem, Result, Results, Usage

if TYPE_CHECKING:
    from ttc.strategies.base import Strategy

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ttc-event-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on ttc's background loop and return its result (or raise)."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_sync called from ttc's own event loop: await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # KeyboardInterrupt in a notebook: stop the work, don't leave it running
        raise


def note_truncation(result: Result) -> Result:
    """Say so in `details["truncation"]` when most (over half) of several candidates were cut at
    max_tokens: the answer then rests on unfinished traces, and max_tokens is the thing to raise."""
    total, cut = len(result.candidates), result.truncated
    if total > 1 and 2 * cut > total:
        result.details = result.details.with_extra(
            truncation=f"{cut}/{total} candidates were cut at max_tokens before finishing: "
                       f"the answer rests mostly on unfinished traces; raise max_tokens")
    return result


async def solve_one(strategy: Strategy, problem: Problem | str, generator: Generator, *,
                    budget: Budget | None = None, seed: int | None = None) -> Result:
    """Solve one problem; raises on failure (see `asolve_many` for per-problem error records)."""
    problem = Problem.coerce(problem).validate()
    ctx = Context(generator, budget, seed)
    result = await strategy.run(problem, ctx)
    result.usage = ctx.finish()
    return note_truncation(result)


async def asolve_many(strategy: Strategy, problems: Iterable[Problem | str], generator: Generator, *,
                      concurrency: int = 32, budget: Budget | None = None, seed: int | None = None,
                      progress: bool = True, on_result: Callable[[int, Result], None] | None = None,
                      total_budget: Budget | None = None, allocation: str = "uniform", warn: bool = True
                      ) -> Results:
    """Solve `problems` concurrently; return one `Result` per problem, in order, as `Results` (a
    list that also says what failed: `results.failed`, `results.first_error`).

    `budget` limits each problem; `total_budget=Budget(tokens=T)` is one token total shared by all
    of them, split `allocation="uniform"` (equal shares) or `"adaptive"` (problems whose vote is
    decided early leave their tokens to the undecided ones): see `ttc.shared_budget`. It applies to
    votes that can sample incrementally (`AdaptiveVote`, `MajorityVote`); each Result's
    `details["allocation"]` says what its problem got.

    A problem that fails (bad input, budget, backend error) becomes a `Result` with `error` set
    and the usage it had spent, and never stops the others; with `warn` (default), a run where any
    failed warns once (`ttc.ProblemsFailed`) with the count and the first error. `on_result(index,
    result)` is called as each finishes (e.g. to stream results to a file). Problem i gets seed `seed + i`.
    """
    results = await _solve_all(strategy, problems, generator, concurrency=concurrency, budget=budget, seed=seed,
                               progress=progress, on_result=on_result, total_budget=total_budget,
                               allocation=allocation)
    if warn:
        warn_failures(results, stacklevel=2)
    return results


def warn_failures(results: Results, stacklevel: int = 1) -> None:
    """Warn once (`ProblemsFailed`) with the count and the first error when any problem failed;
    `stacklevel` counts from the caller of this function, as `warnings.warn`'s does."""
    if results.failed:
        warnings.warn(f"{results.summary()} (see results.failed, results.first_error and each "
                      f"Result.error)", ProblemsFailed, stacklevel=stacklevel + 1)


async def _solve_all(strategy: Strategy, problems: Iterable[Problem | str], generator: Generator, *,
                     concurrency: int, budget: Budget | None, seed: int | None, progress: bool,
                     on_result: Callable[[int, Result], None] | None, total_budget: Budget | None,
                     allocation: str) -> Results:
    """`asolve_many` without the warning."""
    if total_budget is not None:
        from ttc.shared_budget import asolve_shared

        return await asolve_shared(strategy, problems, generator, total_budget=total_budget,
                                   allocation=allocation,  # type: ignore[arg-type]
                                   concurrency=concurrency, budget=budget, seed=seed, progress=progress,
                                   on_result=on_result)
    if concurrency <= 0:
        raise InvalidInput(f"concurrency must be positive, got {concurrency}")
    items = list(problems)
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=strategy.name, disable=not progress, dynamic_ncols=True)
    graded = [0, 0]  # correct, with gold

    async def one(index: int, raw: Problem | str) -> Result:
        async with semaphore:
            ctx = None
            try:
                problem = Problem.coerce(raw)
            except InvalidInput as exc:
                problem = Problem(question=str(raw))
                result = Result.failed(problem, strategy.name, exc, Usage())
            else:
                try:
                    problem.validate()
                    ctx = Context(generator, budget, None if seed is None else seed + index)
                    result = note_truncation(await strategy.run(problem, ctx))
                    result.usage = ctx.finish()
                except Exception as exc:  # one bad problem never loses the others
                    result = Result.failed(problem, strategy.name, exc, ctx.finish() if ctx else Usage())
        correct = result.is_correct()
        if correct is not None:
            graded[0] += int(correct)
            graded[1] += 1
            bar.set_postfix(acc=f"{graded[0] / graded[1]:.3f}")
        bar.update(1)
        if on_result is not None:
            on_result(index, result)
        return result

    try:
        return Results(await asyncio.gather(*(one(i, p) for i, p in enumerate(items))))
    finally:
        bar.close()


def solve_many(strategy: Strategy, problems: Iterable[Problem | str], generator: Generator, *, warn: bool = True,
               **kwargs: Any) -> Results:
    """Sync `asolve_many`: works in scripts and inside Jupyter. Same arguments; the warning about
    failed problems is issued in the caller's thread, pointing at the caller's line."""
    results = run_sync(closing_loop(generator, asolve_many(strategy, problems, generator, warn=False, **kwargs)))
    if warn:
        warn_failures(results, stacklevel=2)
    return results


async def closing_loop(generator: Generator, coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro`, then release what `generator` bound to this loop (HTTP sessions): the sync
    API gives the caller no place to do it, and an open aiohttp session warns at exit."""
    try:
        return await coro
    finally:
        await generator.close_loop()
