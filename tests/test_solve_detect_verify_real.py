"""SolveDetectVerify on the real SmolLM2-135M-Instruct, once in process (transformers backend) and once
through the suite's vLLM server: the detector's completeness requests read real top log-probabilities,
the trace is cut at a detected point, the verifier's checks are real requests, and every token is in
the usage and under the budget. One demo problem each, tiny limits.

The small model rarely writes the authors' hesitation words, so the detector here watches words it
does write at step boundaries: step openers ("so", "the", "therefore") and the demo problems' names,
with which it starts its answer (seen: seed 0 on the first problem writes "Syntactically: 2 + 2 + 2 = 6\n\n
This can be represented ...", where only "This" is at a boundary)."""

from __future__ import annotations

import pytest

import ttc
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.probes import SolutionComplete
from ttc.verifiers import FlexVerifier

pytestmark = pytest.mark.slow
WORDS = ("so", "the", "this", "therefore", "then", "now", "first", "next", "finally", "he", "she", "we", "let",
         "since", "answer", "leo", "noah")


def sdv() -> ttc.SolveDetectVerify:
    return ttc.SolveDetectVerify(verifier=FlexVerifier(fast=2, slow=1, fast_tokens=12, slow_tokens=24),
                                 detector=SolutionComplete(words=WORDS, every=8, max_checks=3),
                                 params=ttc.SamplingParams(temperature=0.7, max_tokens=64), prompt=DEMO_PROMPT)


def check(result: ttc.Result, budget: ttc.Budget) -> None:
    assert result.ok, result.error
    d = result.details
    assert d["stopped_by"] in ("verified", "unsure", "max_rounds", "budget")
    first = d["rounds"][0]
    assert first["detections"], "no watched word was asked about"
    for det in first["detections"]:
        assert 0.0 <= det["p_complete"] <= 1.0 and det["at"] >= 0
    cand = result.candidates[0]
    assert cand.scores["probe_calls"] >= 1  # the detector's requests were charged to the candidate
    checks = [c for r in d["rounds"] if "verification" in r for c in r["verification"]["checks"]]
    assert len(checks) == result.usage.verifier_calls >= 2
    assert sum(c["tokens"] for c in checks) == result.usage.verifier_tokens > 0
    assert result.usage.total_tokens + result.usage.verifier_tokens <= budget.tokens
    assert (cand.usage.verifier_calls, cand.usage.total_tokens) == (result.usage.verifier_calls,
                                                                    result.usage.total_tokens)


def test_solve_detect_verify_on_the_transformers_backend():
    from ttc.backends.transformers import Transformers

    llm = Transformers(device="cpu", num_threads=1)
    try:
        budget = ttc.Budget(tokens=4000)
        check(sdv().solve(demo_problems(1)[0], llm, budget=budget, seed=0), budget)
    finally:
        llm.close()


def test_solve_detect_verify_through_the_vllm_server(vllm_server):
    llm = ttc.backends.OpenAICompatible(vllm_server.url)
    budget = ttc.Budget(tokens=4000)
    result = sdv().solve(demo_problems(2)[1], llm, budget=budget, seed=0)
    check(result, budget)


def _served(root: str) -> tuple[float, float]:
    """vLLM's prompt and generated token counters, once the server is idle and they are stable."""
    import re
    import time
    import urllib.request

    def read() -> tuple[float, float, float]:
        with urllib.request.urlopen(root + "/metrics", timeout=30) as r:
            text = r.read().decode()

        def total(name: str) -> float:
            return sum(float(v) for v in re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))
        return total("prompt_tokens_total"), total("generation_tokens_total"), \
            total("num_requests_running") + total("num_requests_waiting")
    last = read()
    for _ in range(600):
        time.sleep(0.2)
        now = read()
        if now == last and not now[2]:
            return now[0], now[1]
        last = now
    raise AssertionError("the vLLM server did not go idle")


def test_solve_detect_verify_inside_the_thinking_of_the_real_thinking_model(thinking_vllm_server):
    """The thinking test model through vLLM (token-id chunks on /v1/completions, split by ttc at the
    declared format's markers). The model starts each step of its thinking with "After ...", which
    the detector is told to watch: detection alone (one round) stops inside the thinking, closes it
    and reads the answer from the final content; the full strategy verifies and refines; the thinking
    is recorded; and every token the server counted is in the two results' usage."""
    from ttc.backends.openai_compatible import OpenAICompatible

    llm = OpenAICompatible(thinking_vllm_server.url, thinking="deepseek_r1")
    question = "Ada has 5 apples. Ada gets 7 more and then gives away 3. How many apples does Ada have now?"
    problem = ttc.Problem(question, answer="9", metadata={"messages": [{"role": "user", "content": question}]})

    def strategy(rounds: int) -> ttc.SolveDetectVerify:
        return ttc.SolveDetectVerify(verifier=FlexVerifier(fast=2, slow=1, fast_tokens=12, slow_tokens=24),
                                     detector=SolutionComplete(words=("after", "wait"), every=8, max_checks=2),
                                     params=ttc.SamplingParams(temperature=0.7, max_tokens=96), answer_tokens=8,
                                     rounds=rounds)

    ttc.run_sync(llm.detect_capabilities())  # the server's capability probe, billed to no problem, before counting
    before, probed = _served(thinking_vllm_server.root), llm.probe_usage.total_tokens
    alone = strategy(1).solve(problem, llm, seed=0)
    full = strategy(2).solve(problem, llm, seed=0)
    after = _served(thinking_vllm_server.root)
    assert alone.ok and full.ok, (alone.error, full.error)
    for result in (alone, full):
        c = result.candidates[0]
        assert result.details["rounds"][0]["detections"], "the detector asked about no step of the thinking"
        assert c.thinking and "</think>" not in c.thinking and "<think>" not in c.thinking  # recorded, split off
        assert c.answer is None or ("</think>" not in c.text and c.answer in c.text)  # read from the content
        assert result.usage.reasoning_tokens > 0
    c = alone.candidates[0]  # seen: stopped at the second step ("After getting 7 more"), answered after the cue
    assert c.finish_reason == "early_exit" and c.thinking_closed is True
    assert c.text.startswith(llm.thinking.answer_cue) and c.answer is not None
    assert alone.details["rounds"][0]["detections"][-1]["complete"] is True
    checks = [x for r in full.details["rounds"] if "verification" in r for x in r["verification"]["checks"]]
    assert len(checks) == full.usage.verifier_calls >= 2 and alone.usage.verifier_calls == 0
    # every token the server counted is in the usage (no capability probe ran in between)
    assert llm.probe_usage.total_tokens == probed
    served = (after[0] - before[0]) + (after[1] - before[1])
    assert sum(u.prompt_tokens + u.completion_tokens + u.verifier_tokens for u in (alone.usage, full.usage)) == served
