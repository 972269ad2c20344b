"""What a new user starts from: a copy of the tracked files (a clone, with no sibling folders), and a
virtual environment with a plain `pip install` of that copy and no extras.

The environment is cached under ~/.cache/ttc-tests keyed by a hash of pyproject.toml (its
dependencies are the slow part); ttc itself is reinstalled from the current tree on every use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: a bound on one pip install (the core's dependencies download in ~1-2 min here)
INSTALL_TIMEOUT = 900


def copy_tracked_files(dest: Path) -> Path:
    """Copy the files git tracks (as they are in the working tree) to `dest`; return it."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in names.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttc-tests"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def core_venv(source: Path) -> Path:
    """The python of a venv where `pip install <source>` (no extras) was run; the current `source`
    is reinstalled into the cached venv each time (without touching its dependencies)."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = cache_root() / f"core-venv-{key}"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    with _locked(cache_root() / f".core-venv-{key}.lock"):
        if not stamp.is_file():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            _pip(python, str(source))
            stamp.write_text("pip install . done\n")
        else:
            _pip(python, "--no-deps", "--force-reinstall", str(source))
    return python
