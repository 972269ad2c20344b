"""examples/strategies.ipynb runs top to bottom on the embedded model (so it never rots)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "strategies.ipynb"


def outputs_of(cell):
    return [o for o in cell.get("outputs", [])]


@pytest.mark.slow
def test_strategies_notebook_executes(tmp_path):
    import nbclient  # dev extra: pip install -e ".[dev]"
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in outputs_of(c) if o.output_type == "error"]
    assert not errors
    rich = [o.get("data", {}) for c in code for o in outputs_of(c) if o.output_type == "execute_result"]
    html = "\n".join(d.get("text/html", "") for d in rich)
    assert "class='ttc-result'" in html              # a Result rendered as HTML
    assert "majority@n=8" in html and "95% CI" in html  # the evaluation report's table
    assert any("image/png" in d for d in rich)       # report.plot() displayed as a PNG
    printed = "".join(o.get("text", "") for c in code for o in outputs_of(c) if o.output_type == "stream")
    assert "tokens (cap 300)" in printed and "BudgetExhausted" in printed
