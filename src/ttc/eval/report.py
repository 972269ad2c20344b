"""Summaries of evaluation records: a table per setting (Markdown, CSV, text), and a plot.

    report = ttc.eval.EvalReport.from_jsonl("results.jsonl")
    print(report)                      # the table
    report.save("results")             # results.summary.md, results.summary.csv, results.png
    report                             # in Jupyter: an HTML table

Per setting: accuracy with a Wilson 95% confidence interval, pass@1 and pass@n from the
candidates' correctness (the unbiased estimator of Chen et al., 2021), mean tokens, mean
verifier calls, latency p50/p95 and the number of failed problems.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ttc.eval.results import ResultsWarning, read_results


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    (Chen et al., 2021, "Evaluating Large Language Models Trained on Code".) Needs k <= n.
    """
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class SettingSummary:
    """One row of the report: a setting's results over all its problems."""

    setting: str
    strategy: str
    n: int
    tokens_budget: int | None
    problems: int
    graded: int
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    pass_at_1: float | None
    pass_at_n: float | None
    mean_tokens: float
    mean_completion_tokens: float
    mean_verifier_calls: float
    latency_p50: float | None
    latency_p95: float | None
    errors: int
    #: share of all candidates cut at max_tokens (finish_reason "length"); None without candidates
    cut: float | None = None
    #: mean thinking tokens per problem (a reasoning model's, part of the completion tokens; 0 without)
    mean_reasoning_tokens: float = 0.0

    @classmethod
    def from_records(cls, setting: str, records: Sequence[Mapping[str, Any]]) -> SettingSummary:
        first = records[0]
        graded = [r for r in records if r.get("correct") is not None]
        if all(r.get("error") for r in records):
            graded = []  # nothing was answered: no accuracy at all, rather than a 0 as if the model had tried
        correct = sum(bool(r["correct"]) for r in graded)
        low, high = wilson_interval(correct, len(graded)) if graded else (None, None)
        usages = [r.get("usage") or {} for r in records]
        latencies = [float(r["latency_s"]) for r in records if r.get("latency_s") is not None]
        p1, pn = _pass_rates(records)
        return cls(
            setting=setting, strategy=str(first.get("strategy", setting)), n=int(first.get("n") or 1),
            tokens_budget=first.get("tokens_budget"), problems=len(records), graded=len(graded), correct=correct,
            accuracy=correct / len(graded) if graded else None, ci_low=low, ci_high=high,
            pass_at_1=p1, pass_at_n=pn,
            mean_tokens=_mean(u.get("total_tokens", 0) for u in usages),
            mean_completion_tokens=_mean(u.get("completion_tokens", 0) for u in usages),
            mean_verifier_calls=_mean(u.get("verifier_calls", 0) for u in usages),
            latency_p50=percentile(latencies, 50), latency_p95=percentile(latencies, 95),
            errors=sum(1 for r in records if r.get("error")), cut=_cut_share(records),
            mean_reasoning_tokens=_mean(u.get("reasoning_tokens", 0) for u in usages))


def _cut_share(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Share of the candidates (over all records) that were cut at max_tokens."""
    reasons = [c.get("finish_reason") for r in records for c in r.get("candidates") or []]
    return sum(1 for x in reasons if x == "length") / len(reasons) if reasons else None


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _pass_rates(records: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """Mean pass@1 and pass@n over problems whose candidates were all graded (n = their count).

    Failed problems (no candidates) count as 0; problems without gold are left out. None when
    no problem has graded candidates.
    """
    p1, pn, counted = 0.0, 0.0, 0
    if all(r.get("error") for r in records):
        return None, None
    for r in records:
        if r.get("correct") is None:
            continue
        marks = [c.get("correct") for c in r.get("candidates") or []]
        if r.get("error") and not marks:
            counted += 1
            continue
        if not marks or any(m is None for m in marks):
            continue
        c = sum(bool(m) for m in marks)
        p1 += pass_at_k(len(marks), c, 1)
        pn += pass_at_k(len(marks), c, len(marks))
        counted += 1
    if not counted:
        return None, None
    return p1 / counted, pn / counted


#: (attribute, column title, format) of the table
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("setting", "setting", "s"),
    ("problems", "problems", "d"),
    ("accuracy", "accuracy", ".3f"),
    ("ci", "95% CI", "ci"),
    ("pass_at_1", "pass@1", ".3f"),
    ("pass_at_n", "pass@n", ".3f"),
    ("mean_tokens", "tokens/problem", ".0f"),
    ("mean_reasoning_tokens", "thinking/problem", ".0f"),
    ("cut", "cut", ".0%"),
    ("mean_verifier_calls", "verifier calls", ".1f"),
    ("latency_p50", "latency p50 (s)", ".2f"),
    ("latency_p95", "latency p95 (s)", ".2f"),
    ("errors", "failed", "d"),
)


class EvalReport:
    """Evaluation records with their per-setting summary; prints, saves and renders in Jupyter."""

    def __init__(self, records: Sequence[Mapping[str, Any]], title: str | None = None):
        self.records = [dict(r) for r in records]
        self.title = title or self._default_title()

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, title: str | None = None) -> EvalReport:
        """The report of a results file written by `evaluate`/`compare` (or `ttc eval`)."""
        return cls(read_results(path), title=title)

    def _default_title(self) -> str:
        if not self.records:
            return "evaluation"
        first = self.records[0]
        parts = [str(first[k]) for k in ("dataset", "model") if first.get(k)]
        return " · ".join(parts) or "evaluation"

    # -- data -----------------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[Mapping[str, Any]]]:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in self.records:
            groups.setdefault(str(r["setting"]), []).append(r)
        return groups

    @property
    def rows(self) -> list[SettingSummary]:
        """One summary per setting, in the order the settings first appear in the records."""
        return [SettingSummary.from_records(k, v) for k, v in self._groups().items()]

    def plot_rows(self) -> list[SettingSummary]:
        """What the plot shows: per setting, the summary of its problems that did not fail.

        A failed problem has no answer and (often) no tokens: plotting it as a wrong answer at
        0 tokens would draw a point as if the model had tried. Settings whose every problem
        failed are left out; `errors` keeps the number of failed problems left out.
        """
        out = []
        for key, records in self._groups().items():
            answered = [r for r in records if not r.get("error")]
            if not answered:
                continue
            row = SettingSummary.from_records(key, answered)
            row.errors = len(records) - len(answered)
            out.append(row)
        return out

    def failed_settings(self) -> list[tuple[str, int, str]]:
        """(setting, problems, first error) for every setting whose problems all failed."""
        out = []
        for key, records in self._groups().items():
            errors = [str(r["error"]) for r in records if r.get("error")]
            if errors and len(errors) == len(records):
                first = errors[0].strip().splitlines()[0] if errors[0].strip() else "unknown error"
                out.append((key, len(records), first if len(first) <= 300 else first[:300] + "…"))
        return out

    def __getitem__(self, setting: str) -> SettingSummary:
        for row in self.rows:
            if row.setting == setting:
                return row
        raise KeyError(f"no setting {setting!r}; have: {', '.join(r.setting for r in self.rows)}")

    def __len__(self) -> int:
        return len(self.records)

    # -- text -----------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[tuple[str, str, str], ...]:
        """The table's columns: `COLUMNS`, without the thinking column when no setting thought."""
        if any(r.mean_reasoning_tokens for r in self.rows):
            return COLUMNS
        return tuple(c for c in COLUMNS if c[0] != "mean_reasoning_tokens")

    def _cells(self, row: SettingSummary) -> list[str]:
        cells = []
        for attr, _, fmt in self.columns:
            if fmt == "ci":
                cells.append("" if row.ci_low is None else f"[{row.ci_low:.3f}, {row.ci_high:.3f}]")
                continue
            value = getattr(row, attr)
            cells.append("" if value is None else format(value, fmt))
        return cells

    def table(self) -> str:
        """The summary as an aligned plain-text table."""
        header = [title for _, title, _ in self.columns]
        body = [self._cells(r) for r in self.rows]
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
        out = [self.title, line(header), "  ".join("-" * w for w in widths)]
        out += [line(cells) for cells in body]
        out.append(self._footnote())
        return "\n".join(out)

    def _footnote(self) -> str:
        return ("accuracy: correct answers over all problems, Wilson 95% CI (a failed problem has no answer; "
                "failures are counted under 'failed' and left out of the plot); "
                "pass@1/pass@n: unbiased estimates from the candidates' correctness; "
                "tokens: prompt + completion per problem (thinking: the part of them a reasoning model spent "
                "thinking, shown when nonzero); cut: share of candidates cut at max_tokens")

    def to_markdown(self) -> str:
        """The summary as a Markdown table (with the title as a heading)."""
        header = [title for _, title, _ in self.columns]
        lines = [f"### {self.title}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        for row in self.rows:
            cells = [c.replace("|", "\\|") for c in self._cells(row)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"*{self._footnote()}*", ""]
        return "\n".join(lines)

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """Every summary field as CSV (written to `path` when given); returns the CSV text."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(SettingSummary)])
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: "" if v is None else round(v, 6) if isinstance(v, float) else v
                             for k, v in asdict(row).items()})
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"EvalReport({len(self.records)} records, {len(self.rows)} settings)\n{self.table()}"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        header = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in self.columns)
        body = []
        for row in self.rows:
            cells = self._cells(row)
            tds = [f"<td style='text-align:left'>{html.escape(cells[0])}</td>"]
            tds += [f"<td style='text-align:right'>{html.escape(c)}</td>" for c in cells[1:]]
            body.append("<tr>" + "".join(tds) + "</tr>")
        return (f"<div class='ttc-report'><strong>{html.escape(self.title)}</strong>"
                f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                f"<small>{html.escape(self._footnote())}</small></div>")

    # -- plot -----------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike | None = None, ax: Any = None) -> Any:
        """Accuracy (with 95% CI bars) against mean tokens per problem, one line per strategy.

        Points of a strategy are its settings (n or token budget) in increasing cost, computed
        over the problems that did not fail (see `plot_rows`; a point's label says how many
        failed, and a setting that failed everywhere is not drawn). A *partial* setting (fewer
        problems done than the report covers: a run still going or interrupted) is drawn hollow,
        joined by a dotted line and labelled with its count, e.g. "n=16 (12/50)".
        Saves a PNG when `path` is given; returns the matplotlib Figure (matplotlib: `ttc[eval]`).
        """
        from ttc._extras import require

        require("matplotlib", "eval", "EvalReport.plot")
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, works headless (Agg)

        _show_figures_in_notebooks()

        fig = ax.figure if ax is not None else Figure(figsize=(7, 4.5), dpi=100)
        ax = ax if ax is not None else fig.add_subplot()
        lines: dict[str, list[SettingSummary]] = {}
        for row in self.plot_rows():
            if row.accuracy is not None:
                lines.setdefault(row.strategy, []).append(row)
        costs = [r.mean_tokens for rows in lines.values() for r in rows]
        log = bool(costs) and min(costs) > 0 and max(costs) / min(costs) > 4
        span = (max(costs) - min(costs)) if costs else 0.0
        placed: list[tuple[str, float, float]] = []
        done = _problems_done(self.records)
        total = len(set().union(*done.values())) if done else 0
        partial = {k for k, ids in done.items() if len(ids) < total}
        from matplotlib.lines import Line2D

        legend: list[tuple[Any, str]] = []
        for j, (strategy, rows) in enumerate(lines.items()):
            rows = sorted(rows, key=lambda r: r.mean_tokens)
            # dodge: strategies at the same cost sit side by side instead of on top of each other
            shift = j - (len(lines) - 1) / 2
            xs = [r.mean_tokens * (1.02 ** shift) if log else r.mean_tokens + 0.01 * span * shift for r in rows]
            ys = [r.accuracy for r in rows]
            # max(0, ...): at accuracy 1.0 the Wilson bound can fall a rounding error below it
            err = [[max(0.0, r.accuracy - r.ci_low) for r in rows], [max(0.0, r.ci_high - r.accuracy) for r in rows]]
            colour = f"C{j % 10}"
            ax.errorbar(xs, ys, yerr=err, fmt="none", capsize=3, ecolor=colour)
            hollow = [r.setting in partial for r in rows]
            for k in range(1, len(rows)):  # the line: dotted where it leads to or from a partial setting
                ax.plot(xs[k - 1:k + 1], ys[k - 1:k + 1], color=colour,
                        linestyle=":" if hollow[k - 1] or hollow[k] else "-")
            for x, y, h in zip(xs, ys, hollow, strict=False):  # markers: filled when finished, hollow when partial
                ax.plot([x], [y], marker="o", linestyle="none", color=colour, markerfacecolor="white" if h else colour,
                        markersize=7 if h else 6, markeredgewidth=1.5 if h else 1.0)
            legend.append((Line2D([], [], color=colour, marker="o"), strategy))
            # one label per point; settings that landed on the same point share it ("n=1, B=200/500")
            points: list[tuple[float, float, list[SettingSummary]]] = []
            for r, x, y in zip(rows, xs, ys, strict=False):
                same = next((p for p in points if abs(p[1] - y) < 1e-9 and _near(x, p[0], log, span, 0.01)), None)
                if same is None:
                    points.append((x, y, [r]))
                else:
                    same[2].append(r)
            for x, y, group in points:
                tag = _point_label(group)
                if any(r.setting in partial for r in group):
                    tag += " (" + ", ".join(f"{len(done[r.setting])}/{total}" for r in group
                                           if r.setting in partial) + ")"
                if not any(t == tag and abs(y - py) < 0.02 and _near(x, px, log, span) for t, px, py in placed):
                    ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4 if j % 2 == 0 else -11),
                                fontsize=7, color=f"C{j % 10}")
                    placed.append((tag, x, y))
        if log:
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.1)
        ax.set_xlabel("mean tokens per problem (prompt + completion)")
        ax.set_ylabel("accuracy (95% Wilson CI)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(self.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if lines:
            if partial & {r.setting for rows in lines.values() for r in rows}:
                legend.append((Line2D([], [], marker="o", linestyle=":", color="grey", markerfacecolor="white"),
                               f"partial (problems done / {total})"))
            ax.legend([h for h, _ in legend], [t for _, t in legend], fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=150, bbox_inches="tight")
        return fig

    def save(self, prefix: str | os.PathLike) -> dict[str, Path]:
        """Write PREFIX.summary.md, PREFIX.summary.csv and PREFIX.png; return their paths. Without
        matplotlib (the light core install) the plot is left out, with one warning that says how
        to get it."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": prefix.with_name(prefix.name + ".summary.md"),
                 "csv": prefix.with_name(prefix.name + ".summary.csv"),
                 "plot": prefix.with_name(prefix.name + ".png")}
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        self.to_csv(paths["csv"])
        from ttc._extras import available, install_line

        if available("matplotlib"):
            self.plot(paths["plot"])
        else:  # the tables are the results; a run must not fail at its very end for want of a picture
            del paths["plot"]
            warnings.warn(f"no plot saved: EvalReport.plot needs matplotlib: {install_line('eval')}",
                          ResultsWarning, stacklevel=2)
        return paths


def _problems_done(records: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """The problem ids each setting has a record for."""
    done: dict[str, set[str]] = {}
    for r in records:
        done.setdefault(str(r["setting"]), set()).add(str(r.get("problem_id")))
    return done


def _near(a: float, b: float, log: bool, span: float, tolerance: float = 0.05) -> bool:
    return abs(a / b - 1) < 2 * tolerance if log and b else abs(a - b) <= tolerance * span


def _point_label(rows: Sequence[SettingSummary]) -> str:
    ns = "/".join(dict.fromkeys(str(r.n) for r in rows))
    budgets = "/".join(dict.fromkeys(str(r.tokens_budget) for r in rows if r.tokens_budget))
    failed = sum(r.errors for r in rows)
    return f"n={ns}" + (f", B={budgets}" if budgets else "") + (f", {failed} failed" if failed else "")


def _show_figures_in_notebooks() -> None:
    """In IPython, display a returned Figure as a PNG (what `%matplotlib inline` would register).

    The figure is made without pyplot (so nothing opens a window and nothing is kept alive), and
    IPython only knows how to show such a figure once a PNG formatter is registered for it.
    """
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    formatter = shell.display_formatter.formatters["image/png"]
    if Figure not in formatter.type_printers:
        from IPython.core.pylabtools import print_figure

        formatter.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))
