"""Usage accounting: billed, processed and cached prompt tokens, completion tokens as the server
counted them, estimates marked as such, rejected answers' tokens kept, budgets that do not trust a
backend's prompt count. Fast: Scripted and fake HTTP servers (the real-server checks are in
test_usage_real.py).
"""

import asyncio
import json

import pytest

import ttc
from fake_http import FakeHTTPServer, response
from ttc.backends.base import Generation
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.context import Context
from ttc.types import SamplingParams, Usage

Q = "What is 2 + 3?"
PARAMS = SamplingParams(max_tokens=16, logprobs=False)
SAMPLE = ttc.Sample(params=PARAMS)


def models():
    return response(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})


def openai_server(texts, usage, *, n_honoured=True, stream_usage=True, choices=None):
    """An OpenAI-API-like server (completions and chat): no token ids, no /tokenize, `usage` as
    given (None: no usage object). `choices` fixes how many choices every answer has."""
    async def handler(req):
        if req.path == "/v1/models":
            return models()
        if req.path not in ("/v1/completions", "/v1/chat/completions"):
            return response(404, {"error": {"message": "Not Found"}})
        chat = req.path == "/v1/chat/completions"
        body = req.json()
        n = body.get("n", 1) if n_honoured else 1
        n = n if choices is None else choices

        def choice(i, text, finish, stream=False):
            out = {"index": i, "finish_reason": finish, "logprobs": None}
            if chat:
                out["delta" if stream else "message"] = {"role": "assistant", "content": text}
            else:
                out["text"] = text
            return out
        if body.get("stream"):
            events = [{"choices": [choice(0, w, None, True)]} for w in texts[0].split(" ")]
            events.append({"choices": [choice(0, "", "stop", True)]})
            if usage is not None and stream_usage and body.get("stream_options", {}).get("include_usage"):
                events.append({"choices": [], "usage": usage})
            raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return response(200, raw, content_type="text/event-stream")
        out = {"id": "x", "model": "fake", "choices": [choice(i, texts[i % len(texts)], "stop") for i in range(n)]}
        if usage is not None:
            out["usage"] = usage
        return response(200, out)
    return FakeHTTPServer(handler)


def solve(strategy, server, **kwargs):
    llm = OpenAICompatible(server.url, vllm_extensions=False, use_chat=True)
    try:
        return strategy.solve(Q, llm, **kwargs)
    finally:
        ttc.run_sync(llm.aclose())


# -- OpenAICompatible: the server's usage is the truth ------------------------------------------
def test_n_sample_request_is_billed_its_prompt_once_and_processes_it_n_times():
    usage = {"prompt_tokens": 38, "completion_tokens": 62, "total_tokens": 100}
    with openai_server(["The answer is 5.", "It is 5", "6", "So 5, clearly"], usage) as server:
        result = solve(ttc.MajorityVote(n=4, sample=SAMPLE), server)
    u = result.usage
    assert (u.prompt_tokens, u.processed_prompt_tokens, u.completion_tokens) == (38, 4 * 38, 62)
    assert u.total_tokens == 38 + 62 and not u.estimated and u.generator_calls == 1
    assert sum(c.usage.completion_tokens for c in result.candidates) == 62  # spread over candidates, exactly
    assert all(c.usage.completion_tokens > 0 for c in result.candidates)


def test_cached_tokens_come_from_prompt_tokens_details():
    usage = {"prompt_tokens": 40, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 32}}
    with openai_server(["5"], usage) as server:
        u = solve(SAMPLE, server).usage
    assert (u.prompt_tokens, u.processed_prompt_tokens, u.cached_prompt_tokens, u.completion_tokens) == (40, 40, 32, 3)


def test_usage_of_the_last_stream_chunk_is_read():
    usage = {"prompt_tokens": 11, "completion_tokens": 17, "total_tokens": 28}
    with openai_server(["the answer is 5"], usage) as server:
        llm = OpenAICompatible(server.url, vllm_extensions=False)

        async def go():
            ctx = Context(llm)
            async with ctx.stream([1, 2, 3], PARAMS) as s:
                async for _ in s:
                    pass
            await llm.aclose()
            return ctx, s
        ctx, s = asyncio.run(go())
        sent = [r.json() for r in server.requests if r.path == "/v1/completions"]
    assert sent[0]["stream_options"] == {"include_usage": True}
    assert s.text == "theansweris5" and s.finish_reason == "stop"
    # the server's 11 + 17, not the 3 prompt ids and 0 token ids ttc saw
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.estimated) == (11, 17, False)
    assert ctx.usage.counts() == s.usage.counts()


def test_stream_without_usage_chunk_is_estimated_not_zero():
    with openai_server(["the answer is 5"], None) as server:
        llm = OpenAICompatible(server.url, vllm_extensions=False)

        async def go():
            ctx = Context(llm)
            async with ctx.stream([1, 2, 3], PARAMS) as s:
                async for _ in s:
                    pass
            await llm.aclose()
            return s
        with pytest.warns(UserWarning, match="no token usage"):
            s = asyncio.run(go())
    assert s.usage.estimated and s.usage.completion_tokens > 0 and s.usage.prompt_tokens == 3


def test_no_usage_at_all_is_marked_estimated_and_warned_once():
    with openai_server(["The answer is 5.", "It is 5"], None) as server:
        with pytest.warns(UserWarning, match="no token usage") as caught:
            result = solve(ttc.MajorityVote(n=4, sample=SAMPLE), server)
            solve(SAMPLE, server)
    u = result.usage
    assert u.estimated and u.completion_tokens > 0 and u.prompt_tokens > 0
    assert len([w for w in caught if "no token usage" in str(w.message)]) == 2  # once per backend object


def test_text_prompt_without_usage_is_estimated():
    with openai_server(["5"], None) as server:
        llm = OpenAICompatible(server.url, vllm_extensions=False)
        with pytest.warns(UserWarning):
            gen = ttc.run_sync(llm.generate("a prompt of about forty characters, yes.", PARAMS))
        ttc.run_sync(llm.aclose())
    assert gen.estimated and gen.prompt_tokens == 10 and gen.usage().completion_tokens == 1


def test_rejected_answer_keeps_the_tokens_the_server_spent():
    usage = {"prompt_tokens": 38, "completion_tokens": 17, "total_tokens": 55}
    with openai_server(["The answer is 5."], usage, choices=2) as server:  # 2 choices for n=4: malformed
        llm = OpenAICompatible(server.url, vllm_extensions=False, use_chat=True)
        record = ttc.solve_many(ttc.MajorityVote(n=4, sample=SAMPLE), [Q], llm, progress=False)[0]
        ttc.run_sync(llm.aclose())
    assert record.error and "returned 2" in record.error
    u = record.usage
    assert (u.prompt_tokens, u.processed_prompt_tokens, u.completion_tokens, u.generator_calls) == (38, 76, 17, 1)


def test_n_split_into_single_requests_bills_each_request():
    """A server that ignores n answers one choice: ttc asks n single requests, each billed its prompt."""
    usage = {"prompt_tokens": 38, "completion_tokens": 17, "total_tokens": 55}
    with openai_server(["The answer is 5."], usage, n_honoured=False) as server:
        result = solve(ttc.MajorityVote(n=4, sample=SAMPLE), server)
    u = result.usage
    assert len(result.candidates) == 4
    assert (u.prompt_tokens, u.processed_prompt_tokens, u.completion_tokens, u.generator_calls) == (152, 152, 68, 4)


def test_server_refusing_stream_options_is_asked_again_without():
    async def handler(req):
        if req.path == "/v1/models":
            return models()
        body = req.json()
        if "stream_options" in body:
            return response(400, {"error": {"message": "Unrecognized request argument supplied: stream_options"}})
        raw = ('data: {"choices": [{"index": 0, "text": "5", "finish_reason": "stop"}]}\n\n'
               'data: [DONE]\n\n')
        return response(200, raw, content_type="text/event-stream")
    with FakeHTTPServer(handler) as server:
        llm = OpenAICompatible(server.url, vllm_extensions=False)

        async def go():
            out = [d async for d in llm.stream([1, 2], PARAMS)]
            await llm.aclose()
            return out
        with pytest.warns(UserWarning):
            deltas = asyncio.run(go())
    assert deltas[-1].text == "5" and deltas[-1].usage.completion_tokens == 1 and deltas[-1].usage.estimated
    assert "stream_options" not in server.requests[-1].json()


# -- Context: budgets and additivity ------------------------------------------------------------
class UnderReporting(ttc.backends.Scripted):
    """A backend that reports no prompt tokens (as a server without `usage` once did)."""

    async def generate(self, prompt, params):
        gen = await super().generate(prompt, params)
        return Generation(prompt_tokens=0, completions=gen.completions, processed_prompt_tokens=0)


def test_budget_charges_at_least_the_prompt_length_when_a_backend_reports_less():
    backend = UnderReporting(["The answer is 5."])
    budget = ttc.Budget(tokens=300)
    result = ttc.MajorityVote(n=2, sample=SAMPLE).solve(Q, backend, budget=budget)
    prompt_len = len(ttc.run_sync(backend.tokenize(backend.requests[0][0])))
    assert result.usage.prompt_tokens == prompt_len > 0
    assert result.usage.processed_prompt_tokens == 2 * prompt_len
    # without a budget nothing was measured before the request: the backend's (zero) count stays
    assert ttc.MajorityVote(n=2, sample=SAMPLE).solve(Q, backend).usage.prompt_tokens == 0


def test_budget_counts_billed_prompt_plus_completion_tokens():
    backend = ttc.backends.Scripted(["one two three four five six seven eight"])
    ctx = Context(backend, ttc.Budget(tokens=1000))

    async def go():
        return await ctx.generate("a b c d e", SamplingParams(n=8, max_tokens=100))
    ttc.run_sync(go())
    u = ctx.usage
    assert u.prompt_tokens == 9 and u.processed_prompt_tokens == 8 * 9  # "a b c d e" is 9 scripted tokens
    assert u.completion_tokens == 8 * 15
    assert ctx.remaining_tokens() == 1000 - 9 - 8 * 15 == 1000 - u.total_tokens


def test_usage_adds_every_field_and_estimated_is_sticky():
    a = Usage(prompt_tokens=1, completion_tokens=2, generator_calls=3, verifier_calls=4, verifier_tokens=5,
              processed_prompt_tokens=6, cached_prompt_tokens=7, closed_streams=8, reasoning_tokens=9)
    b = Usage(prompt_tokens=10, completion_tokens=20, generator_calls=30, verifier_calls=40, verifier_tokens=50,
              processed_prompt_tokens=60, cached_prompt_tokens=70, estimated=True, closed_streams=80,
              reasoning_tokens=90)
    total = Usage.total([a, b, Usage()])
    assert total.counts() == (11, 22, 33, 44, 55, 66, 77, 88, 99) and total.estimated
    assert total.total_tokens == 33
    assert total.to_dict()["processed_prompt_tokens"] == 66 and total.to_dict()["total_tokens"] == 33


def test_step_search_node_usages_still_sum_to_the_result():
    prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.5)
    backend = ttc.backends.Scripted(["step one\n\n", "The answer is 5."])
    result = ttc.ParticleFilter(particles=3, prm=prm).solve(Q, backend, seed=1)
    assert result.tree.usage().counts() == result.usage.counts()
    assert result.usage.processed_prompt_tokens >= result.usage.prompt_tokens > 0
