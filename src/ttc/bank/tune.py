"""`ttc.tune`: every replayable setting at every n, from one or more sample banks.

For each problem, `draws` random orderings of its K samples are replayed (an ordering's first n
samples are a subsample of n drawn without replacement); each setting's accuracy, tokens, requests
and latency per problem are their mean over problems and orderings. Intervals come from a
bootstrap over problems: each replicate resamples the problems with replacement and, for each,
one of its orderings, so an interval covers what one live run on new problems of the same kind
would give (problem-to-problem spread plus the run's own sampling). See docs/tune.md.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence

import numpy as np

from ttc.bank.arrays import ProblemArrays, problem_arrays
from ttc.bank.format import Bank, check_compatible, load_bank
from ttc.bank.replays import (
    COLUMNS,
    CORRECT,
    GROUP,
    LATENCY,
    REQUESTS,
    TOKENS,
    Adaptive,
    Best,
    DeepConfOnline,
    Family,
    FirstFinishReplay,
    Route,
    Rpc,
    TuneSetting,
    Vote,
)
from ttc.bank.report import Measure, TuneReport, TuneRow
from ttc.bank.shared import SharedBudget, default_shared
from ttc.errors import InvalidInput


def default_families(k: int, scores: Iterable[str], has_top: bool, rpc_mixture: bool = False) -> list[Family]:
    """Every replayable strategy and setting at every n up to K (RPC and DeepConf, whose replay is
    costlier, at powers of two and K). RPC's Weibull-mixture pruning fits a mixture per subsample
    (~0.1-0.5 s each): only with `rpc_mixture`; Perplexity Consistency (its vote unpruned) always."""
    from ttc.stopping import BetaStop, WindowStop

    every = list(range(1, k + 1))
    sparse = sorted({n for n in (2, 4, 8, 16, 32, 64, 128) if n <= k} | {k})
    scores = list(scores)
    families: list[Family] = [Vote(every)]
    families += [Vote(every, weight=s) for s in scores]
    families += [Best(every, score=s) for s in scores]
    max_ns = [n for n in sparse if n >= 4] or [k]
    for batch in (1, 2, 4):
        for confidence in (0.8, 0.95, 0.99):
            families.append(Adaptive(max_ns, batch, BetaStop(confidence)))
    for window in (2, 4):
        families.append(Adaptive(max_ns, window, WindowStop(window)))
    families.append(Rpc(sparse, prune="none"))
    if rpc_mixture:
        families.append(Rpc(sparse))
    families.append(FirstFinishReplay(sparse))
    if has_top:
        families += [DeepConfOnline(sparse, keep=0.1), DeepConfOnline(sparse, keep=0.9)]
    pairs = [(m, n) for m in (2, 3, 4) for n in sparse if n > m]
    families.append(Route(pairs))
    return families


def replay_bank(bank: Bank, families: Sequence[Family | SharedBudget] | None = None, draws: int = 16,
                seed: int = 0, progress: bool = False, name: str = "", rpc_mixture: bool = False,
                budgets: Sequence[float] = (), parts: Sequence[np.ndarray] | None = None
                ) -> tuple[list[TuneSetting], np.ndarray]:
    """(settings, outcomes[setting, problem, draw, column]) for every family on every problem; the
    orderings are the same for every family (paired comparisons), drawn from `seed`. A shared
    budget (`SharedBudget`) is replayed across the problems of each of `parts` (index arrays; default:
    all problems) on its own: each part shares its own total, budget x its problems."""
    arrays = [problem_arrays(p) for p in bank.problems]
    k = bank.k
    if families is None:
        scores = [s for s in arrays[0].scores if all(s in a.scores for a in arrays)]
        has_top = all(s.top_logprobs is not None for s in bank.problems[0].samples)
        shared = default_shared(k, bank.header.get("params", {}).get("max_tokens"), arrays, budgets)
        families = [*default_families(k, scores, has_top, rpc_mixture), *([shared] if shared else [])]
    settings = [s for f in families for s in f.settings]
    out = np.empty((len(settings), len(arrays), draws, COLUMNS))
    perms = orderings(len(arrays), k, draws, seed)
    from tqdm.auto import tqdm

    starts = np.cumsum([0] + [len(f.settings) for f in families])
    alone = [(f, start) for f, start in zip(families, starts, strict=False) if not isinstance(f, SharedBudget)]
    for pi, p in enumerate(tqdm(arrays, desc=f"replay {bank.name}", disable=not progress, unit="problem")):
        for r in range(draws):
            for f, start in alone:
                block = f.run(p, perms[pi][r])
                out[start:start + len(block), pi, r] = block
    for f, start in zip(families, starts, strict=False):
        if isinstance(f, SharedBudget):
            out[start:start + len(f.settings)] = replay_shared(f, arrays, perms, parts)
    if name:
        settings = [TuneSetting(s.strategy, s.n, s.options, name) for s in settings]
    return settings, out


def orderings(problems: int, k: int, draws: int, seed: int) -> list[list[np.ndarray]]:
    """perms[problem][draw]: the orderings of each problem's K samples that every family replays."""
    rng = np.random.default_rng(seed)
    return [[rng.permutation(k) for _ in range(draws)] for _ in range(problems)]


def replay_shared(family: SharedBudget, arrays: Sequence[ProblemArrays], perms: Sequence[Sequence[np.ndarray]],
                  parts: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """outcomes[setting, problem, draw, column] of a shared budget: each of `parts` (index arrays;
    default: all problems) shares its own total, budget x its problems, in each ordering."""
    draws = len(perms[0]) if len(perms) else 0
    out = np.empty((len(family.settings), len(arrays), draws, COLUMNS))
    for part in parts if parts is not None else [np.arange(len(arrays))]:
        for r in range(draws):
            out[:, part, r] = family.run_all([arrays[i] for i in part], [perms[i][r] for i in part])
    return out


def _bootstrap_index(problems: int, draws: int, replicates: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, problems, (replicates, problems)), rng.integers(0, draws, (replicates, problems))


def measure(outcomes: np.ndarray, replicates: int = 1000, level: float = 0.9, seed: int = 1
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point[s, c], low[s, c], high[s, c]) and the replicates: the mean over problems and draws, and
    the percentile bootstrap interval (problems resampled with replacement, one draw each)."""
    s, p, d, c = outcomes.shape
    rng = np.random.default_rng(seed)
    pi, ri = _bootstrap_index(p, d, replicates, rng)
    # replicate b's mean = outcomes . (how often it drew each (problem, draw)) / p: one matrix product
    cells = (pi * d + ri) + (np.arange(replicates)[:, None] * p * d)
    weights = np.bincount(cells.ravel(), minlength=replicates * p * d).reshape(replicates, p * d) / p
    flat = outcomes.reshape(s, p * d, c)
    boot = np.stack([flat[:, :, col] @ weights.T for col in range(c)], axis=2)  # s x B x c
    point = outcomes.mean(axis=(1, 2))
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=1)
    return point, low, high, boot


def simultaneous_factor(boot: np.ndarray, point: np.ndarray, level: float = 0.9) -> float:
    """The bootstrap max-|t| critical value over settings: intervals point +- factor x sd hold for
    every setting at once with probability `level`, so also for the one picked as best."""
    sd = boot.std(axis=1)
    sd = np.where(sd > 0, sd, np.inf)
    t = np.max(np.abs(boot - point[:, None]) / sd[:, None], axis=0)
    return float(np.quantile(t, level))


def tune(banks: str | os.PathLike | Bank | Sequence[str | os.PathLike | Bank], *,
         budgets: Sequence[float] = (), split: float | None = None, split_seed: int = 0, draws: int = 8,
         replicates: int = 1000, level: float = 0.9, seed: int = 0,
         families: Sequence[Family | SharedBudget] | None = None, rpc_mixture: bool = False,
         progress: bool = False) -> TuneReport:
    """Replay every replayable setting on the bank(s); return a `TuneReport`.

    banks: bank files (or loaded `Bank`s) of one model, prompt and problem set, e.g. at several
        temperatures; settings are then named after their bank.
    budgets: per-problem token budgets for `report.best(budget)` in the printed report; the shared
        budget across problems is replayed at each of them too (a total of budget x problems).
    split: the fraction of problems to fit on (chosen at random with `split_seed`); the rest are
        predicted: each row then carries its accuracy there and the prediction interval.
    draws: orderings of each problem's samples replayed; replicates: bootstrap replicates.
    families: the replays to run (default: `default_families` and `default_shared`); rpc_mixture:
        replay RPC with its Weibull-mixture pruning too (slow: a scipy fit per subsample).
    """
    start = time.perf_counter()
    items = [banks] if isinstance(banks, (str, os.PathLike, Bank)) else list(banks)
    if not items:
        raise InvalidInput("tune needs at least one bank")
    loaded = [b if isinstance(b, Bank) else load_bank(b) for b in items]
    if len(loaded) > 1:
        common = set.intersection(*({p.problem_id for p in b.problems} for b in loaded))
        loaded = [b.subset([i for i, p in enumerate(b.problems) if p.problem_id in common]) for b in loaded]
        check_compatible(loaded)
    if draws < 1 or replicates < 10:
        raise InvalidInput("tune needs draws >= 1 and replicates >= 10")
    count = len(loaded[0].problems)
    fit = np.arange(count)
    held = np.array([], dtype=int)
    if split is not None:
        if not 0 < split < 1:
            raise InvalidInput(f"split is the fraction of problems to fit on, in (0, 1); got {split!r}")
        order = np.random.default_rng(split_seed).permutation(count)
        cut = int(round(split * count))
        if cut < 2 or count - cut < 2:
            raise InvalidInput(f"split={split} leaves fewer than 2 problems on a side of {count}")
        fit, held = np.sort(order[:cut]), np.sort(order[cut:])
    settings: list[TuneSetting] = []
    blocks = []
    for bank in loaded:  # a shared budget is shared by the fit problems, and apart by the held-out ones
        got, out = replay_bank(bank, families, draws, seed, progress, bank.name if len(loaded) > 1 else "",
                               rpc_mixture, budgets=budgets, parts=[fit, held] if len(held) else None)
        settings += got
        blocks.append(out)
    outcomes = np.concatenate(blocks, axis=0)
    report = summarize(settings, outcomes, fit, held, replicates=replicates, level=level, seed=seed + 1)
    report.banks = [b.path or b.name for b in loaded]
    report.k = min(b.k for b in loaded)
    report.budgets = list(budgets)
    report.problem_ids = [p.problem_id for p in loaded[0].problems]
    report.seconds = time.perf_counter() - start
    return report


def summarize(settings: Sequence[TuneSetting], outcomes: np.ndarray, fit: np.ndarray, held: np.ndarray, *,
              replicates: int = 1000, level: float = 0.9, seed: int = 1) -> TuneReport:
    """Rows with intervals from the `fit` problems; with `held` problems, their replayed accuracy and
    each row's prediction interval for it (simultaneous over settings)."""
    point, low, high, boot = measure(outcomes[:, fit, :, :GROUP], replicates, level, seed)
    factor = simultaneous_factor(boot[:, :, CORRECT], point[:, CORRECT], level)
    sd = boot[:, :, CORRECT].std(axis=1)
    held_acc = outcomes[:, held][..., CORRECT].mean(axis=(1, 2)) if len(held) else None
    scale = math.sqrt(1 + len(fit) / len(held)) if len(held) else 1.0
    rows = []
    for i, s in enumerate(settings):
        def m(col: int, i: int = i) -> Measure:
            return Measure(float(point[i, col]), float(low[i, col]), float(high[i, col]))

        half = factor * sd[i]
        row = TuneRow(setting=s, accuracy=m(CORRECT), tokens=m(TOKENS), requests=m(REQUESTS),
                      latency=m(LATENCY),
                      accuracy_corrected=(max(0.0, point[i, CORRECT] - half), min(1.0, point[i, CORRECT] + half)))
        if held_acc is not None:
            row.held_out = float(held_acc[i])
            pred = factor * sd[i] * scale
            row.predicted = (max(0.0, point[i, CORRECT] - pred), min(1.0, point[i, CORRECT] + pred))
        rows.append(row)
    report = TuneReport(rows=rows, level=level, simultaneous_factor=factor, problems=len(fit),
                        held_out_problems=len(held))
    report._outcomes = outcomes  # for paired comparisons (report.margin)
    report._fit, report._held = fit, held
    return report


def parse_budgets(values: Sequence[str] | None) -> list[float]:
    out: list[float] = []
    for v in values or ():
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise InvalidInput(f"--budget takes token counts, got {part!r}") from None
    return out
