"""Step-level search (beam search, DVTS, A*, particle filter) on toy trees with an oracle PRM.

Every test runs on the scripted backend: the script reads the steps so far from the prompt and
answers with the next step of a known tree, and a programmatic PRM scores steps from a table.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import Counter

import pytest

import ttc
from ttc.backends import Generation, Generator, Scripted
from ttc.backends.base import TOKEN_IDS
from ttc.context import Budget, Context
from ttc.errors import InvalidInput
from ttc.steps import SearchTree, StepConfig, Stepper, has_closed_box
from ttc.strategies.particle import effective_sample_size, logit, resample
from ttc.strategies.registry import make_strategy
from ttc.types import Completion, Problem, SamplingParams, Trace, Usage
from ttc.verifiers import LLMJudge, LogprobConfidence, ProgrammaticPRM, aggregate, score_steps
from ttc.verifiers.process import PRMVerifier

NAME = re.compile(r"Step (\w+)")


class ToyTree:
    """A known tree of steps. `children[name]` lists a node's children ("root" for the first step),
    `scores[name]` is the oracle PRM's score of a step, `answers[name]` marks final steps."""

    def __init__(self, children: dict[str, list[str]], scores: dict[str, float], answers: dict[str, str]):
        self.children = children
        self.scores = scores
        self.answers = answers
        self.calls: list[list[str]] = []

    @staticmethod
    def name(step: str) -> str | None:
        match = NAME.match(step.strip())
        return match.group(1) if match else None

    def path(self, prompt: str) -> list[str | None]:
        rest = prompt.split("<assistant>\n", 1)[1]
        return [self.name(s) for s in rest.split("\n\n") if s.strip()]

    def script(self, prompt: str, params: SamplingParams, i: int) -> str:
        path = self.path(prompt)
        self.calls.append(path)
        parent = path[-1] if path else "root"
        if parent not in self.children:  # a step cut short by a tight budget: end the trace
            return "\\boxed{0}"
        kids = self.children[parent]
        name = kids[(i + (params.seed or 0)) % len(kids)]
        if name in self.answers:
            return f"Step {name}: so the answer is \\boxed{{{self.answers[name]}}}."
        return f"Step {name}: more work.\n\nStep ignored"  # the stop string cuts the rest

    def backend(self, **kwargs) -> Scripted:
        return Scripted(self.script, **kwargs)

    def prm(self) -> ProgrammaticPRM:
        return ProgrammaticPRM(lambda problem, steps: self.scores.get(self.name(steps[-1]), 0.0), name="oracle")


def decoy_tree() -> ToyTree:
    """The first step that looks best (A, 0.8) leads nowhere; B (0.7) -> B1 (0.9) -> 42 is best."""
    children = {"root": ["A", "B", "C"], "A": ["A1", "A2", "A3"], "B": ["B1", "B2", "B3"], "C": ["C1"],
                "A1": ["A1x"], "A2": ["A2x"], "A3": ["A3x"], "B1": ["B1x", "B1y"], "B2": ["B2x"], "B3": ["B3x"],
                "C1": ["C1x"]}
    scores = {"A": .8, "B": .7, "C": .2, "A1": .3, "A2": .2, "A3": .1, "B1": .9, "B2": .5, "B3": .4, "C1": .1,
              "A1x": .2, "A2x": .2, "A3x": .2, "B1x": .95, "B1y": .6, "B2x": .5, "B3x": .4, "C1x": .1}
    answers = {"A1x": "1", "A2x": "2", "A3x": "3", "B1x": "42", "B1y": "7", "B2x": "5", "B3x": "6", "C1x": "9"}
    return ToyTree(children, scores, answers)


def chain_tree(depth: int = 4, branching: int = 3) -> ToyTree:
    """Every node has one good child (0.9) and poor ones (0.2, 0.1, ...); the all-good path answers 1."""
    children: dict[str, list[str]] = {}
    scores: dict[str, float] = {}
    answers: dict[str, str] = {}
    labels = "gbcdefh"[:branching]

    def build(name: str, d: int) -> None:
        kids = [f"{name}{c}" for c in labels]
        children["root" if name == "R" else name] = kids
        for k, kid in enumerate(kids):
            scores[kid] = 0.9 if k == 0 else 0.2 / k
            if d + 1 == depth:
                answers[kid] = "1" if set(kid[1:]) == {"g"} else "0"
            else:
                build(kid, d + 1)

    build("R", 0)
    return ToyTree(children, scores, answers)


def names(trace: Trace) -> list[str]:
    return [NAME.match(s.text.strip()).group(1) for s in trace.steps]


def assert_usage_exact(result: ttc.Result) -> None:
    assert result.tree.usage().counts() == result.usage.counts()


def strategies_for(prm, **kw):
    return [ttc.BeamSearch(2, 3, prm, **kw), ttc.DVTS(2, 3, prm, **kw), ttc.AStar(prm, 3, **kw),
            ttc.ParticleFilter(6, prm, **kw), ttc.ParticleFilter(6, prm, resampling="systematic", **kw)]


# -- finding the best path ----------------------------------------------------------------------
def test_beam_search_finds_the_best_path_past_a_decoy():
    tree = decoy_tree()
    result = ttc.BeamSearch(width=2, expansions=3, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    assert result.answer == "42"
    best = max(result.candidates, key=lambda c: c.scores["oracle"])
    assert names(best.trace) == ["B", "B1", "B1x"]
    assert best.finish_reason == "boxed"
    assert [s.score for s in best.trace.steps] == [0.7, 0.9, 0.95]
    assert_usage_exact(result)
    # greedy on the first step (a beam of one) falls for the decoy: the tree really has one
    greedy = ttc.BeamSearch(width=1, expansions=3, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    assert greedy.answer != "42"


def test_astar_backtracks_from_the_decoy_to_the_best_path():
    tree = decoy_tree()
    result = ttc.AStar(tree.prm(), expansions=3).solve("q?", tree.backend(), seed=0)
    assert result.answer == "42"
    assert names(result.candidates[0].trace) == ["B", "B1", "B1x"]
    expanded = sorted((n for n in result.tree if n.expanded is not None), key=lambda n: n.expanded)
    order = [names(n.trace)[-1] if n.trace.steps else "root" for n in expanded]
    assert order[:3] == ["root", "A", "B"]  # A looked best, its children did not: back to B
    assert result.details["stopped_by"] == "solved"
    assert_usage_exact(result)


def test_astar_generates_fewer_steps_than_beam_search_when_the_prm_is_informative():
    tree = chain_tree(depth=4, branching=3)
    beam = ttc.BeamSearch(width=3, expansions=3, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    astar = ttc.AStar(tree.prm(), expansions=3).solve("q?", tree.backend(), seed=0)
    assert beam.answer == astar.answer == "1"
    assert astar.tree.generated < beam.tree.generated
    assert astar.usage.total_tokens < beam.usage.total_tokens
    assert astar.usage.verifier_calls < beam.usage.verifier_calls
    assert astar.details["expanded"] == 4  # root and the three good steps: no detour


def test_dvts_keeps_independent_subtrees():
    tree = chain_tree(depth=3, branching=3)
    result = ttc.DVTS(subtrees=3, expansions=3, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    assert result.answer == "1"
    assert result.strategy == "dvts"
    groups = Counter(n.group for n in result.tree if n.parent is not None)
    assert set(groups) == {0, 1, 2} and set(groups.values()) == {9}  # 3 rounds x 3 samples each
    for node in result.tree:  # a subtree never adopts another's node
        if node.parent not in (None, 0):
            assert node.group == result.tree[node.parent].group
    assert_usage_exact(result)


def _dvts_repro(a1: float):
    # one subtree: root -> F (boxed 1, PRM 0.95), A (0.5), B (0.4); A -> A1 (boxed 2), B -> B1 (boxed 3)
    tree = ToyTree({"root": ["F", "A", "B"], "A": ["A1"], "B": ["B1"]},
                   {"F": .95, "A": .5, "B": .4, "A1": a1, "B1": .2}, {"F": "1", "A1": "2", "B1": "3"})
    return tree, tree.prm()


@pytest.mark.parametrize("select", ["weighted", "best"])
def test_dvts_stops_a_subtree_when_its_best_sample_finishes(select):
    # search-and-learn's _dvts: the best of the 3 samples (F, 0.95) finished, so the subtree ends
    # after round 1 with "1"; it used to spend a second round on A and let 3 x A1 (0.35) outvote F
    tree, prm = _dvts_repro(0.35)
    result = ttc.DVTS(subtrees=1, expansions=3, prm=prm, select=select).solve("q?", tree.backend(), seed=0)
    assert (result.details["rounds"], result.details["generated"]) == (1, 3)
    assert result.answer == "1"
    assert [c.answer for c in result.candidates] == ["1"]


def test_dvts_continues_a_subtree_whose_best_sample_is_unfinished():
    # F (0.4) finished but A (0.9) is better: the subtree goes on from A; its last round (A1) is the pool
    tree = ToyTree({"root": ["F", "A"], "A": ["A1"]}, {"F": .4, "A": .9, "A1": .3}, {"F": "1", "A1": "2"})
    result = ttc.DVTS(subtrees=1, expansions=2, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    assert result.details["rounds"] == 2
    assert result.answer == "2" and [c.answer for c in result.candidates] == ["2", "2"]


def test_particle_filter_concentrates_on_the_good_path():
    tree = chain_tree(depth=3, branching=2)
    result = ttc.ParticleFilter(particles=16, prm=tree.prm(), temperature=0.5).solve("q?", tree.backend(), seed=1)
    assert result.answer == "1"
    assert result.details["stopped_by"] == "all_finished"
    assert len(result.details["ess"]) == result.details["rounds"] == 3
    # the population concentrates: a bad step weighs e^-7.2 of a good one at T = 0.5, so after
    # resampling every final particle is on the all-good path (a filter that skips resampling fails)
    on_good = sum(m for c, m in zip(result.candidates, result.details["multiplicity"], strict=False) if c.answer == "1")
    assert on_good == 16
    assert_usage_exact(result)


def test_a_seeded_search_is_reproducible():
    tree = decoy_tree()
    for strategy in strategies_for(tree.prm()):
        a = strategy.solve("q?", tree.backend(), seed=3)
        b = strategy.solve("q?", tree.backend(), seed=3)
        assert [n.trace.text for n in a.tree] == [n.trace.text for n in b.tree], strategy.name
        assert a.answer == b.answer and a.usage.counts() == b.usage.counts()


# -- particle filter statistics -----------------------------------------------------------------
CHI2_P001 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}  # chi-square critical values, p = 0.001


def chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=False))


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_frequencies_match_the_weights(method):
    weights = [0.05, 0.15, 0.3, 0.5]
    rng = random.Random(1234)
    draws = 20_000
    counts = Counter()
    for _ in range(draws // 100):
        counts.update(resample(weights, 100, rng, method))
    expected = [w * draws for w in weights]
    observed = [counts[i] for i in range(len(weights))]
    assert chi_square(observed, expected) < CHI2_P001[len(weights) - 1]
    # the test can fail: the same counts are far from other weights
    assert chi_square(observed, [0.25 * draws] * 4) > CHI2_P001[3]


def test_systematic_resampling_draws_each_particle_floor_or_ceil_of_n_w():
    rng = random.Random(7)
    for _ in range(200):
        weights = [rng.random() for _ in range(5)]
        total = sum(weights)
        counts = Counter(resample(weights, 10, rng, "systematic"))
        for i, w in enumerate(weights):
            assert math.floor(10 * w / total) <= counts[i] <= math.ceil(10 * w / total)


def test_effective_sample_size():
    assert effective_sample_size([1, 1, 1, 1]) == pytest.approx(4)
    assert effective_sample_size([0, 0, 5, 0]) == pytest.approx(1)
    assert effective_sample_size([0.5, 0.25, 0.25]) == pytest.approx(1 / (0.25 + 0.0625 + 0.0625))
    with pytest.raises(InvalidInput):
        effective_sample_size([0, 0])


def _one_round(particles: int, resampling: str, seed: int, temperature: float = 1.5):
    # one step: half the particles draw "g" (PRM 0.8), half "b" (PRM 0.4); all finish (max_steps=1)
    tree = ToyTree({"root": ["g", "b"]}, {"g": 0.8, "b": 0.4}, {})
    pf = ttc.ParticleFilter(particles=particles, prm=tree.prm(), temperature=temperature, resampling=resampling,
                            steps=StepConfig(max_steps=1))
    result = pf.solve("q?", tree.backend(), seed=seed)
    (round0,) = result.details["history"]
    scores = round0["scores"]
    assert sorted(Counter(scores).items()) == [(0.4, particles // 2), (0.8, particles // 2)]
    # the weights, recomputed here from the scores: softmax(logit(p) / T)
    raw = [math.exp(math.log(p / (1 - p)) / temperature) for p in scores]
    weights = [r / sum(raw) for r in raw]
    assert round0["weights"] == pytest.approx(weights)
    assert round0["ess"] == pytest.approx(1 / sum(w * w for w in weights))
    assert sum(result.details["multiplicity"]) == particles
    return round0, weights


def test_particle_filter_resamples_in_proportion_to_softmax_of_prm_logits():
    round0, weights = _one_round(1000, "multinomial", seed=5)
    scores = round0["scores"]
    p_good = sum(w for w, s in zip(weights, scores, strict=False) if s == 0.8)
    kept_good = sum(scores[i] == 0.8 for i in round0["resampled"])
    observed = [kept_good, 1000 - kept_good]
    assert chi_square(observed, [1000 * p_good, 1000 * (1 - p_good)]) < CHI2_P001[1]
    assert chi_square(observed, [500, 500]) > CHI2_P001[1]  # not a uniform draw


def test_particle_filter_systematic_resampling_matches_the_weights_on_average():
    kept = []
    for seed in range(30):
        round0, weights = _one_round(100, "systematic", seed=seed)
        counts = Counter(round0["resampled"])
        for i, w in enumerate(weights):  # every particle: floor or ceil of its expected count
            assert math.floor(100 * w) <= counts[i] <= math.ceil(100 * w)
        kept.append(sum(c for i, c in counts.items() if round0["scores"][i] == 0.8))
    p_good = sum(w for w, s in zip(weights, round0["scores"], strict=False) if s == 0.8)
    # a run keeps all 100 or 50 good particles (the draw is periodic): the mean has sd 25/sqrt(30)
    assert abs(sum(kept) / len(kept) - 100 * p_good) < 4 * 25 / math.sqrt(30)


def test_particle_filter_ess_is_recorded_every_round():
    tree = chain_tree(depth=3, branching=3)
    result = ttc.ParticleFilter(particles=9, prm=tree.prm()).solve("q?", tree.backend(), seed=2)
    for entry in result.details["history"]:
        raw = [0.0 if s is None else math.exp(logit(s)) for s in entry["scores"]]
        w = [r / sum(raw) for r in raw]
        assert entry["ess"] == pytest.approx(1 / sum(x * x for x in w))
        assert 1 <= entry["ess"] <= 9
    assert result.details["ess"] == [h["ess"] for h in result.details["history"]]


def test_finished_particles_stop_but_stay_in_the_population():
    # "fast" finishes at once (0.9); "slow" needs two more steps: finished particles are never extended
    tree = ToyTree({"root": ["fast", "slow"], "slow": ["slow2"], "slow2": ["slow3"]},
                   {"fast": 0.9, "slow": 0.5, "slow2": 0.5, "slow3": 0.5}, {"fast": "1", "slow3": "2"})
    result = ttc.ParticleFilter(particles=8, prm=tree.prm()).solve("q?", tree.backend(), seed=0)
    fast = [n for n in result.tree if n.trace.steps and names(n.trace) == ["fast"]]
    assert all(not n.children for n in fast)
    assert result.answer == "1"
    history = result.details["history"]
    assert len(history) >= 2  # slow particles survived round 0 and were extended once more
    fast_ids = {n.id for n in fast}
    kept = [history[0]["nodes"][i] for i in history[0]["resampled"]]
    # the finished particles resampled in round 0 are, unchanged, part of round 1's population
    assert [n for n in history[1]["nodes"] if n in fast_ids] == [n for n in kept if n in fast_ids] != []
    assert_population_carried(result)


def assert_population_carried(result: ttc.Result) -> None:
    """Round r+1 starts from the particles resampled at round r: particle i of round r+1 is the
    resampled particle i itself (finished) or its child (extended)."""
    history = result.details["history"]
    for before, after in zip(history, history[1:], strict=False):
        for i, j in enumerate(before["resampled"]):
            parent = result.tree[before["nodes"][j]]
            node = result.tree[after["nodes"][i]]
            assert node is parent if parent.finished else node.parent == parent.id


def test_particle_filter_carries_the_resampled_population_into_the_next_round():
    tree = chain_tree(depth=3, branching=3)
    result = ttc.ParticleFilter(particles=9, prm=tree.prm()).solve("q?", tree.backend(), seed=4)
    history = result.details["history"]
    assert len(history) == 3
    # the resampling is not the identity here, so a filter that ignores it fails
    assert any(h["resampled"] != list(range(9)) for h in history[:-1])
    assert_population_carried(result)
    # and the final population is the last round's resampled particles
    last = [history[-1]["nodes"][i] for i in history[-1]["resampled"]]
    assert sorted(Counter(last).values()) == sorted(result.details["multiplicity"])


def test_particle_filter_select_best_picks_the_best_final_particle():
    # three finished answers of PRM 0.3, 0.9, 0.5; a huge temperature gives uniform weights, so
    # systematic resampling keeps each particle exactly once: best must choose 0.9's answer
    tree = ToyTree({"root": ["a", "b", "c"]}, {"a": 0.3, "b": 0.9, "c": 0.5}, {"a": "1", "b": "2", "c": "3"})
    for seed in range(3):
        result = ttc.ParticleFilter(particles=3, prm=tree.prm(), temperature=1e9, resampling="systematic",
                                    select="best").solve("q?", tree.backend(), seed=seed)
        assert result.details["multiplicity"] == [1, 1, 1]
        assert result.answer == "2", seed


def test_particle_filter_refuses_a_prm_whose_scores_are_not_probabilities():
    # clipping made 5.0 and 2.0 the same weight; the error names the PRM
    tree = ToyTree({"root": ["a", "b"]}, {"a": 5.0, "b": 2.0}, {"a": "1", "b": "2"})
    prm = ProgrammaticPRM(lambda p, steps: tree.scores[tree.name(steps[-1])], name="raw_logits")
    with pytest.raises(InvalidInput, match="'raw_logits'.*probabilities"):
        ttc.ParticleFilter(particles=2, prm=prm).solve("q?", tree.backend(), seed=0)


def test_a_budget_stopped_particle_filter_answers_from_a_finished_particle():
    # review repro: F finishes (0.6), U does not (0.9); the verifier budget stops the filter after
    # one round; the answer used to be "3", read out of U's partial "5 + 3 ="
    def script(prompt, params, i):
        return ["Step F: \\boxed{8}", "Step U: 5 + 3 =\n\n"][i % 2]
    score = {"F": 0.6, "U": 0.9}
    prm = ProgrammaticPRM(lambda p, s: score[re.match(r"Step (\w+)", s[-1]).group(1)])
    seen = Counter()
    for seed in range(8):
        result = ttc.ParticleFilter(particles=4, prm=prm).solve("q?", Scripted(script), seed=seed,
                                                                budget=Budget(verifier_calls=4))
        assert result.details["stopped_by"] == "verifier_budget"
        (last,) = result.details["history"]
        population = [result.tree[last["nodes"][i]] for i in last["resampled"]]
        if any(p.finished for p in population):  # a finished particle survived: it answers
            assert result.answer == "8", seed
            assert all(c.finish_reason == "boxed" for c in result.candidates)
        else:  # only partial particles survived: they are all there is
            assert all(c.finish_reason == "unfinished" for c in result.candidates), seed
        seen[any(p.finished for p in population)] += 1
    assert seen[True] >= 2 and seen[False] >= 2  # both cases occur among these seeds


# -- budgets and usage ------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", [40, 90, 200, 500, 1200])
def test_token_budget_is_never_exceeded(tokens):
    tree = decoy_tree()
    for strategy in strategies_for(tree.prm()):
        result = strategy.solve("q?", tree.backend(), budget=Budget(tokens=tokens, min_candidate_tokens=1), seed=0)
        assert result.ok
        assert result.usage.total_tokens <= tokens, strategy.name
        assert_usage_exact(result)


@pytest.mark.parametrize("calls", [1, 2, 4, 7, 11])
def test_verifier_call_budget_is_never_exceeded(calls):
    tree = decoy_tree()
    for strategy in strategies_for(tree.prm()):
        result = strategy.solve("q?", tree.backend(), budget=Budget(verifier_calls=calls), seed=0)
        assert result.ok
        assert result.usage.verifier_calls <= calls, strategy.name
        # a particle filter only starts a round its budget can score for all 6 particles
        assert result.usage.verifier_calls > 0 or (strategy.name == "particle" and calls < 6)
        assert_usage_exact(result)


def test_an_unlimited_search_spends_more_than_the_capped_ones():
    # the caps above bind: without them the same searches use more tokens and PRM calls
    tree = decoy_tree()
    for strategy in strategies_for(tree.prm()):
        result = strategy.solve("q?", tree.backend(), seed=0)
        assert result.usage.total_tokens > 200 and result.usage.verifier_calls > 7, strategy.name


def test_usage_is_exact_with_a_judge_that_spends_verifier_tokens():
    tree = decoy_tree()
    judge_llm = Scripted(lambda prompt, params, i: "Yes" if "Step B" in prompt else "No", default_logprob=-0.2)
    for index in range(5):
        strategy = strategies_for(LLMJudge(judge_llm))[index]  # a fresh judge: its cache starts empty
        result = strategy.solve("q?", tree.backend(), seed=0)
        assert result.usage.verifier_tokens > 0
        assert_usage_exact(result)
        for node in result.tree:  # every scored node carries its call
            assert node.usage.verifier_calls == (0 if node.score is None else 1)


def test_candidates_carry_the_usage_of_their_path():
    tree = decoy_tree()
    result = ttc.AStar(tree.prm(), expansions=3).solve("q?", tree.backend(), seed=0)
    (candidate,) = result.candidates
    leaf = next(n for n in result.tree if n.trace is candidate.trace)
    assert candidate.usage.counts() == result.tree.path_usage(leaf).counts()
    assert candidate.usage.completion_tokens < result.usage.completion_tokens


def test_expansions_of_a_round_are_concurrent_and_problems_share_the_backend():
    class Counting(Scripted):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.inflight = self.peak = 0

        async def generate(self, prompt, params):
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            try:
                return await super().generate(prompt, params)
            finally:
                self.inflight -= 1

    tree = chain_tree(depth=3, branching=3)
    llm = Counting(tree.script, latency=0.02)
    ttc.BeamSearch(width=3, expansions=3, prm=tree.prm()).solve("q?", llm, seed=0)
    assert llm.peak == 3  # the three beams' requests of a round run together
    llm = Counting(tree.script, latency=0.02)
    results = ttc.solve_many(ttc.BeamSearch(width=3, expansions=3, prm=tree.prm()),
                             ["q1?", "q2?", "q3?", "q4?"], llm, progress=False, seed=0)
    assert all(r.ok and r.answer == "1" for r in results)
    assert llm.peak > 3  # requests of different problems are in flight together


def test_result_usage_is_the_contexts():
    tree = decoy_tree()
    ctx = Context(tree.backend(), seed=0)
    result = asyncio.run(ttc.BeamSearch(2, 3, tree.prm()).run(Problem("q?"), ctx))
    assert result.usage is ctx.usage


# -- steps and traces ---------------------------------------------------------------------------
class CharBackend(Generator):
    """A backend with vLLM's conventions on a character tokenizer: the token completing a stop
    string and EOS stay in token_ids (the text is cut); completions come from a list."""

    capabilities = frozenset({TOKEN_IDS})
    EOS = 0

    def __init__(self, responses: list[str]):
        self.responses = list(responses)
        self.prompts: list[list[int]] = []

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != self.EOS)

    @property
    def eos_token_ids(self):
        return frozenset({self.EOS})

    async def tokenize(self, text):
        return [ord(c) for c in text]

    async def chat_prompt(self, messages):
        return [ord(c) for c in "Q: " + messages[-1]["content"] + "\nA: "]

    async def generate(self, prompt, params):
        self.prompts.append(list(prompt))
        text = self.responses.pop(0)
        ids, out = [], ""
        for ch in text:
            ids.append(ord(ch))
            out += ch
            if any(out.endswith(s) for s in params.stop):
                stop = next(s for s in params.stop if out.endswith(s))
                return Generation(len(prompt), [Completion(out[: -len(stop)], tuple(ids), "stop")])
        ids.append(self.EOS)
        return Generation(len(prompt), [Completion(out, tuple(ids), "stop")])


def test_continuations_are_the_prompt_ids_plus_the_steps_ids_with_one_delimiter():
    llm = CharBackend(["one\n\n", "two\n\n", "three"])
    ctx = Context(llm, seed=0)

    async def go():
        stepper = await Stepper(Problem("q"), ctx, StepConfig(max_steps=5)).start()
        trace = Trace()
        reasons = []
        for _ in range(3):
            (e,) = await stepper.expand(trace, 1)
            trace = e.trace
            reasons.append(e.finish_reason)
        return stepper, trace, reasons

    stepper, trace, reasons = asyncio.run(go())
    assert reasons == [None, None, "eos"]
    assert trace.finished and trace.text == "one\n\ntwo\n\nthree"
    assert llm.prompts[1] == list(stepper.prompt_ids) + [ord(c) for c in "one\n\n"]
    assert llm.prompts[2] == list(stepper.prompt_ids) + [ord(c) for c in "one\n\ntwo\n\n"]
    assert trace.token_ids == tuple(ord(c) for c in "one\n\ntwo\n\nthree") + (CharBackend.EOS,)


def test_scripted_steps_get_the_delimiter_ids_appended_and_traces_finish_for_each_reason():
    async def steps(script, config):
        ctx = Context(Scripted(script), seed=0)
        stepper = await Stepper(Problem("q"), ctx, config).start()
        trace, reasons = Trace(), []
        while not trace.finished:
            (e,) = await stepper.expand(trace, 1)
            trace = e.trace
            reasons.append(e.finish_reason)
        return ctx, stepper, trace, reasons

    # a closed box ends the trace; the delimiter the backend cut is put back in text and ids
    ctx, stepper, trace, reasons = asyncio.run(steps(
        lambda p, params, i: "x = 2\n\n" if "x = 2" not in p else "so \\boxed{2}", StepConfig()))
    assert reasons == [None, "boxed"]
    assert trace.text == "x = 2\n\nso \\boxed{2}"
    assert ctx.generator.decode(list(stepper.prompt_ids) + list(trace.token_ids)).endswith(trace.text)
    # the step limit: the last step is a final completion without the delimiter stop, which the
    # model ends (eos) or the token limit cuts (max_steps); final_completion=False: a plain step
    ctx, _, trace, reasons = asyncio.run(steps(lambda p, params, i: "again\n\nand again", StepConfig(max_steps=3)))
    assert reasons == [None, None, "eos"] and len(trace.steps) == 3
    assert trace.steps[-1].text == "again\n\nand again"
    assert [params.stop for _, params in ctx.generator.requests] == [("\n\n",), ("\n\n",), ()]
    _, _, trace, reasons = asyncio.run(steps(lambda p, params, i: "again " * 50,
                                             StepConfig(max_steps=2, final_step_tokens=7)))
    assert reasons == [None, "max_steps"] and len(trace.steps) == 2
    _, _, trace, reasons = asyncio.run(steps(lambda p, params, i: "again\n\n",
                                             StepConfig(max_steps=3, final_completion=False)))
    assert reasons == [None, None, "max_steps"] and len(trace.steps) == 3
    # the model has nothing more to say: an empty completion ends it
    _, _, trace, reasons = asyncio.run(steps(lambda p, params, i: "" if "HELLO" in p else "HELLO\n\n", StepConfig()))
    assert reasons == [None, "eos"]
    # a step cut by the step token limit is continued, not ended
    _, _, trace, reasons = asyncio.run(steps(
        lambda p, params, i: "a b c d e f" if "a b" not in p else "\\boxed{1}", StepConfig(max_step_tokens=3)))
    assert reasons == [None, "boxed"] and trace.steps[0].text == "a b"


@pytest.mark.parametrize("make", [
    lambda prm, steps: ttc.BeamSearch(1, 2, prm, steps=steps), lambda prm, steps: ttc.DVTS(1, 2, prm, steps=steps),
    lambda prm, steps: ttc.AStar(prm, 2, steps=steps), lambda prm, steps: ttc.ParticleFilter(2, prm, steps=steps)])
def test_a_trace_at_max_steps_is_completed_before_it_is_answered(make):
    # review repro: at max_steps=2 the trace "... 12 + 5 is" was answered "5" from partial text;
    # search-and-learn's last iteration generates to the end: the final step completes the solution
    def script(prompt, params, i):
        k = prompt.count("Step ")
        rest = ["Step 1: we have 12 apples and 5 pears.\n\n", "Step 2: 12 + 5 is\n\n", "Step 3: 17, so \\boxed{17}"]
        return "".join(rest[min(k, 2):])
    prm = ProgrammaticPRM(lambda p, s: 0.9)
    result = make(prm, StepConfig(max_steps=2)).solve("How many fruits?", Scripted(script), seed=0)
    assert result.answer == "17"
    assert all(c.finish_reason == "boxed" for c in result.candidates)


def test_requests_use_the_step_budget_and_the_delimiter_as_stop():
    tree = decoy_tree()
    llm = tree.backend()
    ttc.BeamSearch(2, 3, tree.prm(), steps=StepConfig(delimiter="\n\n", max_step_tokens=17)).solve("q?", llm)
    assert {params.max_tokens for _, params in llm.requests} == {17}
    assert {params.stop for _, params in llm.requests} == {("\n\n",)}


def test_has_closed_box():
    assert has_closed_box("so \\boxed{\\frac{1}{2}}.")
    assert not has_closed_box("so \\boxed{\\frac{1}{2}")
    assert not has_closed_box("no box")


def test_search_tree_records_text_scores_parents_and_children():
    tree = decoy_tree()
    result = ttc.BeamSearch(2, 3, tree.prm()).solve("q?", tree.backend(), seed=0)
    t: SearchTree = result.tree
    assert t.root.parent is None and t.root.children
    for node in t:
        for child in node.children:
            assert t[child].parent == node.id and t[child].depth == node.depth + 1
            assert t[child].trace.steps[:-1] == node.trace.steps
        if node.parent is not None:
            assert node.score == tree.scores[names(node.trace)[-1]]
    d = t.to_dict()
    assert len(d["nodes"]) == len(t) and d["nodes"][1]["text"].startswith("Step ")
    assert "score=" in t.render()


# -- PRM interface ------------------------------------------------------------------------------
def test_aggregations():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    with pytest.raises(InvalidInput):
        aggregate(scores, "max")
    with pytest.raises(InvalidInput):
        ttc.BeamSearch(2, 2, ProgrammaticPRM(lambda p, s: 1.0), aggregation="median")


def test_aggregation_changes_which_trace_wins():
    # A's path has a bad middle step (0.9, 0.2, 0.9); B's is steady (0.6, 0.6, 0.8)
    tree = ToyTree({"root": ["A", "B"], "A": ["A1"], "B": ["B1"], "A1": ["A1x"], "B1": ["B1x"]},
                   {"A": .9, "B": .6, "A1": .2, "B1": .6, "A1x": .9, "B1x": .8}, {"A1x": "1", "B1x": "2"})
    answers = {how: ttc.BeamSearch(2, 1, tree.prm(), aggregation=how).solve("q?", tree.backend(), seed=0).answer
               for how in ("last", "min", "prod")}
    assert answers == {"last": "1", "min": "2", "prod": "2"}


def test_score_steps_counts_one_call_per_trace_and_splits_tokens_exactly():
    class Costly(ProgrammaticPRM):
        async def score(self, problem, traces, ctx):
            ctx.record_verifier_tokens(10)
            return await super().score(problem, traces, ctx)

    prm = Costly(lambda p, s: len(s) / 10)
    ctx = Context(Scripted(["x"]), Budget(verifier_calls=5))
    usages = [Usage(), Usage(), Usage()]
    scores = asyncio.run(score_steps(prm, Problem("q"), [["a"], ["a", "b"], ["a", "b", "c"]], ctx, usages))
    assert scores == [[0.1], [0.1, 0.2], [0.1, 0.2, 0.3]]
    assert ctx.usage.verifier_calls == 3 and [u.verifier_calls for u in usages] == [1, 1, 1]
    assert [u.verifier_tokens for u in usages] == [4, 3, 3]
    with pytest.raises(ttc.BudgetExhausted):
        asyncio.run(score_steps(prm, Problem("q"), [["a"], ["b"], ["c"]], ctx))
    assert ctx.usage.verifier_calls == 3  # refused before scoring


def test_a_prm_returning_the_wrong_shape_is_an_error():
    bad = ProgrammaticPRM(lambda p, s: 1.0)

    async def wrong(problem, traces, ctx):
        return [[1.0]]

    bad.score = wrong
    with pytest.raises(InvalidInput, match="2 steps"):
        asyncio.run(score_steps(bad, Problem("q"), [["a", "b"]], Context(Scripted(["x"]))))


def test_prm_as_outcome_verifier_for_best_of_n():
    llm = Scripted(["First.\n\nSo \\boxed{1}", "First.\n\nSo \\boxed{2}"])
    prm = ProgrammaticPRM(lambda p, steps: 0.9 if "2" in steps[-1] else 0.3 if len(steps) > 1 else 0.5)
    for aggregation, expected in [("last", "2"), ("min", "2"), ("prod", "2")]:
        result = ttc.BestOfN(n=2, verifier=prm.as_verifier(aggregation)).solve("q?", llm)
        assert result.answer == expected
        assert result.usage.verifier_calls == 2
    verifier = PRMVerifier(prm, split=False)
    assert verifier.name == "programmatic_prm"


# -- the LLM judge ------------------------------------------------------------------------------
class TopLogprobBackend(Scripted):
    """Answers with one token and top-k logprobs over the words 'Yes', 'No' and 'Maybe'."""

    def __init__(self, p_yes: float, p_no: float):
        super().__init__(["Yes"])
        self.p_yes, self.p_no = p_yes, p_no
        self.ids = {w: self._ids(w)[0] for w in ("Yes", "no", "Maybe")}

    async def generate(self, prompt, params):
        self.requests.append((prompt, params))
        top = {self.ids["Yes"]: math.log(self.p_yes), self.ids["no"]: math.log(self.p_no),
               self.ids["Maybe"]: math.log(1 - self.p_yes - self.p_no)}
        assert params.top_logprobs and params.max_tokens == 1 and params.temperature == 0
        c = Completion("Yes", (self.ids["Yes"],), "length", (math.log(self.p_yes),), (top,))
        return Generation(prompt_tokens=len(self._ids(prompt)), completions=[c])


def test_llm_judge_reads_p_yes_from_top_logprobs():
    llm = TopLogprobBackend(0.6, 0.2)
    judge = LLMJudge(llm)
    ctx = Context(Scripted(["x"]))
    scores = asyncio.run(judge.score(Problem("2+2?"), [["4"], ["4", "so 4"]], ctx))
    assert scores == [[pytest.approx(0.75)], [pytest.approx(0.75), pytest.approx(0.75)]]
    assert len(llm.requests) == 2  # the shared prefix ["4"] was judged once
    assert ctx.usage.verifier_tokens == sum(len(llm._ids(p)) + 1 for p, _ in llm.requests)
    asyncio.run(judge.score(Problem("2+2?"), [["4", "so 4", "done"]], ctx))
    assert len(llm.requests) == 3  # cached prefixes cost nothing


def test_llm_judge_falls_back_to_the_sampled_token():
    llm = Scripted(lambda prompt, params, i: "Yes" if "Step 2: good" in prompt else "No", default_logprob=-0.1)
    judge = LLMJudge(llm)
    ctx = Context(Scripted(["x"]))
    (row,) = asyncio.run(judge.score(Problem("q"), [["start", "good"]], ctx))
    assert row == [pytest.approx(1 - math.exp(-0.1)), pytest.approx(math.exp(-0.1))]
    prompt, _ = llm.requests[-1]
    assert "Is step 2 correct?" in prompt and "Step 1: start" in prompt


def test_llm_judge_defaults_to_the_policy_generator():
    tree = decoy_tree()
    llm = tree.backend()
    result = ttc.BeamSearch(1, 2, LLMJudge()).solve("q?", llm, seed=0)
    assert any("Is step 1 correct?" in prompt for prompt, _ in llm.requests)
    assert result.usage.verifier_calls > 0 and result.usage.verifier_tokens > 0


# -- construction and the registry --------------------------------------------------------------
def test_registry_builds_step_searches():
    prm = ProgrammaticPRM(lambda p, s: 1.0)
    beam = make_strategy("beam", n=8, verifier=prm)
    assert isinstance(beam, ttc.BeamSearch) and (beam.width, beam.expansions) == (2, 4) and beam.prm is prm
    dvts = make_strategy("dvts", n=8, verifier=prm)
    assert isinstance(dvts, ttc.DVTS) and dvts.diverse and dvts.n == 8
    # n as the docs say: max(1, n // 4) beams (subtrees) x n // beams expansions
    for name in ("beam", "dvts"):
        shapes = {n: (s.width, s.expansions) for n in (16, 10, 6, 3) for s in [make_strategy(name, n=n, verifier=prm)]}
        assert shapes == {16: (4, 4), 10: (2, 5), 6: (1, 6), 3: (1, 3)}, name
    assert isinstance(make_strategy("astar", n=3, verifier=prm), ttc.AStar)
    pf = make_strategy("particle_filter", n=5)
    assert isinstance(pf, ttc.ParticleFilter) and pf.particles == 5 and isinstance(pf.prm, LLMJudge)
    assert make_strategy("beam", n=2, params=SamplingParams(max_tokens=33)).steps.max_step_tokens == 33
    with pytest.raises(InvalidInput, match="process reward model"):
        make_strategy("beam", n=4, verifier=LogprobConfidence())


@pytest.mark.parametrize("bad", [
    lambda prm: ttc.BeamSearch(0, 2, prm), lambda prm: ttc.BeamSearch(2, 2, LogprobConfidence()),
    lambda prm: ttc.AStar(prm, expansions=0), lambda prm: ttc.AStar(prm, cost_weight=-1),
    lambda prm: ttc.ParticleFilter(4, prm, temperature=0), lambda prm: ttc.ParticleFilter(4, prm, resampling="x"),
    lambda prm: ttc.BeamSearch(2, 2, prm, select="vote"), lambda prm: StepConfig(delimiter=""),
    lambda prm: StepConfig(max_steps=0)])
def test_bad_configuration_is_a_clear_error(bad):
    with pytest.raises(InvalidInput):
        bad(ProgrammaticPRM(lambda p, s: 1.0))


def test_weighted_selection_votes_over_finished_traces():
    # two finished traces say 7 (0.6 each), one says 42 (0.95): best picks 42, the weighted vote 7
    tree = ToyTree({"root": ["A", "B", "C"]}, {"A": 0.6, "B": 0.6, "C": 0.95}, {"A": "7", "B": "7.0", "C": "42"})
    best = ttc.BeamSearch(1, 3, tree.prm()).solve("q?", tree.backend(), seed=0)
    vote = ttc.BeamSearch(1, 3, tree.prm(), select="weighted").solve("q?", tree.backend(), seed=0)
    majority = ttc.BeamSearch(1, 3, tree.prm(), select="majority").solve("q?", tree.backend(), seed=0)
    assert best.answer == "42"
    assert vote.answer == "7" and vote.details["votes"]["7"] == pytest.approx(1.2)
    assert majority.answer == "7"
