"""RPC and AdaptiveBestOfN on the real SmolLM2-135M-Instruct (transformers backend), tiny budgets."""

import math

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ttc.strategies.rpc import RPC

pytestmark = pytest.mark.slow
PARAMS = ttc.SamplingParams(temperature=0.7, max_tokens=48, logprobs=True)


def test_rpc_on_the_real_model_weighs_answers_by_the_models_own_path_probabilities(smollm2):
    for problem in demo_problems(2):
        result = RPC(n=4, sample=ttc.Sample(params=PARAMS, prompt=DEMO_PROMPT), prune="none",
                     dedup=False).solve(problem, smollm2, seed=0)
        assert len(result.candidates) == 4
        want: dict[str, float] = {}
        for c in result.candidates:
            lp = c.completion.logprobs
            assert lp is not None and len(lp) == c.completion.num_tokens > 0 and all(x <= 0 for x in lp)
            if c.answer is not None:
                key = next((k for k in want if ttc.answers.equivalent(k, c.answer)), c.answer)
                want[key] = want.get(key, 0.0) + math.exp(sum(lp) / len(lp))
        assert result.details["votes"] == pytest.approx(want)
        if want:
            assert result.answer == max(want, key=want.get)
        assert_usage_is_sum_of_candidates(result)


def test_adaptive_best_of_n_on_the_real_model_counts_its_self_evaluations(smollm2):
    problem = demo_problems(3)[2]
    smollm2.reset_stats()
    strategy = AdaptiveBestOfN(max_n=4, threshold=1.0, batches="doubling",
                               sample=ttc.Sample(params=PARAMS, prompt=DEMO_PROMPT))
    result = strategy.solve(problem, smollm2, seed=0)
    # threshold 1.0: P(better) < 1 stops after the first round unless the model is sure to do better
    d = result.details
    assert d["samples"] == len(result.candidates) >= 1 and d["self_eval_calls"] == d["samples"]
    assert all(0.0 <= p <= 1.0 for p in d["p_better"])
    assert d["stop"] in ("confident", "max_n")
    assert result.answer == result.candidates[d["chosen"]].answer
    # what the backend generated is what the usage says: the samples plus one token per self-evaluation
    sample_tokens = sum(c.usage.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == sample_tokens + d["self_eval_calls"] == smollm2.stats.generated_tokens
    # and the self-evaluation prompts are counted as prompt tokens of generator calls
    assert result.usage.prompt_tokens == sum(c.usage.prompt_tokens for c in result.candidates) \
        + d["self_eval_tokens"] - d["self_eval_calls"]
