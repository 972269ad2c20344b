"""Results files: the JSONL that `ttc.eval` runs append to, read back, repaired and locked.

Its own module so that the runner (which writes results) and the report (which reads them) both
import it, and not each other.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ttc.errors import InvalidInput

__all__ = ["ResultsFile", "ResultsWarning", "jsonable", "read_results"]


class ResultsWarning(UserWarning):
    """A line of a results file could not be used (cut short by a kill, malformed) and was dropped."""


def read_results(path: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a results JSONL file, in file order (none if it does not exist).

    A last line without its newline is what a kill mid-write leaves: it is dropped with a
    `ResultsWarning`, and with `repair=True` cut off the file so appending can resume cleanly.
    Other malformed lines are skipped with a warning naming their line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1  # 0 when the only line is torn
        warnings.warn(f"{path}: dropped a truncated last line ({len(data) - end} bytes) left by an "
                      f"interrupted run", ResultsWarning, stacklevel=2)
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(end)
    records = []
    for lineno, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            warnings.warn(f"{path}: line {lineno}: malformed JSON ({exc.msg}); line ignored",
                          ResultsWarning, stacklevel=2)
            continue
        if not isinstance(record, dict) or "problem_id" not in record or "setting" not in record:
            warnings.warn(f"{path}: line {lineno}: not a ttc result record (needs 'problem_id' and "
                          f"'setting'); line ignored", ResultsWarning, stacklevel=2)
            continue
        records.append(record)
    return records


class ResultsFile:
    """An append-only JSONL results file held under an exclusive lock while a run writes it.

    Every record is written with one `write` system call on a file opened for appending, so a
    kill leaves at most one truncated last line, which the next open repairs.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise InvalidInput(f"{self.path} is being written by another ttc run; wait for it or use "
                               f"another --output") from None
        self.records = read_results(self.path, repair=True)

    def append(self, record: Mapping[str, Any]) -> None:
        data = (json.dumps(jsonable(record), ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def rewrite(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Replace the file's contents with `records` (atomically: temp file + rename)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.close(old)
        self.records = list(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def jsonable(value: Any, nonfinite_as_str: bool = False) -> Any:
    """JSON-safe copy: non-finite floats become None (or "inf"/"-inf"/"nan" with `nonfinite_as_str`),
    unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else (str(value) if nonfinite_as_str else None)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nonfinite_as_str) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nonfinite_as_str) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
