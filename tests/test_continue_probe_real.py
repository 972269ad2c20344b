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
    async def replies() -> tuple[str, str, str, str]:
        async with OpenAICompatible(vllm_server.url) as llm:
            one = {"model": await llm.model(), "temperature": 0.0, "seed": 0}
            question = [{"role": "user", "content": CONTINUE_QUESTION}]

            async def reply(**payload) -> str:
                text = probe_text(await llm._request("POST", "/chat/completions", {**one, **payload}), "/chat")
                assert isinstance(text, str)
                return text

            halves = split_reply(await reply(messages=question, max_tokens=12))
            assert halves is not None
            prefix, rest = halves
            conversation = [*question, {"role": "assistant", "content": prefix}]
            went_on = await reply(messages=conversation, max_tokens=4, continue_final_message=True,
                                  add_generation_prompt=False)
            return prefix, rest, went_on, await reply(messages=conversation, max_tokens=4)

    prefix, rest, went_on, anew = ttc.run_sync(replies())
    assert continues(prefix, rest, went_on), (prefix, rest, went_on)
    assert not continues(prefix, rest, anew), (prefix, rest, anew)

    fresh = OpenAICompatible(vllm_server.url)
    fresh.features.tokenize = False  # as a server without /tokenize: the probe asks the chat endpoint

    async def probe() -> bool | None:
        async with fresh:
            return (await fresh.probe()).continue_final_message

    assert ttc.run_sync(probe()) is True
    assert fresh.probe_usage.generator_calls > 0 and not fresh.probe_usage.estimated
