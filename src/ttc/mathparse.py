"""math-verify calls with a deadline that holds on any thread.

math-verify bounds its own work with `signal.alarm`, which only works on the main thread of the
main interpreter; ttc's sync calls (`solve`, `solve_many`) run strategies on a worker loop, where
math-verify can only run unbounded. A pathological LaTeX string (a tower of powers, a regex that
backtracks) would then hang a whole run, and a thread cannot be stopped, so a deadline on a thread
would leave it spinning while holding the GIL.

So every math-verify call runs in one persistent helper process. Its main thread is the process's
main thread, so math-verify's own timeouts work there; the caller also waits at most
`DEADLINE_SECONDS` for the reply, and when that passes (a hang that a signal cannot interrupt, such
as a long C-level computation) the helper is killed, the call reports "no result", and the next
call starts a fresh helper. Calls from several threads take turns on a lock.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

#: math-verify's own per-call timeout inside the helper (seconds)
MATH_VERIFY_TIMEOUT = 5
#: how long a caller waits for the helper's reply before killing it (seconds)
DEADLINE_SECONDS = 10.0
#: how long a fresh helper may take to import sympy and math-verify (seconds)
STARTUP_SECONDS = 120.0
#: longest input handed to math-verify; longer text is not parsed (callers pass answer regions)
MAX_CHARS = 600

log = logging.getLogger(__name__)


# -- the helper process -------------------------------------------------------------------------
# The helper is a plain `python -c` child speaking JSON lines on stdin/stdout, not a
# multiprocessing worker: multiprocessing's spawn re-imports the caller's __main__ script in the
# child (running a user's unguarded script twice), and fork is unsafe in a process that runs
# threads. The child imports only math-verify.
_WORKER = r"""
import sys
sys.path = [p for p in sys.path if p not in ("", ".")]  # `python -c` puts the caller's folder first
import json, logging, time
logging.disable(logging.CRITICAL)  # its timeout notices are expected: ttc reads "no result"
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import And, Eq
T = int(sys.argv[1])

def find(text):
    found = parse(text, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=T)
    return found[1] if len(found) == 2 and isinstance(found[1], str) else None

def check(gold, pred):
    g = parse("$" + gold + "$", parsing_timeout=T)
    p = parse("$" + pred + "$", parsing_timeout=T)
    return bool(verify(g, p, timeout_seconds=T))

def same(a, b):  # symmetric: math-verify's verify follows the gold's form, so ask both ways
    return check(a, b) or check(b, a)

def equation(text):  # the extracted text of a variable-free equation or chain of them, else None
    found = parse("$" + text + "$", parsing_timeout=T)
    if len(found) != 2 or not isinstance(found[1], str):
        return None
    expr = found[0]
    relations = expr._unsorted_args if isinstance(expr, And) else (expr,)
    if not relations or not all(isinstance(r, Eq) for r in relations) or expr.free_symbols:
        return None
    return found[1]

def slow(seconds):  # a test hook: a call that outlives any short deadline
    time.sleep(seconds)
    return True

ops = {"find": find, "verify": check, "same": same, "equation": equation, "slow": slow}
check("\\frac{1}{2}", "0.5"), find("x = 1/2")  # load sympy's lazy parts before any deadline runs
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    op, args = json.loads(line)
    try:
        result = ops[op](*args)
    except Exception:  # math-verify raises on odd input: no result
        result = None
    sys.stdout.write(json.dumps(result) + "\n"); sys.stdout.flush()
"""


class _Helper:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        #: how many calls ran past their deadline (and killed the helper)
        self.deadline_hits = 0

    def _readline(self, seconds: float) -> str | None:
        """One reply line, or None when none came within `seconds`."""
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + seconds
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the helper died
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def _start(self) -> None:
        self.buffer = b""
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(MATH_VERIFY_TIMEOUT)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        if self._readline(STARTUP_SECONDS) != "ready":
            self._stop()
            raise RuntimeError("the math-verify helper process did not start "
                               f"({sys.executable} -c ...: is math-verify installed?)")

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.proc = None

    def call(self, op: str, *args: Any, deadline: float | None = None) -> Any:
        deadline = DEADLINE_SECONDS if deadline is None else deadline
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._stop()
                self._start()
            assert self.proc is not None and self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps([op, list(args)]) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._stop()
                return None
            line = self._readline(deadline)
            if line is not None:
                return json.loads(line)
            if self.proc.poll() is None:  # still running: past its deadline
                self.deadline_hits += 1
                log.warning("math-verify took over %.1f s on %s%r; gave up on it", deadline, op, args)
            self._stop()
            return None


_HELPER = _Helper()
atexit.register(_HELPER._stop)


def deadline_hits() -> int:
    """How many math-verify calls in this process ran past their deadline."""
    return _HELPER.deadline_hits


def call(op: str, *args: Any, deadline: float | None = None) -> Any:
    """Run one helper operation (uncached); None when it failed or ran past `deadline`."""
    return _HELPER.call(op, *args, deadline=deadline)


class _Cache:
    """Results of finished calls, newest kept; a call that ran past its deadline is not stored, so
    a busy moment does not make an answer wrong for the rest of the process."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.data: OrderedDict[tuple, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, op: str, *args: Any) -> Any:
        key = (op, *args)
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        hits = _HELPER.deadline_hits
        result = call(op, *args)
        if _HELPER.deadline_hits == hits:
            with self.lock:
                self.data[key] = result
                while len(self.data) > self.size:
                    self.data.popitem(last=False)
        return result

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


_CACHE = _Cache()


def find(text: str) -> str | None:
    """The answer math-verify's extraction finds in `text` (its rightmost parseable math), as text."""
    if not text or len(text) > MAX_CHARS:
        return None
    return _CACHE.get("find", text)


def verify(gold: str, pred: str) -> bool:
    """Whether math-verify judges two bare answers equal (False when it cannot tell in time)."""
    if len(gold) > MAX_CHARS or len(pred) > MAX_CHARS:
        return False
    return bool(_CACHE.get("verify", gold, pred))


def same(a: str, b: str) -> bool:
    """Whether math-verify judges two bare answers equal either way round: its `verify` follows the
    gold's form (an equation given as the prediction is read as its last side, not the other way
    round), so ttc asks in both directions, which makes the answer symmetric. The cache key is the
    sorted pair, so both orders share one call."""
    if len(a) > MAX_CHARS or len(b) > MAX_CHARS:
        return False
    first, second = sorted((a, b))
    return bool(_CACHE.get("same", first, second))


def equation(text: str) -> str | None:
    """When math-verify reads `text` as an equation or a chain of equations with no variables
    ("17 + 25 = 42", "3 + 4 = 7 apples", "2 + 3 = 5 = 5"), the part of `text` it read ("3 + 4 = 7");
    else None ("x = 5", "y = 2x + 3", "x \\geq 5", "42")."""
    if "=" not in text or len(text) > MAX_CHARS:
        return None
    return _CACHE.get("equation", text)


def clear_cache() -> None:
    _CACHE.clear()
