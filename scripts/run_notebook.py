"""Execute a notebook top to bottom and save it with its outputs (what examples/strategies.ipynb is
committed with, so a reader sees the answers, tables, search tree and plot without running it).

    OMP_NUM_THREADS=1 python scripts/run_notebook.py examples/strategies.ipynb [--timeout 900] [--out PATH]

Cells run in the notebook's own folder. A failing cell stops the run with its traceback and nothing
is written. The run's wall time is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def execute(path: Path, timeout: int = 900, kernel: str = "python3"):
    """The executed notebook (nbformat node); raises nbclient's CellExecutionError on a failing cell."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:  # drop per-run timing metadata so re-runs diff only where outputs changed
        cell.get("metadata", {}).pop("execution", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    parser.add_argument("--out", type=Path, default=None, help="where to save (default: in place)")
    args = parser.parse_args(argv)
    import nbformat

    start = time.perf_counter()
    nb = execute(args.notebook, args.timeout)
    seconds = time.perf_counter() - start
    nbformat.write(nb, args.out or args.notebook)
    print(f"executed {args.notebook} in {seconds:.0f} s; saved to {args.out or args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
