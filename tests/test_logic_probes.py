"""The probes' stop rules, called directly on a partial trace: when each probe says continue,
exit or drop, at which token, with which score; DeepConf's confidence and threshold arithmetic;
split-conformal thresholds. Scripted backend (for probe requests) and fixed numbers only."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from ttc.backends import Scripted
from ttc.backends.base import HIDDEN_STATES
from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, HiddenStateProbe, LinearProbe, TokenConfidence
from ttc.probes.base import BOXED_SUFFIX, Decision, TraceState, read_answer
from ttc.probes.confidence import calibrate_threshold, group_confidences, lowest_group_confidence, token_confidences
from ttc.probes.conformal import conformal_threshold, premature_exit_rate
from ttc.types import Candidate, Completion, Problem


def run(coro):
    return asyncio.run(coro)


def state_of(llm: Scripted, text: str, **kwargs) -> TraceState:
    ids = run(llm.tokenize(text))
    return TraceState(problem=Problem("q"), prompt_ids=run(llm.tokenize("<user>\nq\n<assistant>\n")), token_ids=ids,
                      text=text, **kwargs)


# -- answer consistency (Dynasor) ---------------------------------------------------------------
def consistency_decisions(probe_answers, window=2, min_tokens=0, trace="a b c d e f g h"):
    """Check the probe once per scripted probe answer; returns the decisions and the requests made."""
    llm = Scripted(list(probe_answers))
    ctx = Context(llm)
    probe = AnswerConsistency(every=4, window=window, suffix=PLAIN_SUFFIX, min_tokens=min_tokens)
    state = state_of(llm, trace)
    probe.reset(state)
    return [run(probe.check(state, ctx)) for _ in probe_answers], llm


def test_answer_consistency_exits_when_the_last_window_answers_agree():
    decisions, _ = consistency_decisions([" 5.", " 7.", " 7."])
    assert [d.action for d in decisions] == ["continue", "continue", "exit"]
    assert [d.score for d in decisions] == [1.0, 1.0, 2.0]
    assert decisions[-1].answer == "7" and decisions[-1].appended == PLAIN_SUFFIX + " 7."
    decisions, _ = consistency_decisions([" 7.", " 7.", " 7.", " 7."], window=3)
    assert [d.action for d in decisions] == ["continue", "continue", "exit", "exit"]
    assert [d.score for d in decisions] == [1.0, 2.0, 3.0, 4.0]


def test_answer_consistency_compares_answers_by_equivalence_and_skips_non_answers():
    decisions, _ = consistency_decisions([" 1,000", " \\boxed{1000.0}"])
    assert [d.action for d in decisions] == ["continue", "exit"]
    decisions, _ = consistency_decisions([" 7", " ", " 7", " 7"])
    assert [d.action for d in decisions] == ["continue", "continue", "continue", "exit"]
    assert [d.score for d in decisions] == [1.0, 0.0, 1.0, 2.0]
    decisions, _ = consistency_decisions([" 7", " 8", " 7"])
    assert [d.score for d in decisions] == [1.0, 1.0, 1.0]


def test_hedged_probe_answers_do_not_count():
    decisions, _ = consistency_decisions([" 7", " hmm, 7", " 7", " maybe 7", " 7", " 7"])
    assert [d.action for d in decisions] == ["continue"] * 5 + ["exit"]
    # "wait" only as a word: "waiting" is not a hedge
    decisions, _ = consistency_decisions([" 7 (waiting)", " 7"])
    assert [d.action for d in decisions] == ["continue", "exit"]


def test_answer_consistency_does_not_probe_before_min_tokens():
    decisions, llm = consistency_decisions([" 7", " 7"], min_tokens=100)
    assert [d.action for d in decisions] == ["continue", "continue"]
    assert llm.requests == []
    decisions, llm = consistency_decisions([" 7", " 7"], min_tokens=15, trace="a b c d e f g h")  # 15 tokens
    assert [d.action for d in decisions] == ["continue", "exit"] and len(llm.requests) == 2


def test_read_answer():
    assert read_answer(BOXED_SUFFIX, "7} and more }") == "7"
    assert read_answer(BOXED_SUFFIX, " $\\frac{1}{2}$. ") == "\\frac{1}{2}"  # nested braces kept
    assert read_answer(BOXED_SUFFIX, " 12.}") == "12"
    assert read_answer(BOXED_SUFFIX, "  }") is None
    assert read_answer(PLAIN_SUFFIX, " 42.") == "42"
    assert read_answer(PLAIN_SUFFIX, "   ") is None
    assert read_answer(PLAIN_SUFFIX, "") is None


# -- token confidence (DeepConf) ----------------------------------------------------------------
def confidence_state(logprobs, top=None):
    return TraceState(problem=Problem("q"), prompt_ids=[0], token_ids=list(range(len(logprobs))),
                      logprobs=list(logprobs), top_logprobs=top)


def test_token_confidence_stops_at_the_first_window_under_the_threshold():
    probe = TokenConfidence(window=4, threshold=-1.0, top_k=0)
    lp = [-0.1] * 8 + [-3.0] * 4
    # windows ending at 4..8 have mean -0.1; at 9: -0.825; at 10: -1.55 < -1: stop there
    d = run(probe.check(confidence_state(lp), None))
    assert (d.action, d.at) == ("drop", 10) and d.score == pytest.approx(-1.55)
    d = run(TokenConfidence(window=4, threshold=-1.0, top_k=0, action="exit").check(confidence_state(lp), None))
    assert (d.action, d.at) == ("exit", 10)
    # the lowest window so far is reported while going on; equality does not stop
    d = run(TokenConfidence(window=4, threshold=-0.825, top_k=0).check(confidence_state(lp[:9]), None))
    assert d.action == "continue" and d.score == pytest.approx(-0.825)
    d = run(TokenConfidence(window=4, threshold=-0.8, top_k=0).check(confidence_state(lp[:9]), None))
    assert (d.action, d.at) == ("drop", 9)


def test_token_confidence_waits_for_min_tokens_and_scans_each_window_once():
    probe = TokenConfidence(window=4, threshold=-1.0, top_k=0)
    d = run(probe.check(confidence_state([-5.0] * 3), None))
    assert d.action == "continue" and d.score is None  # fewer tokens than one window
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0, min_tokens=5)
    d = run(probe.check(confidence_state([-5.0] * 4), None))
    assert d.action == "continue" and d.score is None
    d = run(probe.check(confidence_state([-5.0] * 5), None))
    assert (d.action, d.at) == ("drop", 5)
    # windows already scanned are not scanned again: a dip in them was reported then
    state = confidence_state([-0.1] * 6 + [-5.0, -5.0])
    state.scanned = 8
    d = run(TokenConfidence(window=2, threshold=-1.0, top_k=0).check(state, None))
    assert (d.action, d.at) == ("drop", 8)
    state = confidence_state([-0.1] * 4 + [-5.0, -5.0] + [-0.1] * 4)
    state.scanned = 7
    d = run(TokenConfidence(window=2, threshold=-1.0, top_k=0).check(state, None))
    assert (d.action, d.at) == ("drop", 7) and d.score == pytest.approx(-2.55)
    assert state.scanned == 10


def test_token_confidence_with_top_k_uses_minus_the_mean_top_logprob():
    top = [{1: -0.1, 2: -2.0, 3: -3.0}] * 3 + [{1: -0.01, 2: -0.02, 3: -0.03}] * 3
    conf = token_confidences([-0.1] * 6, top)
    assert conf.tolist() == pytest.approx([5.1 / 3] * 3 + [0.02] * 3)
    probe = TokenConfidence(window=2, threshold=1.0, top_k=3)
    d = run(probe.check(confidence_state([-0.1] * 6, top), None))
    # windows: 1.7, 1.7, (1.7 + 0.02) / 2 = 0.86 < 1 at the 4th token
    assert (d.action, d.at) == ("drop", 4) and d.score == pytest.approx(0.86)
    assert token_confidences([-0.5], [{}]).tolist() == [0.0]
    assert token_confidences([-0.5, -0.25], None).tolist() == [-0.5, -0.25]
    assert token_confidences([-0.5], [{1: -3.0}], mode="logprob").tolist() == [-0.5]
    with pytest.raises(InvalidInput):
        token_confidences(None, None)


def test_group_and_lowest_group_confidence():
    conf = np.array([1.0, 2.0, 6.0, 0.0, 4.0])
    assert group_confidences(conf, 2).tolist() == [1.5, 4.0, 3.0, 2.0]
    assert group_confidences(conf, 5).tolist() == [2.6]
    assert group_confidences(conf, 9).tolist() == [2.6]
    assert group_confidences(np.array([]), 3).tolist() == []
    c = Completion(text="x", token_ids=(1, 2, 3, 4, 5), finish_reason="stop", logprobs=(-1.0, -2.0, -6.0, 0.0, -4.0))
    assert lowest_group_confidence(c, 2, mode="logprob") == -4.0
    assert lowest_group_confidence(c, 3, mode="logprob") == pytest.approx(-10 / 3)
    assert (
        lowest_group_confidence(Completion(text="", token_ids=(), finish_reason="stop", logprobs=()), 2, "logprob")
        == -math.inf
    )


def test_deepconf_threshold_is_the_linear_percentile_of_finite_warmup_scores():
    # issue 25 (N4): np.percentile's linear interpolation, as DeepConf's code (was the lower quantile)
    scores = [float(s) for s in range(1, 11)]  # 1..10
    assert calibrate_threshold(scores, keep=0.9) == pytest.approx(1.9)  # keeps 90%: the 10th percentile
    assert calibrate_threshold(scores, keep=0.1) == pytest.approx(9.1)
    assert calibrate_threshold(scores, keep=0.5) == pytest.approx(5.5)
    assert calibrate_threshold(scores, keep=1.0) == 1.0
    assert calibrate_threshold([-math.inf, 3.0, math.nan, 5.0], keep=0.5) == 4.0
    for keep in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidInput):
            calibrate_threshold(scores, keep=keep)
    with pytest.raises(InvalidInput):
        calibrate_threshold([-math.inf], keep=0.5)


def test_confidence_filter_keeps_traces_whose_lowest_window_reaches_the_threshold():
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0)

    def cand(lps):
        return Candidate(
            text="t",
            answer="1",
            completion=Completion(
                text="t", token_ids=tuple(range(len(lps))), finish_reason="stop", logprobs=tuple(lps)
            ),
        )

    cs = [cand([-0.5, -0.5, -0.5]), cand([-0.5, -1.5, -0.5]), cand([-0.5, -2.0, -2.0]), cand([-0.2, -0.4])]
    assert run(probe.filter().score(Problem("q"), cs, None)) == [1.0, 1.0, 0.0, 1.0]  # -1.0 is kept
    assert cs[2].scores["lowest_group_confidence"] == -2.0
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0)
    assert run(probe.filter(weighted=True).score(Problem("q"), cs, None)) == [0.0, 0.0, 0.0, 0.0]  # max(conf, 0)
    top = TokenConfidence(window=1, threshold=1.0, top_k=1)
    c = Candidate(
        text="t",
        answer="1",
        completion=Completion(
            text="t", token_ids=(1, 2), finish_reason="stop", logprobs=(-0.1, -0.1), top_logprobs=({1: -2.0}, {1: -3.0})
        ),
    )
    assert run(top.filter(weighted=True).score(Problem("q"), [c], None)) == [2.0]
    assert run(top.filter().score(Problem("q"), [c], None)) == [1.0]


# -- split conformal ----------------------------------------------------------------------------
def test_conformal_threshold_is_the_ceil_n_plus_1_times_1_minus_alpha_th_score():
    scores = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]  # n = 9
    assert conformal_threshold(scores, 0.1) == 0.9  # ceil(10 x 0.9) = 9th smallest
    assert conformal_threshold(scores, 0.2) == 0.8  # ceil(8) = 8th
    assert conformal_threshold(scores, 0.25) == 0.8  # ceil(7.5) = 8th
    assert conformal_threshold(scores, 0.5) == 0.5  # ceil(5) = 5th
    assert conformal_threshold(scores[:8], 0.1) == math.inf  # ceil(9 x 0.9) = 9 > 8
    assert conformal_threshold([], 0.5) == math.inf
    assert conformal_threshold([0.3], 0.5) == 0.3  # n = 1: ceil(2 x 0.5) = 1st
    assert conformal_threshold([0.3], 0.4) == math.inf  # ceil(1.2) = 2 > 1
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(InvalidInput):
            conformal_threshold(scores, alpha)


def test_premature_exit_rate_counts_label_0_scores_strictly_above_tau():
    scores = [0.1, 0.5, 0.9, 0.5, 0.7, 0.95]
    labels = [0, 0, 0, 0, 1, 1]
    assert premature_exit_rate(scores, labels, 0.5) == 0.25
    assert premature_exit_rate(scores, labels, 0.05) == 1.0
    assert premature_exit_rate(scores, labels, 0.95) == 0.0
    assert math.isnan(premature_exit_rate([0.3], [1], 0.5))


# -- hidden-state probe (LYNX) ------------------------------------------------------------------
class Hidden(Scripted):
    """Fake hidden states: feature 0 is the number in the word at each position (0 for others)."""

    capabilities = Scripted.capabilities | {HIDDEN_STATES}

    async def hidden_states(self, token_ids, positions):
        words = [self.decode([t]) for t in token_ids]
        out = []
        for p in positions:
            before = [w for w in words[max(0, p - 2): p] if w.strip().isdigit()]
            out.append([float(before[-1]) if before else 0.0])
        return np.array(out)


def identity_probe(threshold):
    # p = sigmoid(h) for 1-d h: a word "k" before a cue gives p = sigmoid(k)
    return LinearProbe(weights=np.array([1.0]), bias=0.0, mean=np.zeros(1), scale=np.ones(1), threshold=threshold,
                       cues=("wait",), suffix=PLAIN_SUFFIX)


def hidden_check(text, threshold, min_tokens=0, scanned=0):
    llm = Hidden(["x"])
    ctx = Context(llm)
    state = state_of(llm, text)
    state.scanned = scanned
    probe = HiddenStateProbe(identity_probe(threshold), min_tokens=min_tokens)
    return run(probe.check(state, ctx)), state, llm


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_hidden_state_probe_exits_at_the_first_cue_over_the_threshold():
    text = "a 1 wait b 3 wait c 2 wait"  # cues at tokens 4, 10, 16 after 1, 3, 2
    d, state, _ = hidden_check(text, threshold=sigmoid(2.5))
    assert (d.action, d.at) == ("exit", 10) and d.score == pytest.approx(sigmoid(3))
    assert state.scanned == len(state.token_ids)
    d, _, _ = hidden_check(text, threshold=sigmoid(0.5))
    assert (d.action, d.at) == ("exit", 4)
    d, _, _ = hidden_check(text, threshold=sigmoid(3.0))  # equal is not over
    assert d.action == "continue" and d.score == pytest.approx(sigmoid(3.0))
    d, _, _ = hidden_check(text, threshold=sigmoid(0.5), min_tokens=5)
    assert (d.action, d.at) == ("exit", 10)
    d, _, _ = hidden_check(text, threshold=sigmoid(0.5), scanned=11)
    assert (d.action, d.at) == ("exit", 16)
    d, _, llm = hidden_check("a b c", threshold=0.1)
    assert d == Decision("continue")
    d, _, _ = hidden_check("wait a 5 wait", threshold=0.1)  # a cue at token 0 cannot be cut before
    assert d.at == 6


def test_hidden_state_probe_charges_one_verifier_call_per_check_with_cues():
    llm = Hidden(["x"])
    ctx = Context(llm)
    state = state_of(llm, "a 1 wait b 3 wait")
    run(HiddenStateProbe(identity_probe(0.999)).check(state, ctx))
    assert ctx.usage.verifier_calls == 1 == state.usage.verifier_calls
    assert state.usage.verifier_tokens == len(state.prompt_ids) + len(state.token_ids)


def test_conformal_threshold_gives_the_promised_rate_on_new_points():
    # n = 14 calibration scores, alpha = 0.1: tau is the 14th smallest (ceil(15 x 0.9)), so a new
    # exchangeable score exceeds it with probability exactly 1/15 = 0.067 (<= alpha). 3000
    # repetitions with a fresh calibration set and 10 fresh points each: a repetition's rate has
    # variance Var(1 - tau) + E[p (1 - p)] / 10 = 0.0039 + 0.0058 (1 - tau ~ Beta(1, 14)), so the
    # mean has sd 0.0018 and the bound 0.023 is over 12 sd: false-failure probability < 1e-30.
    # The naive ceil(n (1 - alpha))-th score (13th) gives 2/15 = 0.133, and the 15th (never) 0.
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(3000):
        tau = conformal_threshold(rng.random(14), 0.1)
        new = rng.random(10)
        rates.append(premature_exit_rate(new, np.zeros(10, dtype=int), tau))
    assert abs(float(np.mean(rates)) - 1 / 15) < 0.023


def test_hedges_right_after_the_suffix_count_and_windows_shorter_than_min_tokens():
    # a probe answer starting with the hedge word itself (no space after the suffix) is hedged
    decisions, _ = consistency_decisions(["maybe 7", "hmm 7", " 7", " 7"])
    assert [d.action for d in decisions] == ["continue", "continue", "continue", "exit"]
    assert [d.score for d in decisions] == [0.0, 0.0, 1.0, 2.0]
    # with min_tokens under the window, a trace shorter than the window is one group: its mean
    probe = TokenConfidence(window=4, threshold=-1.0, top_k=0, min_tokens=2)
    d = run(probe.check(confidence_state([-0.1, -3.0, -3.0]), None))
    assert (d.action, d.at) == ("drop", 3) and d.score == pytest.approx(-6.1 / 3)


def test_confidence_filter_needs_completions_with_logprobs():
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0)
    with pytest.raises(InvalidInput):
        run(probe.filter().score(Problem("q"), [Candidate(text="t", answer="1")], None))
    bare = Candidate(text="t", answer="1", completion=Completion(text="t", token_ids=(1, 2), finish_reason="stop"))
    with pytest.raises(InvalidInput):
        run(probe.filter().score(Problem("q"), [bare], None))


def test_hidden_state_probe_boundaries_and_memory():
    exact = float(identity_probe(0.0).predict_proba(np.array([[3.0]]))[0])
    text = "a 1 wait b 3 wait c 2 wait"
    d, state, _ = hidden_check(text, threshold=exact)  # p == threshold is not over it
    assert d.action == "continue" and d.score == exact
    assert [pos for pos, _ in state.memory["hidden_state"]] == [4, 10, 16]
    d, _, _ = hidden_check(text, threshold=sigmoid(0.5), min_tokens=4)  # a cue at min_tokens counts
    assert (d.action, d.at) == ("exit", 4)
    d, _, _ = hidden_check(" wait a", threshold=0.1)  # a cue at token 1 can be cut before
    assert (d.action, d.at) == ("exit", 1)
