"""Issue 24, the parts no installed server shows on demand (the real LiteLLM proxy is in
tests/test_gateway_real.py): streams counted from the text they received, a closed stream charged
the prompt length its prompt's finished streams reported, the warning of a step search that cannot
tell end-of-text from the delimiter, LiteLLM's moved fields put back, auth errors' hint."""

from __future__ import annotations

import warnings

import pytest

import ttc
from fake_openai import QUESTION, FakeOpenAI
from ttc.backends.openai.gateways import lifted
from ttc.backends.openai.http_errors import AuthenticationFailed, status_error
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.context import Context

PARAMS = ttc.SamplingParams(max_tokens=24, temperature=0.0)
CHAT = [{"role": "user", "content": QUESTION}]


def backend(server: FakeOpenAI, **kwargs) -> OpenAICompatible:
    return OpenAICompatible(server.url, model="fake", backoff=0.01, **kwargs)


async def finished_then_closed(llm: OpenAICompatible, deltas: int = 2):
    """One stream of the chat prompt read to its end, then one closed after `deltas` deltas."""
    ctx = Context(llm)
    prompt = await llm.chat_prompt(CHAT)
    async with ctx.stream(prompt, PARAMS) as whole:
        async for _ in whole:
            pass
    async with ctx.stream(prompt, PARAMS) as cut:
        seen = 0
        async for _ in cut:
            seen += 1
            if seen == deltas:
                break
    await llm.aclose()
    return whole, cut, ctx.usage


def test_a_closed_stream_without_ids_or_tokenizer_is_charged_the_reported_prompt_and_an_estimate():
    with FakeOpenAI("prefill") as s:  # chat streams: text, no token ids; no /tokenize, no tokenizer
        llm = backend(s)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            whole, cut, total = ttc.run_sync(finished_then_closed(llm))
        assert whole.usage.prompt_tokens > 0 and not whole.usage.estimated  # the server's usage chunk
        assert cut.usage.closed_streams == 1 and cut.text
        # 0 prompt and 0 completion tokens before issue 24
        assert cut.usage.prompt_tokens == whole.usage.prompt_tokens
        assert cut.usage.completion_tokens == max(1, round(len(cut.text) / 4)) and cut.usage.estimated
        assert total.estimated and total.prompt_tokens == 2 * whole.usage.prompt_tokens
        assert any("estimates it" in str(w.message) for w in caught)


def test_a_closed_stream_without_ids_is_counted_by_the_local_tokenizer():
    with FakeOpenAI("prefill") as s:
        tok = s.tokenizer()
        llm = backend(s, tokenizer=tok)
        whole, cut, total = ttc.run_sync(finished_then_closed(llm))
        assert cut.usage.completion_tokens == len(tok.encode(cut.text, add_special_tokens=False)) > 0
        assert cut.usage.prompt_tokens == whole.usage.prompt_tokens > 0
        assert not cut.usage.estimated and not total.estimated


def test_a_stream_without_ids_reports_a_running_count_as_it_arrives():
    with FakeOpenAI("prefill") as s:
        tok = s.tokenizer()
        llm = backend(s, tokenizer=tok)

        async def read():
            ctx = Context(llm)
            counts = []
            async with ctx.stream(await llm.chat_prompt(CHAT), PARAMS) as st:
                async for d in st:
                    assert not d.token_ids
                    counts.append(st.usage.completion_tokens)
            await llm.aclose()
            return counts
        counts = ttc.run_sync(read())
        assert counts[0] > 0 and counts == sorted(counts)  # 0 until the usage chunk before issue 24


def test_a_step_search_that_cannot_tell_end_of_text_warns_once_naming_tokenizer():
    with FakeOpenAI("prefill") as s:  # no stop_reason, no token ids, cuts stop strings, no tokenizer
        llm = backend(s)
        with pytest.warns(UserWarning, match=r"end-of-text or the step delimiter.*tokenizer=") as caught:
            ttc.BeamSearch(width=2, expansions=2, prm=ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.9)).solve(
                QUESTION, llm, seed=7)
        assert sum("end-of-text" in str(w.message) for w in caught) == 1
    with FakeOpenAI("prefill") as s, warnings.catch_warnings():
        warnings.simplefilter("error")  # with the tokenizer it can tell: no warning
        ttc.BeamSearch(width=2, expansions=2, prm=ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.9)).solve(
            QUESTION, backend(s, tokenizer=s.tokenizer()), seed=7)


def test_litellm_moved_fields_are_put_back():
    """LiteLLM 1.108.7 moves a chat choice's stop_reason and token_ids into provider_specific_fields."""
    data = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "x"},
                         "provider_specific_fields": {"stop_reason": None, "token_ids": [1, 2]}}]}
    choice = lifted(data)["choices"][0]
    assert "stop_reason" in choice and choice["stop_reason"] is None and choice["token_ids"] == [1, 2]
    plain = {"choices": [{"index": 0, "text": "x", "stop_reason": "\n\n"}]}
    assert lifted(plain) is plain
    clash = {"choices": [{"stop_reason": "a", "provider_specific_fields": {"stop_reason": "b"}}]}
    assert lifted(clash)["choices"][0]["stop_reason"] == "a"  # the choice's own field wins


@pytest.mark.parametrize(("status", "body"), [
    (400, b'{"error": {"message": "No connected db.", "type": "no_db_connection"}}'),  # LiteLLM, wrong key
    (401, b'{"error": {"message": "Unauthorized"}}'),
    (403, b"forbidden"),
    (500, b'{"error": {"message": "No api key passed in."}}'),
])
def test_auth_errors_name_api_key_and_the_gateway(status, body):
    error = status_error(status, body, "http://gw/v1/completions")
    assert isinstance(error, AuthenticationFailed) and isinstance(error, ttc.InvalidInput)
    assert "api_key=" in str(error) and "gateway" in str(error)


def test_a_bare_error_on_the_first_keyless_request_gets_the_hint_and_later_ones_do_not():
    first = status_error(500, b"Internal Server Error", "http://gw/v1/completions", first=True, keyless=True)
    assert "api_key=" in str(first) and not isinstance(first, AuthenticationFailed)  # still retried
    later = status_error(500, b"Internal Server Error", "http://gw/v1/completions", first=False, keyless=True)
    assert "api_key" not in str(later)
    assert not isinstance(status_error(400, b"max_tokens is too large", "u"), AuthenticationFailed)


def test_describe_shows_what_each_endpoint_carries():
    with FakeOpenAI("vllm") as s:
        llm = backend(s)
        ttc.run_sync(llm.probe())
        ttc.run_sync(llm.aclose())
        endpoints = llm.describe()["endpoints"]
        assert set(endpoints) == {"completions", "chat", "completions_stream", "chat_stream"}
        assert endpoints["completions"]["stop_reason"] is True and endpoints["completions"]["usage"] is True
    with FakeOpenAI("prefill") as s:
        llm = backend(s)
        ttc.run_sync(llm.probe())
        ttc.run_sync(llm.aclose())
        endpoints = llm.describe()["endpoints"]
        assert endpoints["chat"]["stop_reason"] is False and endpoints["chat_stream"]["token_ids"] is not True


def test_only_messages_about_keys_read_as_auth_errors():
    from ttc.backends.openai.http_errors import mentions_auth

    for text in ("No connected db.", "Authentication Error, No api key passed in.", "invalid api_key", "Forbidden"):
        assert mentions_auth(text), text
    # vLLM's refusal of an unknown field, an internal KeyError, ordinary refusals: not auth (the
    # adapter and the probe read them as they are)
    for text in ("[{'type': 'extra_forbidden', 'loc': ('body', 'return_token_ids')}]", "KeyError: 'choices'",
                 "max_tokens is too large", "the author's model"):
        assert not mentions_auth(text), text
