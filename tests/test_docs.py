"""The documentation builds with `mkdocs build --strict`: a broken link or anchor, or a page left out of
the nav of mkdocs.yml, fails the suite."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "evaluation" / "index.html").is_file()
    assert (tmp_path / "site" / "strategies" / "majority" / "index.html").is_file()

