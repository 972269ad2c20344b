"""Regression tests for the fidelity audit of 4e644bc (`N1`-`N5` of issue 25), and the rules the
audit found unpinned. Each finding's test fails on 4e644bc (checked when it was written) and uses
the audit's own scripted reproduction where it gave one. Scripted backend only."""

from __future__ import annotations

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
