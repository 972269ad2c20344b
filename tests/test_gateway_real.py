"""Issue 24: ttc behind a real gateway. LiteLLM's proxy (its own virtualenv, pinned in
scripts/install_litellm.sh; the `litellm_gateway` fixture) stands in front of the suite's vLLM
server, and every registered strategy runs through it with the same seed as directly against
vLLM: the same answers and candidates, and usage equal to vLLM's own counters (`/metrics`), or
marked estimated. Also: a step search's cost through it with a local tokenizer, FirstFinish's
cancelled streams, what `describe()` says per endpoint, and a missing or wrong key.

One gateway per session, one short problem per strategy, small `max_tokens`.
"""

from __future__ import annotations

import warnings

import pytest

import ttc
from test_usage_real import server_counters
from ttc.backends.openai.http_errors import AuthenticationFailed
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.errors import GenerationError, Unsupported
from ttc.strategies.registry import OPTIONS, STRATEGIES, make_strategy

pytestmark = pytest.mark.slow

QUESTION = "What is 12 + 30? End with 'The answer is N.'"
PARAMS = ttc.SamplingParams(temperature=0.8, max_tokens=16)
PRM = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 1.0 / (1 + len(steps[-1])))
STEP_SEARCHES = tuple(name for name, options in OPTIONS.items() if "max_steps" in options)
#: strategies that continue traces as token ids: behind a gateway (no /tokenize) they refuse, naming it
NEEDS_TOKEN_IDS = ("early_exit", "deepconf", "solve_detect_verify")
#: BudgetForcing needs a reasoning model's thinking format, which SmolLM2 behind the gateway has not
NEEDS_THINKING = ("budget_forcing",)
#: AdaptiveBestOfN's judge reads its yes/no from logprob tokens that vLLM names by id: without
#: /tokenize it needs `tokenizer=` to know which ids those words are, and says so
NEEDS_TOKENIZER = ("adaptive_best_of_n",)
DIRECT: dict[str, tuple] = {}  # name -> (result, counted), each strategy's direct run, shared by the tests


#: the smallest runs of the costliest step searches (CI time: one sweep, two chains)
SMALLEST = {"particle_gibbs": {"iterations": 1}, "parallel_tempering": {"iterations": 1, "chains": 2}}


def strategy(name: str, n: int = 2):
    options = {"max_steps": 2, **SMALLEST.get(name, {})} if name in STEP_SEARCHES else {}
    return make_strategy(name, n=n, verifier=PRM if name in STEP_SEARCHES else None, params=PARAMS, **options)


def counted_run(make, llm: OpenAICompatible, root: str):
    """(result, (prompt, generation) tokens vLLM counted meanwhile, warnings) of one seeded run;
    the probe runs first, so that its requests are not counted."""
    ttc.run_sync(llm.probe())
    before = server_counters(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = make().solve(QUESTION, llm, seed=7)
    after = server_counters(root)
    counted = tuple(after[k] - before[k] for k in ("prompt_tokens_total", "generation_tokens_total"))
    return result, counted, [str(w.message) for w in caught]


def direct_run(name: str, vllm_server):
    if name not in DIRECT:
        DIRECT[name] = counted_run(lambda: strategy(name), OpenAICompatible(vllm_server.url), vllm_server.root)[:2]
    return DIRECT[name]


def assert_usage_is_the_counters(usage: ttc.Usage, counted: tuple[float, float]) -> None:
    """Processed prompt tokens equal vLLM's prompt counter and completion tokens its generation
    counter; a stream closed early (`closed_streams`) makes the completion a lower bound, and a
    count ttc had to guess says `estimated`."""
    prompt, generation = counted
    assert usage.processed_prompt_tokens == prompt
    if usage.estimated:
        assert usage.closed_streams  # only the text of a closed stream without a tokenizer is guessed
    elif usage.closed_streams:
        assert usage.completion_tokens <= generation
    else:
        assert usage.completion_tokens == generation


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_through_the_gateway_equals_direct_vllm(name, litellm_gateway):
    gateway = litellm_gateway
    if name in NEEDS_TOKEN_IDS:  # the documented error, before any request is sent for the problem
        with pytest.raises(Unsupported, match=r"as token ids"):
            strategy(name).solve(QUESTION, OpenAICompatible(gateway.url, api_key=gateway.key), seed=7)
        return
    if name in NEEDS_THINKING:
        with pytest.raises(Unsupported, match=r"thinking format|as token ids"):
            strategy(name).solve(QUESTION, OpenAICompatible(gateway.url, api_key=gateway.key), seed=7)
        return
    if name in NEEDS_TOKENIZER:
        with pytest.raises(Unsupported, match=r"tokenizer="):
            strategy(name).solve(QUESTION, OpenAICompatible(gateway.url, api_key=gateway.key), seed=7)
        return
    direct, direct_counted = direct_run(name, gateway.upstream)
    assert_usage_is_the_counters(direct.usage, direct_counted)
    llm = OpenAICompatible(gateway.url, api_key=gateway.key)
    result, counted, said = counted_run(lambda: strategy(name), llm, gateway.upstream.root)
    assert result.ok, result.error
    assert result.answer == direct.answer
    assert [c.text for c in result.candidates] == [c.text for c in direct.candidates]  # LiteLLM passes the seed
    assert_usage_is_the_counters(result.usage, counted)
    assert result.usage.estimated == any(c.finish_reason == "cancelled" and c.text for c in result.candidates)
    # LiteLLM keeps vLLM's stop_reason (moved into provider_specific_fields, read back): nothing to warn about
    assert not [m for m in said if "end-of-text" in m]


@pytest.mark.parametrize("name", ["beam", "particle"])
def test_step_searches_through_the_gateway_with_a_tokenizer_cost_what_direct_vllm_costs(name, litellm_gateway):
    """Issue 24 measured BeamSearch at 2.2x direct vLLM's tokens through LiteLLM (every finished
    trace continued to max_steps); with `tokenizer=` (prompts templated locally, sent to
    /v1/completions) the cost is within 10% of direct vLLM's, and equal to vLLM's counters."""
    gateway = litellm_gateway
    direct, _ = direct_run(name, gateway.upstream)
    llm = OpenAICompatible(gateway.url, api_key=gateway.key, tokenizer=gateway.upstream.model)
    result, counted, _ = counted_run(lambda: strategy(name), llm, gateway.upstream.root)
    assert_usage_is_the_counters(result.usage, counted)
    assert not result.usage.estimated
    spent, direct_spent = (u.processed_prompt_tokens + u.completion_tokens for u in (result.usage, direct.usage))
    assert abs(spent - direct_spent) <= 0.1 * direct_spent, (spent, direct_spent)
    assert result.answer == direct.answer


def test_first_finish_through_the_gateway_bills_what_vllm_counted(litellm_gateway):
    """FirstFinish(4) with `tokenizer=`: its cancelled streams come without token ids (LiteLLM strips
    them) and are counted from their text; the billed prompt (each stream's, the cancelled ones'
    too) equals vLLM's counter and the completion tokens are at most its counter (the documented
    lower bound of closed streams: tokens generated after the last one received are not seen)."""
    gateway = litellm_gateway
    llm = OpenAICompatible(gateway.url, api_key=gateway.key, tokenizer=gateway.upstream.model)
    result, (prompt, generation), _ = counted_run(lambda: ttc.FirstFinish(n=4, params=PARAMS), llm,
                                                  gateway.upstream.root)
    usage = result.usage
    assert not usage.estimated and usage.generator_calls == 4
    assert usage.prompt_tokens == usage.processed_prompt_tokens == prompt  # 0 per cancelled stream before
    assert 0 < usage.completion_tokens <= generation
    if not usage.closed_streams:
        assert usage.completion_tokens == generation
    cancelled = [c for c in result.candidates if c.finish_reason == "cancelled" and c.text]
    assert all(c.usage.completion_tokens > 0 for c in cancelled)  # counted from the text received


def test_describe_says_what_each_endpoint_carries_through_the_gateway(litellm_gateway):
    llm = OpenAICompatible(litellm_gateway.url, api_key=litellm_gateway.key)
    ttc.run_sync(llm.probe())
    endpoints = llm.describe()["endpoints"]
    assert endpoints["completions"]["token_ids"] is True and endpoints["completions"]["stop_reason"] is True
    assert endpoints["chat"]["stop_reason"] is True  # read back from provider_specific_fields
    for stream in ("chat_stream", "completions_stream"):  # LiteLLM's streams: text and usage only
        assert endpoints[stream]["token_ids"] is False and endpoints[stream]["stop_reason"] is False
        assert endpoints[stream]["usage"] is True
    direct = OpenAICompatible(litellm_gateway.upstream.url)
    ttc.run_sync(direct.probe())
    assert direct.describe()["endpoints"]["chat_stream"]["token_ids"] is True  # vLLM itself sends them


def test_a_missing_or_wrong_key_gets_the_api_key_hint_and_the_probe_raises(litellm_gateway):
    gateway = litellm_gateway
    wrong = OpenAICompatible(gateway.url, model=gateway.model, api_key="sk-wrong", max_retries=0)
    with pytest.raises(AuthenticationFailed, match=r"No connected db.*api_key="):  # LiteLLM: 400
        ttc.run_sync(wrong.probe())
    assert wrong.features.completions is None and not wrong._probed  # nothing recorded from refusals
    keyless = OpenAICompatible(gateway.url, model=gateway.model, api_key="", max_retries=0)
    with pytest.raises(GenerationError, match=r"api_key="):  # LiteLLM: a bare 500 "Internal Server Error"
        ttc.run_sync(keyless.probe())
    with pytest.raises(GenerationError, match=r"api_key="):  # a strategy's first request says it too
        ttc.Sample(params=PARAMS).solve(QUESTION, OpenAICompatible(gateway.url, model=gateway.model, api_key="",
                                                                   max_retries=0))
