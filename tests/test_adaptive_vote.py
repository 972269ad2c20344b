"""AdaptiveVote and its stopping rules (issue 15): exactly when each rule stops on scripted answer
streams, that samples in flight are cancelled and counted, and the Beta rule's error rate."""

import asyncio
import random

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.errors import BudgetExhausted, InvalidInput
from ttc.stopping import BetaStop, NeverStop, WindowStop, answer_counts, beta_leader_probability
from ttc.strategies.adaptive_vote import AdaptiveVote


def stream(*answers):
    """A scripted backend whose i-th sample (over all requests) answers answers[i] (cycling)."""
    return Scripted([f"so the answer is \\boxed{{{a}}}" if a is not None else "no idea" for a in answers])


def first_stop(rule, answers):
    """The number of answers after which `rule` first says stop (None: never)."""
    for k in range(1, len(answers) + 1):
        if rule.should_stop(answers[:k]):
            return k
    return None


# -- the pure rules ------------------------------------------------------------------------------
def test_beta_leader_probability_is_the_beta_tail():
    # unanimous k votes: P(Beta(k+1, 1) > 1/2) = 1 - 2^-(k+1)
    for k in range(8):
        assert beta_leader_probability(k, 0) == pytest.approx(1 - 0.5 ** (k + 1))
    # one against one is a coin flip; Beta(a+1, b+1) tail by numerical integration elsewhere:
    assert beta_leader_probability(1, 1) == pytest.approx(0.5)
    assert beta_leader_probability(6, 1) == pytest.approx(1 - 9 / 256)
    assert beta_leader_probability(8, 2) == pytest.approx(1 - (55 + 11 + 1) / 2048)
    # a midpoint-rule integral of x^a (1-x)^b over [1/2, 1] / [0, 1] (the authors' formula)
    a, b, steps = 5, 3, 200_000
    xs = [(i + 0.5) / steps for i in range(steps)]
    dens = [x**a * (1 - x) ** b for x in xs]
    assert beta_leader_probability(a, b) == pytest.approx(sum(dens[steps // 2:]) / sum(dens), abs=1e-6)


def test_beta_rule_stops_exactly_when_the_posterior_reaches_the_confidence():
    rule = BetaStop(confidence=0.95)
    assert first_stop(rule, ["7"] * 16) == 4            # 1 - 2^-5 = 0.969; 3 votes give 0.9375
    assert first_stop(rule, ["7", "5", "7", "7", "7", "7", "7", "7"]) == 7   # 6 vs 1: 0.965; 5 vs 1: 0.9375
    assert first_stop(BetaStop(confidence=0.9), ["7"] * 16) == 3
    assert first_stop(BetaStop(confidence=0.99), ["7"] * 16) == 6
    # a split vote never settles
    assert first_stop(rule, ["7", "5"] * 8) is None
    # unanswered samples do not vote; equivalent answers vote together
    assert first_stop(rule, [None, "7", None, "7.0", "7", None, "07"]) == 7
    assert BetaStop(min_samples=6).should_stop(["7"] * 5) is False
    assert BetaStop(min_samples=6).should_stop(["7"] * 6) is True


def test_window_rule_stops_on_the_first_unanimous_disjoint_window():
    rule = WindowStop(window=4)
    assert first_stop(rule, ["7"] * 16) == 4
    # samples 2-5 agree but straddle two windows: not a window of ESC's
    assert first_stop(rule, ["5", "7", "7", "7", "7", "3", "7", "7", "7", "7", "7", "7"]) == 12
    assert first_stop(rule, ["5", "7", "7", "7", "9", "9", "9", "9"]) == 8
    # a window with an unanswered sample is not unanimous
    assert first_stop(rule, ["7", "7", None, "7", "7", "7", "7", "7"]) == 8
    assert first_stop(WindowStop(window=2), ["1", "2", "3", "3"]) == 4
    assert first_stop(rule, ["7", "5"] * 8) is None
    assert NeverStop().should_stop(["7"] * 100) is False


def test_rules_refuse_bad_settings():
    for bad in (lambda: WindowStop(0), lambda: BetaStop(1.0), lambda: BetaStop(0.4), lambda: BetaStop(min_samples=0),
                lambda: AdaptiveVote(batch=0), lambda: AdaptiveVote(stop="sometimes"), lambda: AdaptiveVote(max_n=0)):
        with pytest.raises(InvalidInput):
            bad()


def test_answer_counts_groups_equivalent_answers():
    assert answer_counts(["7", "7.0", None, "5", "07"]) == [3, 1]
    assert answer_counts([None, None]) == []


# -- AdaptiveVote on scripted streams -----------------------------------------------------------
def test_batches_stop_at_the_round_where_the_rule_decides():
    llm = stream("7", "7", "5", "7", "7", "7", "7", "7")
    result = AdaptiveVote(max_n=16, batch=2, stop=BetaStop(0.95)).solve("q", llm)
    # rounds: [7,7] P=.875, [5,7] 3v1 P=.8125, [7,7] 5v1 P=.9375, [7,7] 7v1 P=.98 -> stop after 8
    assert result.details["samples"] == 8 and result.details["rounds"] == 4
    assert result.details["stop_reason"] == "decided"
    assert result.answer == "7" and result.details["votes"] == {"7": 7.0, "5": 1.0}
    assert [p.n for _, p in llm.requests] == [2, 2, 2, 2]     # one request per round
    assert len({p.seed for _, p in llm.requests}) == 1       # unseeded run: all None
    assert_usage_is_sum_of_candidates(result)
    assert result.usage.generator_calls == 4


def test_window_rule_in_rounds_and_max_n():
    llm = stream("7", "5", "7", "7", "7", "7", "7", "7")
    result = AdaptiveVote(max_n=16, batch=4, stop=WindowStop(4)).solve("q", llm)
    assert result.details["samples"] == 8 and result.details["stop_reason"] == "decided"
    undecided = AdaptiveVote(max_n=6, batch=4, stop=WindowStop(4)).solve("q", stream("1", "2"))
    assert undecided.details["samples"] == 6 and undecided.details["stop_reason"] == "max_n"


def test_last_round_is_cut_to_max_n():
    llm = stream("1", "2")
    result = AdaptiveVote(max_n=6, batch=4).solve("q", llm)
    assert [p.n for _, p in llm.requests] == [4, 2]
    assert result.details["stop_reason"] == "max_n"


def test_seeded_rounds_get_different_seeds_and_repeat_across_runs():
    llm = stream("1", "2")
    AdaptiveVote(max_n=12, batch=4).solve("q", llm, seed=3)
    seeds = [p.seed for _, p in llm.requests]
    assert len(seeds) == 3 and len(set(seeds)) == 3 and None not in seeds
    again = stream("1", "2")
    AdaptiveVote(max_n=12, batch=4).solve("q", again, seed=3)
    assert [p.seed for _, p in again.requests] == seeds


def test_a_token_budget_ends_the_vote_with_reason_budget():
    llm = stream("1", "2")
    # each round of 2 costs the prompt (a few tokens) + 2 x 5 tokens; 3 rounds fit, not 4
    probe = AdaptiveVote(max_n=2, batch=2).solve("q", stream("1", "2"))
    per_round = probe.usage.total_tokens
    budget = ttc.Budget(tokens=3 * per_round + per_round // 2, min_candidate_tokens=10)
    result = AdaptiveVote(max_n=16, batch=2).solve("q", llm, budget=budget)
    assert result.details["stop_reason"] == "budget"
    assert result.details["rounds"] == 3
    assert result.usage.total_tokens <= budget.tokens
    with pytest.raises(BudgetExhausted):
        AdaptiveVote(max_n=16, batch=2).solve("q", stream("1"), budget=ttc.Budget(tokens=5))


def test_composes_with_sample_like_majority_vote():
    params = ttc.SamplingParams(max_tokens=64, temperature=0.5)
    sample = ttc.Sample(params=params)
    llm = stream("7")
    result = AdaptiveVote(max_n=8, batch=4, sample=sample).solve("q", llm)
    assert result.answer == "7" and result.details["samples"] == 4
    assert all(p.max_tokens == 64 and p.temperature == 0.5 for _, p in llm.requests)


# -- stream mode: samples in flight are cancelled and counted ------------------------------------
FAST, SLOW = "so the answer is \\boxed{7}", "slow " * 40 + "so the answer is \\boxed{5}"


def test_in_flight_streams_are_cancelled_when_the_vote_is_decided_and_their_tokens_counted():
    def latency(text, i):
        return 0.01 if text.startswith("slow") else 0.0005

    # samples alternate fast 7, slow 5: the four fast ones finish first and decide (P=.969 >= .95);
    # max_n = batch, so no sample is launched after the first eight
    llm = Scripted([FAST, SLOW], token_latency=latency)

    async def main():
        result = await AdaptiveVote(max_n=8, batch=8, stop=BetaStop(0.95), stream=True).arun("q", llm)
        at_return = llm.streamed_tokens
        await asyncio.sleep(0.2)  # a stream that was not really stopped would emit more by now
        return result, at_return

    result, at_return = asyncio.run(main())
    assert result.answer == "7"
    assert result.details["stop_reason"] == "decided"
    assert result.details["samples"] == 4 and result.details["cancelled"] == 4
    assert result.details["launched"] == 8
    assert result.details["finish_order"] == [0, 2, 4, 6]
    reasons = [c.finish_reason for c in result.candidates]
    assert reasons == ["stop", "cancelled"] * 4
    cancelled = [c for c in result.candidates if c.finish_reason == "cancelled"]
    assert all(c.answer is None and SLOW.startswith(c.text) for c in cancelled)
    assert all(0 < c.usage.completion_tokens < len(llm._ids(SLOW)) for c in cancelled)
    # usage is the truth: what the streams emitted, no token after cancellation, prompts per stream
    assert llm.streamed_tokens == at_return == result.usage.completion_tokens
    assert result.usage.generator_calls == 8
    assert_usage_is_sum_of_candidates(result)


def test_stream_mode_keeps_batch_in_flight_and_stops_at_max_n():
    llm = Scripted([FAST.replace("7", "1"), FAST.replace("7", "2")], token_latency=0.0005)
    result = AdaptiveVote(max_n=6, batch=2, stream=True).solve("q", llm)
    assert result.details["stop_reason"] == "max_n"
    assert result.details["samples"] == 6 and result.details["cancelled"] == 0
    assert all(p.n == 1 for _, p in llm.requests) and len(llm.requests) == 6


# -- the Beta rule's error rate on synthetic votes ----------------------------------------------
def simulate_beta_rule(rule, trials, max_n, seed):
    """Draw p ~ U(0,1) (the rule's prior), then votes for answer A with prob p (else B), until the
    rule (`decide` on the vote counts: `should_stop` is the same on answers, tested above) stops or
    max_n. Returns (decided, wrong, expected_wrong): wrong = stopped with the less likely answer
    leading; expected_wrong = the sum over stops of 1 - P(leader stays), the rule's own estimate."""
    rng = random.Random(seed)
    decided = wrong = 0
    expected = 0.0
    for _ in range(trials):
        p = rng.random()
        votes = [0, 0]
        for drawn in range(1, max_n + 1):
            votes[rng.random() >= p] += 1
            if rule.decide(votes, drawn):
                decided += 1
                wrong += (votes[0] > votes[1]) != (p > 0.5) or votes[0] == votes[1]
                expected += 1 - BetaStop.probability(votes)
                break
    return decided, wrong, expected


def test_beta_rule_should_stop_is_decide_on_the_answer_counts():
    rule = BetaStop(0.95)
    for answers in (["7"] * 4, ["7", "5"] * 3, ["7", None, "7", "7", "7.0"], ["1", "2", "3", "1"]):
        counts = answer_counts(answers)
        assert rule.should_stop(answers) == rule.decide(counts, len(answers))
        assert rule.leader_probability(answers) == BetaStop.probability(counts)


def test_beta_rule_error_rate_matches_its_posterior_on_synthetic_votes():
    """Under its own prior the rule is calibrated: among the votes it stops, the leader is wrong
    with total probability sum(1 - P_stop) (<= 1 - c per stop), so the observed error rate is at
    most 1 - c and close to the rule's own estimate. With 10,000 trials the count of wrong stops
    is a sum of independent Bernoullis with that mean; 5 standard deviations (+1 for
    discreteness) bound a false failure below 1e-6. Seen (seed 1): 8,970 stops, 308 wrong,
    323.4 expected. Broken rules fail it (checked by hand): comparing against 1 - c stops at the
    first vote and is wrong on E[min(p, 1 - p)] = 25% (the next test); Beta(v1, v2) instead of
    Beta(v1 + 1, v2 + 1) (no uniform prior) stops earlier and its own estimate understates its errors."""
    rule = BetaStop(confidence=0.95)
    decided, wrong, expected = simulate_beta_rule(rule, trials=10_000, max_n=64, seed=1)
    assert decided > 8_000
    assert wrong / decided <= 0.05 + 5 * (0.05 * 0.95 / decided) ** 0.5
    assert abs(wrong - expected) <= 5 * expected**0.5 + 1, (wrong, expected)


def test_a_rule_comparing_against_one_minus_c_fails_the_error_bound():
    class Wrong(BetaStop):
        def decide(self, counts, drawn):
            return self.probability(counts) >= 1 - self.confidence

    decided, wrong, _ = simulate_beta_rule(Wrong(0.95), trials=5_000, max_n=64, seed=2)
    assert wrong / decided > 0.05 + 5 * (0.05 * 0.95 / decided) ** 0.5


def test_registry_and_rule_names():
    from ttc.strategies.registry import make_strategy

    s = make_strategy("adaptive_vote", 8)
    assert isinstance(s, AdaptiveVote) and s.max_n == 8 and s.batch == 4 and isinstance(s.stop, BetaStop)
    assert isinstance(make_strategy("adaptive", 2), AdaptiveVote)
    assert isinstance(AdaptiveVote(stop="esc").stop, WindowStop)
    assert isinstance(AdaptiveVote(stop="beta").stop, BetaStop)
    with pytest.raises(InvalidInput):
        make_strategy("adaptive_vote", 8, verifier=ttc.verifiers.LogprobConfidence())
