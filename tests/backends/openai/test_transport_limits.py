"""The transport's limits a server in front of clients needs (issue 23): a bounded wait for a
connection slot (`pool_wait`, `PoolExhausted`, `pool_stats()`), timeouts by type and phase
(`GenerationTimeout`: connect, read, total), and 429/503 retries apart from the others
(`retry_on_overload`). Against fake servers on loopback; the real vLLM server's read timeout is in
`test_a_read_timeout_on_the_real_vllm_server_is_a_generation_timeout`."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import ttc
from fake_http import FakeHTTPServer, response
from fake_openai import FakeOpenAI
from ttc.backends.openai_compatible import HTTPStatusError, OpenAICompatible
from ttc.errors import BackendUnavailable, ConnectTimeout, GenerationError, GenerationTimeout, InvalidInput
from ttc.types import SamplingParams

PARAMS = SamplingParams(max_tokens=4, seed=1)


async def closing(llm, coro):
    try:
        return await coro
    finally:
        await llm.aclose()


# -- pool_wait and pool_stats -------------------------------------------------------------------
async def two_at_once(llm):
    """The first request holds the only slot; the counts are read while the second waits."""
    first = asyncio.ensure_future(llm.generate("hi", PARAMS))
    while llm.transport.pool_stats().in_use == 0:
        await asyncio.sleep(0.01)
    second = asyncio.ensure_future(llm.generate("hi", PARAMS))
    while llm.transport.pool_stats().waiting == 0:
        await asyncio.sleep(0.01)
    seen = llm.transport.pool_stats()
    results = await asyncio.gather(first, second, return_exceptions=True)
    return seen, results, llm.transport.pool_stats()


def test_a_request_that_waits_past_pool_wait_is_pool_exhausted_and_the_counts_say_so():
    with FakeOpenAI("vllm", slow=1.0) as server:
        llm = OpenAICompatible(server.url, model="fake", max_concurrency=1, pool_wait=0.2)
        seen, (first, second), after = asyncio.run(closing(llm, two_at_once(llm)))
    assert (seen.size, seen.in_use, seen.waiting) == (1, 1, 1)
    assert first.completions[0].text  # the slot holder was answered
    assert isinstance(second, ttc.PoolExhausted) and isinstance(second, BackendUnavailable), second
    assert "pool_wait" in str(second) and "1 connection slots" in str(second)
    assert (after.in_use, after.waiting) == (0, 0)
    assert len([p for p, _ in server.requests if p == "/v1/completions"]) == 1  # the second never went out


def test_without_pool_wait_a_request_waits_for_its_slot():
    with FakeOpenAI("vllm", slow=0.3) as server:
        llm = OpenAICompatible(server.url, model="fake", max_concurrency=1)
        seen, results, after = asyncio.run(closing(llm, two_at_once(llm)))
    assert (seen.in_use, seen.waiting) == (1, 1)
    assert all(r.completions[0].text for r in results), results
    assert (after.in_use, after.waiting) == (0, 0)


def test_a_stream_holds_a_slot_too():
    async def go(llm):
        gen = llm.stream("hi", PARAMS)
        await gen.__anext__()
        held = llm.transport.pool_stats().in_use
        await gen.aclose()
        return held, llm.transport.pool_stats().in_use

    with FakeOpenAI("vllm") as server:
        llm = OpenAICompatible(server.url, model="fake", max_concurrency=2, pool_wait=1)
        assert asyncio.run(closing(llm, go(llm))) == (1, 0)


@pytest.mark.parametrize("bad", [{"pool_wait": -1}, {"read_timeout": 0}, {"retry_on_overload": -1},
                                 {"retry_on_overload": 1.5}])
def test_bad_limits_are_invalid_input(bad):
    with pytest.raises(InvalidInput, match=next(iter(bad))):
        OpenAICompatible("http://127.0.0.1:9/v1", model="m", **bad)


def test_the_limits_are_the_transports_settings():
    llm = OpenAICompatible("http://127.0.0.1:9/v1", model="m", pool_wait=2, read_timeout=3, retry_on_overload=0)
    assert (llm.transport.pool_wait, llm.transport.read_timeout, llm.transport.retry_on_overload) == (2, 3, 0)
    llm.pool_wait = 4
    assert llm.transport.pool_wait == 4 and llm.pool_wait == 4


# -- timeouts by type ---------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
def test_a_read_timeout_is_a_generation_timeout_of_phase_read(stream):
    async def go(llm):
        if stream:
            return [d async for d in llm.stream("hi", PARAMS)]
        return await llm.generate("hi", PARAMS)

    with FakeOpenAI("vllm", slow=2.0) as server:
        llm = OpenAICompatible(server.url, model="fake", timeout=30, read_timeout=0.3, max_retries=0)
        with pytest.raises(GenerationTimeout, match=r"within 0.3 s \(read timeout\)") as info:
            asyncio.run(closing(llm, go(llm)))
    assert info.value.phase == "read" and isinstance(info.value, GenerationError)


def test_a_total_timeout_is_a_generation_timeout_of_phase_total():
    with FakeOpenAI("vllm", slow=2.0) as server:
        llm = OpenAICompatible(server.url, model="fake", timeout=0.3, max_retries=0)
        with pytest.raises(GenerationTimeout, match="did not answer within 0.3 s") as info:
            asyncio.run(closing(llm, llm.generate("hi", PARAMS)))
    assert info.value.phase == "total"


def test_a_connect_timeout_is_both_a_timeout_and_unreachable():
    llm = OpenAICompatible("http://127.0.0.1:9/v1", model="m", connect_timeout=0.5)
    error = llm.transport.timed_out("http://x/v1/completions", aiohttp.ConnectionTimeoutError("slow"))
    assert isinstance(error, ConnectTimeout) and error.phase == "connect"
    assert isinstance(error, GenerationTimeout) and isinstance(error, BackendUnavailable)
    assert "did not accept a connection within 0.5 s" in str(error)


# -- 429/503 apart from the other retries --------------------------------------------------------
def status_server(status: int, retry_after: str | None = "9"):
    async def handler(req):
        if req.path == "/v1/models":
            return response(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        body = b'{"error": {"message": "busy"}}'
        extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
        return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return FakeHTTPServer(handler).start()


@pytest.mark.parametrize(("status", "retry_on_overload", "sent"),
                         [(503, 0, 1), (429, 0, 1), (503, 1, 2), (503, None, 4), (500, 0, 4)])
def test_retry_on_overload_bounds_the_retries_of_429_and_503_only(status, retry_on_overload, sent):
    server = status_server(status)
    try:
        llm = OpenAICompatible(server.url, model="m", max_retries=3, backoff=0, max_retry_after=0,
                               retry_on_overload=retry_on_overload)
        with pytest.raises(HTTPStatusError) as info:
            asyncio.run(closing(llm, llm.generate("hi", PARAMS)))
        assert len([r for r in server.requests if r.path == "/v1/completions"]) == sent
        assert info.value.status == status and llm.retries == sent - 1
        if status != 500:
            assert info.value.retry_after == 9  # the server's own Retry-After reaches the caller
    finally:
        server.stop()


def test_retry_on_overload_applies_to_streams():
    server = status_server(503)
    try:
        llm = OpenAICompatible(server.url, model="m", max_retries=3, backoff=0, max_retry_after=0,
                               retry_on_overload=0)

        async def go():
            return [d async for d in llm.stream("hi", PARAMS)]
        with pytest.raises(HTTPStatusError, match="HTTP 503"):
            asyncio.run(closing(llm, go()))
        assert len([r for r in server.requests if r.path == "/v1/completions"]) == 1
    finally:
        server.stop()


# -- on the real vLLM server ----------------------------------------------------------------------
COUNTING = SamplingParams(max_tokens=200, temperature=0.0, seed=1)


@pytest.mark.slow
def test_the_limits_on_the_real_vllm_server(vllm_server):
    """A non-streamed answer that takes longer than `read_timeout` is a read `GenerationTimeout`;
    a second request while the only slot is busy past `pool_wait` is `PoolExhausted`."""
    async def go(llm):
        first = asyncio.ensure_future(llm.generate("1, 2, 3, 4, 5,", COUNTING))
        while llm.transport.pool_stats().in_use == 0:
            await asyncio.sleep(0.01)
        second = await asyncio.gather(llm.generate("1, 2, 3,", COUNTING), return_exceptions=True)
        return await asyncio.gather(first, return_exceptions=True), second

    llm = OpenAICompatible(vllm_server.url, max_retries=0, read_timeout=0.05, max_concurrency=1, pool_wait=0.01)
    (first,), (second,) = asyncio.run(closing(llm, go(llm)))
    assert isinstance(first, GenerationTimeout) and first.phase == "read", first
    assert isinstance(second, ttc.PoolExhausted), second
    llm = OpenAICompatible(vllm_server.url, max_retries=0, read_timeout=120, max_concurrency=1, pool_wait=0.01)
    assert asyncio.run(closing(llm, llm.generate("1, 2,", SamplingParams(max_tokens=4)))).completions[0].text
