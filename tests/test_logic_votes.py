"""Which answer a vote, a best-of-N or a FirstFinish returns: known-answer cases where a flipped
choice, a dropped weight or a reversed order gives another answer, and a statistical test of
soft best-of-N on the answers it returns. Scripted backend only."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

import ttc
from ttc.backends import Scripted
from ttc.strategies.best_of_n import softmax
from ttc.strategies.first_finish import FirstFinish
from ttc.verifiers import Programmatic


def boxed(*answers):
    return Scripted([f"so \\boxed{{{a}}}" if a is not None else "no idea" for a in answers])


def by_answer(table, default=0.0):
    return Programmatic(lambda p, c: table.get(c.answer, default), name="table")


# -- majority and weighted votes ----------------------------------------------------------------
def test_majority_vote_counts_equivalent_answers_together():
    result = ttc.MajorityVote(n=5).solve("q", boxed("3", "0.5", "\\frac{1}{2}", "3", "1/2"))
    assert result.answer == "0.5"  # three votes for one half (first form seen), two for 3
    assert result.details["votes"] == {"3": 2.0, "0.5": 3.0}


def test_majority_vote_ties_go_to_the_answer_seen_first_and_none_does_not_vote():
    assert ttc.MajorityVote(n=4).solve("q", boxed("2", "1", "1", "2")).answer == "2"
    assert ttc.MajorityVote(n=4).solve("q", boxed("1", "2", "2", "1")).answer == "1"
    result = ttc.MajorityVote(n=5).solve("q", boxed(None, None, None, "4", "5"))
    assert result.answer == "4" and result.details["votes"] == {"4": 1.0, "5": 1.0}
    assert ttc.MajorityVote(n=2).solve("q", boxed(None, None)).answer is None


def test_weighted_vote_sums_the_verifier_scores_of_each_answer():
    llm = boxed("1", "2", "2", "3")
    result = ttc.MajorityVote(n=4, verifier=by_answer({"1": 0.9, "2": 0.3, "3": 0.5})).solve("q", llm)
    assert result.answer == "1"  # 0.9 > 0.6 > 0.5, though "2" has most samples
    assert result.details["votes"] == pytest.approx({"1": 0.9, "2": 0.6, "3": 0.5})
    result = ttc.MajorityVote(n=4, verifier=by_answer({"1": 0.5, "2": 0.3, "3": 0.55})).solve("q", llm)
    assert result.answer == "2"  # 0.6 > 0.55 > 0.5


# -- best-of-N ------------------------------------------------------------------------------------
def test_best_of_n_returns_the_highest_score_and_the_first_of_equals():
    llm = boxed("1", "2", "3", "4")
    assert ttc.BestOfN(n=4, verifier=by_answer({"3": 0.9, "2": 0.8})).solve("q", llm).answer == "3"
    result = ttc.BestOfN(n=4, verifier=by_answer({"2": 0.7, "4": 0.7})).solve("q", llm)
    assert result.answer == "2" and result.details["chosen"] == 1
    assert ttc.BestOfN(n=4, verifier=by_answer({"1": -2.0, "4": -1.0}, default=-5.0)).solve("q", llm).answer == "4"


def test_soft_best_of_n_probabilities():
    assert softmax([0.1, 0.5, 0.9], 0.25) == pytest.approx([math.exp(0.4 * k) / sum(math.exp(0.4 * j)
                                                                                    for j in (1, 5, 9))
                                                            for k in (1, 5, 9)])
    assert softmax([1.0, -math.inf], 1.0) == [1.0, 0.0]
    assert softmax([-math.inf, -math.inf], 1.0) == [0.5, 0.5]
    assert softmax([800.0, 800.0 + math.log(4.0)], 1.0) == pytest.approx([0.2, 0.8])
    assert softmax([0.0, 1000.0], 1.0) == pytest.approx([0.0, 1.0])  # shifted by the max: no overflow


def test_soft_best_of_n_returns_answers_in_proportion_to_exp_score_over_temperature():
    # scores 0.1, 0.5, 0.9 at temperature 0.25: P = (0.033, 0.164, 0.803). 600 seeded runs;
    # chi-square with 2 degrees of freedom under 13.82 (p = 0.001): false-failure probability
    # 1e-3. Wrong rules are far outside: raw scores (0.067, 0.333, 0.6),
    # exp(score x T) (nearly uniform), the max (always "3"), uniform; each has chi2 > 100 here.
    scores = {"1": 0.1, "2": 0.5, "3": 0.9}
    strategy = ttc.BestOfN(n=3, verifier=by_answer(scores), selection="softmax", temperature=0.25)
    llm = boxed("1", "2", "3")
    runs = 600
    counts = Counter(strategy.solve("q", llm, seed=s).answer for s in range(runs))
    raw = [math.exp(scores[a] / 0.25) for a in "123"]
    expected = [runs * r / sum(raw) for r in raw]
    chi2 = sum((counts[a] - e) ** 2 / e for a, e in zip("123", expected, strict=False))
    assert chi2 < 13.82, (counts, expected)
    wrong = [runs * scores[a] / 1.5 for a in "123"]  # raw-score weights
    assert sum((counts[a] - e) ** 2 / e for a, e in zip("123", wrong, strict=False)) > 13.82


# -- FirstFinish ----------------------------------------------------------------------------------
def timed(order):
    """Streams in the given order of finishing: the i-th response streams at (i+1)^2 ms per token."""
    texts = [f"{'abcdefgh'[i]} so \\boxed{{{a}}}" if a is not None else f"{'abcdefgh'[i]} no idea"
             for i, a in enumerate(order)]
    pace = {t: 0.002 * (i + 1) ** 2 for i, t in enumerate(texts)}
    return Scripted(texts, token_latency=lambda text, i: pace[text])


def test_first_finish_k1_returns_the_earliest_finisher_with_an_answer():
    result = FirstFinish(n=4).solve("q", timed(["4", "5", "6", "7"]))
    assert result.answer == "4" and result.details["chosen"] == [0]
    result = FirstFinish(n=4).solve("q", timed([None, "5", "6", "7"]))
    assert result.answer == "5" and result.details["chosen"] == [1]
    result = FirstFinish(n=4, require_answer=False).solve("q", timed([None, "5", "6", "7"]))
    assert result.answer is None and result.details["chosen"] == [0]


def test_first_finish_k_votes_among_the_first_k_and_ties_go_to_the_earliest():
    assert FirstFinish(n=5, k=3).solve("q", timed(["5", "7", "7", "9", "9"])).answer == "7"
    assert FirstFinish(n=5, k=3).solve("q", timed(["5", "7", "9", "9", "9"])).answer == "5"
    assert FirstFinish(n=5, k=3).solve("q", timed(["9", "5", "7", "9", "5"])).answer == "9"
    # k = 2 stops at the second finisher with an answer: the fourth never counts
    result = FirstFinish(n=5, k=2).solve("q", timed(["5", None, "7", "5", "5"]))
    assert result.details["chosen"] == [0, 2] and result.answer == "5"
    # the answer's latency is when its k-th finisher finished
    seconds = result.details["finish_seconds"]
    assert result.details["latency_seconds"] == seconds[2] > seconds[0]
    assert [c.finish_reason for c in result.candidates][3:] == ["cancelled", "cancelled"]


def test_first_finish_without_any_answer_uses_the_earliest_finishers():
    result = FirstFinish(n=3, k=2).solve("q", timed([None, None, None]))
    assert result.answer is None
    assert result.details["chosen"] == [0, 1]
    assert len(result.details["finish_order"]) == 3  # it waited for every candidate


class Planned:
    """Candidates from a list of (delay seconds, answer or exception); each records when its
    cleanup (after cancellation) has run."""

    def __init__(self, plan):
        from ttc.strategies.base import Sampler

        outer = self

        class S(Sampler):
            name = "plan"

            async def candidate(self, problem, ctx):
                i = len(outer.started)
                outer.started.append(i)
                delay, what = plan[i]
                try:
                    await asyncio.sleep(delay)
                    if isinstance(what, Exception):
                        raise what
                    return ttc.Candidate(text=f"\\boxed{{{what}}}", answer=what, finish_reason="stop")
                finally:
                    await asyncio.sleep(0)  # a cleanup that itself awaits, like closing a stream
                    outer.closed.append(i)

        self.started: list[int] = []
        self.closed: list[int] = []
        self.sampler = S()


def test_first_finish_waits_for_the_cancelled_candidates_to_close():
    plan = Planned([(0.001, "1"), (30.0, "2"), (30.0, "3")])

    async def main():
        result = await FirstFinish(n=3, sample=plan.sampler).arun("q", Scripted(["x"]))
        return result, sorted(plan.closed)  # read before anything else can run

    result, closed = asyncio.run(main())
    assert result.answer == "1"
    assert closed == [0, 1, 2]
    assert [c.finish_reason for c in result.candidates] == ["stop", "cancelled", "cancelled"]


def test_first_finish_raises_the_first_error_when_every_candidate_fails():
    class Boom(Exception):
        pass

    plan = Planned([(0.001, Boom("first")), (0.01, ValueError("second"))])
    with pytest.raises(Boom):
        FirstFinish(n=2, sample=plan.sampler).solve("q", Scripted(["x"]))
    # one failure among finishers: the others still answer, and the failure is counted
    plan = Planned([(0.001, Boom("first")), (0.01, "4")])
    result = FirstFinish(n=2, sample=plan.sampler).solve("q", Scripted(["x"]))
    assert result.answer == "4" and result.details["failed"] == 1
    assert result.candidates[0].finish_reason == "failed"


def test_first_finish_orders_simultaneous_finishers_by_index_and_times_them():
    import time

    plan = Planned([(0.0, "1"), (0.0, "2"), (5.0, "3")])
    start = time.perf_counter()
    result = FirstFinish(n=3, k=1, sample=plan.sampler).solve("q", Scripted(["x"]))
    elapsed = time.perf_counter() - start
    assert result.details["finish_order"][:1] == [0] and result.answer == "1"
    seconds = [s for s in result.details["finish_seconds"] if s is not None]
    assert seconds and all(0 <= s <= elapsed for s in seconds)
    assert 0 <= result.details["latency_seconds"] <= elapsed


def test_first_finish_votes_under_the_first_form_of_an_answer():
    result = FirstFinish(n=4, k=3).solve("q", timed(["1,000", "1000", "7", "7"]))
    assert result.answer == "1,000" and result.details["votes"] == {"1,000": 2.0, "7": 1.0}
