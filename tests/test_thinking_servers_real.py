"""The thinking test model (`ttc.models.smollm2_thinking()`) behind real vLLM servers: one with a
reasoning parser, which also enables thinking budgets (`thinking_vllm_server`), one without a parser
(`thinking_vllm_server_no_parser`); fixtures in tests/thinking_fixtures.py.

- every registered strategy through the parser server reads its answers from the final content;
- on the chat endpoint, `Usage.reasoning_tokens` is what the server counted
  (`completion_tokens_details.reasoning_tokens`, summed over the requests);
- without a parser, the declared format (`thinking="deepseek_r1"`) keeps the answer out of the
  thinking: read as today's code read it (no format), the same output's answer comes from the thinking;
- `enable_thinking=False` and `thinking_token_budget` reach the server; a field it refuses is
  `ttc.Unsupported`; `ttc serve` in front of the parser server returns `message.reasoning`.

Short requests (the model thinks in ~40-80 tokens): this file adds about two minutes to the suite.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

import ttc
from ttc.backends.openai import OpenAICompatible, usage
from ttc.errors import Unsupported
from ttc.strategies.registry import OPTIONS, STRATEGIES, make_strategy
from ttc.types import SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parser_url(thinking_vllm_server) -> str:
    return thinking_vllm_server.url


@pytest.fixture(scope="module")
def no_parser_url(thinking_vllm_server_no_parser) -> str:
    return thinking_vllm_server_no_parser.url

QUESTION = "Ada has 12 apples. Ada gets 5 more and then gives away 3. How many apples does Ada have now?"
PARAMS = SamplingParams(temperature=0.6, max_tokens=160, logprobs=True)
PRM = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.5)


class ReportedReasoning:
    """Sums the `completion_tokens_details.reasoning_tokens` the server sent, once per response."""

    def __init__(self, monkeypatch):
        self.seen: dict[int, tuple[object, int]] = {}
        original = usage.reported_reasoning

        def spy(data):
            value = original(data)
            if value is not None:
                self.seen[id(data)] = (data, value)  # the object kept: its id is not reused
            return value

        monkeypatch.setattr(usage, "reported_reasoning", spy)

    @property
    def total(self) -> int:
        return sum(v for _, v in self.seen.values())


def answered_from_the_content(result) -> None:
    assert result.ok, result.error
    for c in result.candidates:
        assert "</think>" not in c.text and "<think>" not in c.text
        if c.answer is not None:
            assert c.thinking is not None, "the thinking model's output was not split"
            assert c.answer in c.text.replace(",", "")


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_answers_from_the_content_through_the_parser_server(parser_url, name):
    llm = OpenAICompatible(parser_url)  # the format: the model folder's ttc_thinking.json
    assert llm.thinking is not None and llm.thinking.name == "deepseek_r1"
    step = "max_steps" in OPTIONS.get(name, {})
    params = PARAMS.replace(max_tokens=48) if step else PARAMS
    options = {"max_steps": 6} if step else {}
    strategy = make_strategy(name, n=2, verifier=PRM if step else None, params=params, **options)
    result = strategy.solve(QUESTION, llm, seed=1)
    answered_from_the_content(result)
    assert result.usage.reasoning_tokens > 0


def test_chat_reasoning_tokens_are_the_servers(parser_url, monkeypatch):
    reported = ReportedReasoning(monkeypatch)
    llm = OpenAICompatible(parser_url, use_chat=True)
    vote = ttc.MajorityVote(n=3, sample=ttc.Sample(params=PARAMS)).solve(QUESTION, llm, seed=2)
    answered_from_the_content(vote)
    assert reported.total > 0 and vote.usage.reasoning_tokens == reported.total
    for c in vote.candidates:  # the server's message.reasoning, its ids split at the marker (return_token_ids)
        t = c.completion.thinking
        assert t.text.strip() and t.token_ids and c.completion.num_tokens == c.usage.completion_tokens
    before = reported.total
    streamed = ttc.FirstFinish(n=2, params=PARAMS.replace(logprobs=None)).solve(QUESTION, llm, seed=3)
    answered_from_the_content(streamed)
    assert streamed.usage.reasoning_tokens == reported.total - before


def test_without_a_parser_the_answer_never_comes_from_the_thinking(no_parser_url):
    # stopped where the final answer starts: the output is the whole thinking (its numbers are the
    # intermediate results), "</think>", and no final content
    params = SamplingParams(temperature=0.0, max_tokens=200, stop=("The final answer",))  # the model's answer line
    split = ttc.Sample(params=params).solve(QUESTION, OpenAICompatible(no_parser_url,
                                                                       thinking="deepseek_r1"))
    c = split.candidates[0]
    assert c.thinking and any(ch.isdigit() for ch in c.thinking) and c.completion.thinking.closed
    assert split.answer is None and c.answer is None and not c.text.strip()
    # the same output read as ttc read it before thinking was split (no format): an answer, from the thinking
    blind = ttc.Sample(params=params).solve(QUESTION, OpenAICompatible(no_parser_url,
                                                                       thinking=False))
    assert c.thinking.strip() in blind.candidates[0].text  # greedy: the same output, unsplit
    assert blind.answer is not None and blind.answer in c.thinking
    # thinking + end marker + content are the server's completion count
    assert c.completion.num_tokens == c.usage.completion_tokens == blind.usage.completion_tokens


def test_enable_thinking_false_is_honoured_end_to_end(parser_url):
    params = PARAMS.replace(temperature=0.0, chat_template_kwargs={"enable_thinking": False})
    for use_chat in (False, True):  # rendered by /tokenize for /v1/completions; sent in the chat body
        result = ttc.Sample(params=params).solve(QUESTION, OpenAICompatible(parser_url, use_chat=use_chat))
        c = result.candidates[0]
        assert c.completion.reasoning_tokens == 0 and not (c.thinking or "").strip(), (use_chat, c.thinking)
        assert c.text.strip()


def test_a_thinking_token_budget_passes_through_and_bounds_the_thinking(parser_url):
    llm = OpenAICompatible(parser_url, use_chat=True)
    params = PARAMS.replace(max_tokens=200, extra={"thinking_token_budget": 32})
    result = ttc.MajorityVote(n=2, sample=ttc.Sample(params=params)).solve(QUESTION, llm, seed=4)
    assert result.ok, result.error
    for c in result.candidates:
        assert 0 < c.completion.thinking.num_tokens <= 32
    assert result.usage.reasoning_tokens <= 2 * 32


def test_a_field_the_server_refuses_is_unsupported(no_parser_url):
    llm = OpenAICompatible(no_parser_url, thinking="deepseek_r1")

    async def go():
        try:
            await llm.generate("Hi", SamplingParams(max_tokens=4, extra={"thinking_token_budget": 16}))
        finally:
            await llm.aclose()

    with pytest.raises(Unsupported, match="thinking_token_budget is not supported by .*reasoning"):
        asyncio.run(go())


def test_ttc_serve_returns_the_thinking_and_its_tokens(parser_url):
    from ttc.serve import Limits, ServeConfig, start_in_thread

    limits = Limits(max_n=4, max_tokens=512, max_budget_tokens=20_000, max_budget_seconds=300)
    config = ServeConfig(upstream=(parser_url,), n=2, max_tokens=160, limits=limits, use_chat=True)
    with start_in_thread(config, port=0) as served:
        body = {"messages": [{"role": "user", "content": QUESTION}], "ttc": {"strategy": "majority", "n": 2}}
        req = urllib.request.Request(served.url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            data = json.loads(r.read())
    message = data["choices"][0]["message"]
    assert message["reasoning"].strip() and message["reasoning_content"] == message["reasoning"]
    assert "</think>" not in message["content"]
    reasoning = data["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == data["ttc"]["usage"]["reasoning_tokens"] > 0
