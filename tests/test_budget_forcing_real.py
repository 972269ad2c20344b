"""Budget forcing on the real thinking test model, served by vLLM (the session's `thinking_vllm_server`,
with the deepseek_r1 reasoning parser): the budget holds on every trace, the counts are the server's,
and "Wait" makes the model think longer than it does on its own. Few problems, short traces."""

from __future__ import annotations

import json
import random
import re
import time
import urllib.request

import pytest

import ttc
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.strategies.budget_forcing import BudgetForcing

pytestmark = pytest.mark.slow

GREEDY = ttc.SamplingParams(temperature=0.0, max_tokens=512)
#: sampled (the test model closes its thinking in most sampled traces, not always greedy), seeded
SEEDED = ttc.SamplingParams(temperature=0.7, max_tokens=512, seed=11)
QUESTIONS = ["Ada has 12 apples. Ada gets 7 more and then gives away 5. How many apples does Ada have now?",
             "Tom buys 3 packs of cards with 4 cards in each pack, then uses 2 of them. How many cards are left?"]


def counters(root: str) -> float:
    """vLLM's generated-token counter, once the server is idle and the counter stable."""
    def read() -> tuple[float, float]:
        with urllib.request.urlopen(root + "/metrics", timeout=30) as r:
            text = r.read().decode()
        total = sum(float(v) for v in re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))
        busy = sum(float(v) for v in re.findall(r"^vllm:num_requests_(?:running|waiting)\{[^}]*\} ([0-9.e+]+)$",
                                                text, re.M))
        return total, busy
    last = read()
    for _ in range(600):
        time.sleep(0.2)
        now = read()
        if now == last and not now[1]:
            return now[0]
        last = now
    raise AssertionError("the vLLM server did not go idle")


@pytest.fixture(scope="module")
def llm(thinking_vllm_server):
    return OpenAICompatible(thinking_vllm_server.url)


@pytest.mark.parametrize("budget", [32, 64, 128])
def test_every_trace_thinks_at_most_the_budget_and_the_counts_are_the_servers(llm, thinking_vllm_server, budget):
    root = thinking_vllm_server.root
    before, probed = counters(root), llm.probe_usage.completion_tokens
    strategy = BudgetForcing(budget=budget, thinking="deepseek_r1", params=GREEDY, answer_tokens=32, engine="never")
    results = ttc.solve_many(strategy, QUESTIONS, llm, progress=False)
    # what the server generated, less the backend's one-time capability probe (billed to no problem)
    generated = counters(root) - before - (llm.probe_usage.completion_tokens - probed)
    assert results.failed == 0, results.first_error
    completion = 0
    for r in results:
        info, c = r.details, r.candidates[0]
        assert info["path"] == "tokens"
        assert c.completion.thinking.num_tokens == info["thinking_tokens"] <= budget
        assert r.usage.reasoning_tokens == info["thinking_tokens"]
        parts = info["thinking_tokens"] + info["marker_tokens"] + info["content_tokens"] + info["discarded_tokens"]
        assert parts == r.usage.completion_tokens
        completion += r.usage.completion_tokens
        # forced exactly when the model did not end its thinking itself
        assert info["forced"] != c.completion.thinking.closed
    assert completion == generated  # the server generated exactly what the results count
    if budget == 32:  # the first question's own greedy thinking is longer (48 tokens): cut at the budget
        assert results[0].details["forced"] and results[0].details["thinking_tokens"] == 32


def test_the_thinking_count_is_the_parser_servers_reasoning_tokens(llm, thinking_vllm_server):
    """The model's own thinking, counted by ttc on the token path (budget never reached), equals the
    reasoning tokens the server's parser reports for the same greedy chat request."""
    question = QUESTIONS[0]
    with urllib.request.urlopen(thinking_vllm_server.url + "/models", timeout=30) as r:
        model = json.loads(r.read())["data"][0]["id"]
    seed = random.Random(SEEDED.seed).getrandbits(31)  # the seed ttc's seed rule gives the first request
    body = {"model": model, "messages": [{"role": "user", "content": ttc.ChatPrompt().instruction.format(
        question=question)}], "temperature": SEEDED.temperature, "max_tokens": 512, "seed": seed}
    request = urllib.request.Request(thinking_vllm_server.url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        usage = json.loads(r.read())["usage"]
    server = usage["completion_tokens_details"]["reasoning_tokens"]
    r = BudgetForcing(budget=512, thinking="deepseek_r1", params=SEEDED, engine="never").solve(question, llm)
    if r.details["forced"]:  # greedy, the v3 test model often ends inside its thinking, without </think>
        pytest.skip("the sampled trace did not close its thinking: nothing for the parser to count")
    assert r.details["thinking_tokens"] == r.usage.reasoning_tokens == server > 0


def test_wait_makes_the_model_think_longer_than_on_its_own(llm):
    """Seeded: the first request of both runs samples the same thinking up to the model's end marker."""
    own = ttc.solve_many(BudgetForcing(budget=512, thinking="deepseek_r1", params=SEEDED, engine="never"),
                         QUESTIONS, llm, progress=False, seed=0)
    waited = ttc.solve_many(BudgetForcing(budget=512, waits=1, wait="\n\nWait", thinking="deepseek_r1",
                                          params=SEEDED), QUESTIONS, llm, progress=False, seed=0)
    closed = [(mine, extended) for mine, extended in zip(own, waited, strict=True) if not mine.details["forced"]]
    assert closed, "no sampled trace closed its thinking itself"
    for mine, extended in closed:
        assert extended.details["waits"] == 1
        assert extended.details["thinking_tokens"] > mine.details["thinking_tokens"]
        assert "Wait" in extended.candidates[0].thinking
