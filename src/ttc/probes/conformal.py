"""Split conformal calibration of an exit rule, and a small numpy logistic regression.

The exit rule is "exit at a check point when the probe's score exceeds tau". A premature exit
is an exit at a point where answering now would be wrong (label 0). Split conformal prediction
on the calibration set's label-0 scores gives tau such that, for a new label-0 point
exchangeable with them, P(score > tau) <= alpha: the user sets alpha, the tolerated rate of
premature exits, and it holds without assumptions on the probe (Vovk et al., 2005; the
class-conditional form used by LYNX-style exit probes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ttc.errors import InvalidInput


def conformal_threshold(negative_scores: Sequence[float], alpha: float) -> float:
    """tau with P(s > tau) <= alpha for a new score exchangeable with `negative_scores`.

    tau is the ceil((n+1)(1-alpha))-th smallest calibration score; +inf (never exit) when the
    calibration set is too small for alpha (n < 1/alpha - 1).
    """
    if not 0 < alpha < 1:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha!r}")
    scores = np.sort(np.asarray(negative_scores, dtype=float))
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    if n == 0 or k > n:
        return math.inf
    return float(scores[k - 1])


def premature_exit_rate(scores: Sequence[float], labels: Sequence[int], tau: float) -> float:
    """Fraction of label-0 points whose score exceeds tau (nan without label-0 points)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    neg = scores[labels == 0]
    return float(np.mean(neg > tau)) if len(neg) else math.nan


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50,
                 tol: float = 1e-8) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method on standardised features.

    Returns (weights, bias, mean, scale): p(y=1 | x) = sigmoid(((x - mean) / scale) @ weights + bias).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
        raise InvalidInput(f"fit_logistic needs X of shape (n, d) and n labels; got {X.shape} and {y.shape}")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise InvalidInput("fit_logistic labels must be 0 or 1")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-8] = 1.0
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    d = Z.shape[1]
    w = np.zeros(d)
    reg = np.full(d, float(l2))
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = _sigmoid(Z @ w)
        grad = Z.T @ (p - y) + reg * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < tol:
            break
    return w[:-1], float(w[-1]), mean, scale


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free
