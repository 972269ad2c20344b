"""ParticleGibbs and ParallelTempering logic that a wrong algorithm cannot pass: the reference
particle's retention and its per-prefix weight (its_hub's issue #54), free particles continuing
from the reference's prefix, the reference draw, the swap rule, and the chains' exchange of references.
Scripted backend and a table PRM (tests/logic_helpers.py).

Statistical tests use fixed seeds, so they are deterministic; each states the probability that a
correct implementation would fail it with fresh seeds, and which wrong algorithms it rejects.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

import ttc
from logic_helpers import node_name, toy
from ttc.context import Budget
from ttc.errors import InvalidInput
from ttc.smc import logit, swap_acceptance, swap_pairs
from ttc.strategies.particle import prefix_at
from ttc.strategies.particle_gibbs import ParallelTempering, ParticleGibbs, check_temperatures

#: root -> A (0.9) or B (0.4); A -> A2 (0.2, answer 1), B -> B2 (0.6, answer 2). A's prefix scores
#: high but its full trace low: a reference weighted by its final score instead of its prefix's
#: score would be told apart in round 0.
TREE = ({"root": ["A", "B"], "A": ["A2"], "B": ["B2"]}, {"A": 0.9, "B": 0.4, "A2": 0.2, "B2": 0.6},
        {"A2": "1", "B2": "2"})


def sweep_rounds(result, iteration, chain=None):
    return [h for h in result.details.history if h.iteration == iteration and h.chain == chain]


def always(index):
    """A resampler that draws `index` every time (-1: the last entry, the reference's prefix)."""
    def draw(rng, weights, n):
        return [index % len(weights)] * n
    return draw


# -- the pure kernels ---------------------------------------------------------------------------
def test_swap_acceptance_is_the_tempered_likelihood_ratio():
    # (beta_i - beta_j)(l_j - l_i): the colder chain (beta 1) taking the better state (l 2 > 0): accept
    assert swap_acceptance((1.0, 0.5), (0.0, 2.0)) == 1.0
    # the colder chain giving away its better state: exp(-(0.5)(2)) = e^-1
    assert swap_acceptance((1.0, 0.5), (2.0, 0.0)) == pytest.approx(math.exp(-1.0))
    assert swap_acceptance((0.5, 1.0), (0.0, 2.0)) == pytest.approx(math.exp(-1.0))  # symmetric in the roles
    assert swap_acceptance((1.0, 0.25), (math.log(4.0), 0.0)) == pytest.approx(4.0 ** -0.75)
    assert swap_acceptance((0.7, 0.7), (5.0, -5.0)) == 1.0  # equal temperatures: any exchange
    assert swap_acceptance((1.0, 0.5), (1.5, 1.5)) == 1.0  # equal states
    with pytest.raises(InvalidInput):
        swap_acceptance((1.0, 0.5), (math.inf, math.inf))


def test_swap_pairs_alternate_even_and_odd_neighbours():
    assert swap_pairs(4, 0) == [(0, 1), (2, 3)]
    assert swap_pairs(4, 1) == [(1, 2)]
    assert swap_pairs(5, 2) == [(0, 1), (2, 3)]
    assert swap_pairs(5, 3) == [(1, 2), (3, 4)]
    assert swap_pairs(2, 1) == [] and swap_pairs(1, 0) == []
    for chains, iteration in ((0, 0), (2, -1)):
        with pytest.raises(InvalidInput):
            swap_pairs(chains, iteration)


def test_settings_are_checked():
    prm = ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.5)
    assert check_temperatures([1, 2.5]) == (1.0, 2.5)
    for bad in ((), (2.0, 1.0), (1.0, 1.0), (0.0, 1.0), (1.0, math.inf), "12", (True, 2.0)):
        with pytest.raises(InvalidInput):
            check_temperatures(bad)
    with pytest.raises(InvalidInput):
        ParticleGibbs(particles=1, iterations=2, prm=prm)
    with pytest.raises(InvalidInput):
        ParticleGibbs(particles=4, iterations=0, prm=prm)
    assert ParticleGibbs(particles=1, iterations=1, prm=prm).iterations == 1
    assert ParallelTempering(temperatures=[1, 3], prm=prm).temperature == 1.0


# -- the reference particle ---------------------------------------------------------------------
def test_the_reference_is_weighted_by_its_prefix_score_and_kept_to_the_end():
    llm, prm = toy(*TREE)
    for seed in range(6):
        r = ParticleGibbs(particles=3, iterations=2, prm=prm).solve("q?", llm, seed=seed)
        (ref_id,) = r.details["references"]
        ref = r.tree[ref_id]
        assert ref.finished
        rounds = sweep_rounds(r, 1)
        assert len(rounds) == 2
        for record in rounds:
            assert record.reference == len(record.nodes) - 1 == 2  # two free particles + the reference
            prefix = r.tree[record.nodes[record.reference]]
            assert prefix.id == prefix_at(r.tree, ref, record.round + 1).id
            assert prefix.depth == record.round + 1
            # weight: softmax of logit(prefix's own score), as the free particles of that depth
            logits = [logit(r.tree[n].score) for n in record.nodes]
            top = max(logits)
            total = sum(math.exp(x - top) for x in logits)
            assert record.weights == pytest.approx([math.exp(x - top) / total for x in logits])
            assert len(record.ancestors) == 2  # only the free particles are resampled
        # round 0 weights A's prefix by 0.9 (its own), not by its trace's final 0.2
        first = rounds[0]
        assert first.scores[first.reference] == (0.9 if node_name(ref) == "A2" else 0.4)
        # the reference ends the last sweep among the final particles, unchanged
        finals = Counter()
        for c, k in zip(r.candidates, r.details["multiplicity"], strict=True):
            finals[c.trace.text] += k
        assert sum(finals.values()) == 3 and finals[ref.trace.text] >= 1


def test_free_particles_that_draw_the_reference_continue_from_its_prefix():
    # a resampler that always draws the last entry (the reference's prefix): in round 0 both free
    # particles become the reference's depth-1 node, and in round 1 they are extended from it
    llm, prm = toy(*TREE)
    r = ParticleGibbs(particles=3, iterations=2, prm=prm, resampling=always(-1)).solve("q?", llm, seed=0)
    (ref_id,) = r.details["references"]
    ref = r.tree[ref_id]
    first, second = sweep_rounds(r, 1)
    assert first.ancestors == (2, 2)
    depth1 = prefix_at(r.tree, ref, 1)
    free_nodes = [r.tree[n] for n in second.nodes[:2]]
    assert all(n.parent == depth1.id and n.id != ref.id for n in free_nodes)  # new steps, same prefix
    # the reference itself is not replaced by being drawn
    assert second.nodes[2] == ref.id


def test_the_reference_survives_a_resampling_that_never_draws_it():
    llm, prm = toy(*TREE)
    r = ParticleGibbs(particles=3, iterations=3, prm=prm, resampling=always(0)).solve("q?", llm, seed=2)
    refs = r.details["references"]
    assert len(refs) == 2
    for k, ref_id in enumerate(refs, start=1):
        rounds = sweep_rounds(r, k)
        assert all(rec.reference == 2 and 2 not in rec.ancestors for rec in rounds)
        assert rounds[-1].nodes[2] == ref_id
    # the last sweep's final particles include its reference
    final_ref = r.tree[refs[-1]]
    assert final_ref.trace.text in [c.trace.text for c in r.candidates]


def test_a_short_reference_competes_with_its_final_weight_in_later_rounds():
    # the reference F finishes after one step (0.7, answer 1); free particles go U, U2, U3 (0.5 each):
    # in rounds 1 and 2 the reference's "prefix" is F itself, weighted by its final score
    llm, prm = toy({"root": ["F", "U"], "U": ["U2"], "U2": ["U3"]}, {"F": 0.7, "U": 0.5, "U2": 0.5, "U3": 0.5},
                   {"F": "1", "U3": "3"})
    for seed in range(20):
        r = ParticleGibbs(particles=3, iterations=2, prm=prm, resampling=always(0)).solve("q?", llm, seed=seed)
        ref = r.tree[r.details["references"][0]]
        if node_name(ref) != "F":
            continue
        rounds = sweep_rounds(r, 1)
        assert all(rec.nodes[rec.reference] == ref.id and rec.scores[rec.reference] == 0.7 for rec in rounds)
        return
    pytest.fail("no seed drew F as the reference")


def test_iterations_are_sweeps_and_the_budget_ends_them():
    llm, prm = toy(*TREE)
    r = ParticleGibbs(particles=4, iterations=3, prm=prm).solve("q?", llm, seed=0)
    assert r.details["iterations"] == 3 and len(r.details["references"]) == 2
    assert [h.iteration for h in r.details.history] == [0, 0, 1, 1, 2, 2]
    # sweep 0 has 4 free particles, the others 3 + the reference
    assert [len(h.nodes) for h in r.details.history] == [4, 4, 4, 4, 4, 4]
    assert [len(h.ancestors) for h in r.details.history] == [4, 4, 3, 3, 3, 3]
    assert r.usage.verifier_calls == 4 * 2 + 3 * 2 * 2  # the reference's prefixes are never re-scored
    # one particle filter's worth of verifier calls: the second sweep cannot start its rounds
    small = ParticleGibbs(particles=4, iterations=3, prm=prm).solve("q?", llm, seed=0,
                                                                  budget=Budget(verifier_calls=9))
    assert small.details["stopped_by"] == "verifier_budget"
    assert small.usage.verifier_calls <= 9 and small.answer in ("1", "2")
    # iterations=1 is the particle filter: same seed, same rounds and answer
    pf = ttc.ParticleFilter(particles=4, prm=prm).solve("q?", llm, seed=5)
    pg1 = ParticleGibbs(particles=4, iterations=1, prm=prm).solve("q?", llm, seed=5)
    assert [h.to_dict() for h in pg1.details.history] == [h.to_dict() for h in pf.details.history]
    assert pg1.answer == pf.answer and pg1.details["references"] == []


# -- statistical: the reference draw and the reference's share of the resampling ----------------
def test_the_reference_is_drawn_by_softmax_of_final_logits_over_temperature():
    # final particles: A2 (0.2) or B2 (0.6). P(reference = B2 | one of each) at T:
    # softmax(logit): e^{l(0.6)/T} / (e^{l(0.6)/T} + e^{l(0.2)/T}); 600 draws, bound 5 sd (sd <= 0.02):
    # false failure < 1e-6. Wrong rules are outside: uniform (0.5), argmax (1.0), raw scores (0.75),
    # logit * T at T=2 (0.9995 vs 0.80).
    pg = ParticleGibbs(particles=2, iterations=2, prm=ttc.verifiers.ProgrammaticPRM(lambda p, s: 0.5))
    llm, prm = toy(*TREE)
    tree_run = ParticleGibbs(particles=4, iterations=1, prm=prm, temperature=1e9,
                             resampling="systematic").solve("q?", llm, seed=0)
    leaves = {node_name(n): n for n in tree_run.tree if n.finished}
    pool = [leaves["A2"], leaves["B2"]]
    for temperature in (1.0, 2.0):
        a, b = logit(0.2) / temperature, logit(0.6) / temperature
        p = math.exp(b) / (math.exp(a) + math.exp(b))
        rng = random.Random(7)
        hits = sum(node_name(pg.choose_reference(pool, rng, temperature)) == "B2" for _ in range(600))
        assert abs(hits / 600 - p) < 5 * math.sqrt(p * (1 - p) / 600), (temperature, hits / 600, p)
    assert pg.choose_reference([tree_run.tree.root], random.Random(0), 1.0) is None  # unfinished: none
    # a scored but unfinished particle is never the reference, however good its score
    unfinished = next(n for n in tree_run.tree if n.step is not None and node_name(n) == "A")
    assert unfinished.step_scores == [0.9] and not unfinished.finished
    rng = random.Random(1)
    assert all(pg.choose_reference([unfinished, leaves["A2"]], rng, 1.0) is leaves["A2"] for _ in range(50))
    assert pg.choose_reference([unfinished], rng, 1.0) is None


def test_free_particles_draw_the_reference_prefix_in_proportion_to_its_prefix_weight():
    # sweep 1, round 0: two free particles at A or B and the reference's depth-1 prefix (A: 0.9 or
    # B: 0.4). Each free particle draws the reference's entry with probability
    # e^{l(ref prefix)} / sum over the three entries, computed here from the score table (not from
    # the recorded weights). Over 150 seeds x 2 draws the mean is within 5 sd of the expected mean
    # (false failure < 1e-6); weighting the reference by its final score (0.2 / 0.6: the bug of
    # its_hub's issue #54, still in its 1.2.0), or leaving it out of the draw, moves the share by > 0.15.
    llm, prm = toy(*TREE)
    expected, observed, draws = [], [], 0
    for seed in range(150):
        r = ParticleGibbs(particles=3, iterations=2, prm=prm).solve("q?", llm, seed=seed)
        first = sweep_rounds(r, 1)[0]
        names = [node_name(r.tree[n]) for n in first.nodes]
        lw = [math.exp(logit(TREE[1][n])) for n in names]
        share = lw[2] / sum(lw)
        for a in first.ancestors:
            expected.append(share)
            observed.append(a == 2)
            draws += 1
    mean_p = sum(expected) / draws
    sd = math.sqrt(sum(p * (1 - p) for p in expected)) / draws
    assert abs(sum(observed) / draws - mean_p) < 5 * sd, (sum(observed) / draws, mean_p)


# -- parallel tempering -------------------------------------------------------------------------
class Fixed(random.Random):
    def __init__(self, u):
        super().__init__(0)
        self.u = u

    def random(self):
        return self.u


def test_swaps_are_accepted_exactly_below_the_acceptance_probability():
    llm, prm = toy(*TREE)
    run = ParticleGibbs(particles=4, iterations=1, prm=prm, temperature=1e9, resampling="systematic").solve(
        "q?", llm, seed=0)
    leaves = {node_name(n): n for n in run.tree if n.finished}
    pt = ParallelTempering(particles=2, temperatures=(1.0, 2.0), prm=prm)
    # chain 0 (beta 1) holds B2 (l = logit 0.6), chain 1 (beta 1/2) A2 (logit 0.2): giving the better
    # state to the hotter chain is accepted with probability exp(-(1 - 1/2)(l(0.6) - l(0.2))) = 0.41
    a = math.exp(-(1 - 0.5) * (logit(0.6) - logit(0.2)))
    for u, swapped in ((a - 1e-9, True), (a + 1e-9, False)):
        refs = [leaves["B2"], leaves["A2"]]
        (swap,) = pt.propose_swaps(refs, 0, Fixed(u))
        assert swap.acceptance == pytest.approx(a) and swap.accepted is swapped
        assert [node_name(n) for n in refs] == (["A2", "B2"] if swapped else ["B2", "A2"])
        assert swap.chains == (0, 1) and swap.betas == (1.0, 0.5)
    # the other way round (the colder chain gains): always
    refs = [leaves["A2"], leaves["B2"]]
    (swap,) = pt.propose_swaps(refs, 0, Fixed(0.999999))
    assert swap.acceptance == 1.0 and swap.accepted and node_name(refs[0]) == "B2"
    # u ~ U[0, 1) is accepted when u < a: u = a exactly is a rejection (P(accept) = a)
    exact = pt.propose_swaps([leaves["B2"], leaves["A2"]], 0, Fixed(1.0))[0].acceptance
    refs = [leaves["B2"], leaves["A2"]]
    (swap,) = pt.propose_swaps(refs, 0, Fixed(exact))
    assert not swap.accepted and node_name(refs[0]) == "B2"
    # odd iterations with two chains propose nothing
    assert pt.propose_swaps([leaves["A2"], leaves["B2"]], 1, Fixed(0.0)) == []


def test_swap_frequency_matches_the_acceptance_probability():
    # 2000 proposals with acceptance a = 0.4 (the rng is the run's): the accepted share is within
    # 5 sd = 0.055 of a (false failure < 1e-6); a rule accepting always (1), never (0), or with the
    # un-tempered ratio exp(l_j - l_i) (0.16) is outside
    llm, prm = toy(*TREE)
    run = ParticleGibbs(particles=4, iterations=1, prm=prm, temperature=1e9, resampling="systematic").solve(
        "q?", llm, seed=0)
    leaves = {node_name(n): n for n in run.tree if n.finished}
    gap = logit(0.6) - logit(0.2)
    beta_hot = 1 - math.log(1 / 0.4) / gap  # (1 - beta_hot) * gap = log 2.5: acceptance 0.4
    pt = ParallelTempering(particles=2, temperatures=(1.0, 1 / beta_hot), prm=prm)
    rng = random.Random(3)
    accepted = sum(pt.propose_swaps([leaves["B2"], leaves["A2"]], 0, rng)[0].accepted for _ in range(2000))
    assert abs(accepted / 2000 - 0.4) < 5 * math.sqrt(0.4 * 0.6 / 2000)


def test_chains_run_at_their_temperatures_and_exchange_references():
    llm, prm = toy(*TREE)
    for seed in range(8):
        r = ParallelTempering(particles=3, iterations=3, temperatures=(1.0, 3.0, 9.0), prm=prm).solve(
            "q?", llm, seed=seed)
        d = r.details
        assert d["temperatures"] == [1.0, 3.0, 9.0] and d["iterations"] == 3
        # every chain ran every sweep; each round's weights use its chain's temperature
        for rec in d.history:
            t = d["temperatures"][rec.chain]
            logits = [logit(r.tree[n].score) / t for n in rec.nodes]
            top = max(logits)
            total = sum(math.exp(x - top) for x in logits)
            assert rec.weights == pytest.approx([math.exp(x - top) / total for x in logits])
        assert Counter((h.iteration, h.chain) for h in d.history) == {(k, c): 2 for k in range(3) for c in range(3)}
        # proposals: (0,1) after sweep 0, (1,2) after sweep 1; none after the last
        assert [(s.iteration, s.chains) for s in d.swaps] == [(0, (0, 1)), (1, (1, 2))]
        assert [s.betas for s in d.swaps] == [pytest.approx((1.0, 1 / 3)), pytest.approx((1 / 3, 1 / 9))]
        assert len(d["chain_references"]) == 3
        # each chain's next sweep is conditioned on the reference it holds after the swaps
        for c in range(3):
            for k, ref_id in enumerate(d["chain_references"][c], start=1):
                rounds = sweep_rounds(r, k, chain=c)
                assert rounds[-1].nodes[rounds[-1].reference] == ref_id
        assert d["references"] == d["chain_references"][0]
        # the answer comes from the target chain's last sweep
        target = {r.tree[n].trace.text for n in sweep_rounds(r, 2, chain=0)[-1].nodes}
        assert all(c.trace.text in target for c in r.candidates)
        assert d["swap_rate"] == sum(s.accepted for s in d.swaps) / 2


def test_an_accepted_swap_hands_the_hot_chains_reference_to_the_target_chain():
    # after sweep 0 the chains draw references; the swap (0, 1) is then accepted or not by the rule,
    # and chain 0's sweep 1 must be conditioned on what it holds after it
    llm, prm = toy(*TREE)
    seen = Counter()
    for seed in range(30):
        r = ParallelTempering(particles=3, iterations=2, temperatures=(1.0, 5.0), prm=prm).solve("q?", llm, seed=seed)
        (swap,) = r.details.swaps
        ref0, ref1 = r.details["chain_references"][0][0], r.details["chain_references"][1][0]
        l0, l1 = (logit(r.tree[x].score) for x in (ref0, ref1))
        assert swap.log_likelihoods == ((l1, l0) if swap.accepted else (l0, l1))
        seen[swap.accepted] += 1
    assert seen[True] > 0


# -- the registry -------------------------------------------------------------------------------
def test_temperature_ladder_is_geometric_in_the_exponent():
    from ttc.strategies.particle_gibbs import temperature_ladder

    assert temperature_ladder(3, 0.25) == pytest.approx((1.0, 2.0, 4.0))
    assert temperature_ladder(4, 0.125) == pytest.approx((1.0, 2.0, 4.0, 8.0))
    assert temperature_ladder(2, 0.5) == pytest.approx((1.0, 2.0)) and temperature_ladder(1, 0.5) == (1.0,)
    for chains, beta in ((0, 0.5), (2, 1.0), (2, 0.0), (True, 0.5), (2, True)):
        with pytest.raises(InvalidInput):
            temperature_ladder(chains, beta)


def test_registry_builds_both_and_they_run_by_name():
    from ttc.strategies.registry import canonical_name, make_strategy

    pg = make_strategy("particle_gibbs", n=8)
    assert isinstance(pg, ParticleGibbs) and (pg.particles, pg.iterations) == (4, 2)
    assert make_strategy("pg", n=9, iterations=3).particles == 3
    pt = make_strategy("parallel_tempering", n=12, chains=2, hottest_beta=0.5, max_steps=3)
    assert isinstance(pt, ParallelTempering) and pt.temperatures == pytest.approx((1.0, 2.0))
    assert (pt.particles, pt.iterations, pt.steps.max_steps) == (3, 2, 3)
    assert canonical_name("parallel-tempering") == "parallel_tempering" and canonical_name("PG") == "particle_gibbs"
    llm, prm = toy(*TREE)
    for name in ("particle_gibbs", "parallel_tempering"):
        r = make_strategy(name, n=8, verifier=prm).solve("q?", llm, seed=0)
        assert r.strategy == name and r.answer in ("1", "2")


def test_a_budget_stop_in_any_chain_ends_the_tempering_and_is_reported():
    # 3 particles x 2 chains x 2 rounds = 12 scored steps per iteration; 14 calls pay for the first
    # iteration only: the second cannot score all of a chain's particles
    llm, prm = toy(*TREE)
    r = ParallelTempering(particles=3, iterations=3, temperatures=(1.0, 2.0), prm=prm).solve(
        "q?", llm, seed=0, budget=Budget(verifier_calls=14))
    assert r.details["stopped_by"] == "verifier_budget"
    assert r.usage.verifier_calls <= 14 and r.answer in ("1", "2")
    full = ParallelTempering(particles=3, iterations=2, temperatures=(1.0, 2.0), prm=prm).solve("q?", llm, seed=0)
    assert full.details["stopped_by"] == "all_finished"
