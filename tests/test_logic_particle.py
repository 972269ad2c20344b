"""ParticleFilter logic that a wrong algorithm cannot pass: the weights, the resampled population
carried into the next round (read from the search tree, not from recorded indices), the final
choice, and the step and budget caps. Scripted backend and a table PRM only.

Statistical tests use fixed seeds, so they are deterministic; each states the probability that a
correct implementation would fail it with a fresh seed (its false-failure probability).
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

import ttc
from logic_helpers import node_name, toy
from ttc.context import Budget
from ttc.errors import BudgetExhausted, InvalidInput
from ttc.steps import StepConfig
from ttc.strategies.particle import effective_sample_size, logit, resample, softmax
from ttc.verifiers import ProgrammaticPRM


def first_steps(result):
    return [result.tree[i] for i in result.tree.root.children]


# -- the pure kernels ---------------------------------------------------------------------------
def test_logit_values_and_clipping():
    assert logit(0.5) == 0.0
    assert logit(0.8) == pytest.approx(math.log(4.0))
    assert logit(0.2) == pytest.approx(-math.log(4.0))
    edge = math.log(1e-7 / (1 - 1e-7))
    assert logit(0.0) == pytest.approx(edge) and logit(-3.0) == pytest.approx(edge)
    assert logit(1.0) == pytest.approx(-edge) and logit(7.0) == pytest.approx(-edge)


def test_softmax_values_temperature_and_minus_infinity():
    assert softmax([0.0, math.log(2.0), math.log(3.0)]) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert softmax([0.0, 2 * math.log(2.0)], temperature=2.0) == pytest.approx([1 / 3, 2 / 3])
    assert softmax([0.0, math.log(3.0)], temperature=0.5) == pytest.approx([0.1, 0.9])
    assert softmax([-math.inf, 0.0, 0.0]) == pytest.approx([0.0, 0.5, 0.5])
    assert softmax([-math.inf, -math.inf]) == [0.5, 0.5]
    # large logits: stable (shifted by the max before exp) and still the right ratios
    assert softmax([1000.0, 1000.0 + math.log(3.0)]) == pytest.approx([0.25, 0.75])
    assert softmax([-1000.0, 0.0]) == pytest.approx([0.0, 1.0])


def test_effective_sample_size_of_unnormalised_weights():
    assert effective_sample_size([2.0, 2.0]) == pytest.approx(2.0)
    assert effective_sample_size([1.0, 3.0]) == pytest.approx(1 / (1 / 16 + 9 / 16))
    with pytest.raises(InvalidInput):
        effective_sample_size([0.0, 0.0])


@pytest.mark.parametrize("weights", [[], [0.0, 0.0], [1.0, -0.5, 1.0]])
def test_resample_refuses_bad_weights(weights):
    for method in ("multinomial", "systematic"):
        with pytest.raises(InvalidInput):
            resample(weights, 4, random.Random(0), method)


def test_resample_refuses_an_unknown_method():
    with pytest.raises(InvalidInput):
        resample([1.0, 1.0], 2, random.Random(0), "no_such_method")


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resample_draws_n_indices_and_never_a_zero_weight(method):
    rng = random.Random(3)
    for n in (1, 2, 7, 10):
        for weights in ([0.0, 1.0, 0.0, 3.0], [2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 1.0]):
            out = resample(weights, n, rng, method)
            assert len(out) == n
            assert all(0 <= i < len(weights) and weights[i] > 0 for i in out), (weights, out)


def test_systematic_resampling_is_sorted_and_exact_for_equal_weights():
    rng = random.Random(11)
    for n in (3, 5, 8):
        for _ in range(50):
            assert resample([1.0] * n, n, rng, "systematic") == list(range(n))
            weights = [rng.random() for _ in range(n)]
            out = resample(weights, 2 * n, rng, "systematic")
            assert out == sorted(out)
    # n draws from 2 particles with weights 1:3 and n = 4: exactly 1 and 3, whatever the offset
    for _ in range(50):
        assert Counter(resample([1.0, 3.0], 4, rng, "systematic")) == {0: 1, 1: 3}


def test_systematic_resampling_is_not_a_multinomial_draw():
    # with weights 0.5/0.5 and n = 2, systematic draws both particles every time; a multinomial
    # draw duplicates one half of the time (P(30 runs never duplicate) = 2^-30)
    rng = random.Random(5)
    assert all(sorted(resample([1.0, 1.0], 2, rng, "systematic")) == [0, 1] for _ in range(30))
    assert any(len(set(resample([1.0, 1.0], 2, rng, "multinomial"))) == 1 for _ in range(30))


# -- the population carried into the next round -------------------------------------------------
def two_round_filter(particles: int, temperature: float, resampling: str, seed: int):
    """Round 1: half the particles step to A (PRM 0.8), half to B (PRM 0.4). Round 2: every
    particle takes one more step (A2 or B2) and the trace ends at max_steps=2. The number of
    round-2 steps taken from A nodes is the number of particles the resampling carried from A."""
    llm, prm = toy({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]}, {"A": 0.8, "B": 0.4, "A2": 0.5, "B2": 0.5}, {})
    pf = ttc.ParticleFilter(particles=particles, prm=prm, temperature=temperature, resampling=resampling,
                            steps=StepConfig(max_steps=2))
    result = pf.solve("q?", llm, seed=seed)
    firsts = first_steps(result)
    assert Counter(node_name(n) for n in firsts) == {"A": particles // 2, "B": particles // 2}
    carried = Counter()
    for node in firsts:
        carried[node_name(node)] += len(node.children)
    assert sum(carried.values()) == particles  # every particle of round 2 descends from round 1's population
    return carried["A"], result


def share_of_a(temperature: float) -> float:
    """softmax(logit(r) / T) summed over the A half: the probability a resampled particle is an A."""
    a, b = math.exp(math.log(4.0) / temperature), math.exp(math.log(0.4 / 0.6) / temperature)
    return a / (a + b)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_multinomial_resampling_carries_particles_in_proportion_to_softmax_of_logits(temperature):
    # 8 particles x 150 seeds = 1200 resampled particles, each an A with probability p
    # (p = 0.857 at T=1, 0.710 at T=2). The bound is 5 standard deviations of the mean
    # (sd <= 0.013): false-failure probability < 1e-6. Wrong algorithms land outside it: resampling
    # not applied (0.5), uniform weights (0.5), raw-score weights (0.667), logit(r) * T instead of
    # / T (0.973 at T=2), the other temperature (0.857 vs 0.710).
    p = share_of_a(temperature)
    runs, n = 150, 8
    counts = [two_round_filter(n, temperature, "multinomial", seed)[0] for seed in range(runs)]
    mean = sum(counts) / (runs * n)
    sd = math.sqrt(p * (1 - p) / (runs * n))
    assert abs(mean - p) < 5 * sd, (mean, p)
    # multinomial counts vary like Binomial(8, p): sample variance n p (1 - p) (0.98 at T=1);
    # systematic resampling would give at most 0.25. The sample variance of 150 binomial counts
    # has sd < 0.12 here; the band [0.55, 1.6] x n p (1-p) is over 3.5 sd from the truth on each
    # side (false-failure probability < 1e-3), and far from systematic's variance.
    var = sum((c - mean * n) ** 2 for c in counts) / (runs - 1)
    assert 0.55 * n * p * (1 - p) < var < 1.6 * n * p * (1 - p), var


def test_systematic_resampling_carries_floor_or_ceil_of_n_times_each_weight():
    # systematic: every round-1 particle i is carried floor(8 w_i) or ceil(8 w_i) times, counted
    # as the children of its node (A particles: 8 x 0.857 / 4 = 1.71 -> 1 or 2; B: 0.29 -> 0 or 1).
    # This holds in every run; a multinomial draw breaks it in most runs (P(an A node gets >= 3
    # copies) ~ 0.25 per node). The A total lies in [4, 8] (sd <= 2), so its mean over 150 runs is
    # within 5 x 2 / sqrt(150) = 0.82 of 8p = 6.86 (false-failure probability < 1e-6); uniform
    # weights (4) and raw-score weights (5.33) are outside.
    p = share_of_a(1.0)
    totals = []
    for seed in range(150):
        total, result = two_round_filter(8, 1.0, "systematic", seed)
        totals.append(total)
        for node in first_steps(result):
            expected = 8 * (p if node_name(node) == "A" else 1 - p) / 4
            assert math.floor(expected) <= len(node.children) <= math.ceil(expected), (seed, node)
    assert abs(sum(totals) / 150 - 8 * p) < 5 * 2 / math.sqrt(150)


def test_each_round_expands_exactly_the_resampled_population():
    # the nodes expanded in round r+1 are those the resampled indices of round r point at
    llm, prm = toy({"root": ["A", "B", "C"], "A": ["A2", "A3"], "B": ["B2"], "C": ["C2"], "A2": ["A4"], "A3": ["A4"],
                    "B2": ["B4"], "C2": ["C4"]},
                   {"A": 0.9, "B": 0.5, "C": 0.2, "A2": 0.6, "A3": 0.7, "B2": 0.5, "C2": 0.3, "A4": 0.5, "B4": 0.5,
                    "C4": 0.5}, {})
    for seed in range(5):
        result = ttc.ParticleFilter(particles=6, prm=prm, steps=StepConfig(max_steps=3)).solve("q?", llm, seed=seed)
        history = result.details["history"]
        assert len(history) == 3
        for before, after in zip(history, history[1:], strict=False):
            carried = [before["nodes"][i] for i in before["resampled"]]
            parents = [result.tree[node].parent for node in after["nodes"]]
            assert Counter(parents) == Counter(carried)
        # the final population is the last round's resampled nodes
        last = history[-1]
        final = Counter(last["nodes"][i] for i in last["resampled"])
        assert sorted(zip([c.trace.text for c in result.candidates], result.details["multiplicity"], strict=False)) == \
            sorted((result.tree[node].trace.text, k) for node, k in final.items())


# -- the final choice ---------------------------------------------------------------------------
def finished_in_one_round(scores: dict[str, float], answers: dict[str, str], select: str):
    """Six particles step to A, B, C (two each) and all finish; a huge temperature makes the
    weights equal, so systematic resampling keeps every particle once (population unchanged)."""
    llm, prm = toy({"root": ["A", "B", "C"]}, scores, answers)
    pf = ttc.ParticleFilter(particles=6, prm=prm, temperature=1e9, resampling="systematic", select=select)
    result = pf.solve("q?", llm, seed=0)
    assert sorted(result.details["multiplicity"]) == [1] * 6
    return result


def test_select_best_answers_from_the_highest_scoring_final_particle():
    for scores, expected in (({"A": 0.9, "B": 0.5, "C": 0.3}, "1"), ({"A": 0.3, "B": 0.5, "C": 0.9}, "3"),
                             ({"A": 0.3, "B": 0.95, "C": 0.9}, "2")):
        result = finished_in_one_round(scores, {"A": "1", "B": "2", "C": "3"}, "best")
        assert result.answer == expected, scores


def test_select_weighted_sums_scores_and_majority_counts_particles():
    # A: two particles of 0.9 (answer 1); B and C: four particles of 0.6 / 0.2 with answer 2
    answers = {"A": "1", "B": "2", "C": "2"}
    assert finished_in_one_round({"A": 0.9, "B": 0.6, "C": 0.6}, answers, "best").answer == "1"
    assert finished_in_one_round({"A": 0.9, "B": 0.6, "C": 0.6}, answers, "weighted").answer == "2"  # 1.8 < 2.4
    assert finished_in_one_round({"A": 0.9, "B": 0.2, "C": 0.2}, answers, "weighted").answer == "1"  # 1.8 > 0.8
    assert finished_in_one_round({"A": 0.9, "B": 0.2, "C": 0.2}, answers, "majority").answer == "2"  # 2 < 4


def test_weighted_and_majority_selection_count_every_copy_of_a_resampled_trace():
    # six particles step to A (0.9, answer 1) and B..F (0.5, answer 2), one each, and all finish.
    # Systematic resampling gives A 6 x 9/14 = 3.86 -> 3 or 4 copies; the others 2 or 3 in all.
    # Counting copies: "1" >= 3 x 0.9 = 2.7 beats "2" <= 3 x 0.5; counting distinct final traces
    # instead would give "2" (>= 2 x 0.5 = 1.0 > 0.9).
    kids = ["A", "B", "C", "D", "E", "F"]
    llm, prm = toy({"root": kids}, {k: (0.9 if k == "A" else 0.5) for k in kids},
                   {k: ("1" if k == "A" else "2") for k in kids})
    for seed in range(10):
        for select in ("weighted", "majority", "best"):
            pf = ttc.ParticleFilter(particles=6, prm=prm, resampling="systematic", select=select)
            result = pf.solve("q?", llm, seed=seed)
            mult = Counter()
            for c, k in zip(result.candidates, result.details["multiplicity"], strict=False):
                mult[c.answer] += k
            assert mult["1"] in (3, 4) and mult["1"] + mult["2"] == 6
            if select != "majority" or mult["1"] == 4:  # a 3-3 majority is a tie (first seen wins)
                assert result.answer == "1", (seed, select)


# -- caps and budgets ---------------------------------------------------------------------------
def test_traces_end_at_exactly_max_steps():
    llm, prm = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    for max_steps in (1, 2, 4):
        # final_completion=False: the cap itself ends the trace (the default completes it, tested elsewhere)
        steps = StepConfig(max_steps=max_steps, final_completion=False)
        result = ttc.ParticleFilter(particles=3, prm=prm, steps=steps).solve("q?", llm, seed=0)
        assert result.details["rounds"] == max_steps
        assert {len(c.trace.steps) for c in result.candidates} == {max_steps}
        assert {c.finish_reason for c in result.candidates} == {"max_steps"}
        assert result.details["stopped_by"] == "all_finished"


def test_a_round_starts_only_when_the_prm_budget_covers_every_live_particle():
    llm, prm = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    for calls, rounds in ((3, 0), (4, 1), (7, 1), (8, 2), (12, 3)):
        result = ttc.ParticleFilter(particles=4, prm=prm, steps=StepConfig(max_steps=5)).solve(
            "q?", llm, seed=0, budget=Budget(verifier_calls=calls))
        assert result.details["rounds"] == rounds, calls
        assert result.usage.verifier_calls == 4 * rounds
        assert result.tree.generated == 4 * rounds  # no step is generated that could not be scored
        assert result.details["stopped_by"] == "verifier_budget"


def test_the_token_budget_ends_the_filter_after_the_round_it_cut():
    # measured on this script: 76 tokens pay for round 1 only (round 2 is refused whole), 100 for
    # round 1 and one of round 2's two requests; either way no further round is recorded
    llm, prm = toy({"root": ["A", "B"], "A": ["A"], "B": ["B"]}, {"A": 0.5, "B": 0.5}, {})
    for tokens, rounds, generated, depths in ((76, 1, 2, [1, 1]), (100, 2, 3, [1, 2])):
        pf = ttc.ParticleFilter(particles=2, prm=prm, temperature=1e9, resampling="systematic",
                                steps=StepConfig(max_steps=6))
        result = pf.solve("q?", llm, seed=0, budget=Budget(tokens=tokens))
        assert result.details["stopped_by"] == "token_budget"
        assert (result.details["rounds"], result.tree.generated) == (rounds, generated), tokens
        # a particle whose request was refused keeps its node
        assert sorted(len(c.trace.steps) for c in result.candidates) == depths


def test_steps_the_prm_could_not_score_are_undone():
    # the PRM runs out of budget itself in round 2: the particles go back to their round-1 nodes
    def score(problem, steps):
        if len(steps) > 1:
            raise BudgetExhausted("the judge's own budget")
        return 0.5

    llm, _ = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    prm = ProgrammaticPRM(score)
    result = ttc.ParticleFilter(particles=3, prm=prm, steps=StepConfig(max_steps=4)).solve("q?", llm, seed=0)
    assert result.details["stopped_by"] == "verifier_budget"
    assert result.details["rounds"] == 1
    assert [len(c.trace.steps) for c in result.candidates] == [1] * len(result.candidates)
    assert sum(result.details["multiplicity"]) == 3


def test_every_expanded_node_records_the_round_it_was_expanded_in():
    llm, prm = toy({"root": ["A", "B"], "A": ["A", "B"], "B": ["A", "B"]}, {"A": 0.6, "B": 0.4}, {})
    result = ttc.ParticleFilter(particles=4, prm=prm, steps=StepConfig(max_steps=3)).solve("q?", llm, seed=1)
    for node in result.tree:
        assert node.expanded == (node.depth if node.children else None)


def test_finished_particles_are_never_extended_and_keep_their_weight():
    # F finishes at once with 0.9; U goes on (0.5 per step) until max_steps. Finished F nodes get
    # no children, and F keeps its weight in later rounds: its share stays near 1.
    llm, prm = toy({"root": ["F", "U"], "U": ["U"]}, {"F": 0.9, "U": 0.5}, {"F": "1"})
    result = ttc.ParticleFilter(particles=8, prm=prm, steps=StepConfig(max_steps=4)).solve("q?", llm, seed=2)
    for node in result.tree:
        if node.finish_reason == "boxed":
            assert not node.children
    for entry in result.details["history"][1:]:
        f_weight = sum(w for w, node in zip(entry["weights"], entry["nodes"], strict=False)
                       if result.tree[node].finish_reason == "boxed")
        live = [node for node in entry["nodes"] if result.tree[node].finish_reason != "boxed"]
        if live:
            assert f_weight > 0.5
    assert result.answer == "1"


def test_systematic_points_on_a_boundary_go_to_the_next_particle():
    # the draw u + k/n falls in [c_(i-1), c_i): with u = 0 and equal weights, the point k/n is the
    # start of particle k's interval (a rule of "u + k/n <= c_i" would draw particle 0 twice)
    class Zero(random.Random):
        def random(self):
            return 0.0

    assert resample([1.0, 1.0], 2, Zero(), "systematic") == [0, 1]
    assert resample([1.0, 1.0, 2.0], 4, Zero(), "systematic") == [0, 1, 2, 2]


def test_no_round_follows_one_in_which_the_token_budget_refused_a_request():
    # particle L writes long steps, S short ones: when L's request is refused, S's would still fit
    # for a while; the filter must stop anyway (measured: 200 and 300 tokens pay for round 1 and
    # S's step of round 2; 450 for rounds 1-2 and one step of round 3)
    from logic_helpers import step_name
    from ttc.backends import Scripted

    def script(prompt, params, i):
        done = [s for s in prompt.split("<assistant>\n", 1)[1].split("\n\n") if s.strip()]
        name = step_name(done[-1]) if done else ["L", "S"][(i + (params.seed or 0)) % 2]
        return "Step L: " + "word " * 30 + "\n\nx" if name == "L" else "Step S: ok\n\nx"

    prm = ProgrammaticPRM(lambda problem, steps: 0.5)
    for tokens, rounds, generated in ((200, 2, 3), (300, 2, 3), (450, 3, 5)):
        pf = ttc.ParticleFilter(particles=2, prm=prm, temperature=1e9, resampling="systematic",
                                steps=StepConfig(max_steps=8, max_step_tokens=64))
        result = pf.solve("q?", Scripted(script), seed=0, budget=Budget(tokens=tokens))
        assert (result.details["rounds"], result.tree.generated) == (rounds, generated), tokens
        assert result.details["stopped_by"] == "token_budget"


def test_the_number_of_particles_is_the_strategy_size():
    assert ttc.ParticleFilter(particles=5, prm=ProgrammaticPRM(lambda p, s: 0.5)).n == 5
