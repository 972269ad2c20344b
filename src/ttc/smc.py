"""Pure sequential Monte Carlo kernels: particle weights, effective sample size, resamplers.

Shaped like BlackJAX's `smc/resampling.py`: every resampler is a plain function with the same
signature, `(rng, weights, n) -> indices`, drawing `n` indices into `weights` (non-negative, any
positive sum: they are normalised here) with a `random.Random`. `ParticleFilter(resampling=...)`
takes one of their names (`RESAMPLERS`) or any function of that signature.

All four resamplers are unbiased: index i is drawn n * w_i times in expectation (w normalised).
They differ in variance (Douc, Cappé and Moulines, 2005, "Comparison of resampling schemes for
particle filtering"): multinomial > residual, stratified > systematic in practice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from ttc.errors import InvalidInput

#: a resampler: (rng, weights, n) -> n indices into weights
Resampler = Callable[[random.Random, Sequence[float], int], list[int]]

_EPS = 1e-7


def logit(p: float) -> float:
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7]."""
    p = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(values / temperature), shifted by the max (no overflow); -inf values get weight 0
    (all -inf: uniform)."""
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return [1.0 / len(values)] * len(values)
    top = max(finite)
    weights = [0.0 if v == -math.inf else math.exp((v - top) / temperature) for v in values]
    total = math.fsum(weights)
    return [w / total for w in weights]


def effective_sample_size(weights: Sequence[float]) -> float:
    """ESS = 1 / sum(w_i^2) of the normalised weights: N for equal weights, 1 for a single one."""
    total = math.fsum(weights)
    if total <= 0:
        raise InvalidInput("effective_sample_size needs weights with a positive sum")
    return 1.0 / math.fsum((w / total) ** 2 for w in weights)


def _normalised(weights: Sequence[float]) -> list[float]:
    total = math.fsum(weights)
    if not weights or total <= 0 or any(w < 0 for w in weights):
        raise InvalidInput("resampling needs non-negative weights with a positive sum")
    return [w / total for w in weights]


def _cumulative(weights: Sequence[float]) -> list[float]:
    """Running sums of the normalised weights, the last set to exactly 1."""
    cumulative, running = [], 0.0
    for w in _normalised(weights):
        running += w
        cumulative.append(running)
    cumulative[-1] = 1.0
    return cumulative


def _invert(cumulative: Sequence[float], points: Sequence[float]) -> list[int]:
    """For sorted points in [0, 1): the index whose cumulative interval holds each point."""
    out, i = [], 0
    for point in points:
        while point >= cumulative[i] and i < len(cumulative) - 1:
            i += 1
        out.append(i)
    return out


def multinomial(rng: random.Random, weights: Sequence[float], n: int) -> list[int]:
    """n independent draws, index i with probability w_i."""
    _normalised(weights)
    return rng.choices(range(len(weights)), weights=weights, k=n)


def systematic(rng: random.Random, weights: Sequence[float], n: int) -> list[int]:
    """One uniform offset u in [0, 1/n) and the n points u + k/n on the cumulative weights: index i
    is drawn floor(n w_i) or ceil(n w_i) times (lower variance, same expectation)."""
    cumulative = _cumulative(weights)
    u = rng.random() / n
    return _invert(cumulative, [u + k / n for k in range(n)])


def stratified(rng: random.Random, weights: Sequence[float], n: int) -> list[int]:
    """One uniform point in each stratum [k/n, (k+1)/n), drawn independently: the k-th index is the
    one whose cumulative interval holds the point of stratum k (Kitagawa, 1996)."""
    cumulative = _cumulative(weights)
    return _invert(cumulative, [(k + rng.random()) / n for k in range(n)])


def residual(rng: random.Random, weights: Sequence[float], n: int) -> list[int]:
    """floor(n w_i) copies of each index i, deterministically (in index order), then the remaining
    R = n - sum floor(n w_i) drawn by multinomial resampling from the residuals n w_i - floor(n w_i)
    (Liu and Chen, 1998)."""
    scaled = [n * w for w in _normalised(weights)]
    copies = [math.floor(s) for s in scaled]
    out = [i for i, c in enumerate(copies) for _ in range(c)]
    rest = n - len(out)
    if rest > 0:
        out += multinomial(rng, [s - c for s, c in zip(scaled, copies, strict=True)], rest)
    return out


def swap_acceptance(betas: tuple[float, float], log_likelihoods: tuple[float, float]) -> float:
    """The Metropolis probability of exchanging the states of two tempered chains (parallel
    tempering; Geyer, 1991). Chain k targets pi_k(x) ~ p(x) L(x)^beta_k (the same prior p, the
    likelihood L tempered by its exponent beta_k); with l_i = log L(x_i) the log-likelihood of
    chain i's state, the exchange is accepted with probability

        min(1, pi_i(x_j) pi_j(x_i) / (pi_i(x_i) pi_j(x_j))) = min(1, exp((beta_i - beta_j)(l_j - l_i)))

    (the prior cancels: only the likelihoods are needed). Equal exponents or equal likelihoods
    always swap; the colder chain (larger beta) always takes a state of higher likelihood."""
    (beta_i, beta_j), (ell_i, ell_j) = betas, log_likelihoods
    log_ratio = (beta_i - beta_j) * (ell_j - ell_i)
    if math.isnan(log_ratio):
        raise InvalidInput(f"swap_acceptance needs finite exponents and log-likelihoods, got {betas}, "
                           f"{log_likelihoods}")
    return 1.0 if log_ratio >= 0 else math.exp(log_ratio)


def swap_pairs(chains: int, iteration: int) -> list[tuple[int, int]]:
    """The adjacent chain pairs proposed for exchange after sweep `iteration`: (0, 1), (2, 3), ...
    on even iterations, (1, 2), (3, 4), ... on odd ones (the deterministic even-odd scheme:
    non-overlapping pairs, so the proposals are independent, and every neighbour pair is proposed
    every two iterations)."""
    if chains < 1 or iteration < 0:
        raise InvalidInput(f"swap_pairs needs chains >= 1 and iteration >= 0, got {chains}, {iteration}")
    return [(i, i + 1) for i in range(iteration % 2, chains - 1, 2)]


#: the resamplers `ParticleFilter(resampling=...)` knows by name
RESAMPLERS: dict[str, Resampler] = {"multinomial": multinomial, "residual": residual, "stratified": stratified,
                                    "systematic": systematic}


def resampler(spec: str | Resampler) -> Resampler:
    """The resampler named `spec` (a key of `RESAMPLERS`), or `spec` itself if it is a function."""
    if isinstance(spec, str):
        if spec not in RESAMPLERS:
            raise InvalidInput(f"unknown resampling {spec!r}; known: {', '.join(RESAMPLERS)}, "
                               f"or a function (rng, weights, n) -> indices")
        return RESAMPLERS[spec]
    if callable(spec):
        return spec
    raise InvalidInput(f"resampling= must be a name ({', '.join(RESAMPLERS)}) or a function "
                       f"(rng, weights, n) -> indices, got {type(spec).__name__}")
