"""Beam search, DVTS and A* logic pinned on known trees: which beams are kept, how samples are
spread, the A* queue order and costs, the step and expansion caps, answer selection and PRM
aggregation. Scripted backend and a table PRM; everything here is deterministic."""

from __future__ import annotations

import pytest

import ttc
from logic_helpers import node_name, toy
from ttc.context import Budget
from ttc.errors import InvalidInput
from ttc.steps import select_answer
from ttc.strategies.stepwise import StepSearch
from ttc.types import Candidate
from ttc.verifiers import aggregate


def expanded(result) -> dict[str, int]:
    """Name of every node that has children -> its number of children."""
    return {node_name(n): len(n.children) for n in result.tree if n.parent is not None and n.children}


# -- answer selection and aggregation -----------------------------------------------------------
def cands(*answers):
    return [Candidate(text=str(a), answer=a) for a in answers]


def test_select_best_takes_the_highest_weight_and_the_first_of_equals():
    assert select_answer(cands("1", "2", "3"), [0.2, 0.9, 0.5], "best") == ("2", {"chosen": 1})
    assert select_answer(cands("1", "2", "3"), [0.9, 0.2, 0.9], "best") == ("1", {"chosen": 0})
    assert select_answer(cands("1", "2", "3"), [-3.0, -1.0, -2.0], "best") == ("2", {"chosen": 1})
    assert select_answer([], [], "best") == (None, {})


def test_select_weighted_sums_weights_per_equivalent_answer_and_majority_counts():
    c = cands("1", "2", "2", "0.5", "1/2")
    w = [0.9, 0.3, 0.3, 0.2, 0.2]
    answer, info = select_answer(c, w, "weighted")
    assert answer == "1" and info["votes"] == pytest.approx({"1": 0.9, "2": 0.6, "0.5": 0.4})
    answer, info = select_answer(c, [0.5, 0.3, 0.3, 0.2, 0.2], "weighted")
    assert answer == "2"  # 0.6 > 0.5 > 0.4
    answer, info = select_answer(c, w, "majority")
    assert answer == "2" and info["votes"] == {"1": 1.0, "2": 2.0, "0.5": 2.0}  # tie: first seen
    assert select_answer(cands(None, "3"), [5.0, 1.0], "majority")[0] == "3"
    with pytest.raises(InvalidInput):
        select_answer(c, w, "median")


def test_aggregate_step_scores():
    s = [0.9, 0.4, 0.6]
    assert aggregate(s, "last") == 0.6
    assert aggregate(s, "min") == 0.4
    assert aggregate(s, "mean") == pytest.approx(19 / 30)
    assert aggregate(s, "prod") == pytest.approx(0.216)
    assert aggregate([0.7], "mean") == pytest.approx(0.7)
    with pytest.raises(InvalidInput):
        aggregate([], "last")
    with pytest.raises(InvalidInput):
        aggregate(s, "max")


def test_verifier_calls_left():
    from ttc.backends import Scripted
    from ttc.context import Context

    def ctx(limit, used):
        c = Context(Scripted(["x"]), Budget(verifier_calls=limit))
        c.usage.verifier_calls = used
        return c

    assert ctx(None, 5).verifier_calls_left() is None
    assert ctx(10, 3).verifier_calls_left() == 7
    assert ctx(3, 3).verifier_calls_left() == 0
    assert ctx(3, 5).verifier_calls_left() == 0


def test_step_scores_are_aggregated_into_the_value_the_search_ranks_by():
    # two-step traces A -> A2 (0.9, 0.3) and B -> B2 (0.5, 0.5): "last" prefers B2's 0.5 over A2's
    # 0.3; "min" too (0.5 > 0.3); "mean" prefers A (0.6 > 0.5); "prod" prefers B (0.25 > 0.27? no: 0.27)
    llm, prm = toy({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]},
                   {"A": 0.9, "A2": 0.3, "B": 0.5, "B2": 0.5}, {"A2": "1", "B2": "2"})
    for aggregation, answer in (("last", "2"), ("min", "2"), ("mean", "1"), ("prod", "1")):
        result = ttc.BeamSearch(2, 1, prm, aggregation=aggregation).solve("q?", llm, seed=0)
        assert result.answer == answer, aggregation
        by_name = {node_name(n): n for n in result.tree if n.parent is not None}
        assert by_name["A2"].step_scores == [0.9, 0.3] and by_name["A2"].score == 0.3
        assert by_name["A2"].value == pytest.approx(aggregate([0.9, 0.3], aggregation))


def test_a_step_search_needs_a_process_reward_model():
    with pytest.raises(InvalidInput):
        ttc.BeamSearch(2, 2, prm=ttc.verifiers.LogprobConfidence())
    assert issubclass(ttc.BeamSearch, StepSearch)


# -- beam search --------------------------------------------------------------------------------
SIX = {"root": ["K1", "K2", "K3", "K4", "K5", "K6"], **{f"K{i}": [f"E{i}"] for i in range(1, 7)}}
SIX_SCORES = {"K1": 0.1, "K2": 0.5, "K3": 0.9, "K4": 0.3, "K5": 0.8, "K6": 0.2,
              **{f"E{i}": 0.5 for i in range(1, 7)}}


def test_beam_search_keeps_the_width_best_beams_and_expands_each_expansions_times():
    scores = dict(SIX_SCORES, E3=0.7, E5=0.6)
    llm, prm = toy(SIX, scores, {f"E{i}": str(i) for i in range(1, 7)})
    result = ttc.BeamSearch(width=2, expansions=3, prm=prm).solve("q?", llm, seed=0)
    assert sorted(node_name(result.tree[i]) for i in result.tree.root.children) == ["K1", "K2", "K3", "K4", "K5",
                                                                                    "K6"]
    assert expanded(result) == {"K3": 3, "K5": 3}  # the two best of six, three samples each
    assert result.answer == "3"  # E3 (0.7) is the best finished trace
    assert result.details["rounds"] == 2


def test_beam_search_with_width_three_keeps_three():
    llm, prm = toy(SIX, SIX_SCORES, {f"E{i}": str(i) for i in range(1, 7)})
    result = ttc.BeamSearch(width=3, expansions=2, prm=prm).solve("q?", llm, seed=0)
    assert expanded(result) == {"K3": 2, "K5": 2, "K2": 2}


def test_samples_are_spread_over_the_beams_left_when_others_finished():
    # root: A (0.9) and B (0.8) go on, F finishes. width 3 x expansions 1 = 3 samples per round:
    # two for the best live beam (A), one for B
    tree = {"root": ["A", "B", "F"], "A": ["A2"], "B": ["B2"]}
    llm, prm = toy(tree, {"A": 0.9, "B": 0.8, "F": 0.5, "A2": 0.6, "B2": 0.7}, {"F": "0", "A2": "1", "B2": "2"})
    result = ttc.BeamSearch(width=3, expansions=1, prm=prm).solve("q?", llm, seed=0)
    assert expanded(result) == {"A": 2, "B": 1}
    assert result.answer == "2"
    # one live beam left: it gets all width x expansions = 4 samples
    tree = {"root": ["A", "F", "G", "H"], "A": ["A2"]}
    llm, prm = toy(tree, {"A": 0.9, "F": 0.5, "G": 0.5, "H": 0.5, "A2": 0.6}, {"F": "0", "G": "0", "H": "0",
                                                                             "A2": "1"})
    result = ttc.BeamSearch(width=2, expansions=2, prm=prm).solve("q?", llm, seed=0)
    assert expanded(result) == {"A": 4}
    assert result.answer == "1"


def test_duplicate_beams_are_kept_once_only_when_unique():
    tree = {"root": ["A", "A", "B", "C"], "A": ["A2"], "B": ["B2"], "C": ["C2"]}
    scores = {"A": 0.9, "B": 0.8, "C": 0.1, "A2": 0.5, "B2": 0.5, "C2": 0.5}
    llm, prm = toy(tree, scores, {"A2": "1", "B2": "2", "C2": "3"})
    result = ttc.BeamSearch(width=2, expansions=2, prm=prm).solve("q?", llm, seed=0)
    assert expanded(result) == {"A": 2, "B": 2}
    result = ttc.BeamSearch(width=2, expansions=2, prm=prm, unique=False).solve("q?", llm, seed=0)
    assert sorted(expanded(result).items()) == [("A", 2)]  # both copies of A, two samples each
    assert sum(len(n.children) for n in result.tree if n.parent == 0) == 4


def test_dvts_subtrees_each_follow_their_best_sample():
    # each subtree samples 3 first steps from the root and continues only its best (all unfinished)
    tree = {"root": ["K1", "K2", "K3", "K4", "K5"], **{f"K{i}": [f"E{i}"] for i in range(1, 6)}}
    scores = {"K1": 0.1, "K2": 0.5, "K3": 0.9, "K4": 0.3, "K5": 0.8, **{f"E{i}": 0.5 for i in range(1, 6)}}
    llm, prm = toy(tree, scores, {f"E{i}": str(i) for i in range(1, 6)})
    for seed in range(4):
        result = ttc.DVTS(subtrees=3, expansions=3, prm=prm).solve("q?", llm, seed=seed)
        firsts = [result.tree[i] for i in result.tree.root.children]
        assert len(firsts) == 9
        for group in range(3):
            mine = [n for n in firsts if n.group == group]
            best = max(mine, key=lambda n: n.value)
            assert [n for n in mine if n.children] == [best], (seed, group)
            assert len(best.children) == 3


def test_beam_traces_end_at_exactly_max_steps():
    llm, prm = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    for max_steps in (1, 3):
        # final_completion=False: the cap itself ends the trace (the default completes it, tested elsewhere)
        steps = ttc.StepConfig(max_steps=max_steps, final_completion=False)
        result = ttc.BeamSearch(2, 2, prm, unique=False, steps=steps).solve("q?", llm, seed=0)
        assert result.details["rounds"] == max_steps
        assert {len(c.trace.steps) for c in result.candidates} == {max_steps}
        assert {c.finish_reason for c in result.candidates} == {"max_steps"}


def test_beam_search_draws_only_what_the_prm_budget_can_score():
    llm, prm = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    for calls in (1, 3, 4, 6, 9):
        result = ttc.BeamSearch(2, 2, prm, unique=False, steps=ttc.StepConfig(max_steps=5)).solve(
            "q?", llm, seed=0, budget=Budget(verifier_calls=calls))
        assert result.usage.verifier_calls == calls == result.tree.generated, calls
        assert result.details["stopped_by"] == "verifier_budget"


# -- A* ---------------------------------------------------------------------------------------------
ASTAR_TREE = {"root": ["A", "B", "C"], "A": ["A1", "A2"], "B": ["B1", "Bx", "Bx"], "C": ["C1"]}
ASTAR_SCORES = {"A": 0.9, "B": 0.6, "C": 0.3, "A1": 0.2, "A2": 0.1, "B1": 0.95, "Bx": 0.05, "C1": 0.99}


def test_astar_pops_the_lowest_f_and_stops_at_the_first_finished_pop():
    llm, prm = toy(ASTAR_TREE, ASTAR_SCORES, {"B1": "7", "C1": "9"})
    result = ttc.AStar(prm, expansions=3).solve("q?", llm, seed=0)
    order = sorted((n.expanded, node_name(n) if n.parent is not None else "root")
                   for n in result.tree if n.expanded is not None)
    # f = g + (1 - r), g = sum of (1 - r) on the path: A 0.2, B 0.8, C 1.4; A's children 1.7 and 1.9;
    # B1: g = 0.4 + 0.05, f = 0.5 -> popped next, finished: the answer
    assert [name for _, name in order] == ["root", "A", "B"]
    assert result.answer == "7"
    b1 = next(n for n in result.tree if n.parent is not None and node_name(n) == "B1")
    assert result.details["f"] == {b1.id: pytest.approx(0.5)}
    assert result.details["stopped_by"] == "solved"
    assert result.details["expanded"] == 3
    # two solutions asked: C (1.4) is popped next (Bx: 2.3), then C1 (g 0.71, f 0.72) is the second goal
    result = ttc.AStar(prm, expansions=3, solutions=2).solve("q?", llm, seed=0)
    assert sorted(result.details["f"].values()) == pytest.approx([0.5, 0.72])
    assert result.answer == "7"  # the lowest f of the two
    assert result.details["expanded"] == 4


def test_astar_cost_weight_zero_is_greedy_on_the_prm():
    # without path cost, f = 1 - r: A's children (0.8, 0.9) lose to B (0.4), B1 (0.05) wins
    llm, prm = toy(ASTAR_TREE, ASTAR_SCORES, {"B1": "7", "C1": "9"})
    result = ttc.AStar(prm, expansions=3, cost_weight=0.0).solve("q?", llm, seed=0)
    b1 = next(n for n in result.tree if n.parent is not None and node_name(n) == "B1")
    assert result.details["f"] == {b1.id: pytest.approx(0.05)}
    # a heavy path cost makes the shallow finished C1 (f = 2 x 0.7 + 2 x 0.01 + 0.01) lose to B1
    result = ttc.AStar(prm, expansions=3, cost_weight=2.0).solve("q?", llm, seed=0)
    assert result.answer == "7"
    assert result.details["f"] == {b1.id: pytest.approx(2 * 0.4 + 2 * 0.05 + 0.05)}


def test_astar_stops_after_max_expansions_with_one_partial_candidate():
    llm, prm = toy({"root": ["A", "B"], "A": ["A", "B"], "B": ["A", "B"]}, {"A": 0.7, "B": 0.6}, {})
    for cap in (1, 2, 5):
        result = ttc.AStar(prm, expansions=2, max_expansions=cap, steps=ttc.StepConfig(max_steps=50)).solve(
            "q?", llm, seed=0)
        assert result.details["expanded"] == cap
        assert result.details["stopped_by"] == "max_expansions"
        assert len(result.candidates) == 1 and result.candidates[0].finish_reason == "unfinished"
        assert result.tree.generated == 2 * cap


def test_astar_takes_finished_traces_over_partial_ones_when_the_budget_ends_it():
    # A (0.9) goes on, F (0.2) finished: the PRM budget (3 calls) ends the search before A's child
    # is scored; the finished F is the answer, although A's f is lower
    llm, prm = toy({"root": ["A", "F", "F"], "A": ["A"]}, {"A": 0.9, "F": 0.2}, {"F": "5"})
    result = ttc.AStar(prm, expansions=3).solve("q?", llm, seed=0, budget=Budget(verifier_calls=3))
    assert result.details["stopped_by"] == "verifier_budget"
    assert result.answer == "5"
    assert {c.finish_reason for c in result.candidates} == {"boxed"}
    # without any finished trace, the best partial one (lowest f) is the single candidate
    llm, prm = toy({"root": ["A", "B", "B"], "A": ["A"], "B": ["B"]}, {"A": 0.9, "B": 0.2}, {})
    result = ttc.AStar(prm, expansions=3).solve("q?", llm, seed=0, budget=Budget(verifier_calls=4))
    assert [c.trace.text.count("Step A") for c in result.candidates] == [1]
    assert result.usage.verifier_calls == 4


# -- budgets: where each search stops -------------------------------------------------------------
def long_short():
    """Two first steps: L (long steps, PRM 0.6) and S (short, 0.5), each continuing itself."""
    from logic_helpers import step_name
    from ttc.backends import Scripted
    from ttc.verifiers import ProgrammaticPRM

    def script(prompt, params, i):
        done = [s for s in prompt.split("<assistant>\n", 1)[1].split("\n\n") if s.strip()]
        name = step_name(done[-1]) if done else ["L", "S"][(i + (params.seed or 0)) % 2]
        return "Step L: " + "word " * 30 + "\n\nx" if name == "L" else "Step S: ok\n\nx"

    return Scripted(script), ProgrammaticPRM(lambda p, s: 0.6 if "Step L" in s[-1] else 0.5)


def test_beam_search_stops_in_the_round_the_token_budget_cut():
    # measured on this script: 100 tokens pay for round 1 only (round 2 refused whole); 300 for
    # round 1 and one of round 2's two requests; 450 for rounds 1-2 and one request of round 3,
    # after which the surviving beam's next step would still fit (a search that went on would
    # take it)
    llm, prm = long_short()
    for tokens, rounds, generated, steps in ((100, 1, 2, [1, 1]), (300, 2, 3, [2]), (450, 3, 5, [3])):
        result = ttc.BeamSearch(2, 1, prm, unique=False, steps=ttc.StepConfig(max_steps=8, max_step_tokens=64)).solve(
            "q?", llm, seed=0, budget=Budget(tokens=tokens))
        assert result.details["stopped_by"] == "token_budget"
        assert (result.details["rounds"], result.tree.generated) == (rounds, generated), tokens
        # nothing finished: the answer comes from the live beams, partial traces
        assert [len(c.trace.steps) for c in result.candidates] == steps
        assert {c.finish_reason for c in result.candidates} == {"unfinished"}


def test_astar_stops_when_the_token_budget_refuses_an_expansion():
    llm, prm = long_short()
    for tokens, expanded_, generated in ((100, 1, 2), (300, 2, 4)):
        result = ttc.AStar(prm, 2, steps=ttc.StepConfig(max_steps=8, max_step_tokens=64)).solve(
            "q?", llm, seed=0, budget=Budget(tokens=tokens))
        assert result.details["stopped_by"] == "token_budget"
        assert (result.details["expanded"], result.tree.generated) == (expanded_, generated), tokens
        assert len(result.candidates) == 1


def raising_prm(after_steps: int):
    """A PRM that runs out of its own budget on traces longer than `after_steps` steps."""
    from ttc.errors import BudgetExhausted
    from ttc.verifiers import ProgrammaticPRM

    def score(problem, steps):
        if len(steps) > after_steps:
            raise BudgetExhausted("the judge's own budget")
        return 0.5

    return ProgrammaticPRM(score)


def test_searches_stop_when_the_prm_cannot_score_a_round():
    llm, _ = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    result = ttc.BeamSearch(2, 2, raising_prm(1), unique=False, steps=ttc.StepConfig(max_steps=5)).solve(
        "q?", llm, seed=0)
    assert result.details["stopped_by"] == "verifier_budget"
    assert result.details["rounds"] == 1
    assert result.tree.generated == 8  # round 2's four samples were drawn, then could not be scored
    assert [len(c.trace.steps) for c in result.candidates] == [1, 1]
    result = ttc.AStar(raising_prm(1), 2, steps=ttc.StepConfig(max_steps=5)).solve("q?", llm, seed=0)
    assert result.details["stopped_by"] == "verifier_budget"
    assert result.details["expanded"] == 2
    assert [len(c.trace.steps) for c in result.candidates] == [1]


def test_every_expanded_node_records_when_it_was_expanded():
    llm, prm = toy({"root": ["A", "B"], "A": ["A", "B"], "B": ["A", "B"]}, {"A": 0.6, "B": 0.4}, {})
    result = ttc.BeamSearch(2, 2, prm, unique=False, steps=ttc.StepConfig(max_steps=3)).solve("q?", llm, seed=1)
    for node in result.tree:
        assert node.expanded == (node.depth if node.children else None)
    result = ttc.AStar(prm, 2, steps=ttc.StepConfig(max_steps=3)).solve("q?", llm, seed=1)
    pops = sorted(n.expanded for n in result.tree if n.children)
    assert pops == list(range(result.details["expanded"]))


def test_astar_asking_more_solutions_than_exist_empties_the_open_set():
    llm, prm = toy({"root": ["A", "B"]}, {"A": 0.4, "B": 0.8}, {"A": "1", "B": "2"})
    result = ttc.AStar(prm, 2, solutions=5).solve("q?", llm, seed=0)
    assert result.details["stopped_by"] == "open_set_empty"
    assert result.answer == "2" and len(result.candidates) == 2


def test_astar_selection_among_several_solutions():
    # three finished first steps: A (0.9, answer 1), B and C (0.3, answer 2)
    llm, prm = toy({"root": ["A", "B", "C"]}, {"A": 0.9, "B": 0.3, "C": 0.3}, {"A": "1", "B": "2", "C": "2"})
    for select, answer in (("best", "1"), ("weighted", "1"), ("majority", "2")):
        result = ttc.AStar(prm, 3, solutions=3, select=select).solve("q?", llm, seed=0)
        assert len(result.candidates) == 3
        assert result.answer == answer, select
    llm, prm = toy({"root": ["A", "B", "C"]}, {"A": 0.5, "B": 0.3, "C": 0.3}, {"A": "1", "B": "2", "C": "2"})
    assert ttc.AStar(prm, 3, solutions=3, select="weighted").solve("q?", llm, seed=0).answer == "2"  # 0.6 > 0.5
