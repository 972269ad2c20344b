"""The capability probe's "can continue" reading (issue 27) on the real vLLM server the suite starts:
it decides by the text a real model returns, not by prompt sizes. vLLM continues a final assistant
message with `continue_final_message`; without the flag it answers the conversation anew, which
is what a server that cannot continue does. (A server that prefills without the flag, llama.cpp or
Ollama, cannot be installed here: the fake's `prefill` mode stands in, test_servers_fake_modes.py.)
"""

from __future__ import annotations

import pytest

import ttc
from ttc.backends.openai.probe import CONTINUE_QUESTION, continues, probe_text, split_reply
from ttc.backends.openai_compatible import OpenAICompatible


@pytest.mark.slow
def test_a_real_models_continued_reply_is_told_from_a_new_one(vllm_server):
    llm = OpenAICompatible(vllm_server.url)
    one = {"model": ttc.run_sync(llm.model()), "temperature": 0.0, "seed": 0}
    question = [{"role": "user", "content": CONTINUE_QUESTION}]

    def reply(**payload) -> str:
        text = probe_text(ttc.run_sync(llm._request("POST", "/chat/completions", {**one, **payload})), "/chat")
        assert isinstance(text, str)
        return text

    halves = split_reply(reply(messages=question, max_tokens=12))
    assert halves is not None
    prefix, rest = halves
    conversation = [*question, {"role": "assistant", "content": prefix}]
    went_on = reply(messages=conversation, max_tokens=4, continue_final_message=True, add_generation_prompt=False)
    anew = reply(messages=conversation, max_tokens=4)
    assert continues(prefix, rest, went_on), (prefix, rest, went_on)
    assert not continues(prefix, rest, anew), (prefix, rest, anew)

    fresh = OpenAICompatible(vllm_server.url)
    fresh.features.tokenize = False  # as a server without /tokenize: the probe asks the chat endpoint
    assert ttc.run_sync(fresh.probe()).continue_final_message is True
    assert fresh.probe_usage.generator_calls > 0 and not fresh.probe_usage.estimated
