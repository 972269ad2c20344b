"""The pure particle kernels of `ttc.smc`: every resampler `(rng, weights, n) -> indices`.

Statistical tests use fixed seeds (deterministic); each states the probability that a correct
resampler would fail it with a fresh seed (its false-failure probability). Each is also shown to
fail a wrong resampler, so that it can fail at all.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ttc import smc
from ttc.errors import InvalidInput

WEIGHTS = [10.0, 6.0, 3.0, 1.0, 0.0]  # normalised: 0.5, 0.3, 0.15, 0.05, 0


class Scripted(random.Random):
    """A 'random' generator that returns the given values in turn from random()."""

    def __init__(self, *values: float):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


class NoRandomness(random.Random):
    def random(self) -> float:
        raise AssertionError("this draw needs no randomness")

    def choices(self, *args, **kwargs):
        raise AssertionError("this draw needs no randomness")


def uniform_resampler(rng, weights, n):
    """Wrong on purpose: ignores the weights."""
    return [rng.randrange(len(weights)) for _ in range(n)]


def zero_offset_systematic(rng, weights, n):
    """Wrong on purpose: systematic resampling with its offset always 0 (biased to low indices)."""
    return smc.systematic(Scripted(0.0), weights, n)


def residual_without_remainder(rng, weights, n):
    """Wrong on purpose: residual's deterministic copies, the rest given to index 0."""
    total = sum(weights)
    out = [i for i, w in enumerate(weights) for _ in range(math.floor(n * w / total))]
    return out + [0] * (n - len(out))


def assert_unbiased(resample, seed: int = 0, n: int = 10, reps: int = 2000) -> None:
    """The mean count of index i over `reps` draws of n is n * w_i within 5 standard deviations.

    Var(count_i) <= n w_i (1 - w_i) for all four resamplers (multinomial: equal; residual and
    stratified: lower; systematic: count_i is floor or ceil of n w_i, variance <= that for these
    weights), so the bound 5 * sqrt(n w_i (1 - w_i) / reps) holds with normal tail 5.7e-7 per
    index: false-failure probability < 3e-6 per resampler (4 non-zero indices). A zero weight
    must never be drawn."""
    rng = random.Random(seed)
    total = sum(WEIGHTS)
    counts = Counter()
    for _ in range(reps):
        out = resample(rng, WEIGHTS, n)
        assert len(out) == n and all(0 <= i < len(WEIGHTS) for i in out)
        counts.update(out)
    for i, w in enumerate(WEIGHTS):
        p = w / total
        if p == 0:
            assert counts[i] == 0, "a zero weight was drawn"
            continue
        sd = math.sqrt(n * p * (1 - p) / reps)
        assert abs(counts[i] / reps - n * p) < 5 * sd, (i, counts[i] / reps, n * p)


@pytest.mark.parametrize("name", sorted(smc.RESAMPLERS))
def test_every_resampler_draws_each_index_n_w_times_on_average(name):
    assert_unbiased(smc.RESAMPLERS[name])


@pytest.mark.parametrize("wrong", [uniform_resampler, zero_offset_systematic, residual_without_remainder])
def test_the_expected_count_test_fails_a_wrong_resampler(wrong):
    with pytest.raises(AssertionError):
        assert_unbiased(wrong)


def test_resamplers_are_found_by_name_or_taken_as_functions():
    assert smc.resampler("stratified") is smc.stratified
    assert smc.resampler("residual") is smc.residual
    assert smc.resampler(uniform_resampler) is uniform_resampler
    with pytest.raises(InvalidInput, match="unknown resampling 'nope'"):
        smc.resampler("nope")
    with pytest.raises(InvalidInput, match="a name"):
        smc.resampler(3)


@pytest.mark.parametrize("name", sorted(smc.RESAMPLERS))
@pytest.mark.parametrize("weights", [[], [0.0, 0.0], [1.0, -0.5, 1.0]])
def test_every_resampler_refuses_bad_weights(name, weights):
    with pytest.raises(InvalidInput):
        smc.RESAMPLERS[name](random.Random(0), weights, 4)


# -- residual: the deterministic part is exact ------------------------------------------------------
def test_residual_draws_floor_n_w_copies_deterministically_then_the_rest_by_multinomial():
    # n w = (5, 3, 1.5, 0.5, 0): copies (5, 3, 1, 0, 0) first, in index order; 1 drawn from the residuals
    for seed in range(200):
        out = smc.residual(random.Random(seed), WEIGHTS, 10)
        assert out[:9] == [0] * 5 + [1] * 3 + [2]
        assert out[9] in (2, 3)  # the residuals are 0.5 and 0.5 at indices 2 and 3
    # integer n w: no randomness at all
    assert smc.residual(NoRandomness(), [2.0, 1.0, 1.0], 4) == [0, 0, 1, 2]
    assert smc.residual(NoRandomness(), [1.0, 0.0, 3.0], 8) == [0, 0, 2, 2, 2, 2, 2, 2]


def test_residual_draws_its_remainder_in_proportion_to_the_residuals():
    # weights (0.45, 0.45, 0.1), n = 2: no copies; residuals 0.9, 0.9, 0.2 -> each of the 2 draws
    # is index 2 with probability 0.1. Over 3000 runs, index 2's share of the 6000 draws is 0.1
    # within 5 sd (sd = 0.0039): false-failure probability < 1e-6. Copies-only (never 2) or
    # uniform (1/3) are far outside.
    rng = random.Random(7)
    counts = Counter(i for _ in range(3000) for i in smc.residual(rng, [0.45, 0.45, 0.1], 2))
    assert abs(counts[2] / 6000 - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 6000)


# -- stratified: one independent point per stratum --------------------------------------------------
def test_stratified_puts_point_k_in_stratum_k():
    # weights (0.75, 0.25), n = 2: points (0 + 0.9) / 2 = 0.45 and (1 + 0) / 2 = 0.5 -> both index 0;
    # systematic with the same first value (0.45, 0.95) would give [0, 1]
    assert smc.stratified(Scripted(0.9, 0.0), [3.0, 1.0], 2) == [0, 0]
    assert smc.systematic(Scripted(0.9), [3.0, 1.0], 2) == [0, 1]
    # cumulative (0.25, 0.5, 1): points 0.2475, 0.25, 0.625, 0.775
    assert smc.stratified(Scripted(0.99, 0.0, 0.5, 0.1), [1.0, 1.0, 2.0], 4) == [0, 1, 2, 2]


def test_every_stratified_draw_lies_in_its_stratum():
    # index out[k] is one whose cumulative interval [c_{i-1}, c_i) meets [k/n, (k+1)/n)
    rng = random.Random(11)
    weights = [0.1, 0.25, 0.05, 0.4, 0.2]
    cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
    for _ in range(500):
        out = smc.stratified(rng, weights, 7)
        assert out == sorted(out)
        for k, i in enumerate(out):
            low = cumulative[i - 1] if i else 0.0
            assert low <= (k + 1) / 7 + 1e-12 and cumulative[i] > k / 7 - 1e-12, (k, i)


def test_stratified_draws_its_strata_independently():
    # weights (0.25, 0.5, 0.25), n = 2: stratum 0 gives index 0 or 1, stratum 1 gives 1 or 2, each
    # with probability 1/2 and independently, so (0, 2) has probability 1/4. Systematic (one shared
    # offset) never draws (0, 2) nor (1, 1). 4000 runs: the share of (0, 2) is 0.25 within 5 sd
    # (sd = 0.0068): false-failure probability < 1e-6.
    def share(resample):
        rng = random.Random(3)
        pairs = Counter(tuple(resample(rng, [1.0, 2.0, 1.0], 2)) for _ in range(4000))
        return pairs[(0, 2)] / 4000, pairs[(1, 1)] / 4000

    bound = 5 * math.sqrt(0.25 * 0.75 / 4000)
    both = share(smc.stratified)
    assert all(abs(s - 0.25) < bound for s in both), both
    assert share(smc.systematic) == (0.0, 0.0)  # the same test fails a systematic resampler


# -- the existing two keep their draws -----------------------------------------------------------
def test_multinomial_and_systematic_draw_what_they_always_drew():
    # multinomial is random.choices over the weights; systematic inverts u/n + k/n (u = random())
    for seed in range(20):
        assert smc.multinomial(random.Random(seed), WEIGHTS, 7) == random.Random(seed).choices(
            range(5), weights=WEIGHTS, k=7)
    assert smc.systematic(Scripted(0.0), [1.0, 1.0, 2.0], 4) == [0, 1, 2, 2]
    assert smc.systematic(Scripted(0.999), [1.0, 1.0, 2.0], 4) == [0, 1, 2, 2]
    assert smc.systematic(Scripted(0.5), [1.0, 3.0], 4) == [0, 1, 1, 1]
    assert smc.systematic(Scripted(0.0), [1.0, 1.0, 0.0], 3) == [0, 0, 1]
