"""FirstFinish and EarlyExit on the real SmolLM2-135M-Instruct (transformers backend), tiny budgets."""

import asyncio

import numpy as np
import pytest

import ttc
from helpers import assert_top_k_confidence_exits_where_deepconf_says, assert_usage_is_sum_of_candidates
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, HiddenStateProbe, LinearProbe, TokenConfidence
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish

pytestmark = pytest.mark.slow
PARAMS = ttc.SamplingParams(temperature=0.7, max_tokens=24, logprobs=True)


def test_first_finish_on_the_real_model_cancels_the_others(smollm2):
    problem = demo_problems(1)[0]
    smollm2.reset_stats()
    result = FirstFinish(n=3, params=PARAMS, prompt=DEMO_PROMPT).solve(problem, smollm2, seed=0)
    assert result.ok and len(result.candidates) == 3
    winner = result.candidates[result.details["chosen"][0]]
    assert winner.finish_reason in ("stop", "length") and winner.completion.num_tokens > 0
    assert_usage_is_sum_of_candidates(result)
    # what the backend decoded is what usage counts, up to the step in flight at cancellation
    others = [c for c in result.candidates if c.finish_reason == "cancelled"]
    assert smollm2.stats.generated_tokens - result.usage.completion_tokens <= len(others)
    assert result.usage.closed_streams == len(others)  # and the usage says its count may be short
    assert all(c.usage.completion_tokens <= PARAMS.max_tokens for c in others)


def test_early_exit_probes_on_the_real_model(smollm2):
    problems = demo_problems(1)
    consistency = EarlyExit(AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX), params=PARAMS,
                            prompt=DEMO_PROMPT)
    # the sampled token's logprob streams: a threshold above 0 exits at the first full window
    confidence = EarlyExit(TokenConfidence(window=4, threshold=0.0, top_k=0, action="exit"), params=PARAMS,
                           prompt=DEMO_PROMPT, mode="stream")
    results = ttc.solve_many(consistency, problems, smollm2, seed=0, progress=False)
    results += ttc.solve_many(confidence, problems, smollm2, seed=0, progress=False)
    for r in results:
        assert r.ok, r.error
        assert_usage_is_sum_of_candidates(r)
        assert r.candidates[0].completion.num_tokens <= PARAMS.max_tokens
    for r in results[1:]:  # logprobs are < 0 everywhere: the first window already falls under 0
        c = r.candidates[0]
        assert c.finish_reason == "early_exit" and c.scores["exit_tokens"] == 4
        assert c.scores["token_confidence"] < 0
        assert PLAIN_SUFFIX in c.text


def test_top_k_token_confidence_on_the_real_model(smollm2):
    assert_top_k_confidence_exits_where_deepconf_says(smollm2, demo_problems(6), DEMO_PROMPT, top_k=3)


def test_hidden_state_probe_reads_real_hidden_states(smollm2):
    dim = smollm2.model.config.hidden_size
    always = LinearProbe(weights=np.zeros(dim), bias=5.0, mean=np.zeros(dim), scale=np.ones(dim), threshold=0.5,
                         cues=("has", "=", ".", "\n"), suffix=PLAIN_SUFFIX)
    strategy = EarlyExit(HiddenStateProbe(always, every=8), params=PARAMS, prompt=DEMO_PROMPT)
    # a seed whose trace has a cue in its checked tokens ("Leo has ..."); under the seed rule
    # (Context.next_seed) seed 0's trace has none in its first 16 tokens, so nothing could fire
    result = strategy.solve(demo_problems(1)[0], smollm2, seed=1)
    c = result.candidates[0]
    assert c.finish_reason == "early_exit" and c.usage.verifier_calls >= 1
    assert_usage_is_sum_of_candidates(result)
    hidden = asyncio.run(smollm2.hidden_states(list(range(10, 20)), [0, 9]))
    assert hidden.shape == (2, dim) and np.isfinite(hidden).all()


def test_deepconf_on_the_real_model(smollm2):
    # the per-question bar comes from the real top-k logprobs of this question's warm-up traces
    import math

    from ttc.probes import lowest_group_confidence

    strategy = ttc.DeepConf(n=4, warmup=2, keep=0.5, window=4, top_k=3, every=8, params=PARAMS, prompt=DEMO_PROMPT)
    result = strategy.solve(demo_problems(1)[0], smollm2, seed=0)
    assert result.ok, result.error
    assert len(result.candidates) == 4
    warm = [lowest_group_confidence(c.completion, 4) for c in result.candidates[:2]]
    assert all(math.isfinite(w) and w >= math.log(3) for w in warm)  # top-3 confidences, not logprobs
    assert result.details["threshold"] == pytest.approx(sum(warm) / 2)  # the median of two
    bar = result.details["threshold"]
    for c in result.candidates[2:]:  # a dropped online trace dipped under the bar
        assert c.finish_reason != "dropped" or c.scores["lowest_group_confidence"] < bar
    # the voters are exactly the traces that reached the bar with an answer and were not dropped
    assert result.details["voters"] == [i for i, c in enumerate(result.candidates)
                                        if c.scores["lowest_group_confidence"] >= bar and c.answer is not None
                                        and c.finish_reason != "dropped"]
    assert_usage_is_sum_of_candidates(result)
