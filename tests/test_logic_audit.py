"""Regression tests for the fidelity audit of 4e644bc (`N1`-`N5` of issue 25), and the rules the
audit found unpinned. Each finding's test fails on 4e644bc (checked when it was written) and uses
the audit's own scripted reproduction where it gave one. Scripted backend only."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ttc
from ttc.backends import Scripted
from ttc.stopping import BetaStop, WindowStop
from ttc.strategies.adaptive_vote import AdaptiveVote


def answer_stream(seq):
    """A scripted backend whose i-th sample (over all requests) answers seq[i]."""
    it = iter(seq)
    return Scripted(lambda prompt, params, i: f"\\boxed{{{next(it)}}}")


# -- N1: ESC answers with the unanimous window's answer -----------------------------------------
ESC_SEQ = ["7", "7", "7", "5"] * 3 + ["5"] * 4  # windows 1-3 split 7/5, window 4 is 5-5-5-5


def test_esc_answers_with_the_unanimous_window_not_the_plurality_of_every_sample():
    # the audit's repro: 9 sevens against 7 fives over 16 samples, but the window that stopped
    # sampling is four fives; ESC's code breaks with that window's predictions only -> 5
    r = AdaptiveVote(max_n=16, batch=4, stop=WindowStop(4)).solve("q", answer_stream(ESC_SEQ), seed=0)
    assert (r.details["samples"], r.details["stop_reason"]) == (16, "decided")
    assert r.answer == "5"
    assert r.details["votes"] == {"5": 4.0}


def test_esc_voters_are_the_first_unanimous_window():
    rule = WindowStop(2)
    assert rule.voters(["1", "2", "3", "3", "4", "4"]) == [2, 3]  # the first one of two
    assert rule.voters(["1", "2", "3", "4"]) == [0, 1, 2, 3]  # undecided: everyone votes
    assert rule.voters(["1", "1", "2"]) == [0, 1]
    assert BetaStop().voters(["7", "7", "5"]) == [0, 1, 2]


def test_esc_window_answer_in_stream_mode_and_in_a_shared_budget():
    streamed = AdaptiveVote(max_n=16, batch=4, stop=WindowStop(4), stream=True).solve(
        "q", answer_stream(ESC_SEQ), seed=0)
    assert streamed.details["stop_reason"] == "decided" and streamed.answer == "5"
    # a vote that the window does not decide is still the plurality of every sample
    undecided = AdaptiveVote(max_n=8, batch=4, stop=WindowStop(4)).solve("q", answer_stream(["7", "7", "7", "5"] * 2))
    assert undecided.details["stop_reason"] == "max_n" and undecided.answer == "7"
    assert undecided.details["votes"] == {"7": 6.0, "5": 2.0}
    shared = ttc.solve_many(AdaptiveVote(max_n=16, batch=4, stop=WindowStop(4)), [ttc.Problem("q")],
                            answer_stream(ESC_SEQ), total_budget=ttc.Budget(tokens=10_000), progress=False)
    assert shared[0].details["stop_reason"] == "decided" and shared[0].answer == "5"


# -- N2: RPC's Weibull fit cannot succeed degenerately ------------------------------------------
N2_PROBS = [0.36429947389959333, 0.9934439249996557, 0.982437793277638, 0.999, 0.928838762620465, 0.9545241486154803,
            0.9572006611444475, 0.999, 0.9463068050403562]


def test_rpc_prunes_what_the_authors_fit_prunes_on_the_audits_degenerate_set():
    from ttc.strategies.rpc import _mixture_nll, fit_weibull_mixture, prune_mask

    # the authors' compute_rpc.py fits [0.8, 40.96, 0.9824, 454.1, 0.3641] here and prunes path 0;
    # a fit of the floored NLL stopped where every density is floored (NLL ~ 6217) and pruned nothing
    assert prune_mask(N2_PROBS) == [True] + [False] * 8
    fit = fit_weibull_mixture(N2_PROBS)
    assert fit is not None
    w, k_high, lam_high, k_low, lam_low = fit
    assert (w, k_high, lam_high, k_low, lam_low) == pytest.approx((0.8, 40.96, 0.9824, 454.1, 0.3641), rel=2e-3)
    nll = _mixture_nll(np.asarray(N2_PROBS), (w, k_high, lam_high, k_low, lam_low))
    assert nll == pytest.approx(-20.893, abs=0.01)  # the authors' optimum, not a floored plateau


def test_a_fit_with_a_zero_density_path_is_not_accepted():
    from ttc.strategies.rpc import _minimise_nll, _mixture_nll

    data = np.asarray(N2_PROBS)
    # the floored plateau the audit found: finite parameters, every density under 1e-300
    plateau = (0.8, 2263.7, 1.902, 201363.0, 0.9976)
    assert _mixture_nll(data, plateau, 1e-300) == pytest.approx(9 * 690.78, rel=1e-3)
    assert _mixture_nll(data, plateau) == math.inf
    # the floored objective alone lands on such a plateau here: that fit is refused, not used
    assert _minimise_nll(data, 1e-300) is None
    assert _minimise_nll(data, 0.0) is not None


# -- N3 and N4: DeepConf-offline's bar ----------------------------------------------------------
def confident_script(texts_and_confs):
    """The i-th sample is texts_and_confs[i]: its text, every token with top-2 logprobs of -conf
    (so its token confidence, and every group confidence, is conf)."""
    from ttc.backends.scripted import _TOKEN, ScriptedResponse

    def script(prompt, params, i):
        text, conf = texts_and_confs[i % len(texts_and_confs)]
        n = len(_TOKEN.findall(text))
        return ScriptedResponse(text, (-conf,) * n, tuple({1: -conf, 2: -conf} for _ in range(n)))

    return Scripted(script)


def test_deepconf_offline_takes_its_percentile_over_the_answered_traces():
    # the audit's repro: four confident traces without an answer (5.0) used to set the bar at the
    # median of all eight, above every answered trace: all weights 0, and the unweighted plurality
    # answered 5. Over the answered traces (3.0, 1.0, 1.1, 0.9) the median is 1.05: 7 (3.0) beats 5 (1.1)
    from ttc.probes import TokenConfidence

    llm = confident_script([("loop loop loop loop", 5.0)] * 4 + [("\\boxed{7}", 3.0), ("\\boxed{5}", 1.0),
                                                                   ("\\boxed{5}", 1.1), ("\\boxed{5}", 0.9)])
    params = ttc.SamplingParams(logprobs=True, top_logprobs=2, max_tokens=4)
    verifier = TokenConfidence(window=2, top_k=2).filter(weighted=True, keep=0.5)
    r = ttc.MajorityVote(n=8, verifier=verifier, sample=ttc.Sample(params=params)).solve("q", llm, seed=0)
    assert r.answer == "7"
    assert r.details["votes"] == pytest.approx({"7": 3.0, "5": 1.1})
    assert r.details.get("vote_fallback") is None


def test_deepconf_offline_without_any_answer_keeps_nothing():
    from ttc.probes import TokenConfidence

    llm = confident_script([("loop loop", 5.0)])
    params = ttc.SamplingParams(logprobs=True, top_logprobs=2, max_tokens=4)
    verifier = TokenConfidence(window=2, top_k=2).filter(weighted=True, keep=0.5)
    r = ttc.MajorityVote(n=3, verifier=verifier, sample=ttc.Sample(params=params)).solve("q", llm, seed=0)
    assert r.answer is None
    assert [c.scores["lowest_group_confidence"] for c in r.candidates] == [5.0] * 3


def test_calibrate_threshold_is_deepconfs_linear_percentile():
    from ttc.probes import calibrate_threshold
    from ttc.strategies.deepconf import percentile_threshold

    scores = [float(s) for s in range(1, 17)]
    assert calibrate_threshold(scores, keep=0.1) == pytest.approx(14.5)  # the audit's: "lower" gave 14.0
    assert sum(s >= calibrate_threshold(scores, keep=0.1) for s in scores) == 2
    rng = np.random.default_rng(0)
    for _ in range(50):
        xs = list(rng.normal(size=int(rng.integers(1, 30))))
        keep = float(rng.uniform(0.01, 1.0))
        assert calibrate_threshold(xs, keep) == pytest.approx(percentile_threshold(xs, keep))
        assert calibrate_threshold(xs, keep) == pytest.approx(np.percentile(xs, (1 - keep) * 100))


# -- N5: AdaptiveBestOfN keeps and bills what a refused self-evaluation leaves -------------------
def yes_script(prompt, params, i):
    """The audit's script: "Yes" (logprob -0.1: P(better) = 0.905) to every self-evaluation."""
    from ttc.backends.scripted import ScriptedResponse
    from ttc.strategies.adaptive_best_of_n import SELF_EVAL

    if SELF_EVAL in prompt:
        return ScriptedResponse("Yes", (-0.1,))
    return "Let me think about it, the answer is 7."


def test_adaptive_best_of_n_keeps_the_samples_whose_self_evaluation_the_budget_refused():
    from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN

    llm = Scripted(yes_script)
    r = AdaptiveBestOfN(max_n=16).solve("q", llm, budget=ttc.Budget(tokens=170, min_candidate_tokens=1))
    drawn = sum(p.n for prompt, p in llm.requests if "started over" not in prompt)
    assert drawn == 3  # rounds of 1 and 2 samples; the second round's self-evaluations were refused
    assert r.details["samples"] == len(r.candidates) == drawn  # 4e644bc: 1 candidate of 3 drawn
    assert r.details["stop"] == "budget"
    assert r.details["p_better"][0] == pytest.approx(math.exp(-0.1)) and None in r.details["p_better"]
    assert r.details["unevaluated"] == sum(p is None for p in r.details["p_better"]) >= 1
    # every billed token belongs to a candidate or a self-evaluation
    assert r.usage.total_tokens == sum(c.usage.total_tokens for c in r.candidates) + r.details["self_eval_tokens"]
    assert r.usage.total_tokens <= 170
    assert r.answer == "7"


def test_adaptive_best_of_n_answers_from_one_sample_when_its_self_evaluation_is_refused():
    from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN

    r = AdaptiveBestOfN(max_n=16).solve("q", Scripted(yes_script), budget=ttc.Budget(tokens=100))
    # 4e644bc raised BudgetExhausted after drawing (and billing) the sample
    assert r.answer == "7" and len(r.candidates) == 1
    assert r.details["p_better"] == [None] and r.details["chosen"] == 0 and r.details["stop"] == "budget"
    assert r.details["self_eval_calls"] == 0
    assert r.usage.total_tokens == r.candidates[0].usage.total_tokens > 0


def test_adaptive_best_of_n_stop_rule_within_a_doubling_batch():
    # rounds of 1, 2, 4: in the third round (samples 3-6) only sample 4 is under the threshold.
    # The whole round is drawn and evaluated (7 samples), it stops, and the answer is sample 4, the
    # lowest P(better) of all. Wrong rules fail: stopping at the first sample under the threshold
    # (5 samples), reading only a round's last score (never stops: 8), or its mean (8), or
    # answering with the round's last sample ("6").
    from test_rpc_adaptive_bon import self_eval_script
    from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN

    p_yes = [0.9, 0.8, 0.7, 0.6, 0.2, 0.9, 0.45, 0.1]
    r = AdaptiveBestOfN(max_n=8, threshold=0.5, batches="doubling").solve("q", Scripted(self_eval_script(p_yes)))
    assert (r.details["samples"], r.details["stop"]) == (7, "confident")
    assert r.details["p_better"] == pytest.approx(p_yes[:7])
    assert r.details["chosen"] == 4 and r.answer == "4"
    # a round whose every score is at least the threshold goes on: 0.5 is not below 0.5
    r = AdaptiveBestOfN(max_n=3, threshold=0.5, batches="doubling").solve(
        "q", Scripted(self_eval_script([0.9, 0.5, 0.5])))
    assert (r.details["samples"], r.details["stop"]) == (3, "max_n")


# -- the Beta rule with three or more distinct answers ------------------------------------------
def test_beta_rule_compares_the_leader_with_the_runner_up_not_with_all_others():
    from ttc.stopping import beta_leader_probability

    # 6 votes for 7 against 1 + 1 for two other answers: the top two are (6, 1), P = 0.965 >= 0.95,
    # so it stops; a rule that pits the leader against all others (6, 2) has P = 0.910 and goes on
    assert beta_leader_probability(6, 1) == pytest.approx(1 - 9 / 256)
    assert beta_leader_probability(6, 2) == pytest.approx(1 - 46 / 512)
    rule = BetaStop(0.95)
    assert rule.should_stop(["5", "3", "7", "7", "7", "7", "7", "7"]) is True
    assert rule.should_stop(["5", "3", "7", "7", "7", "7", "7"]) is False  # (5, 1): 0.9375
    assert rule.should_stop(["5", "3", "9", "7", "7", "7", "7", "7", "7"]) is True  # four answers: still (6, 1)
    assert rule.should_stop(["5", "5", "7", "7", "7", "7", "7", "7"]) is False  # a real (6, 2)
    assert BetaStop.probability([1, 6, 1]) == pytest.approx(beta_leader_probability(6, 1))  # any order
    # end to end, one sample per round: it stops at the 8th sample with the (6, 1) vote
    r = AdaptiveVote(max_n=16, batch=1).solve("q", answer_stream(["5", "3", "7", "7", "7", "7", "7", "7", "1"] * 2))
    assert (r.details["samples"], r.details["stop_reason"], r.answer) == (8, "decided", "7")
    assert r.details["votes"] == {"5": 1.0, "3": 1.0, "7": 6.0}


def test_adaptive_best_of_n_stops_sampling_once_a_self_evaluation_is_refused():
    # a long self-evaluation question: the budget refuses round 2's evaluations while a round of 4
    # samples would still fit. Samples that cannot be evaluated cannot win, so sampling stops there
    # (3 drawn, 2 of them unevaluated); going on would draw 4 more that no evaluation can rank
    from ttc.strategies.adaptive_best_of_n import SELF_EVAL, AdaptiveBestOfN

    question = "Be honest. " * 40 + SELF_EVAL
    for tokens in (400, 480):
        llm = Scripted(yes_script)
        r = AdaptiveBestOfN(max_n=16, question=question).solve(
            "q", llm, budget=ttc.Budget(tokens=tokens, min_candidate_tokens=1))
        drawn = sum(p.n for prompt, p in llm.requests if "started over" not in prompt)
        assert drawn == len(r.candidates) == 3 and r.details["unevaluated"] == 2, tokens
        assert r.details["stop"] == "budget" and r.usage.total_tokens <= tokens


def test_adaptive_best_of_n_raises_a_failed_self_evaluation_that_is_not_the_budget():
    from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN

    strategy = AdaptiveBestOfN(max_n=4)

    async def broken(problem, candidate, ctx):
        raise ttc.InvalidInput("the judge is broken")

    strategy.p_better = broken
    with pytest.raises(ttc.InvalidInput, match="the judge is broken"):
        strategy.solve("q", Scripted(yes_script))
