"""examples/strategies.ipynb: committed with its outputs (a reader sees them without running it), and
runs top to bottom on the embedded model (so it never rots).

Save fresh outputs with `OMP_NUM_THREADS=1 python scripts/run_notebook.py examples/strategies.ipynb`.
"""

import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "strategies.ipynb"


def outputs_of(cell):
    return [o for o in cell.get("outputs", [])]


def check_outputs(nb) -> None:
    """What the notebook must show: results as HTML with a vote chart and a search tree, the report
    table and plot, FirstFinish and EarlyExit runs, the budget lines; no errors."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(outputs_of(c) for c in code), "a code cell has no output"
    errors = [o for c in code for o in outputs_of(c) if o.output_type == "error"]
    assert not errors, errors
    rich = [o.get("data", {}) for c in code for o in outputs_of(c) if o.output_type == "execute_result"]
    html = "\n".join(d.get("text/html", "") for d in rich)
    assert "class='ttc-result'" in html              # a Result rendered as HTML
    assert 'class="ttc-votes"' in html               # a vote's bar chart
    trees = re.findall(r'<svg[^>]*class="ttc-tree".*?</svg>', html, re.S)
    assert len(trees) == 1                           # the beam search's tree
    tree = ET.fromstring(trees[0])                   # well-formed SVG
    states = [g.get("class").split()[1] for g in tree.iter("{http://www.w3.org/2000/svg}g")
              if "ttc-node" in (g.get("class") or "")]
    assert "chosen" in states and "pruned" in states
    assert "majority@n=8" in html and "95% CI" in html  # the evaluation report's table
    assert any("image/png" in d for d in rich)       # report.plot() displayed as a PNG
    printed = "".join(o.get("text", "") for c in code for o in outputs_of(c) if o.output_type == "stream")
    assert "tokens (cap 300)" in printed and "BudgetExhausted" in printed
    plain = "".join(d.get("text/plain", "") for d in rich)
    assert "'cancelled'" in plain and "answer:" in printed  # the FirstFinish run cancelled the slower streams
    assert "exit_tokens" in printed                  # the EarlyExit run
    assert "budget 400 tokens:" in printed and "| setting | accuracy [90%]" in printed  # ttc.tune on the example bank
    assert re.search(r"\] \d right, 0 failed", printed)  # solve_many's results count what failed
    texts = [str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) + str(o.get("evalue", ""))
             for c in code for o in outputs_of(c)]
    machine = [str(ROOT.parent), str(Path.home()), tempfile.gettempdir(), sys.prefix, "site-packages"]
    paths = [t for t in texts if any(m in t for m in machine)]
    assert not paths, f"saved outputs show a machine path: {paths[:2]}"
    servers = [c.source for c in nb.cells if "OpenAICompatible(" in c.source]
    assert servers and all(c.cell_type == "markdown" for c in nb.cells if "OpenAICompatible(" in c.source)


def test_committed_notebook_has_its_outputs():
    import nbformat

    check_outputs(nbformat.read(NOTEBOOK, as_version=4))


@pytest.mark.slow
def test_strategies_notebook_executes(tmp_path):
    import nbclient  # dev extra: pip install -e ".[dev]"
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from scratch: the committed outputs must not satisfy the checks
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
    check_outputs(nb)
