"""Context: streamed requests are accounted and bounded like plain ones."""

import asyncio

import pytest

import ttc
from ttc.backends import Scripted


def run(coro):
    return asyncio.run(coro)


def test_stream_counts_tokens_as_they_arrive_and_stops_on_exit():
    llm = Scripted(["one two three four five"], token_latency=0.001)  # 9 tokens

    async def main():
        ctx = ttc.Context(llm)
        async with ctx.stream("hello", ttc.SamplingParams(max_tokens=50)) as s:
            async for _ in s:
                if len(s.token_ids) == 3:
                    break
        return ctx, s

    ctx, s = run(main())
    assert s.completion().finish_reason == "cancelled"
    assert s.completion().text == "one two"
    assert llm.streamed_tokens == 3  # nothing generated after the consumer left
    assert s.usage.completion_tokens == 3
    assert s.usage.closed_streams == 1
    assert ctx.usage.counts() == s.usage.counts()


def test_stream_to_the_end_matches_generate():
    llm = Scripted(["alpha beta gamma"])

    async def main():
        ctx = ttc.Context(llm)
        async with ctx.stream("p", ttc.SamplingParams(max_tokens=50, logprobs=True)) as s:
            deltas = [d async for d in s]
        (plain, _), = await ctx.generate("p", ttc.SamplingParams(max_tokens=50, logprobs=True))
        return s, deltas, plain

    s, deltas, plain = run(main())
    assert deltas[-1].finish_reason == "stop"
    assert s.completion() == plain
    assert s.usage.closed_streams == 0  # finished on its own: its count is complete


def test_stream_respects_the_token_budget():
    llm = Scripted([" ".join(["w"] * 100)])

    async def main():
        ctx = ttc.Context(llm, ttc.Budget(tokens=60))
        async with ctx.stream("p", ttc.SamplingParams(max_tokens=500)) as s:
            async for _ in s:
                pass
        return ctx, s

    ctx, s = run(main())
    assert s.completion().finish_reason == "length"
    assert ctx.usage.total_tokens <= 60
    assert ctx.remaining_tokens() == 60 - ctx.usage.total_tokens  # reservation released


def test_stream_time_budget():
    llm = Scripted(["a b c d e f"], token_latency=10.0)

    async def main():
        ctx = ttc.Context(llm, ttc.Budget(seconds=0.05))
        async with ctx.stream("p", ttc.SamplingParams()) as s:
            async for _ in s:
                pass

    with pytest.raises(ttc.BudgetExhausted, match="time budget"):
        run(main())


def test_empty_prompt_is_rejected():
    async def main():
        await ttc.Context(Scripted(["x"])).generate([], ttc.SamplingParams())

    with pytest.raises(ttc.InvalidInput, match="empty prompt"):
        run(main())


def test_context_needs_a_generator():
    with pytest.raises(ttc.InvalidInput, match="Generator"):
        ttc.Context("not a backend")
