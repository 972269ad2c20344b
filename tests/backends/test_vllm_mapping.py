"""The pure mapping between ttc's and vLLM's request and result types (`ttc.backends.vllm_mapping`),
on vLLM's own output classes, without an engine."""

import asyncio

import pytest
from vllm.logprobs import Logprob  # CI always has vllm(-cpu): a missing one fails, never skips
from vllm.outputs import CompletionOutput, RequestOutput

from ttc.backends import vllm_mapping as mapping
from ttc.errors import BackendUnavailable, GenerationError, InvalidInput
from ttc.types import SamplingParams


def _output(ids, text="ab", reason="stop", logprobs=None):
    return CompletionOutput(index=0, text=text, token_ids=ids, cumulative_logprob=None, logprobs=logprobs,
                            finish_reason=reason)


def test_completion_keeps_logprobs_only_where_asked():
    steps = [{5: Logprob(-0.1), 6: Logprob(-2.5)}, {7: Logprob(-0.3), 5: Logprob(-1.5)}]
    out = _output([5, 7], logprobs=steps)
    plain = mapping.completion(out, SamplingParams())
    assert plain.token_ids == (5, 7) and plain.logprobs is None and plain.finish_reason == "stop"
    lp = mapping.completion(out, SamplingParams(logprobs=True))
    assert lp.logprobs == (pytest.approx(-0.1), pytest.approx(-0.3)) and lp.top_logprobs is None
    top = mapping.completion(out, SamplingParams(top_logprobs=2))
    assert top.top_logprobs[1] == {7: pytest.approx(-0.3), 5: pytest.approx(-1.5)}


def test_finish_reasons_and_errors_map_to_ttc():
    assert mapping.finish_reason("length") == "length"
    assert mapping.finish_reason(None) == mapping.finish_reason("abort") == "cancelled"
    with pytest.raises(GenerationError):
        mapping.finish_reason("error")
    from vllm.v1.engine.exceptions import EngineDeadError

    assert isinstance(mapping.to_ttc_error(EngineDeadError()), BackendUnavailable)
    assert isinstance(mapping.to_ttc_error(ValueError("bad")), InvalidInput)
    assert isinstance(mapping.to_ttc_error(RuntimeError("x")), GenerationError)
    cancelled = asyncio.CancelledError()
    assert mapping.to_ttc_error(cancelled) is cancelled


def test_a_stream_delta_carries_usage_and_ends_with_its_reason():
    running = RequestOutput("r", None, [1, 2, 3], None, [_output([9], text="x", reason=None)], False,
                            num_cached_tokens=2)
    delta = mapping.delta(running, SamplingParams(), generated=1)
    assert delta.text == "x" and delta.token_ids == (9,) and delta.finish_reason is None
    assert delta.usage.prompt_tokens == 3 and delta.usage.cached_prompt_tokens == 2
    assert delta.usage.completion_tokens == 1
    done = RequestOutput("r", None, [1, 2, 3], None, [_output([], text="", reason="length")], True)
    assert mapping.delta(done, SamplingParams(), generated=1).finish_reason == "length"
    empty = RequestOutput("r", None, [1, 2, 3], None, [_output([], text="", reason=None)], False)
    assert mapping.delta(empty, SamplingParams(), generated=1) is None


def test_prompts_and_sampling_params_are_checked_before_the_engine():
    assert mapping.engine_prompt("hi") == {"prompt": "hi"}
    assert mapping.engine_prompt([1, 2])["prompt_token_ids"] == [1, 2]
    for bad, message in (("", "empty prompt"), ([], "no token ids"), ([1, -2], "negative"), ([1.5], "text or")):
        with pytest.raises(InvalidInput, match=message):
            mapping.engine_prompt(bad)
    params = mapping.sampling_params(SamplingParams(n=3, temperature=0.5, stop=("\n",), seed=4, top_logprobs=2),
                                     output_kind=None, defaults={"top_k": 20})
    assert (params.n, params.temperature, params.stop, params.seed, params.logprobs, params.top_k) == \
        (3, 0.5, ["\n"], 4, 2, 20)
    with pytest.raises(InvalidInput, match="ttc.SamplingParams"):
        mapping.sampling_params({"n": 1}, output_kind=None, defaults={})
