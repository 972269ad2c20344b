"""`ttc serve` in front of a reasoning model (the fake server's thinking presets, tests/fake_openai.py):
the chosen candidate's thinking comes back as vLLM 0.32 returns it (`message.reasoning`, and
`reasoning_content` for older clients; `delta.reasoning` in streams) with the thinking tokens in
`usage.completion_tokens_details.reasoning_tokens`, and the sampling fields reasoning deployments
need reach the upstream. The real vLLM with a reasoning parser is in test_thinking_servers_real.py.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from fake_openai import QUESTION, THOUGHT, FakeOpenAI
from test_serve import post
from ttc.serve import Limits, ServeConfig, start_in_thread

MESSAGES = [{"role": "user", "content": QUESTION}]
LIMITS = Limits(max_n=8, max_tokens=256, max_budget_tokens=50_000, max_budget_seconds=60)


def _served(fake: FakeOpenAI, **config):
    return start_in_thread(ServeConfig(upstream=(fake.url,), n=2, max_tokens=128, limits=LIMITS, **config), port=0)


@pytest.mark.parametrize(("preset", "config"), [("thinking_parser", {"use_chat": True}),
                                                ("thinking", {"thinking": "qwen3"})])
def test_the_answer_carries_the_chosen_candidates_thinking_and_its_token_count(preset, config):
    with FakeOpenAI(preset) as fake, _served(fake, **config) as served:
        status, _, data = post(served.url + "/chat/completions",
                               {"messages": MESSAGES, "ttc": {"strategy": "majority", "n": 2,
                                                              "return_candidates": True}})
        assert status == 200, data
        message = data["choices"][0]["message"]
        assert data["ttc"]["answer"] == "5" and "\\boxed{7}" not in message["content"]
        assert "\\boxed{7}" in message["reasoning"] and message["reasoning_content"] == message["reasoning"]
        thought = fake.thinking_tokens(fake.encode(THOUGHT))
        assert data["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2 * thought}
        assert data["usage"]["completion_tokens"] == fake.reported["completion_tokens"]
        assert all("\\boxed{7}" in c["thinking"] for c in data["ttc"]["candidates"])


def test_a_streamed_answer_sends_the_thinking_as_delta_reasoning_first():
    with FakeOpenAI("thinking_parser") as fake, _served(fake, use_chat=True) as served:
        body = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True},
                "ttc": {"strategy": "sample"}}
        req = urllib.request.Request(served.url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            events = [json.loads(line[5:]) for line in r.read().decode().splitlines()
                      if line.startswith("data:") and line[5:].strip() != "[DONE]"]
        deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
        thinking = "".join(d.get("reasoning", "") for d in deltas)
        content = "".join(d.get("content") or "" for d in deltas)
        assert "\\boxed{7}" in thinking and content.endswith("The answer is 5.") and "7" not in content
        assert thinking == "".join(d.get("reasoning_content", "") for d in deltas)
        first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
        assert all("reasoning" not in d for d in deltas[first_content:])
        assert events[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == fake.reported_reasoning


def test_the_sampling_fields_of_reasoning_deployments_reach_the_upstream():
    with FakeOpenAI("thinking_parser") as fake, _served(fake, use_chat=True) as served:
        status, _, data = post(served.url + "/chat/completions", {
            "messages": MESSAGES, "top_k": 20, "min_p": 0.05, "presence_penalty": 0.5, "repetition_penalty": 1.05,
            "chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 64,
            "reasoning_effort": "low", "ttc": {"strategy": "sample"}})
        assert status == 200, data
        path, sent = fake.requests[-1]
        assert path == "/v1/chat/completions"
        assert (sent["top_k"], sent["min_p"], sent["presence_penalty"], sent["repetition_penalty"]) == \
            (20, 0.05, 0.5, 1.05)
        assert sent["chat_template_kwargs"] == {"enable_thinking": True}
        assert sent["thinking_token_budget"] == 64 and sent["reasoning_effort"] == "low"
        status, _, data = post(served.url + "/chat/completions", {"messages": MESSAGES, "top_k": 0,
                                                                   "ttc": {"strategy": "sample"}})
        assert status == 400 and data["error"]["param"] == "top_k"


def test_a_field_the_upstream_refuses_is_a_400_naming_it():
    with FakeOpenAI("thinking", refuse=("thinking_token_budget",)) as fake, \
            _served(fake, thinking="qwen3") as served:
        status, _, data = post(served.url + "/chat/completions", {"messages": MESSAGES, "thinking_token_budget": 32,
                                                                   "ttc": {"strategy": "sample"}})
        assert status == 400, data
        assert "thinking_token_budget is not supported" in data["error"]["message"]
