"""The progress bar class: tqdm's notebook widget where ipywidgets can draw it, else its text bar.

`tqdm.auto` makes the same choice, but in a Jupyter kernel without ipywidgets it first warns
"IProgress not found" with the path of its own file (a machine path in every saved notebook).
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
