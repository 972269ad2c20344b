"""FirstFinish on scripted streams: the first finisher wins, the rest are cancelled and cost
exactly the tokens they had produced."""

import asyncio

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish, StreamSample

LONG = "step " * 30 + "so the answer is \\boxed{1}"      # 67 tokens
SHORT = "quick: \\boxed{2}"                                # 3 tokens
MEDIUM = "step " * 5 + "\\boxed{3}"                      # 11 tokens


def paced(responses, fast=None, slow_latency=0.01, fast_latency=0.0005):
    """Streams cycle through `responses`; those containing `fast` stream much faster."""
    def latency(text, i):
        return fast_latency if fast is not None and fast in text else slow_latency
    return Scripted(responses, token_latency=latency)


def test_first_finisher_wins_and_the_others_are_cancelled():
    llm = paced([LONG, LONG, SHORT, LONG], fast="quick")

    async def main():
        result = await FirstFinish(n=4).arun("q", llm)
        streamed_at_return = llm.streamed_tokens
        await asyncio.sleep(0.1)  # a cancelled stream that kept going would stream more by now
        return result, streamed_at_return

    result, streamed_at_return = asyncio.run(main())
    assert result.answer == "2"
    assert result.details["chosen"] == [2]
    reasons = [c.finish_reason for c in result.candidates]
    assert reasons == ["cancelled", "cancelled", "stop", "cancelled"]
    assert result.details["cancelled"] == 3
    assert result.usage.closed_streams == 3  # their counts are what arrived: a lower bound, and said so
    assert [c.usage.closed_streams for c in result.candidates] == [1, 1, 0, 1]
    # the long candidates stopped early: nothing near their 67 tokens was generated
    assert all(c.usage.completion_tokens < 67 for c in result.candidates if c.finish_reason == "cancelled")
    # no token after cancellation: what streams emitted is exactly what usage counts
    assert llm.streamed_tokens == streamed_at_return == result.usage.completion_tokens
    assert result.usage.completion_tokens < 3 * 67
    assert_usage_is_sum_of_candidates(result)
    # every stream counted its prompt and its call, cancelled or not
    assert result.usage.generator_calls == 4
    assert result.details["latency_seconds"] == result.details["finish_seconds"][2]
    assert [s is None for s in result.details["finish_seconds"]] == [True, True, False, True]


def test_cancelled_candidates_keep_their_partial_text_and_no_answer():
    llm = paced([SHORT, LONG], fast="quick")
    result = FirstFinish(n=2).solve("q", llm)
    cancelled = result.candidates[1]
    assert cancelled.answer is None
    assert LONG.startswith(cancelled.text)
    assert cancelled.usage.completion_tokens == len(llm._ids(cancelled.text))


def test_k_waits_for_first_k_and_votes():
    # slow ones: two say 7, one says 9; fast ones finish first: 5, 7, 7
    fast = ["fast \\boxed{5}", "fast \\boxed{7}", "fast again \\boxed{7}"]
    slow = ["slow " * 20 + "\\boxed{9}"] * 3
    llm = paced(fast + slow, fast="fast")
    result = FirstFinish(n=6, k=3).solve("q", llm)
    assert sorted(result.details["chosen"]) == [0, 1, 2]
    assert result.answer == "7"
    assert result.details["votes"] == {"5": 1.0, "7": 2.0}
    assert [c.finish_reason for c in result.candidates[3:]] == ["cancelled"] * 3
    assert_usage_is_sum_of_candidates(result)


def test_finisher_without_answer_does_not_count_by_default():
    llm = paced(["quick nothing here", LONG], fast="quick")
    result = FirstFinish(n=2).solve("q", llm)
    assert result.answer == "1"  # waited for the candidate that has an answer
    result = FirstFinish(n=2, require_answer=False).solve("q", paced(["quick nothing here", LONG], fast="quick"))
    assert result.answer is None
    assert result.candidates[1].finish_reason == "cancelled"


def test_first_finish_composes_with_other_samplers_and_counts_their_cost():
    probe = ttc.probes.AnswerConsistency(every=4, window=2, suffix=ttc.probes.PLAIN_SUFFIX)
    llm = Scripted(lambda prompt, params, i: " 4" if prompt.endswith("answer is") else "a b c d e f g h")
    strategy = FirstFinish(n=3, sample=EarlyExit(probe=probe, params=ttc.SamplingParams(max_tokens=40)))
    result = strategy.solve("q", llm)
    assert result.answer == "4"
    assert_usage_is_sum_of_candidates(result)


def test_plain_sample_is_streamed_and_seeds_differ_per_candidate():
    seen = []

    def script(prompt, params, i):
        seen.append(params.seed)
        return "\\boxed{1}"

    strategy = FirstFinish(n=3, sample=ttc.Sample(params=ttc.SamplingParams(max_tokens=20)))
    assert isinstance(strategy.sample, StreamSample)
    strategy.solve("q", Scripted(script), seed=5)
    assert len(set(seen[:3])) == 3


def test_first_finish_rejects_bad_configuration():
    with pytest.raises(ttc.InvalidInput, match="k must be"):
        FirstFinish(n=2, k=3)
    with pytest.raises(ttc.InvalidInput, match="n must be"):
        FirstFinish(n=0)
    with pytest.raises(ttc.InvalidInput, match="Sampler"):
        FirstFinish(n=2, sample="sample")


def test_failures_of_some_candidates_do_not_lose_the_others():
    def script(prompt, params, i):
        return "\\boxed{3}"

    class Flaky(Scripted):
        calls = 0

        async def stream(self, prompt, params):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ttc.GenerationError("server hiccup")
            async for d in super().stream(prompt, params):
                yield d

    result = FirstFinish(n=2).solve("q", Flaky(script))
    assert result.answer == "3"
    assert result.details["failed"] == 1
    assert result.candidates[0].finish_reason == "failed"
    assert_usage_is_sum_of_candidates(result)


@pytest.mark.parametrize("require_answer", [True, False])
def test_a_stream_cut_at_max_tokens_is_not_a_finisher(require_answer):
    # the paper returns the first trace to *complete*: a fast stream cut at max_tokens (whose last
    # number "9" would be read as its answer) used to win; the slower complete trace must
    cut = "quick 1 2 3 4 5 6 7 8 9 " * 10
    llm = paced([cut, MEDIUM], fast="quick", slow_latency=0.02)  # 11 x 20 ms against 20 x 0.5 ms
    result = FirstFinish(n=2, params=ttc.SamplingParams(max_tokens=20),
                         require_answer=require_answer).solve("q", llm)
    assert result.candidates[0].finish_reason == "length"  # it did finish streaming first
    assert result.details["finish_order"][0] == 0
    assert result.details["chosen"] == [1] and result.answer == "3"


def test_when_every_stream_is_cut_the_earliest_with_an_answer_is_used():
    llm = paced(["quick 1 2 3 4 5 6 7 8 9 " * 10, "slow 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4"], fast="quick")
    result = FirstFinish(n=2, params=ttc.SamplingParams(max_tokens=10)).solve("q", llm)
    assert [c.finish_reason for c in result.candidates] == ["length", "length"]
    assert result.details["chosen"] == [0]
