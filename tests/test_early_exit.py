"""EarlyExit on the scripted backend: each probe's stop rule, exact usage, composition with wrappers."""

import asyncio

import numpy as np
import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.backends.base import HIDDEN_STATES
from ttc.backends.scripted import ScriptedResponse
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, HiddenStateProbe, LinearProbe, TokenConfidence
from ttc.strategies.early_exit import EarlyExit

WORDS = [f"w{i}" for i in range(60)]
TRACE = " ".join(WORDS) + " so the answer is \\boxed{7}"  # 127 tokens
PARAMS = ttc.SamplingParams(max_tokens=400, logprobs=True)


def generated(prompt):
    """The trace generated so far: what follows the scripted chat prompt's assistant tag."""
    return prompt.split("<assistant>\n", 1)[1]


def trace_script(trace, probe_answer=None, suffix=PLAIN_SUFFIX, logprobs=None):
    """Continues `trace` from wherever the prompt is; answers probe suffixes with probe_answer(words so far)."""
    def script(prompt, params, i):
        if prompt.endswith(suffix):
            so_far = generated(prompt)[: -len(suffix)]
            return probe_answer(len(so_far.split()))
        done = generated(prompt)
        rest = trace[len(done):]
        if logprobs is None:
            return rest
        n_done = len(Scripted([""])._ids(done)) if done else 0
        return ScriptedResponse(rest, tuple(logprobs[n_done:]))
    return script


def answers_7_after(words_needed):
    return lambda words: " 7." if words >= words_needed else f" {words}."


def test_answer_consistency_stops_when_probe_answers_agree():
    llm = Scripted(trace_script(TRACE, answers_7_after(20)))
    probe = AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX)
    result = EarlyExit(probe, params=PARAMS).solve("q", llm)
    c = result.candidates[0]
    assert result.answer == "7"
    assert c.finish_reason == "early_exit"
    # probes at 4, 8, ... words answer "4", "8", ... until 20 words, then "7": two 7s in a row at 24 words
    assert c.scores["exit_tokens"] == 48
    assert c.completion.num_tokens == 48 < 127
    assert c.scores["probe_calls"] == 6
    # probe tokens are counted: 6 probe requests, each a generator call with 2 completion tokens
    assert result.usage.generator_calls == 6 + 6
    assert result.usage.completion_tokens == 48 + 6 * 2
    assert c.scores["probe_tokens"] > 0
    assert_usage_is_sum_of_candidates(result)


def test_continuations_are_sent_as_token_ids_of_prompt_plus_trace():
    llm = Scripted(trace_script(TRACE, answers_7_after(20)))
    EarlyExit(AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX), params=PARAMS).solve("q", llm)
    chunks = [(text, p) for text, p in llm.requests if not text.endswith(PLAIN_SUFFIX)]
    assert [p.max_tokens for _, p in chunks] == [8] * 6
    # each continuation's prompt is the previous one plus exactly what was generated
    assert all(b.startswith(a) for (a, _), (b, _) in zip(chunks, chunks[1:], strict=False))
    probes = [p for text, p in llm.requests if text.endswith(PLAIN_SUFFIX)]
    assert all(p.temperature == 0 for p in probes)


def test_a_trace_that_finishes_before_agreement_answers_normally():
    short = "w1 w2 w3 so \\boxed{5}"
    llm = Scripted(trace_script(short, lambda words: f" {words}"))
    result = EarlyExit(AnswerConsistency(every=4, window=3, suffix=PLAIN_SUFFIX), params=PARAMS).solve("q", llm)
    assert result.answer == "5"
    assert result.candidates[0].finish_reason == "stop"
    assert_usage_is_sum_of_candidates(result)


def test_window_one_exits_at_first_probe_and_hedged_answers_do_not_count():
    llm = Scripted(trace_script(TRACE, answers_7_after(0)))
    result = EarlyExit(AnswerConsistency(every=8, window=1, suffix=PLAIN_SUFFIX), params=PARAMS).solve("q", llm)
    assert result.candidates[0].scores["exit_tokens"] == 8
    hedging = Scripted(trace_script(TRACE, lambda w: " 7, wait" if w < 12 else " 7"))
    result = EarlyExit(AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX), params=PARAMS).solve("q", hedging)
    assert result.candidates[0].scores["exit_tokens"] == 32  # 7 only counts from 12 words (24 tokens) on


def test_boxed_suffix_reads_the_boxed_answer():
    from ttc.probes import BOXED_SUFFIX

    llm = Scripted(trace_script(TRACE, lambda w: "42} and more", suffix=BOXED_SUFFIX))
    result = EarlyExit(AnswerConsistency(every=8, window=2), params=PARAMS).solve("q", llm)
    assert result.answer == "42"
    assert result.candidates[0].text.endswith("\\boxed{42}")


def test_stream_mode_stops_the_stream_at_the_check_point():
    llm = Scripted(trace_script(TRACE, answers_7_after(20)))
    probe = AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX)
    result = EarlyExit(probe, params=PARAMS, mode="stream").solve("q", llm)
    c = result.candidates[0]
    assert result.answer == "7"
    assert c.scores["exit_tokens"] == 48
    assert llm.streamed_tokens == 48  # the stream was left at the exit: no further token generated
    assert result.usage.generator_calls == 1 + 6
    assert_usage_is_sum_of_candidates(result)


def dipping_logprobs(n, dip_at, dip_len=6):
    lp = [-0.1] * n
    for i in range(dip_at, min(n, dip_at + dip_len)):
        lp[i] = -5.0
    return lp


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_token_confidence_drops_a_trace_when_window_confidence_dips(mode):
    lp = dipping_logprobs(127, 50)
    llm = Scripted(trace_script(TRACE, logprobs=lp))
    probe = TokenConfidence(window=8, threshold=-1.0, top_k=0, every=16)
    result = EarlyExit(probe, params=PARAMS, mode=mode).solve("q", llm)
    c = result.candidates[0]
    assert c.finish_reason == "dropped"
    assert c.answer is None and result.answer is None
    # window mean of 8 tokens with k dips at -5: -0.1 + k * -4.9 / 8 < -1 from k = 2 dipped tokens, ending at 52
    assert c.scores["exit_tokens"] == 52
    assert c.scores["token_confidence"] < -1.0
    generated_tokens = c.completion.num_tokens
    assert generated_tokens == (64 if mode == "chunks" else 52)  # chunks check every 16 tokens
    assert_usage_is_sum_of_candidates(result)


def test_token_confidence_keeps_a_confident_trace_and_can_exit_with_an_answer():
    llm = Scripted(trace_script(TRACE, logprobs=[-0.1] * 127))
    probe = TokenConfidence(window=8, threshold=-1.0, top_k=0)
    result = EarlyExit(probe, params=PARAMS).solve("q", llm)
    assert result.answer == "7" and result.candidates[0].finish_reason == "stop"

    llm = Scripted(trace_script(TRACE, lambda w: " 9", logprobs=dipping_logprobs(127, 50)))
    probe = TokenConfidence(window=8, threshold=-1.0, top_k=0, action="exit")
    result = EarlyExit(probe, params=PARAMS).solve("q", llm)
    assert result.answer == "9" and result.candidates[0].finish_reason == "early_exit"
    assert result.candidates[0].text.endswith(PLAIN_SUFFIX + " 9")


def test_confidence_filter_drops_low_confidence_traces_before_the_vote():
    confident = ScriptedResponse("sure \\boxed{4}", (-0.1, -0.1, -0.1))
    shaky = ScriptedResponse("hmm \\boxed{5}", (-3.0, -3.0, -3.0))
    llm = Scripted([confident, shaky, shaky, shaky])
    plain = ttc.MajorityVote(n=4).solve("q", llm)
    assert plain.answer == "5"
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0)
    llm = Scripted([confident, shaky, shaky, shaky])
    filtered = ttc.MajorityVote(n=4, verifier=probe.filter(),
                                sample=ttc.Sample(params=ttc.SamplingParams(logprobs=True))).solve("q", llm)
    assert filtered.answer == "4"
    assert filtered.details["votes"] == {"4": 1.0, "5": 0.0}


def test_majority_vote_over_early_exit_candidates():
    def script(prompt, params, i):
        # seeds pick one of two traces: even seeds reach answer 7, odd ones answer 3
        if prompt.endswith(PLAIN_SUFFIX):
            return " 3" if "odd" in prompt else " 7"
        trace = ("even " if params.seed % 2 == 0 else "odd ") + TRACE
        return trace[len(generated(prompt)):]

    llm = Scripted(script)
    strategy = ttc.MajorityVote(n=8, sample=EarlyExit(AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX),
                                                      params=PARAMS))
    result = strategy.solve("q", llm, seed=2)
    assert len(result.candidates) == 8
    assert all(c.finish_reason == "early_exit" for c in result.candidates)
    assert all(c.completion.num_tokens == 16 for c in result.candidates)
    votes = result.details["votes"]
    # each candidate's trace says which answer it reached: the vote must count those
    odd = sum(c.text.startswith("odd") for c in result.candidates)
    assert votes == {"3": float(odd), "7": float(8 - odd)}
    assert odd == 5 and result.answer == "3"  # seed 2 draws five odd seeds: "3" must win
    # seed 1 draws two odd seeds; seeds 0 and 8 tie 4-4: the first-seen answer wins ("7", then "3")
    for seed, want in ((1, "7"), (0, "7"), (8, "3")):
        other = strategy.solve("q", Scripted(script), seed=seed)
        assert other.answer == want, seed
    assert_usage_is_sum_of_candidates(result)
    # same seed, same run
    again = strategy.solve("q", Scripted(script), seed=2)
    assert again.details["votes"] == votes


class HiddenScripted(Scripted):
    """Scripted backend with fake hidden states: feature 0 is 1 once the word 'ready' was seen."""

    capabilities = Scripted.capabilities | {HIDDEN_STATES}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_calls = []

    async def hidden_states(self, token_ids, positions):
        self.hidden_calls.append((len(token_ids), list(positions)))
        words = [self.decode([t]) for t in token_ids]
        return np.array([[1.0 if "ready" in words[: p + 1] else 0.0, float(p)] for p in positions])


def ready_probe():
    return LinearProbe(weights=np.array([10.0, 0.0]), bias=-5.0, mean=np.zeros(2), scale=np.ones(2),
                       threshold=0.5, cues=("wait",), suffix=PLAIN_SUFFIX)


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_hidden_state_probe_exits_at_the_first_confident_cue(mode):
    trace = "a b wait c d wait e ready f wait g h i j k l m n o p q r s t u v \\boxed{1}"
    llm = HiddenScripted(trace_script(trace, lambda w: " 8"))
    probe = HiddenStateProbe(ready_probe(), every=8)
    result = EarlyExit(probe, params=PARAMS, mode=mode).solve("q", llm)
    c = result.candidates[0]
    assert result.answer == "8"
    assert c.finish_reason == "early_exit"
    cue = trace.split(" ").index("wait", 7) * 2  # token position of the third "wait"
    assert c.scores["exit_tokens"] == cue
    assert c.text == "a b wait c d wait e ready f " + PLAIN_SUFFIX + " 8"
    assert c.usage.verifier_calls == len(llm.hidden_calls) >= 1
    assert_usage_is_sum_of_candidates(result)


def test_hidden_state_probe_needs_a_backend_with_hidden_states():
    probe = HiddenStateProbe(ready_probe())
    with pytest.raises(ttc.InvalidInput, match="hidden_states"):
        EarlyExit(probe).solve("q", Scripted(["x"]))


def test_early_exit_respects_the_token_budget():
    llm = Scripted(trace_script(TRACE, lambda w: f" {w}"))
    probe = AnswerConsistency(every=8, window=3, suffix=PLAIN_SUFFIX)
    budget = ttc.Budget(tokens=300, min_candidate_tokens=1)

    async def main():
        ctx = ttc.Context(llm, budget)
        candidate = await EarlyExit(probe, params=PARAMS).candidate(ttc.Problem("q"), ctx)
        return ctx, candidate

    ctx, candidate = asyncio.run(main())
    assert 0 < ctx.usage.total_tokens <= 300
    assert candidate.finish_reason == "length"  # the budget ended the trace; the candidate is kept
    assert candidate.usage.counts() == ctx.usage.counts()
    with pytest.raises(ttc.BudgetExhausted):  # not even the first chunk fits
        EarlyExit(probe, params=PARAMS).solve("q", llm, budget=ttc.Budget(tokens=5))


def test_early_exit_rejects_bad_configuration():
    with pytest.raises(ttc.InvalidInput, match="probe"):
        EarlyExit("consistency")
    with pytest.raises(ttc.InvalidInput, match="mode"):
        EarlyExit(AnswerConsistency(), mode="fast")
    with pytest.raises(ttc.InvalidInput, match="every"):
        AnswerConsistency(every=0)
    with pytest.raises(ttc.InvalidInput, match="action"):
        TokenConfidence(action="stop")


def test_registry_builds_early_exit_and_first_finish():
    from ttc.strategies.registry import make_strategy

    vote = make_strategy("early_exit", n=3, params=PARAMS)
    assert isinstance(vote, ttc.MajorityVote) and isinstance(vote.sample, EarlyExit)
    assert isinstance(make_strategy("early-exit", n=1), EarlyExit)
    from ttc.probes import BOXED_SUFFIX

    llm = Scripted(trace_script(TRACE, lambda w: "7}", suffix=BOXED_SUFFIX))
    assert vote.solve("q", llm).answer == "7"
    ffs = make_strategy("first_finish", n=2, params=PARAMS)
    assert isinstance(ffs, ttc.FirstFinish)
    assert ffs.solve("q", Scripted(["\\boxed{4}"])).answer == "4"


# -- regressions of the fidelity review -------------------------------------------------------
def _probe_replying(suffix, reply):
    def script(prompt, params, i):
        if prompt.endswith(suffix):
            return reply
        return TRACE[len(generated(prompt)):]
    return Scripted(script)


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_boxed_probe_sees_hedging_after_the_box(mode):
    # Dynasor reads the whole probe response: "7} Wait, let me recheck" is a hedged answer and must
    # not count; the boxed probe used to stop at "}" and exit after 16 tokens
    from ttc.probes import BOXED_SUFFIX

    for suffix, reply in ((BOXED_SUFFIX, "7} Wait, let me recheck"), (PLAIN_SUFFIX, " 7. Wait, let me recheck")):
        probe = AnswerConsistency(every=8, window=2, suffix=suffix)
        c = EarlyExit(probe, params=PARAMS, mode=mode).solve("q", _probe_replying(suffix, reply)).candidates[0]
        assert (c.finish_reason, c.scores["exit_tokens"]) == ("stop", len(Scripted([""])._ids(TRACE))), suffix
    # the same reply without the hedge exits, and the text ends with the closed box only
    probe = AnswerConsistency(every=8, window=2, suffix=BOXED_SUFFIX)
    result = EarlyExit(probe, params=PARAMS, mode=mode).solve("q", _probe_replying(BOXED_SUFFIX, "7} so done"))
    assert result.candidates[0].finish_reason == "early_exit" and result.answer == "7"
    assert result.candidates[0].text.endswith("\\boxed{7}")


def test_boxed_probe_reads_up_to_the_first_unpaired_brace():
    from ttc.probes import BOXED_SUFFIX
    from ttc.probes.base import read_answer

    assert read_answer(BOXED_SUFFIX, "\\frac{1}{2}} and so on") == "\\frac{1}{2}"
    probe = AnswerConsistency(every=8, window=2, suffix=BOXED_SUFFIX)
    result = EarlyExit(probe, params=PARAMS).solve("q", _probe_replying(BOXED_SUFFIX, "\\frac{1}{2}} done."))
    assert result.answer == "\\frac{1}{2}"
    assert result.candidates[0].text.endswith("\\boxed{\\frac{1}{2}}")


def _budget_script(prompt, params, i):
    if prompt.endswith(PLAIN_SUFFIX):
        return f" {len(prompt)}"  # never agrees: only the budget stops the trace
    return TRACE[len(generated(prompt)):]


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_the_budget_ends_the_trace_in_both_modes(mode):
    # stream mode used to fail the candidate with BudgetExhausted when a probe no longer fit
    probe = AnswerConsistency(every=8, window=3, suffix=PLAIN_SUFFIX)
    result = EarlyExit(probe, params=ttc.SamplingParams(max_tokens=400), mode=mode).solve(
        "q", Scripted(_budget_script), budget=ttc.Budget(tokens=600, min_candidate_tokens=1))
    c = result.candidates[0]
    assert c.finish_reason == "length"
    assert 0 < result.usage.total_tokens <= 600
    assert_usage_is_sum_of_candidates(result)


def test_a_vote_over_stream_mode_early_exit_survives_the_budget():
    probe = AnswerConsistency(every=8, window=3, suffix=PLAIN_SUFFIX)
    vote = ttc.MajorityVote(n=2, sample=EarlyExit(probe, params=ttc.SamplingParams(max_tokens=400), mode="stream"))
    result = vote.solve("q", Scripted(_budget_script), budget=ttc.Budget(tokens=900, min_candidate_tokens=1))
    assert result.ok and result.usage.total_tokens <= 900
    assert all(c.finish_reason == "length" for c in result.candidates)


def test_top_k_token_confidence_is_refused_in_stream_mode():
    # streams carry no top-k: the probe would silently switch to another scale
    with pytest.raises(ttc.InvalidInput, match="top-5.*chunks"):
        EarlyExit(TokenConfidence(top_k=5), mode="stream")
    EarlyExit(TokenConfidence(top_k=0), mode="stream")  # the sampled token's logprob streams fine


def test_token_confidence_with_top_k_uses_the_top_k_confidence_in_chunk_mode():
    # every token: the sampled token has p = 0.99, but the top-5 mass is spread. DeepConf's token
    # confidence -mean(top-5 logprobs) = 2.0 here; the sampled logprob is -0.01. A threshold of 1.5
    # keeps the trace with the top-k formula and would drop it with any sampled-token formula
    # (and a threshold of 2.5 drops it): the test tells the formulas apart.
    top = {1: -0.01, 2: -2.0, 3: -2.5, 4: -2.7, 5: -2.79}  # mean -2.0
    def script(prompt, params, i):
        if prompt.endswith(PLAIN_SUFFIX):
            return " 7"
        done = generated(prompt)
        n_done = len(Scripted([""])._ids(done)) if done else 0
        rest = TRACE[len(done):]
        n = 127 - n_done
        return ScriptedResponse(rest, tuple([-0.01] * n), tuple([top] * n))
    for threshold, reason in ((1.5, "stop"), (2.5, "dropped")):
        probe = TokenConfidence(window=8, threshold=threshold, top_k=5, every=16)
        c = EarlyExit(probe, params=PARAMS).solve("q", Scripted(script)).candidates[0]
        assert c.finish_reason == reason, threshold
    assert c.scores["token_confidence"] == pytest.approx(2.0)
    assert c.scores["exit_tokens"] == 8


@pytest.mark.parametrize("make", ["first_finish", "early_exit"])
def test_a_seed_in_the_sampling_params_makes_the_run_reproducible(make):
    # without a run seed, SamplingParams(seed=5) used to be replaced by fresh random seeds
    def run():
        seen = []
        def script(prompt, params, i):
            if not prompt.endswith(PLAIN_SUFFIX):
                seen.append(params.seed)
            return "\\boxed{1}"
        params = ttc.SamplingParams(max_tokens=20, seed=5)
        if make == "first_finish":
            ttc.FirstFinish(n=3, params=params).solve("q", Scripted(script))
        else:
            probe = AnswerConsistency(every=8, suffix=PLAIN_SUFFIX)
            ttc.MajorityVote(n=3, sample=EarlyExit(probe, params=params)).solve("q", Scripted(script))
        return seen
    first, second = run(), run()
    assert first == second and None not in first
    assert len(set(first)) == 3  # candidates still differ from each other


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_hidden_state_probe_cuts_before_a_multi_token_cue(mode):
    trace = "a b let me c ready d let me e f g h i j k l m n o p q r s t u v \\boxed{1}"
    llm = HiddenScripted(trace_script(trace, lambda w: " 8"))
    probe = HiddenStateProbe(ready_probe(), cues=("let me",), every=8)
    c = EarlyExit(probe, params=PARAMS, mode=mode).solve("q", llm).candidates[0]
    assert c.finish_reason == "early_exit"
    assert c.text == "a b let me c ready d " + PLAIN_SUFFIX + " 8"  # not "... d let " + suffix
    assert c.scores["exit_tokens"] == trace.split(" ").index("let", 3) * 2
