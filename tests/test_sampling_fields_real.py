"""The sampling fields reasoning deployments are run with, sent to the real servers the suite runs:
each is honoured, or refused with `ttc.Unsupported` naming the field and the server (never dropped
by ttc). This is where the table "Sampling fields per server" of docs/backends.md comes from:
`VERIFIED` below is that table; a server that changes its answer fails here.

One token per request: the question is only whether the server takes the field.
"""

from __future__ import annotations

import asyncio

import pytest

from ttc.backends.openai import ChatMessages, OpenAICompatible
from ttc.errors import Unsupported
from ttc.types import SamplingParams

pytestmark = pytest.mark.slow

#: field -> the SamplingParams that sends it
FIELDS = {
    "top_k": {"top_k": 5},
    "min_p": {"min_p": 0.05},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "repetition_penalty": {"repetition_penalty": 1.1},
    "chat_template_kwargs": {"chat_template_kwargs": {"enable_thinking": False}},
    "thinking_token_budget": {"extra": {"thinking_token_budget": 32}},
    "reasoning_effort": {"extra": {"reasoning_effort": "low"}},
}

#: (server, endpoint) -> field -> "ok" (taken) or "unsupported" (refused: ttc.Unsupported). What each
#: server does with a field it takes (vLLM maps every one; transformers serve ignores presence_penalty
#: and reasoning_effort with a logged warning and maps frequency_penalty to repetition_penalty 1 + f)
#: is read from their source and written in docs/backends.md.
VERIFIED = {
    ("vllm", "completions"): {"top_k": "ok", "min_p": "ok", "presence_penalty": "ok", "frequency_penalty": "ok",
                              "repetition_penalty": "ok", "thinking_token_budget": "unsupported"},
    ("vllm", "chat"): {"top_k": "ok", "min_p": "ok", "presence_penalty": "ok", "frequency_penalty": "ok",
                       "repetition_penalty": "ok", "chat_template_kwargs": "ok", "thinking_token_budget": "unsupported",
                       "reasoning_effort": "ok"},
    ("transformers serve", "chat"): {"top_k": "unsupported", "min_p": "unsupported", "presence_penalty": "ok",
                                     "frequency_penalty": "ok", "repetition_penalty": "unsupported",
                                     "chat_template_kwargs": "ok", "thinking_token_budget": "unsupported",
                                     "reasoning_effort": "ok"},
}


def outcome(llm: OpenAICompatible, chat: bool, fields: dict) -> str:
    params = SamplingParams(max_tokens=1, temperature=0.0, **fields)
    prompt = ChatMessages([{"role": "user", "content": "Hi"}]) if chat else "Hi"

    async def go() -> str:
        try:
            await llm.generate(prompt, params)
            return "ok"
        except Unsupported as exc:
            assert next(iter(fields)) in str(exc) or next(iter(fields["extra"])) in str(exc)
            assert llm.base_url in str(exc)
            return "unsupported"
        finally:
            await llm.aclose()

    return asyncio.run(go())


def test_the_fields_on_vllm(vllm_server):
    for endpoint in ("completions", "chat"):
        llm = OpenAICompatible(vllm_server.url)
        seen = {name: outcome(llm, endpoint == "chat", FIELDS[name]) for name in VERIFIED[("vllm", endpoint)]}
        assert seen == VERIFIED[("vllm", endpoint)], endpoint


def test_the_fields_on_transformers_serve(transformers_serve):
    url, model = transformers_serve
    expected = VERIFIED[("transformers serve", "chat")]
    seen = {name: outcome(OpenAICompatible(url, model=model, use_chat=True), True, FIELDS[name]) for name in expected}
    assert seen == expected
