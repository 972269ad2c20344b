"""What `ttc.tune` returns: one row per replayed setting, the Pareto frontier, the best per budget."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc.bank.replays import CORRECT, TuneSetting
from ttc.errors import InvalidInput


@dataclass(frozen=True)
class Measure:
    """A per-problem mean with its bootstrap interval (the report's level, 90% by default)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


@dataclass
class TuneRow:
    """One setting: accuracy, tokens, requests and latency (seconds) per problem with intervals;
    `accuracy_corrected`, the interval widened to hold for every setting at once (so for the best);
    with a split, `held_out` (its replayed accuracy on the held-out problems) and `predicted` (the
    corrected prediction interval for it)."""

    setting: TuneSetting
    accuracy: Measure
    tokens: Measure
    requests: Measure
    latency: Measure
    accuracy_corrected: tuple[float, float]
    held_out: float | None = None
    predicted: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        return self.setting.label

    @property
    def n(self) -> int:
        return self.setting.n

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"setting": self.label, "strategy": self.setting.strategy, "n": self.n,
                             "options": dict(self.setting.options), "bank": self.setting.bank}
        for name in ("accuracy", "tokens", "requests", "latency"):
            m = getattr(self, name)
            d[name] = {"value": m.value, "low": m.low, "high": m.high}
        d["accuracy_corrected"] = list(self.accuracy_corrected)
        if self.held_out is not None:
            d["held_out"], d["predicted"] = self.held_out, list(self.predicted or ())
        return d


@dataclass
class Best:
    """The best setting within a token budget, and why to be careful with it."""

    budget: float
    row: TuneRow | None
    warning: str | None = None

    def __str__(self) -> str:
        if self.row is None:
            return f"budget {self.budget:g} tokens: {self.warning}"
        r = self.row
        lo, hi = r.accuracy_corrected
        text = (f"budget {self.budget:g} tokens: {r.label}  accuracy {r.accuracy.value:.3f} "
                f"(90% [{r.accuracy.low:.3f}, {r.accuracy.high:.3f}]; corrected for picking the best "
                f"[{lo:.3f}, {hi:.3f}])  tokens {r.tokens.value:.0f}")
        if r.held_out is not None:
            text += f"  held-out {r.held_out:.3f} (predicted [{r.predicted[0]:.3f}, {r.predicted[1]:.3f}])"
        return text + (f"\n  warning: {self.warning}" if self.warning else "")


@dataclass
class TuneReport:
    """Every replayed setting (`rows`), the accuracy-vs-tokens `frontier()`, `best(budget)`, `plot()`."""

    rows: list[TuneRow]
    level: float = 0.9
    simultaneous_factor: float = 1.645
    problems: int = 0
    held_out_problems: int = 0
    banks: list[str] = field(default_factory=list)
    k: int = 0
    budgets: list[float] = field(default_factory=list)
    problem_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fit_ids(self) -> list[str]:
        """The problems the rows' numbers come from (all of them without a split)."""
        return [self.problem_ids[i] for i in self._fit]

    @property
    def held_out_ids(self) -> list[str]:
        """The problems held out by `split` (none without one)."""
        return [self.problem_ids[i] for i in self._held]

    def row(self, label: str) -> TuneRow:
        for r in self.rows:
            if r.label == label:
                return r
        raise InvalidInput(f"no setting {label!r} in this report (e.g. {self.rows[0].label!r})")

    def frontier(self) -> list[TuneRow]:
        """The Pareto frontier: settings no other setting beats on accuracy at no more tokens."""
        out: list[TuneRow] = []
        for r in sorted(self.rows, key=lambda r: (r.tokens.value, -r.accuracy.value)):
            if not out or r.accuracy.value > out[-1].accuracy.value:
                out.append(r)
        return out

    def best(self, budget: float | None = None) -> Best:
        """The most accurate setting whose mean tokens per problem fit `budget` (None: any); a warning
        when it draws all K samples (the bank cannot tell whether more would help)."""
        fits = [r for r in self.rows if budget is None or r.tokens.value <= budget]
        if not fits:
            cheapest = min(r.tokens.value for r in self.rows)
            return Best(budget if budget is not None else float("inf"), None,
                        f"no setting fits; the cheapest spends {cheapest:.0f} tokens per problem")
        top = max(fits, key=lambda r: (r.accuracy.value, -r.tokens.value))
        warning = None
        if top.n >= self.k:
            warning = (f"the best setting draws n = K = {self.k} samples, all the bank holds: more samples might "
                       f"do better, record a larger bank (ttc record --k) to tell")
        return Best(budget if budget is not None else float("inf"), top, warning)

    def margin(self, picked: TuneRow, over: TuneRow) -> tuple[float, float, float]:
        """(difference, low, high): `picked`'s accuracy minus `over`'s on the held-out problems (the fit
        problems without a split), paired bootstrap over those problems."""
        i, j = self.rows.index(picked), self.rows.index(over)
        on = self._held if len(self._held) else self._fit
        diff = self._outcomes[i, on, :, CORRECT] - self._outcomes[j, on, :, CORRECT]  # problems x draws
        rng = np.random.default_rng(7)
        pi = rng.integers(0, len(on), (1000, len(on)))
        ri = rng.integers(0, diff.shape[1], (1000, len(on)))
        boot = diff[pi, ri].mean(axis=1)
        alpha = (1 - self.level) / 2
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        return float(diff.mean()), float(lo), float(hi)

    def best_fixed(self, tokens: float) -> TuneRow | None:
        """The most accurate plain baseline (one sample, or an unweighted majority vote at a fixed n:
        `TuneSetting.fixed`) within `tokens`."""
        fits = [r for r in self.rows if r.setting.fixed and r.tokens.value <= tokens]
        return max(fits, key=lambda r: (r.accuracy.value, -r.tokens.value)) if fits else None

    # -- output ---------------------------------------------------------------------------------
    def table(self, rows: list[TuneRow] | None = None) -> str:
        rows = self.frontier() if rows is None else rows
        pct = round(self.level * 100)
        head = f"| setting | accuracy [{pct}%] | tokens/problem [{pct}%] | requests | latency s |"
        extra = " held-out | predicted |" if self.held_out_problems else ""
        lines = [head + extra, "|---|---|---|---|---|" + ("---|---|" if extra else "")]
        for r in rows:
            line = (f"| {r.label} | {r.accuracy.value:.3f} [{r.accuracy.low:.3f}, {r.accuracy.high:.3f}] | "
                    f"{r.tokens.value:.0f} [{r.tokens.low:.0f}, {r.tokens.high:.0f}] | {r.requests.value:.2f} | "
                    f"{r.latency.value:.2f} |")
            if extra:
                line += f" {r.held_out:.3f} | [{r.predicted[0]:.3f}, {r.predicted[1]:.3f}] |"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [f"{len(self.rows)} settings replayed on {self.problems} problems (K = {self.k})"
                 + (f", {self.held_out_problems} held out" if self.held_out_problems else "")
                 + f" in {self.seconds:.1f} s", "", "Pareto frontier (accuracy vs tokens):", self.table()]
        if self.budgets:
            parts += ["", "Best per budget:"] + [str(self.best(b)) for b in self.budgets]
        else:
            parts += ["", "Best overall:", str(self.best())]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"banks": self.banks, "k": self.k, "problems": self.problems,
                "held_out_problems": self.held_out_problems, "level": self.level,
                "simultaneous_factor": self.simultaneous_factor, "seconds": self.seconds,
                "rows": [r.to_dict() for r in self.rows], "frontier": [r.label for r in self.frontier()],
                "best": {str(b): (self.best(b).row.label if self.best(b).row else None) for b in self.budgets}}

    def save_json(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    def plot(self, path: str | os.PathLike | None = None, ax: Any = None) -> Any:
        """Accuracy vs tokens per problem: every setting (grey), the frontier with its intervals, the
        budgets as vertical lines. Saved to `path` when given; returns the matplotlib Axes."""
        from ttc._extras import require

        plt = require("matplotlib.pyplot", "eval", "plotting the tune frontier")
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter([r.tokens.value for r in self.rows], [r.accuracy.value for r in self.rows], s=8,
                   color="0.75", label="all settings")
        front = self.frontier()
        xs = [r.tokens.value for r in front]
        ys = [r.accuracy.value for r in front]
        err = [[y - r.accuracy.low for y, r in zip(ys, front, strict=True)],
               [r.accuracy.high - y for y, r in zip(ys, front, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", color="C0", capsize=2, label=f"frontier ({self.level:.0%} intervals)")
        for r in front:
            ax.annotate(r.label, (r.tokens.value, r.accuracy.value), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
        for b in self.budgets:
            ax.axvline(b, color="C3", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("tokens per problem")
        ax.set_ylabel("accuracy")
        ax.legend(loc="lower right", fontsize=7)
        if path is not None:
            ax.figure.tight_layout()
            ax.figure.savefig(path, dpi=120)
        return ax
