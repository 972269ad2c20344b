"""The step searches' shared growth round (trim rules, stop reasons), the particle filter's typed
rounds, its explicit weight function and its optional ESS-triggered resampling. Deterministic:
Scripted backend, a table PRM (tests/logic_helpers.py)."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

import ttc
from logic_helpers import node_name, toy
from ttc.context import Budget
from ttc.errors import InvalidInput
from ttc.infos import STOP_REASONS, ParticleInfo, ParticleRound, SearchInfo, StopReason
from ttc.smc import effective_sample_size, logit, softmax
from ttc.steps import StepConfig
from ttc.strategies.stepwise import all_or_nothing, each_capped, in_order


def keep_all(rng, weights, n):
    """A resampler that keeps every particle (to read the weights of later rounds)."""
    return list(range(n))


# -- trim rules ---------------------------------------------------------------------------------
def test_all_or_nothing_grants_every_request_only_when_the_budget_covers_them_all():
    assert all_or_nothing([2, 3], 5) == [2, 3]  # exactly enough
    assert all_or_nothing([2, 3], 4) == [0, 0]
    assert all_or_nothing([1], 0) == [0]


def test_in_order_fills_requests_first_to_last():
    assert in_order([2, 3, 1], 4) == [2, 2, 0]
    assert in_order([2, 3, 1], 6) == [2, 3, 1]
    assert in_order([2, 3], 0) == [0, 0]
    assert in_order([1, 3, 3], 5) == [1, 3, 1]  # what is left after each grant, not after the first


def test_each_capped_caps_every_request_independently():
    assert each_capped([2, 5], 3) == [2, 3]
    assert each_capped([4], 4) == [4]
    assert each_capped([4], 0) == [0]


# -- stop reasons: a closed set -----------------------------------------------------------------
def test_stop_reasons_are_one_closed_literal():
    assert set(typing.get_args(StopReason)) == set(STOP_REASONS)
    assert {"verifier_budget", "token_budget", "search_complete", "solved", "max_expansions", "open_set_empty",
            "all_finished", "decided", "max_n", "budget", "confident", "verified", "unsure",
            "max_rounds"} == set(STOP_REASONS)
    with pytest.raises(InvalidInput, match="unknown stop reason 'tired'"):
        SearchInfo(select="best", nodes=1, finished=0, generated=0, stopped_by="tired")


def every_stop(result) -> str:
    assert result.details.stopped_by in STOP_REASONS
    return result.details.stopped_by


def test_each_search_reports_the_budget_stop_of_its_trim_rule():
    # 4 samples wanted per round/pop, the verifier budget allows 6 scored steps in all
    llm, prm = toy({"root": ["A"], "A": ["A"]}, {"A": 0.5}, {})
    budget = Budget(verifier_calls=6)
    steps = StepConfig(max_steps=5)
    pf = ttc.ParticleFilter(particles=4, prm=prm, steps=steps).solve("q?", llm, seed=0, budget=budget)
    beam = ttc.BeamSearch(width=2, expansions=2, prm=prm, steps=steps).solve("q?", llm, seed=0, budget=budget)
    astar = ttc.AStar(prm=prm, expansions=4, steps=steps).solve("q?", llm, seed=0, budget=budget)
    assert [every_stop(r) for r in (pf, beam, astar)] == ["verifier_budget"] * 3
    # particle: all or nothing (4, then 2 < 4 left: nothing); beam: in order (4, then 2 of 4);
    # A*: min(4, left) (4, then 2)
    assert pf.tree.generated == 4 and pf.details["rounds"] == 1
    assert beam.tree.generated == 6 and beam.details["rounds"] == 2
    assert astar.tree.generated == 6 and astar.details["expanded"] == 2
    assert all(r.usage.verifier_calls <= 6 for r in (pf, beam, astar))


# -- typed rounds -------------------------------------------------------------------------------
def test_particle_rounds_are_frozen_records_and_details_read_as_before():
    llm, prm = toy({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]}, {"A": 0.8, "B": 0.4, "A2": 0.5, "B2": 0.5}, {})
    result = ttc.ParticleFilter(particles=4, prm=prm, steps=StepConfig(max_steps=2)).solve("q?", llm, seed=0)
    info = result.details
    assert isinstance(info, ParticleInfo) and len(info.history) == 2
    first = info.history[0]
    assert isinstance(first, ParticleRound) and first.round == 0 and first.resampled
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.ess = 1.0
    assert first.weights == pytest.approx(softmax([logit(s) for s in first.scores]))
    assert first.ess == pytest.approx(effective_sample_size(first.weights))
    # the mapping view is the JSON of before: lists, "resampled" = the ancestors
    assert info["history"][0] == {"round": 0, "nodes": list(first.nodes), "scores": list(first.scores),
                                  "weights": list(first.weights), "ess": first.ess,
                                  "resampled": list(first.ancestors)}
    assert info["ess"] == [r.ess for r in info.history] and info["rounds"] == 2
    assert dict(info) == info.to_dict()
    with pytest.raises(TypeError):
        info["rounds"] = 3
    info["history"][0]["ess"] = -1.0  # a copy: the record does not change
    assert info.history[0].ess == first.ess


# -- the weight function is explicit --------------------------------------------------------------
def two_step_tree():
    # A (0.9) -> A2 (0.5) and B (0.1) -> B2 (0.6): the latest score favours B, the min favours A
    return toy({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]}, {"A": 0.9, "B": 0.1, "A2": 0.5, "B2": 0.6}, {})


@pytest.mark.parametrize("weight_by, a, b", [("last", 0.5, 0.6), ("min", 0.5, 0.1), ("mean", 0.7, 0.35),
                                             ("prod", 0.45, 0.06)])
def test_weight_by_chooses_the_aggregate_of_step_scores_that_is_weighted(weight_by, a, b):
    llm, prm = two_step_tree()
    pf = ttc.ParticleFilter(particles=4, prm=prm, resampling=keep_all, weight_by=weight_by,
                            steps=StepConfig(max_steps=2))
    details = pf.solve("q?", llm, seed=0).details
    assert details.weight_by == weight_by and details.get("weight_by", "last") == weight_by  # in the JSON if not "last"
    second = details.history[1]
    expected = softmax([logit(a if s == 0.5 else b) for s in second.scores])
    assert second.weights == pytest.approx(expected)


def test_aggregation_never_changes_the_weights():
    llm, prm = two_step_tree()
    weights = []
    for aggregation in ("last", "min", "prod"):
        pf = ttc.ParticleFilter(particles=4, prm=prm, resampling=keep_all, aggregation=aggregation,
                                steps=StepConfig(max_steps=2))
        weights.append(pf.solve("q?", llm, seed=0).details.history[1].weights)
    assert weights[0] == weights[1] == weights[2]
    # "last": logit(0.5) = 0 for the A2 particles, logit(0.6) = log(1.5) for the B2 ones
    assert sorted(set(weights[0])) == pytest.approx([1 / 5, 1.5 / 5])


def test_an_unscored_particle_weighs_nothing():
    # a particle still at the root (its request returned no step) has no score: weight 0, as before
    from ttc.steps import Node
    from ttc.types import Trace

    pf = ttc.ParticleFilter(4, ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.5))
    root = Node(id=0, parent=None, depth=0, trace=Trace())
    assert pf.log_weight(root) == -math.inf
    scored = Node(id=1, parent=0, depth=1, trace=Trace(), step_scores=[0.2, 0.8], score=0.8)
    assert pf.log_weight(scored) == pytest.approx(math.log(4.0))


def test_weight_by_is_checked():
    with pytest.raises(InvalidInput, match="unknown aggregation"):
        ttc.ParticleFilter(4, ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.5), weight_by="max")


# -- resampling by name or function -------------------------------------------------------------
@pytest.mark.parametrize("resampling", ["stratified", "residual"])
def test_the_new_resamplers_run_in_the_filter_and_are_recorded_by_name(resampling):
    llm, prm = two_step_tree()
    result = ttc.ParticleFilter(particles=4, prm=prm, resampling=resampling,
                                steps=StepConfig(max_steps=2)).solve("q?", llm, seed=0)
    assert result.details["resampling"] == resampling and result.details["stopped_by"] == "all_finished"
    assert all(len(h["resampled"]) == 4 for h in result.details["history"])


def test_a_resampler_function_decides_the_next_population():
    calls = []

    def all_from_the_first(rng, weights, n):
        calls.append(list(weights))
        return [0] * n

    llm, prm = two_step_tree()
    result = ttc.ParticleFilter(particles=4, prm=prm, resampling=all_from_the_first,
                                steps=StepConfig(max_steps=2)).solve("q?", llm, seed=0)
    assert len(calls) == 2 and result.details["resampling"] == "all_from_the_first"
    first = result.details.history[0]
    assert set(result.details.history[1].nodes) <= set(result.tree[first.nodes[0]].children)
    with pytest.raises(InvalidInput, match="unknown resampling"):
        ttc.ParticleFilter(4, resampling="bogus")
    with pytest.raises(InvalidInput, match="a name"):
        ttc.ParticleFilter(4, resampling=2)


# -- ESS-triggered resampling -----------------------------------------------------------------
def ess_filter(threshold, scores=None, particles=4):
    """Round 0: particles 0, 2 step to A, 1, 3 to B (A: 0.8, B: 0.4 -> ESS = 2.649 of 4 = 0.662 N);
    round 1: each takes one more step and finishes (max_steps=2)."""
    scores = scores or {"A": 0.8, "B": 0.4, "A2": 0.5, "B2": 0.5}
    llm, prm = toy({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]}, scores, {})
    pf = ttc.ParticleFilter(particles=particles, prm=prm, resample_threshold=threshold, steps=StepConfig(max_steps=2))
    return pf.solve("q?", llm, seed=0)


def test_the_default_resamples_every_round():
    for h in ess_filter(None).details.history:
        assert h.resampled
    assert "resample_threshold" not in ess_filter(None).details


def test_resampling_happens_only_when_ess_is_below_threshold_times_n():
    ess = ess_filter(None).details.history[0].ess
    assert ess == pytest.approx(1 / (2 * (4 / 9.333333) ** 2 + 2 * ((2 / 3) / 9.333333) ** 2), rel=1e-4)
    assert 0.6 < ess / 4 < 0.7
    skipped = ess_filter(0.6).details
    assert not skipped.history[0].resampled and skipped.history[0].ancestors == (0, 1, 2, 3)
    assert skipped["history"][0]["resampling_skipped"] is True and skipped["resample_threshold"] == 0.6
    resampled = ess_filter(0.7).details  # ESS 2.649 < 0.7 * 4 = 2.8 (but not < 0.7 itself)
    assert resampled.history[0].resampled


def test_a_skipped_round_carries_every_particle_into_the_next():
    result = ess_filter(0.6)
    first, second = result.details.history
    # particle i of round 1 is the child of particle i of round 0: nobody was dropped or copied
    for before, after in zip(first.nodes, second.nodes, strict=True):
        assert result.tree[after].parent == before
    assert sorted(node_name(result.tree[n]) for n in second.nodes) == ["A2", "A2", "B2", "B2"]


def test_equal_weights_reach_the_threshold_and_are_not_resampled():
    # equal scores: ESS = N exactly, and N < 1.0 * N is false
    result = ess_filter(1.0, scores={"A": 0.5, "B": 0.5, "A2": 0.5, "B2": 0.5})
    assert [h.ess for h in result.details.history] == [4.0, 4.0]
    assert [h.resampled for h in result.details.history] == [False, False]


@pytest.mark.parametrize("threshold", [0, -0.5, 1.5, True, "0.5", math.nan])
def test_resample_threshold_is_checked(threshold):
    with pytest.raises(InvalidInput, match="resample_threshold"):
        ttc.ParticleFilter(4, resample_threshold=threshold)


# -- typed results ------------------------------------------------------------------------------
def test_results_carry_typed_details_and_a_typed_tree():
    from ttc.backends import Scripted
    from ttc.infos import Info, VoteInfo
    from ttc.steps import SearchTree

    vote = ttc.MajorityVote(n=3).solve("q?", Scripted(["\\boxed{1}", "\\boxed{2}", "\\boxed{1}"]))
    assert isinstance(vote.details, VoteInfo) and vote.tree is None
    assert vote.details["votes"] == {"1": 2.0, "2": 1.0} and vote.details.votes == {"1": 2.0, "2": 1.0}
    assert vote.to_dict()["details"] == {"votes": {"1": 2.0, "2": 1.0}}
    plain = ttc.Sample().solve("q?", Scripted(["\\boxed{1}"]))
    assert type(plain.details) is Info and dict(plain.details) == {}
    llm, prm = two_step_tree()
    beam = ttc.BeamSearch(width=2, expansions=2, prm=prm, steps=StepConfig(max_steps=2)).solve("q?", llm, seed=0)
    assert isinstance(beam.tree, SearchTree)
    # a dict given to a Result becomes its info's extra keys
    built = ttc.Result(problem=ttc.Problem("q?"), answer=None, candidates=[], usage=ttc.Usage(), strategy="x",
                       details={"k": 1})
    assert built.details["k"] == 1 and built.details.with_extra(j=2).to_dict() == {"k": 1, "j": 2}
