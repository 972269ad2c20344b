"""Reports: Wilson intervals, pass@k, the summary table and files, the plot, and notebook display."""

import csv
import io
import math

import pytest

import ttc
from ttc.display import result_html, result_markdown
from ttc.eval import EvalReport, pass_at_k, wilson_interval
from ttc.eval.report import percentile


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4901, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(10, 0, 5) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_percentile_interpolates_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert percentile([], 50) is None


def record(pid, setting, correct, candidates, tokens=100, latency=1.0, error=None, n=None, verifier_calls=0):
    return {"problem_id": pid, "setting": setting, "strategy": setting.split("@")[0], "n": n or len(candidates) or 1,
            "tokens_budget": None, "answer": None if error else "1", "gold": "1", "correct": correct,
            "error": error, "latency_s": latency,
            "usage": {"total_tokens": tokens, "completion_tokens": tokens - 10, "verifier_calls": verifier_calls},
            "candidates": [{"answer": "1" if c else "2", "correct": c} for c in candidates],
            "dataset": "toy", "model": "m"}


def toy_report():
    return EvalReport([
        record("a", "majority@n=4", True, [True, False, False, True], tokens=400, latency=1.0, verifier_calls=4),
        record("b", "majority@n=4", False, [False, False, False, False], tokens=420, latency=3.0, verifier_calls=4),
        record("c", "majority@n=4", False, [], tokens=50, latency=0.5, error="BudgetExhausted: out", n=4),
        record("a", "sample@n=1", True, [True], tokens=100, latency=0.2),
        record("b", "sample@n=1", False, [False], tokens=110, latency=0.4),
        record("c", "sample@n=1", True, [True], tokens=90, latency=0.3),
    ])


def test_summary_rows_compute_every_column():
    report = toy_report()
    assert [r.setting for r in report.rows] == ["majority@n=4", "sample@n=1"]
    row = report["majority@n=4"]
    assert (row.problems, row.graded, row.correct, row.errors) == (3, 3, 1, 1)
    assert row.accuracy == pytest.approx(1 / 3)
    assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(1, 3))
    # pass@1: (2/4 + 0 + 0 for the failed problem) / 3; pass@4: (1 + 0 + 0) / 3
    assert row.pass_at_1 == pytest.approx(0.5 / 3)
    assert row.pass_at_n == pytest.approx(1 / 3)
    assert row.mean_tokens == pytest.approx((400 + 420 + 50) / 3)
    assert row.mean_verifier_calls == pytest.approx(8 / 3)
    assert row.latency_p50 == 1.0 and row.latency_p95 == pytest.approx(2.8)
    assert report["sample@n=1"].accuracy == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="have: majority@n=4, sample@n=1"):
        report["best_of_n@n=2"]


def test_table_markdown_csv_and_html():
    report = toy_report()
    text = str(report)
    assert text.splitlines()[0] == "toy · m"
    assert "majority@n=4" in text and "0.333" in text and "95% CI" in text
    md = report.to_markdown()
    assert "| setting | problems | accuracy | 95% CI |" in md
    assert "| sample@n=1 | 3 | 0.667 |" in md
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert rows[0]["setting"] == "majority@n=4" and rows[0]["errors"] == "1" and float(rows[1]["accuracy"]) > 0.66
    assert "<table>" in report._repr_html_() and report._repr_markdown_() == md


def test_save_writes_markdown_csv_and_a_png_plot(tmp_path):
    paths = toy_report().save(tmp_path / "out" / "toy")
    assert paths["markdown"].name == "toy.summary.md" and paths["csv"].name == "toy.summary.csv"
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    fig = toy_report().plot()
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("mean tokens") and len(ax.get_legend().get_texts()) == 2


def test_report_from_jsonl_round_trip(tmp_path):
    import json

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_report().records))
    assert EvalReport.from_jsonl(path).to_csv() == toy_report().to_csv()


def test_result_renders_as_html_and_markdown_in_notebooks():
    llm = ttc.backends.Scripted(["The answer is \\boxed{4}.", "so <b>\\boxed{5}</b>", "\\boxed{4}"])
    result = ttc.MajorityVote(n=3).solve(ttc.Problem("What is 2 + 2? <script>", "4", id="q1"), llm)
    page = result._repr_html_()
    assert page == result_html(result)
    assert "<strong>4</strong>" in page and "✓" in page and "votes:" in page
    assert "&lt;script&gt;" in page and "<script>" not in page  # question text is escaped
    assert "&lt;b&gt;" in page and "3 candidates" in page
    md = result._repr_markdown_()
    assert md == result_markdown(result) and "answer: **4** ✓" in md and "| 1 | `5` | ✗ |" in md
    wrong = ttc.Sample().solve(ttc.Problem("q", "7"), ttc.backends.Scripted(["\\boxed{4}"]))
    assert "✗ (gold: 7)" in wrong._repr_html_()


def test_failed_result_renders_its_error():
    failed = ttc.Result.failed(ttc.Problem("q"), "majority", ttc.BudgetExhausted("out of <tokens>"), ttc.Usage())
    page = failed._repr_html_()
    assert "error:" in page and "out of &lt;tokens&gt;" in page
    assert "**error:** BudgetExhausted: out of <tokens>" in failed._repr_markdown_()
