"""RPC, AdaptiveBestOfN and the ES-CoT probe on hand-computed examples and the scripted backend."""

import math

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.probes import PLAIN_SUFFIX, ESCoT, run_jump, run_lengths
from ttc.strategies.adaptive_best_of_n import SELF_EVAL, AdaptiveBestOfN
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.rpc import ALL_PRUNED_FALLBACK, RPC, prune_mask, rpc_vote

# --------------------------------------------------------------------------------------------- RPC


def test_rpc_weighs_paths_by_their_length_normalised_probability():
    # A: two long confident paths (mean logprob -0.05 over 100 tokens); B: three short shaky ones
    # (mean -0.6 over 2 tokens). Normalised: A = 2 e^-0.05 = 1.902 > B = 3 e^-0.6 = 1.646.
    # The raw product would give A = 2 e^-5 = 0.013 < B = 3 e^-1.2 = 0.904, and a plain count B (3 > 2).
    answers = ["A", "A", "B", "B", "B"]
    sums = [-5.0, -5.0, -1.2, -1.2, -1.2]
    counts = [100, 100, 2, 2, 2]
    texts = ["a1", "a2", "b1", "b2", "b3"]
    answer, info = rpc_vote(answers, sums, counts, texts=texts, prune="none")
    assert answer == "A"
    assert info["votes"]["A"] == pytest.approx(2 * math.exp(-0.05))
    assert info["votes"]["B"] == pytest.approx(3 * math.exp(-0.6))
    assert info["confidence"]["A"] == pytest.approx(2 * math.exp(-0.05) / (2 * math.exp(-0.05) + 3 * math.exp(-0.6)))
    product, _ = rpc_vote(answers, sums, counts, texts=texts, prune="none", normalise=False)
    assert product == "B"


def test_rpc_counts_identical_paths_once():
    # "6" was sampled twice with the same text (p = 0.6): perplexity consistency counts the path once
    answers, texts = ["6", "6", "9"], ["so 6", "so 6", "so 9"]
    sums, counts = [math.log(0.6)] * 2 + [math.log(0.9)], [1, 1, 1]
    assert rpc_vote(answers, sums, counts, texts=texts, prune="none")[0] == "9"  # 0.6 < 0.9
    assert rpc_vote(answers, sums, counts, texts=texts, prune="none", dedup=False)[0] == "6"  # 1.2 > 0.9


def bimodal():
    """12 paths of probability ~0.3 answering 9 (total 3.6) and 4 of ~0.8 answering 4 (total 3.2)."""
    low = [0.3, 0.31, 0.29, 0.3, 0.32, 0.28, 0.3, 0.31, 0.29, 0.3, 0.33, 0.27]
    high = [0.8, 0.82, 0.78, 0.8]
    probs = low + high
    return probs, ["9"] * len(low) + ["4"] * len(high)


def test_reasoning_pruning_drops_the_low_probability_mode_before_the_vote():
    probs, answers = bimodal()
    assert prune_mask(probs) == [True] * 12 + [False] * 4
    sums, counts = [math.log(p) for p in probs], [1] * len(probs)
    texts = [f"path {i}" for i in range(len(probs))]
    # without pruning the many low-probability paths outvote the few likely ones
    assert rpc_vote(answers, sums, counts, texts=texts, prune="none")[0] == "9"
    answer, info = rpc_vote(answers, sums, counts, texts=texts)
    assert answer == "4"
    assert info["pruned"] == list(range(12))
    assert info["votes"] == {"4": pytest.approx(3.2)}  # pruned paths do not vote


def test_pruning_keeps_everything_when_the_probabilities_are_one_mode():
    assert prune_mask([0.5] * 8) == [False] * 8
    assert prune_mask([0.7]) == [False]


def test_rpc_falls_back_to_every_path_when_the_kept_ones_have_no_answer():
    probs, answers = bimodal()
    answers = answers[:12] + [None] * 4  # the likely paths gave no answer
    answers[0] = "5"
    sums, counts = [math.log(p) for p in probs], [1] * len(probs)
    answer, info = rpc_vote(answers, sums, counts, texts=[f"p{i}" for i in range(16)])
    assert info["fallback"] == ALL_PRUNED_FALLBACK
    assert answer == "9"
    assert info["votes"]["9"] == pytest.approx(sum(probs[1:12]))


def test_rpc_vote_refuses_mismatched_inputs():
    with pytest.raises(ttc.InvalidInput):
        rpc_vote(["1", "2"], [-1.0], [1, 1])
    with pytest.raises(ttc.InvalidInput):
        rpc_vote(["1"], [-1.0], [1], prune="median")


def test_rpc_strategy_votes_with_the_samples_own_logprobs():
    # three short shaky samples say 3, one confident sample says 8: a plain vote says 3, RPC says 8
    responses = [ScriptedResponse("It is 3.", (-1.5,) * 4)] * 3 + [ScriptedResponse("It is 8.", (-0.01,) * 4)]
    llm = Scripted(responses)
    result = RPC(n=4, prune="none").solve("q", llm)
    assert [c.answer for c in result.candidates] == ["3", "3", "3", "8"]
    # the three identical "It is 3." paths count once: e^-1.5 = 0.22 < e^-0.01 = 0.99
    assert result.answer == "8"
    assert result.details["votes"]["3"] == pytest.approx(math.exp(-1.5))
    assert ttc.MajorityVote(n=4).solve("q", Scripted(responses)).answer == "3"
    assert_usage_is_sum_of_candidates(result)


class NoLogprobs(Scripted):
    async def generate(self, prompt, params):
        generation = await super().generate(prompt, params)
        for c in generation.completions:
            object.__setattr__(c, "logprobs", None)
        return generation


def test_rpc_refuses_a_backend_without_logprobs():
    with pytest.raises(ttc.Unsupported, match="logprobs"):
        RPC(n=2).solve("q", NoLogprobs(["It is 3."]))


def test_rpc_asks_a_given_sampler_for_logprobs_without_changing_it():
    sample = ttc.Sample(params=ttc.SamplingParams(max_tokens=32))  # logprobs unspecified
    strategy = RPC(n=2, sample=sample)
    assert strategy.sample.params.logprobs is True and sample.params.logprobs is None
    # an explicit logprobs=False refuses what RPC needs: an error at construction, naming both
    # (it used to be overridden silently)
    with pytest.raises(ttc.InvalidInput, match=r"RPC needs token logprobs.*logprobs=False"):
        RPC(n=2, sample=ttc.Sample(params=ttc.SamplingParams(logprobs=False)))


def test_registry_builds_rpc_and_adaptive_best_of_n():
    from ttc.strategies.registry import make_strategy

    assert isinstance(make_strategy("rpc", n=4), RPC)
    adaptive = make_strategy("adaptive_best_of_n", n=8)
    assert isinstance(adaptive, AdaptiveBestOfN) and adaptive.max_n == 8

# ------------------------------------------------------------------------------- AdaptiveBestOfN


def self_eval_script(p_yes_by_sample):
    """Samples say "It is <i>." (i = 0, 1, ...); the self-evaluation of sample i answers Yes with
    probability p_yes_by_sample[i] (the sampled token's logprob, no top logprobs)."""
    counter = iter(range(1000))

    def script(prompt, params, i):
        if prompt.rstrip().endswith("<assistant>") and SELF_EVAL in prompt:
            k = int(prompt.split("It is ")[-1].split(".")[0])
            return ScriptedResponse("Yes", (math.log(p_yes_by_sample[k]),))
        return f"It is {next(counter)}."
    return script


@pytest.mark.parametrize("batches", ["single", "doubling"])
def test_adaptive_best_of_n_stops_when_the_yes_probability_drops_below_the_threshold(batches):
    p_yes = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05]
    llm = Scripted(self_eval_script(p_yes))
    result = AdaptiveBestOfN(max_n=8, threshold=0.5, batches=batches).solve("q", llm)
    # one at a time: samples 0..3, the 4th (P(yes) = 0.4) is the first below 0.5
    # doubling: rounds of 1, 2, 4 samples: the third round (samples 3..6) contains it
    want = 4 if batches == "single" else 7
    assert result.details["samples"] == len(result.candidates) == want
    assert result.details["stop"] == "confident"
    assert result.details["p_better"] == pytest.approx(p_yes[:want])
    chosen = want - 1  # the lowest P(better)
    assert result.details["chosen"] == chosen and result.answer == str(chosen)
    # self-evaluation calls are generator calls, counted in the usage
    assert result.details["self_eval_calls"] == want
    rounds = want if batches == "single" else 3
    assert result.usage.generator_calls == rounds + want
    sample_tokens = sum(c.usage.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == sample_tokens + want  # one token per self-evaluation
    assert result.usage.total_tokens == sum(c.usage.total_tokens for c in result.candidates) \
        + result.details["self_eval_tokens"]


def test_adaptive_best_of_n_uses_max_n_when_the_model_always_expects_better():
    llm = Scripted(self_eval_script([0.9] * 8))
    result = AdaptiveBestOfN(max_n=5, threshold=0.5, batches="doubling").solve("q", llm)
    assert result.details["stop"] == "max_n" and result.details["samples"] == 5  # rounds of 1, 2, then 2
    assert result.answer == "0"  # every score ties: the first sample


def test_adaptive_best_of_n_reads_top_logprobs_yes_and_no():
    # with top logprobs the score is P(Yes) / (P(Yes) + P(No)) over Yes-like and No-like tokens
    probe = Scripted([""])
    yes, no, other = probe._ids("Yes")[0], probe._ids(" No")[-1], probe._ids("Maybe")[0]
    top = {yes: math.log(0.2), no: math.log(0.6), other: math.log(0.2)}

    def script(prompt, params, i):
        if SELF_EVAL in prompt:
            return ScriptedResponse("No", (math.log(0.6),), ({**top},))
        return "It is 5."
    llm = Scripted(script)
    llm._ids("Yes"), llm._ids(" No"), llm._ids("Maybe")  # same vocabulary ids as `probe`
    result = AdaptiveBestOfN(max_n=4, threshold=0.5).solve("q", llm)
    assert result.details["p_better"] == [pytest.approx(0.25)]
    assert result.details["samples"] == 1


def test_adaptive_best_of_n_rejects_bad_configuration():
    with pytest.raises(ttc.InvalidInput):
        AdaptiveBestOfN(threshold=1.5)
    with pytest.raises(ttc.InvalidInput):
        AdaptiveBestOfN(batches="tripling")
    with pytest.raises(ttc.InvalidInput):
        AdaptiveBestOfN(max_n=0)

# --------------------------------------------------------------------------------------- ES-CoT


def test_run_lengths_count_consecutive_equal_step_answers():
    assert run_lengths(["1", "2", "2", "3", "3", "3"]) == [1, 2, 3]
    assert run_lengths([None, None, "4", "4.0"]) == [1, 1, 2]  # None never repeats; 4 == 4.0
    assert run_lengths([]) == []


@pytest.mark.parametrize("steps, stop_at", [
    # answers change at every step (runs of 1: q = 0), then settle: stop when the run reaches min_run = 3
    (["1", "2", "3", "7", "7", "7", "7"], 6),
    # earlier runs 1, 1, 2 (q = 1/4): P(run >= L) = 0.25^(L-1) < 0.05 first at L = 4 (0.0156; L = 3: 0.0625)
    (["1", "2", "5", "5", "7", "7", "7", "7", "7"], 8),
    # earlier runs 2, 2, 2 (q = 1/2, none reaching min_run): 0.5^(L-1) < 0.05 first at L = 6 (L = 5: 0.0625)
    (["5", "5", "6", "6", "8", "8"] + ["7"] * 8, 6 + 6),
    # the same answer from the first step: a first run stops at min_run
    (["7"] * 6, 3),
])
def test_run_jump_stops_exactly_at_the_jump(steps, stop_at):
    stops = [run_jump(steps[:k], min_run=3, alpha=0.05)[0] for k in range(1, len(steps) + 1)]
    assert stops.index(True) + 1 == stop_at


def test_run_jump_never_stops_on_a_missing_answer_or_below_min_run():
    assert run_jump(["1", "2", None]) == (False, 1.0)
    assert not run_jump(["1", "2", "7", "7"], min_run=3)[0]


TRACE = " ".join(f"w{i}" for i in range(60)) + " so the answer is 7."
PARAMS = ttc.SamplingParams(max_tokens=400, logprobs=True)


def es_cot_script(step_answer):
    """Continues TRACE; answers the step-answer suffix with step_answer(words generated so far)."""
    def script(prompt, params, i):
        done = prompt.split("<assistant>\n", 1)[1]
        if done.endswith(PLAIN_SUFFIX):
            return step_answer(len(done[: -len(PLAIN_SUFFIX)].split()))
        return TRACE[len(done):]
    return script


def test_es_cot_exits_early_exit_at_the_run_jump():
    # steps of 8 tokens = 4 words; step answers 4, 8, 12 (changing), then 7 from 16 words on:
    # runs 1, 1, 1 and then 7 at steps 4, 5, 6: the run reaches 3 at step 6 = 48 tokens
    llm = Scripted(es_cot_script(lambda words: " 7." if words >= 16 else f" {words}."))
    result = EarlyExit(ESCoT(every=8, min_run=3, suffix=PLAIN_SUFFIX), params=PARAMS).solve("q", llm)
    c = result.candidates[0]
    assert result.answer == "7" and c.finish_reason == "early_exit"
    assert c.scores["exit_tokens"] == 48 and c.scores["probe_calls"] == 6
    assert c.scores["es_cot"] == 3.0
    assert_usage_is_sum_of_candidates(result)


def test_es_cot_composes_with_a_vote():
    llm = Scripted(es_cot_script(lambda words: " 7."))
    strategy = ttc.MajorityVote(n=3, sample=EarlyExit(ESCoT(every=8, min_run=2, suffix=PLAIN_SUFFIX),
                                                      params=PARAMS))
    result = strategy.solve("q", llm, seed=0)
    assert result.answer == "7"
    assert all(c.scores["exit_tokens"] == 16 for c in result.candidates)  # the run reaches 2 at step 2
    assert_usage_is_sum_of_candidates(result)


def test_es_cot_rejects_bad_configuration():
    for bad in ({"every": 0}, {"min_run": 0}, {"alpha": 0.0}, {"suffix": ""}):
        with pytest.raises(ttc.InvalidInput):
            ESCoT(**bad)
