"""ttc's progress bar: tqdm's notebook bar in Jupyter when ipywidgets is installed, else its text bar.

Without ipywidgets, importing `tqdm.auto` in a notebook warns ("IProgress not found") with the path of
tqdm's installed file, and falls back to the text bar anyway; the warning says nothing a ttc user
must act on, and a saved notebook would show the machine's install path, so it is silenced here.
"""

from __future__ import annotations

import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
