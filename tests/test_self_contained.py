"""The repository stands alone (issue 20): no tracked file reads a sibling `shared/` folder or holds a
machine path, since a user's clone has neither; the data the package and its tests need ships in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: a path into the folder beside the checkout that the project was first built next to
SIBLING_SHARED = re.compile(r"\.\./shared\b")
#: an absolute path of two or more parts: a `/` that does not continue a word, number, URL host,
#: relative path, `~`, `$VAR`, `${VAR}` or base64 text (`+`), then name/name...
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$}+\-\\])/(?:[A-Za-z_.][\w.+-]*/)+[\w.+-]*")

#: absolute-looking paths that are no machine's: each with its reason
ALLOWED = {
    "/v1/": "an OpenAI-compatible API's URL path (`/v1/completions`, served by every endpoint)",
    "/chat/completions": "an OpenAI-compatible API's endpoint path, appended to a base URL",
    "/path/to/": "a placeholder in usage examples, to be replaced by the reader's own folder",
    "/no/such/": "a deliberately missing folder in tests of the missing-model error",
    "/usr/bin/env": "the portable shebang of scripts",
    "/secrets/": "the mount point of a Kubernetes secret inside ttc's container (docs/serve.md's deployment recipe)",
    "/proc/": "Linux's process table (a benchmark reads a server's CPU time), the same on every Linux",
}
#: files whose paths are relative to the repository by definition
RELATIVE_BY_DEFINITION = {".gitignore": "a leading `/` anchors a pattern at the repository root"}


def tracked_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / n for n in names.decode().split("\0") if n]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (compressed data, images) or a deleted one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # deleted in the working tree, not yet committed
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def machine_paths(text: str) -> list[str]:
    """The sibling-`shared/` references and absolute paths of `text` that ALLOWED does not excuse."""
    found = [m.group(0) for m in SIBLING_SHARED.finditer(text)]
    for m in ABSOLUTE_PATH.finditer(text):
        if not any(m.group(0).startswith(prefix) for prefix in ALLOWED):
            found.append(m.group(0))
    return found


def test_no_tracked_file_reads_outside_the_repository_or_holds_a_machine_path():
    files = tracked_files()
    assert len(files) > 100 and any(f.suffix == ".ipynb" for f in files)  # the scan sees the tree
    this = Path(__file__).resolve()
    offenders = {}
    for path in files:
        text = text_of(path)
        if text is None or path == this or path.name in RELATIVE_BY_DEFINITION:  # this file names the patterns
            continue
        if found := machine_paths(text):
            offenders[str(path.relative_to(ROOT))] = sorted(set(found))[:5]
    assert offenders == {}


@pytest.mark.parametrize("text", [
    "DATA = ROOT / '..' / '../shared/data'",
    "PY=/work/main/.venv/bin/python benchmarks/x.py",
    '"ttc": "/tmp/tmpyw_6odlk/src/ttc"',
    "/home/user/.cache/ttc/models",
    '"text": ["/root/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning"]',
])
def test_the_scan_finds_machine_paths(text):
    assert machine_paths(text)


@pytest.mark.parametrize("text", [
    "http://127.0.0.1:8000/v1/completions",
    'post(url + "/chat/completions", body)',
    "--model /path/to/hf/folder",
    "src/ttc/data/gsm8k_test.jsonl.gz and tests/data/gsm8k_train.jsonl",
    ".venv/bin/python -m pytest",
    "~/.cache/ttc and $HOME/.cache and ${TMPDIR:-/tmp}",
    r"\frac{1}{2}/x/y and 3/4/5",
])
def test_the_scan_lets_urls_relative_paths_and_placeholders_through(text):
    assert machine_paths(text) == []


def test_the_data_the_package_and_its_tests_read_is_in_the_repository():
    tracked = {str(f.relative_to(ROOT)) for f in tracked_files()}
    assert {"src/ttc/data/gsm8k_test.jsonl.gz", "src/ttc/data/math500_test.jsonl.gz",
            "src/ttc/data/LICENSES.md", "tests/data/gsm8k_train.jsonl"} <= tracked
