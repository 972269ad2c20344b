"""Datasets that ship with ttc: GSM8K's test split and MATH-500, gzipped JSONL, with their licences
(LICENSES.md beside them). `ttc.eval.load_dataset("gsm8k")` / `("math500")` read them offline."""

from __future__ import annotations

from pathlib import Path

#: the folder of the packaged files (a plain folder inside the installed package: wheels are unzipped)
DATA_DIR = Path(__file__).resolve().parent


def packaged(name: str, split: str) -> Path | None:
    """The packaged file of dataset `name`'s `split` (`<name>_<split>.jsonl.gz`), or None."""
    path = DATA_DIR / f"{name}_{split}.jsonl.gz"
    return path if path.is_file() else None
