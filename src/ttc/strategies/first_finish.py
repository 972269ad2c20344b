"""First Finish Search: run n candidates at once, keep the first to finish, cancel the rest."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from ttc import answers
from ttc.candidates import from_completion, thinking_fields
from ttc.context import Context, Stream
from ttc.errors import InvalidInput
from ttc.infos import FirstFinishInfo
from ttc.needs import Needs
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.sample import DEFAULT_PARAMS, Sample
from ttc.strategies.wrapping import check_n
from ttc.types import Candidate, Problem, Prompt, Result, SamplingParams, Usage
from ttc.votes import tied_answers


class StreamSample(Sampler):
    """Plain sampling through a stream: the candidate's tokens are counted as they arrive, so a
    candidate cancelled midway has spent exactly the tokens it received. Each candidate of a
    seeded run gets its own seed by the seed rule (`Context.next_seed`).

    Source: plain temperature sampling, streamed (no paper). Deviations: none.

    Args:
        params: sampling parameters (n is always 1: one stream per candidate).
        prompt: the chat prompt the question is rendered into.

    Example:
        >>> from ttc.backends import Scripted
        >>> from ttc.strategies import StreamSample
        >>> StreamSample().solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "stream_sample"

    def __init__(self, params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.params = params.replace(n=1)
        self.prompt = prompt

    def with_needs(self, needs: Needs, who: str) -> StreamSample:
        """As `Sampler.with_needs`; a stream carries no top logprobs, so they are refused."""
        if needs.top_logprobs:
            raise InvalidInput(f"{who} needs the top-{needs.top_logprobs} logprobs of every token, which "
                               f"StreamSample cannot give (streams carry the sampled token's logprob only): "
                               f"use Sample")
        return super().with_needs(needs, who)  # type: ignore[return-value]

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        seed = ctx.next_seed(self.params.seed)  # drawn before any await: the same run gives the same seeds
        prompt = await self.prompt.render(problem, ctx.generator, self.params)
        async with ctx.stream(prompt, self.params.replace(seed=seed)) as s:
            async for _ in s:
                pass
        c = s.completion()
        return from_completion(c, s.usage)


class _Tracked:
    """One candidate's view of the context: forwards everything, and remembers what this candidate
    spent (finished requests and live streams), so a cancelled candidate's cost is still known."""

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self.spent = Usage()
        self.streams: list[Stream] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    async def generate(self, prompt: Prompt, params: SamplingParams):
        out = await self._ctx.generate(prompt, params)
        for _, usage in out:
            self.spent.add(usage)
        return out

    @contextlib.asynccontextmanager
    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Stream]:
        async with self._ctx.stream(prompt, params) as s:
            self.streams.append(s)
            yield s

    def reserve_verifier_calls(self, calls: int) -> None:
        self._ctx.reserve_verifier_calls(calls)
        self.spent.verifier_calls += calls

    def record_verifier_tokens(self, tokens: int) -> None:
        self._ctx.record_verifier_tokens(tokens)
        self.spent.verifier_tokens += tokens

    def spent_total(self) -> Usage:
        return Usage.total([self.spent] + [s.usage for s in self.streams])

    def partial_text(self) -> str:
        return "".join(s.text for s in self.streams)

    def partial(self) -> dict[str, Any]:
        """`text` (the final content) and the thinking fields of a stopped candidate: its streams'
        output split as `generate` splits it (counting their thinking tokens in their usage, so
        call it before `spent_total`)."""
        parts = [s.completion() for s in self.streams]
        if not any(p.thinking is not None for p in parts):
            return {"text": self.partial_text(), **thinking_fields(None)}
        return {"text": "".join(p.text for p in parts), **thinking_fields(parts[-1])}


class FirstFinish(Strategy):
    """First Finish Search (Agarwal et al., 2025, "First Finish Search: Efficient Test-Time Scaling
    in Large Language Models"): launch n candidates concurrently, return the first that completes
    and cancel the others; shorter traces are likelier to be right, and latency is one trace's.

    k > 1 waits for the first k and takes a majority vote among them (ties: the earliest finisher,
    recorded in `details["tie"]`).
    As in the paper, only a trace that completed is a finisher: a stream cut at `max_tokens`
    (finish_reason "length") is not one, and the search waits for the next. `require_answer`
    (default True) also only counts finishers with an extractable answer towards k. If no candidate
    finishes that way, the earliest ones with an answer (else the earliest ones) are used anyway.

    `sample` is the single-candidate strategy repeated (default: streamed plain sampling; a plain
    `Sample` is streamed too, with its params and prompt). Cancelled candidates are kept in the
    result with finish_reason "cancelled", no answer, and exactly the usage they had accrued
    (tokens received before cancellation; streams stop in the backend, so nothing is counted
    after). For a custom sampler that does not stream, a cancelled in-flight request costs nothing
    in usage. `details` records each candidate's finish time and the latency of the answer.

    Deviations: `require_answer=True` (the default) does not count a finisher without an
    extractable answer; `require_answer=False` counts every completed trace.

    Args:
        n: candidates launched at once.
        k: finishers to wait for (1: the first; k > 1: a majority vote among the first k).
        sample: the single-candidate strategy (default: streamed plain sampling).
        params, prompt: sampling parameters and chat prompt of the default sampler.
        require_answer: count only finishers with an extractable answer.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> ttc.FirstFinish(n=2).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "first_finish"

    def __init__(self, n: int = 8, k: int = 1, sample: Sampler | None = None,
                 params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt(),
                 require_answer: bool = True):
        self.n = check_n(n)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
            raise InvalidInput(f"FirstFinish.k must be an integer in [1, n={n}], got {k!r}")
        self.k = k
        if sample is None:
            sample = StreamSample(params, prompt)
        elif type(sample) is Sample:
            sample = StreamSample(sample.params, sample.prompt)
        elif not isinstance(sample, Sampler):
            raise InvalidInput(f"sample= must be a single-candidate strategy (a ttc Sampler), "
                               f"got {type(sample).__name__}")
        self.sample = sample
        self.require_answer = require_answer

    async def run(self, problem: Problem, ctx: Context) -> Result:
        start = time.perf_counter()
        views = [_Tracked(ctx) for _ in range(self.n)]
        tasks = [asyncio.ensure_future(self.sample.candidate(problem, view)) for view in views]
        index = {task: i for i, task in enumerate(tasks)}
        finished: list[tuple[int, float, Candidate]] = []  # (candidate index, seconds, candidate)
        errors: list[BaseException] = []
        pending = set(tasks)
        try:
            while pending and self._counted(finished) < self.k:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                now = time.perf_counter() - start
                for task in sorted(done, key=index.__getitem__):
                    if task.exception() is not None:
                        errors.append(task.exception())
                    else:
                        finished.append((index[task], now, task.result()))
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if not finished:
            raise errors[0]
        chosen = [f for f in finished if self._finisher(f[2])]
        chosen = (chosen or [f for f in finished if f[2].answer is not None] or finished)[: self.k]
        candidates: list[Candidate] = []
        seconds: list[float | None] = [None] * self.n
        done_by_index = {i: (t, c) for i, t, c in finished}
        for i, view in enumerate(views):
            if i in done_by_index:
                seconds[i], candidate = done_by_index[i]
            else:
                reason = "failed" if tasks[i].done() and not tasks[i].cancelled() else "cancelled"
                partial = view.partial()
                candidate = Candidate(**partial, answer=None, usage=view.spent_total(), finish_reason=reason)
            candidates.append(candidate)
        groups = answers.group([c.answer for _, _, c in chosen])
        votes = {chosen[g[0]][2].answer: float(len(g)) for g in groups}
        answer = max(votes, key=votes.get) if votes else None  # max keeps the earliest of equals
        return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage, strategy=self.name,
                      details=FirstFinishInfo(
                          chosen=tuple(i for i, _, _ in chosen), votes=votes,
                          latency_seconds=max(t for _, t, _ in chosen), finish_seconds=tuple(seconds),
                          finish_order=tuple(i for i, _, _ in finished),
                          cancelled=sum(c.finish_reason == "cancelled" for c in candidates), failed=len(errors),
                          tie=tied_answers(votes)))

    def _counted(self, finished: list[tuple[int, float, Candidate]]) -> int:
        return sum(self._finisher(c) for _, _, c in finished)

    def _finisher(self, candidate: Candidate) -> bool:
        """Whether a done candidate counts as finished: it completed (not cut at max_tokens) and,
        with `require_answer`, has an answer."""
        if candidate.finish_reason == "length":
            return False
        return candidate.answer is not None or not self.require_answer
