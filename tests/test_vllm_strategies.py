"""Every strategy through both vLLM backends (in-process engine and HTTP server) on the real SmolLM2.

Seeded strategies must give the same candidates and answers through `VLLMEngine` and
`OpenAICompatible`; FirstFinish (whose winner depends on timing) must pick a finisher, cancel the
rest and account for exactly what they streamed. Budgets are tiny: vLLM on this CPU decodes slowly.
"""

import pytest

import ttc
from helpers import (
    assert_top_k_confidence_exits_where_deepconf_says,
    assert_usage_is_sum_of_candidates,
    counts_but_cache_hits,
)
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, TokenConfidence
from ttc.steps import StepConfig
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish
from ttc.verifiers import LLMJudge

pytestmark = pytest.mark.slow

PARAMS = ttc.SamplingParams(temperature=0.8, max_tokens=24, logprobs=True)
STEPS = StepConfig(max_steps=2, max_step_tokens=12)
BUDGET = ttc.Budget(tokens=600, verifier_calls=8)


def seeded_strategies() -> dict[str, ttc.Strategy]:
    consistency = EarlyExit(AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX, answer_tokens=4),
                            params=PARAMS, prompt=DEMO_PROMPT)
    # top-2 token confidence is >= log 2 = 0.69: a threshold of 1.0 stops only a trace that hesitates,
    # while the sampled token's logprob (<= 0) would stop every trace at its first window
    confidence = EarlyExit(TokenConfidence(window=4, threshold=1.0, top_k=2, action="exit"), params=PARAMS,
                           prompt=DEMO_PROMPT, mode="chunks", answer_tokens=4)
    step = {"steps": STEPS, "params": PARAMS, "prompt": DEMO_PROMPT}
    return {
        "early_exit_consistency": consistency,
        "early_exit_confidence_chunks": confidence,
        "majority_of_early_exits": ttc.MajorityVote(n=2, sample=consistency),
        "beam": ttc.BeamSearch(2, 2, LLMJudge(), **step),
        "dvts": ttc.DVTS(2, 2, LLMJudge(), **step),
        "astar": ttc.AStar(LLMJudge(), 2, **step),
        "particle": ttc.ParticleFilter(3, LLMJudge(), **step),
    }


@pytest.fixture(scope="module")
def http(vllm_server):
    client = OpenAICompatible(vllm_server.url)
    yield client
    ttc.run_sync(client.aclose())


@pytest.mark.parametrize("name", list(seeded_strategies()))
def test_seeded_strategy_gives_the_same_result_on_engine_and_server(name, vllm_engine, http):
    strategy = seeded_strategies()[name]
    problem = demo_problems(1, seed=3)[0]
    a = strategy.solve(problem, vllm_engine, budget=BUDGET, seed=11)
    b = strategy.solve(problem, http, budget=BUDGET, seed=11)
    for r in (a, b):
        assert r.ok, r.error
        assert r.candidates and r.usage.completion_tokens > 0
        assert r.usage.total_tokens <= BUDGET.tokens and r.usage.verifier_calls <= BUDGET.verifier_calls
        if r.tree is not None:  # step searches: node usages add up to the result's
            assert r.tree.usage().counts() == r.usage.counts()
        else:
            assert_usage_is_sum_of_candidates(r)
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
    assert a.answer == b.answer
    assert counts_but_cache_hits(a.usage) == counts_but_cache_hits(b.usage)


@pytest.mark.parametrize("backend", ["engine", "http"])
def test_first_finish_cancels_the_others_on_vllm(backend, vllm_engine, http):
    llm = vllm_engine if backend == "engine" else http
    result = FirstFinish(n=3, params=PARAMS, prompt=DEMO_PROMPT, require_answer=False).solve(
        demo_problems(1)[0], llm, seed=5)
    assert result.ok, result.error
    assert len(result.candidates) == 3
    winner = result.candidates[result.details["chosen"][0]]
    assert winner.finish_reason in ("stop", "length")
    assert winner.usage.completion_tokens == winner.completion.num_tokens > 0
    assert_usage_is_sum_of_candidates(result)
    assert all(c.usage.completion_tokens <= PARAMS.max_tokens for c in result.candidates)


@pytest.mark.parametrize("backend", ["engine", "http"])
def test_top_k_token_confidence_on_vllm(backend, vllm_engine, http):
    llm = vllm_engine if backend == "engine" else http
    assert_top_k_confidence_exits_where_deepconf_says(llm, demo_problems(6), DEMO_PROMPT, top_k=2)
