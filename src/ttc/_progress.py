"""The progress bar class: tqdm's notebook widget where ipywidgets can draw it, else its text bar.

`tqdm.auto` makes the same choice, but in a Jupyter kernel without ipywidgets it first warns
"IProgress not found" with the path of its own file (a machine path in every saved notebook).
huggingface_hub (so transformers and datasets) imports `tqdm.auto` too, so it is imported here
once, quietly: the module is then cached, and their later imports do not warn.
"""

from __future__ import annotations

import importlib.util
import warnings

from tqdm import TqdmWarning

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401 (cached for huggingface_hub's import)
    from tqdm.std import tqdm

__all__ = ["tqdm"]
