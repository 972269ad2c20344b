"""OpenAICompatible against fake HTTP servers on loopback: faults, retries, replicas, parsing.

No model here (fast). The same backend against a real vLLM server is in test_vllm_backends.py.
"""

import asyncio
import time

import pytest

import ttc
from fake_http import FakeHTTPServer, response
from ttc.backends.base import TOKEN_IDS
from ttc.backends.openai_compatible import HTTPStatusError, OpenAICompatible, RequestRejected
from ttc.backends.vllm_server import free_port
from ttc.errors import BackendUnavailable, GenerationError, InvalidInput, MalformedResponse
from ttc.types import SamplingParams

PARAMS = SamplingParams(max_tokens=4, seed=1)


def completion_body(texts, ids=None, prompt_tokens=3, finish="length", logprobs=False):
    choices = []
    for i, text in enumerate(texts):
        choice = {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
        if ids is not None:
            choice["token_ids"] = ids[i]
            if logprobs:
                choice["logprobs"] = {"tokens": [f"token_id:{t}" for t in ids[i]],
                                      "token_logprobs": [-0.25] * len(ids[i])}
        choices.append(choice)
    return {"id": "x", "object": "text_completion", "model": "fake", "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}}


def models_body(name="fake-model"):
    return {"object": "list", "data": [{"id": name, "object": "model"}]}


def run(coro):
    return asyncio.run(coro)


async def closing(llm, coro):
    try:
        return await coro
    finally:
        await llm.aclose()


def simple_handler(texts=("ok",), ids=((7,),)):
    async def handler(req):
        if req.path == "/v1/models":
            return response(200, models_body())
        if req.path == "/v1/completions":
            n = req.json().get("n", 1)
            return response(200, completion_body(list(texts) * n, [list(i) for i in ids] * n))
        return response(404, {"error": {"message": "no such route", "code": 404}})
    return handler


# -- connection faults --------------------------------------------------------------------------
def test_no_server_is_backend_unavailable_fast():
    port = free_port()
    llm = OpenAICompatible(f"http://127.0.0.1:{port}/v1", model="m", max_retries=3, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        run(closing(llm, llm.generate("hi", PARAMS)))
    assert time.monotonic() - start < 5
    assert llm.retries == 3


def test_model_discovery_needs_a_server_too():
    llm = OpenAICompatible(f"http://127.0.0.1:{free_port()}", max_retries=0)  # no server yet: no error here
    assert llm.base_url.endswith("/v1") and llm.base_url in llm.model_name
    with pytest.raises(BackendUnavailable):
        run(closing(llm, llm.generate("hi", PARAMS)))


def test_model_read_at_first_request_when_the_server_comes_up_later():
    port = free_port()
    llm = OpenAICompatible(f"http://127.0.0.1:{port}/v1")
    with FakeHTTPServer(simple_handler(), port=port) as server:
        gen = run(closing(llm, llm.generate("hi", PARAMS)))
        assert llm.model_name == "fake-model" and gen.completions[0].text == "ok"
        assert [r.path for r in server.requests] == ["/v1/models", "/v1/completions"]


def test_model_name_read_from_models_endpoint_and_api_key_sent(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("VLLM_API_KEY", "secret-from-env")
    with FakeHTTPServer(simple_handler()) as server:
        llm = OpenAICompatible(server.url)
        assert llm.model_name == "fake-model"  # read at construction
        assert server.requests[0].headers["authorization"] == "Bearer secret-from-env"
        gen = run(closing(llm, llm.generate("hi", PARAMS)))
        assert gen.completions[0].text == "ok" and gen.completions[0].token_ids == (7,)
        assert gen.prompt_tokens == 3
        sent = [r for r in server.requests if r.path == "/v1/completions"][0]
        assert sent.json()["model"] == "fake-model"
        assert sent.headers["authorization"] == "Bearer secret-from-env"
        llm2 = OpenAICompatible(server.url, model="given", api_key="arg-key")
        run(closing(llm2, llm2.generate([1, 2, 3], PARAMS)))
        sent = server.requests[-1]
        assert sent.headers["authorization"] == "Bearer arg-key"
        assert sent.json()["model"] == "given" and sent.json()["prompt"] == [1, 2, 3]


def test_timeout_does_not_hang():
    async def handler(req):
        await asyncio.sleep(30)
        return response(200, completion_body(["late"]))

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(GenerationError, match="did not answer"):
            run(closing(llm, llm.generate("hi", PARAMS)))
        assert time.monotonic() - start < 5


# -- malformed answers ------------------------------------------------------------------------
@pytest.mark.parametrize("raw, match", [
    (response(200, b"this is not json"), "invalid JSON"),
    (response(200, b'{"choices": [{"text": "cut', content_length=500, close=True), "incomplete"),
    (response(200, {"id": "x", "object": "text_completion"}), "no list of choices"),
    (response(200, {"choices": [{"index": 0, "finish_reason": "stop"}]}), "no text"),
    (response(200, completion_body(["a", "b"])), "asked for 1 completions"),
    (response(200, completion_body(["a"], ids=[["x"]])), "token_ids"),
])
def test_malformed_or_truncated_response(raw, match):
    async def handler(req):
        return raw

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m")
        with pytest.raises(MalformedResponse, match=match):
            run(closing(llm, llm.generate("hi", PARAMS)))
        assert llm.retries == 0


# -- status codes -----------------------------------------------------------------------------
def test_4xx_is_not_retried_and_carries_the_server_message():
    async def handler(req):
        return response(400, {"error": {"message": "max_tokens=9999 is too large", "code": 400}})

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", backoff=0.01)
        with pytest.raises(RequestRejected, match="max_tokens=9999 is too large") as info:
            run(closing(llm, llm.generate("hi", PARAMS)))
        assert info.value.status == 400
        assert isinstance(info.value, InvalidInput) and isinstance(info.value, GenerationError)
        assert len(server.requests) == 1 and llm.retries == 0


def test_401_names_the_api_key():
    async def handler(req):
        return response(401, {"error": "Unauthorized"})

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", api_key="wrong")
        with pytest.raises(RequestRejected, match="api_key"):
            run(closing(llm, llm.generate("hi", PARAMS)))


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_are_retried_with_backoff(status):
    calls = []

    async def handler(req):
        calls.append(time.monotonic())
        if len(calls) < 3:
            return response(status, {"error": {"message": "busy", "code": status}})
        return response(200, completion_body(["fine"], ids=[[5]]))

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", backoff=0.1)
        gen = run(closing(llm, llm.generate("hi", PARAMS)))
        assert gen.completions[0].text == "fine"
        assert len(calls) == 3 and llm.retries == 2
        assert calls[2] - calls[1] >= 0.09  # exponential: 2nd wait is 0.2 s (jitter: >= half)


def test_5xx_gives_up_after_max_retries():
    async def handler(req):
        return response(502, b"bad gateway", content_type="text/plain")

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", max_retries=2, backoff=0.01)
        with pytest.raises(HTTPStatusError, match="502.*bad gateway") as info:
            run(closing(llm, llm.generate("hi", PARAMS)))
        assert not isinstance(info.value, RequestRejected)
        assert len(server.requests) == 3


def test_server_without_vllm_extensions_falls_back():
    """A plain OpenAI server refuses vLLM's extra fields: retried without them, and remembered."""
    async def handler(req):
        if req.path == "/tokenize":
            return response(404, {"detail": "Not Found"})
        body = req.json()
        if "return_token_ids" in body:
            return response(400, {"error": {"message": "Unrecognized request argument supplied: return_token_ids"}})
        lp = {"tokens": ["a", "b"], "token_logprobs": [-0.5, -1.0], "top_logprobs": None, "text_offset": [0, 1]}
        choice = {"index": 0, "text": "ab", "finish_reason": "length", "logprobs": lp}
        return response(200, {"choices": [choice], "usage": {"prompt_tokens": 2}})

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m")
        gen = run(closing(llm, llm.generate("hi", SamplingParams(max_tokens=2, logprobs=True))))
        c = gen.completions[0]
        assert c.text == "ab" and c.logprobs == (-0.5, -1.0)
        assert c.token_ids == ()  # no ids from the server and no /tokenize to re-tokenise with
        assert TOKEN_IDS not in llm.capabilities and not llm.vllm_extensions
        bodies = [r.json() for r in server.requests if r.path == "/v1/completions"]
        assert "return_token_ids" in bodies[0] and "return_token_ids" not in bodies[1]
        run(closing(llm, llm.generate("hi", SamplingParams(max_tokens=2, logprobs=True))))
        bodies = [r.json() for r in server.requests if r.path == "/v1/completions"]
        assert len(bodies) == 3 and "return_token_ids" not in bodies[2]  # remembered: no second refusal


# -- a server that dies mid-run ------------------------------------------------------------------
def test_server_killed_mid_run_fails_in_flight_requests_and_keeps_finished_ones():
    async def handler(req):
        body = req.json()
        if body["prompt"] == "slow":
            await asyncio.sleep(60)
        return response(200, completion_body([f"done:{body['prompt']}"], ids=[[1]]))

    server = FakeHTTPServer(handler).start()
    try:
        llm = OpenAICompatible(server.url, model="m", max_retries=2, backoff=0.05)

        async def main():
            tasks = [asyncio.create_task(llm.generate(p, PARAMS)) for p in ("a", "slow", "b", "slow")]
            for _ in range(200):  # both quick requests answered, the slow ones in flight
                if tasks[0].done() and tasks[2].done():
                    break
                await asyncio.sleep(0.02)
            start = time.monotonic()
            server.kill()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await llm.aclose()
            return results, time.monotonic() - start

        results, elapsed = run(main())
    finally:
        server.stop()
    assert results[0].completions[0].text == "done:a" and results[2].completions[0].text == "done:b"
    for failed in (results[1], results[3]):
        assert isinstance(failed, BackendUnavailable), failed
    assert elapsed < 5


def test_solve_many_keeps_results_when_the_server_dies():
    """Through a strategy: problems answered before the crash keep their results, the rest are error records."""
    async def handler(req):
        if req.path == "/tokenize":
            content = req.json()["messages"][-1]["content"]
            return response(200, {"count": 2, "max_model_len": 2048, "tokens": [9, 1 if "fast" in content else 2]})
        body = req.json()
        if body["prompt"][-1] == 2:
            await asyncio.sleep(60)
        n = body.get("n", 1)
        return response(200, completion_body(["The answer is \\boxed{4}."] * n, ids=[[4, 4]] * n,
                                             logprobs="logprobs" in body))

    server = FakeHTTPServer(handler).start()
    try:
        llm = OpenAICompatible(server.url, model="m", max_retries=1, backoff=0.05)
        problems = ["fast one", "slow one", "fast two"]
        strategy = ttc.MajorityVote(n=2)

        async def main():
            task = asyncio.create_task(ttc.asolve_many(strategy, problems, llm, progress=False))
            for _ in range(200):
                if sum(1 for r in server.requests if r.path == "/v1/completions") >= 3:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            server.kill()
            results = await asyncio.wait_for(task, 10)
            await llm.aclose()
            return results

        results = run(main())
    finally:
        server.stop()
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].answer == "4" and results[2].answer == "4"
    assert "BackendUnavailable" in results[1].error


# -- replicas ------------------------------------------------------------------------------------
def test_least_outstanding_replica_gets_each_request():
    def replica(name):
        async def handler(req):
            if req.json()["prompt"] == "hold":
                await asyncio.sleep(0.5)
            return response(200, completion_body([name], ids=[[1]]))
        return handler

    with FakeHTTPServer(replica("A")) as a, FakeHTTPServer(replica("B")) as b:
        llm = OpenAICompatible([a.url, b.url], model="m")

        async def main():
            held = asyncio.create_task(llm.generate("hold", PARAMS))  # occupies one replica for 0.5 s
            await asyncio.sleep(0.1)
            rest = [await llm.generate("x", PARAMS) for _ in range(4)]  # the other one is idle each time
            both = await asyncio.gather(*(llm.generate("x", PARAMS) for _ in range(2)))  # idle and equal: one each
            return await held, rest, both

        held, rest, both = run(closing(llm, main()))
    held_at = held.completions[0].text
    assert {g.completions[0].text for g in rest} == {"B" if held_at == "A" else "A"}
    assert sorted(g.completions[0].text for g in both) == ["A", "B"]
    assert sorted([len(a.requests), len(b.requests)]) == [2, 5]


def test_dead_replica_is_skipped_then_retried_after_cooldown():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeHTTPServer(simple_handler()) as live:
        llm = OpenAICompatible([dead, live.url], model="m", cooldown=0.5, backoff=0.01)

        async def main():
            out = [await llm.generate("x", PARAMS) for _ in range(6)]
            after_first_round = llm.retries
            await asyncio.sleep(0.6)  # the cool-down ends: the dead replica is tried again
            out += [await llm.generate("x", PARAMS) for _ in range(4)]
            return out, after_first_round

        out, after_first_round = run(closing(llm, main()))
        assert all(g.completions[0].text == "ok" for g in out)
        assert len(live.requests) == 10
        assert after_first_round == 1  # failed over once, then the dead replica sat out
        assert llm.retries == 2  # tried once more after the cool-down
        dead_replica = llm.replicas[0]
        assert dead_replica.failures == 2 and dead_replica.down_until > time.monotonic()


def test_all_replicas_dead_is_backend_unavailable():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    llm = OpenAICompatible(urls, model="m", max_retries=3, backoff=0.01)
    with pytest.raises(BackendUnavailable, match="no replica could be reached"):
        run(closing(llm, llm.generate("x", PARAMS)))


def test_concurrency_limit():
    active = []
    peak = []

    async def handler(req):
        active.append(1)
        peak.append(len(active))
        await asyncio.sleep(0.1)
        active.pop()
        return response(200, completion_body(["ok"], ids=[[1]]))

    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, model="m", max_concurrency=3)

        async def main():
            return await asyncio.gather(*(llm.generate("x", PARAMS) for _ in range(9)))

        run(closing(llm, main()))
    assert max(peak) == 3


def test_bad_arguments():
    with pytest.raises(InvalidInput):
        OpenAICompatible([])
    with pytest.raises(InvalidInput):
        OpenAICompatible("localhost:8000")
    with pytest.raises(InvalidInput):
        OpenAICompatible("http://127.0.0.1:1/v1", max_retries=-1)
    llm = OpenAICompatible("http://127.0.0.1:1/v1", model="m")
    with pytest.raises(InvalidInput):
        run(llm.generate([], PARAMS))
    with pytest.raises(InvalidInput):
        run(llm.generate(["a"], PARAMS))
    with pytest.raises(InvalidInput):
        run(llm.chat_prompt([]))
