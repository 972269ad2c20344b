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
