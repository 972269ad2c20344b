"""`EvalReport.plot` draws partial settings (fewer problems done than the report covers: a run
still going, or interrupted) differently from finished ones: hollow markers, a dotted line, and the
count of problems done in the label."""

from matplotlib.colors import to_rgba

from test_eval_report import record
from ttc.eval import EvalReport


def markers(ax):
    """(x, y, hollow) of every single-point marker drawn on the axes."""
    out = []
    for line in ax.get_lines():
        if line.get_marker() == "o" and len(line.get_xdata()) == 1:
            hollow = to_rgba(line.get_markerfacecolor()) == to_rgba("white")
            out.append((float(line.get_xdata()[0]), float(line.get_ydata()[0]), hollow))
    return out


def test_partial_settings_are_hollow_dotted_and_labelled_with_their_count():
    ids = ["a", "b", "c", "d"]
    records = [record(p, "majority@n=1", True, [True], tokens=100) for p in ids]
    records += [record(p, "majority@n=4", p != "d", [True] * 4, tokens=400) for p in ids]
    records += [record(p, "majority@n=16", True, [True] * 16, tokens=1600) for p in ids[:2]]  # 2 of 4 done
    ax = EvalReport(records).plot().axes[0]
    points = sorted(markers(ax))
    assert [(round(x), hollow) for x, _, hollow in points] == [(100, False), (400, False), (1600, True)]
    segments = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert [line.get_linestyle() for line in sorted(segments, key=lambda line: line.get_xdata()[0])] == ["-", ":"]
    labels = [t.get_text() for t in ax.texts]
    assert "n=16 (2/4)" in labels and "n=4" in labels and "n=1" in labels
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["majority", "partial (problems done / 4)"]


def test_a_finished_report_has_no_partial_marks():
    records = [record(p, s, True, [True] * n, tokens=100 * n) for p in "ab" for s, n in (("sample@n=1", 1),
                                                                                       ("majority@n=4", 4))]
    ax = EvalReport(records).plot().axes[0]
    assert not any(hollow for _, _, hollow in markers(ax))
    assert all("/" not in t.get_text() for t in ax.texts)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sample", "majority"]
