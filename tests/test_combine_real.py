"""The strategies that combine candidates on real models: SmolLM2-135M-Instruct through the
transformers backend (the aggregation prompts are real chat prompts, measured by the real tokenizer,
refused before sending when too long) and through the suite's vLLM server (the context length comes
from /v1/models, and the usage of every aggregation call equals the server's counters). One demo
problem each, small max_tokens.

`TTC_TEST_USAGE_SERVER` (a server root) runs the vLLM tests against a server already running."""

from __future__ import annotations

import os

import pytest

import ttc
from ttc.aggregation import context_length
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.demo import DEMO_PROMPT, demo_problems

pytestmark = pytest.mark.slow
PARAMS = ttc.SamplingParams(temperature=0.8, max_tokens=24)
PROBLEM = demo_problems(1)[0]


def sample() -> ttc.Sample:
    return ttc.Sample(params=PARAMS, prompt=DEMO_PROMPT)


def combiners() -> dict[str, ttc.Strategy]:
    return {
        "genselect": ttc.GenSelect(n=3, sample=sample(), group_size=2),
        "rsa": ttc.RSA(population=2, k=2, rounds=1, sample=sample()),
        "archon": ttc.Fuse(k=2, sample=ttc.Rank(k=2, sample=ttc.Critique(n=2, sample=sample()))),
    }


#: the generator requests each makes: sampling, then GenSelect's 2 selections (3 by 2: [0, 1] and a
#: bye, then the final), RSA's 2 aggregations, Archon's 2 critiques + 1 ranking + 1 fusion
REQUESTS = {"genselect": 1 + 2, "rsa": 1 + 2, "archon": 1 + 2 + 1 + 1}


def check_reads(name: str, result: ttc.Result) -> None:
    assert result.ok, result.error
    aggregations = result.details.aggregations
    assert result.usage.generator_calls == REQUESTS[name]
    assert all(0 <= i < len(result.candidates) for a in aggregations for i in a.inputs + a.outputs + a.chosen)
    if name == "genselect":
        assert [a.inputs for a in aggregations] == [(0, 1), (aggregations[0].chosen[0], 2)]
    if name == "rsa":
        assert all(sorted(a.inputs) == [0, 1] for a in aggregations)
        assert [a.outputs for a in aggregations] == [(2,), (3,)]
    if name == "archon":
        assert [a.kind for a in aggregations] == ["critique", "critique", "rank", "fuse"]


@pytest.mark.parametrize("name", list(combiners()))
def test_combiners_on_the_real_model_through_transformers(name, smollm2):
    result = combiners()[name].solve(PROBLEM, smollm2, seed=0)
    check_reads(name, result)
    # every candidate's tokens are in the usage; the calls that wrote none (selections, rankings,
    # critiques) account for the rest
    assert sum(c.usage.completion_tokens for c in result.candidates) <= result.usage.completion_tokens


def test_a_too_long_aggregation_is_refused_before_sending_on_the_real_tokenizer(smollm2):
    assert ttc.run_sync(context_length(smollm2)) == smollm2.max_model_len
    rsa = ttc.RSA(population=2, k=2, rounds=1, sample=sample(), max_prompt_tokens=40)
    with pytest.raises(ttc.PromptTooLong, match="over the limit of 40"):
        rsa.solve(PROBLEM, smollm2, seed=0)


@pytest.fixture(scope="module")
def server_root(request):
    url = os.environ.get("TTC_TEST_USAGE_SERVER")
    if url:
        return url.rstrip("/")
    return request.getfixturevalue("vllm_server").root


@pytest.mark.parametrize("name", list(combiners()))
def test_combiners_usage_equals_the_vllm_servers_counters(name, server_root):
    from test_usage_real import assert_matches_counters, server_counters

    llm = OpenAICompatible(server_root + "/v1")
    try:
        ttc.run_sync(llm.probe())  # its own requests before the baseline
        assert ttc.run_sync(context_length(llm)) == 2048  # the suite's --max-model-len, from /v1/models
        before = server_counters(server_root)
        result = combiners()[name].solve(PROBLEM, llm, seed=0)
        after = server_counters(server_root)
    finally:
        ttc.run_sync(llm.aclose())
    check_reads(name, result)
    assert_matches_counters(result.usage, before, after)
