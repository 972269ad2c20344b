"""Final-answer extraction and equivalence, shared by voting and evaluation.

`extract` finds the final answer in a model's text; `equivalent` decides whether two answers
mean the same thing (numbers numerically, LaTeX via math-verify with sympy), so that `0.5` and
`\\frac{1}{2}`, or `1,000` and `1000`, vote together and grade the same.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from fractions import Fraction

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_HASHES_RE = re.compile(r"####\s*(.+)")
_THE_ANSWER_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:|=)?\s*[:=]?\s*(.+)", re.IGNORECASE)
#: answers longer than this are not handed to math-verify (it has no timeout off the main thread)
_MAX_SYMBOLIC_CHARS = 200

log = logging.getLogger(__name__)


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start == -1:
        return None
    brace = text.find("{", start)
    if brace == -1:
        # "\boxed 5" form
        rest = text[start:].split(None, 1)
        return rest[1].split("$")[0].strip() if len(rest) == 2 else None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1: i].strip()
    return None  # unbalanced: the box was never closed (truncated output)


def _clean(answer: str) -> str:
    answer = answer.strip()
    answer = re.sub(r"^\$+|\$+$", "", answer).strip()
    answer = re.sub(r"^\\\(|\\\)$", "", answer).strip()
    answer = answer.rstrip(".").strip()
    return answer


def _first_line_value(fragment: str) -> str | None:
    """The value right after "the answer is": a boxed value, else a number, else the first line."""
    boxed = _last_boxed(fragment.split("\n")[0])
    if boxed:
        return boxed
    line = fragment.split("\n")[0]
    number = _NUMBER_RE.search(line)
    if number:
        return number.group(0)
    line = _clean(line)
    return line or None


def extract(text: str | None) -> str | None:
    """The final answer in `text`, or None when there is none.

    Looked for in order: the last \\boxed{...}; GSM8K's "#### X"; "the (final) answer is X";
    the last number in the text.
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed:
        return _clean(boxed)
    hashes = _HASHES_RE.findall(text)
    if hashes:
        value = _first_line_value(hashes[-1])
        if value:
            return _clean(value)
    said = _THE_ANSWER_RE.findall(text)
    if said:
        value = _first_line_value(said[-1])
        if value:
            return _clean(value)
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return _clean(numbers[-1])
    return None


def _as_number(answer: str) -> Fraction | None:
    """Exact value of a plain number like '1,000', '$12.50', '75%', '-3', '2.0'; else None."""
    s = answer.strip().replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\!", "").replace("{,}", "").strip()
    s = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", s).strip()  # trailing units like \text{ cm}
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
        return None
    return Fraction(s)


def normalize(answer: str) -> str:
    """A canonical key for an answer: numbers in lowest exact form, other text whitespace-stripped."""
    number = _as_number(answer)
    if number is not None:
        return str(number)
    return re.sub(r"\s+", "", _clean(answer))


@functools.lru_cache(maxsize=4096)
def _parse(answer: str):
    from math_verify import parse

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return parse(f"${answer}$", parsing_timeout=timeout)


def equivalent(pred: str | None, gold: str | None) -> bool:
    """Whether two answers are mathematically the same.

    Plain numbers compare exactly (1,000 == 1000.0); anything else goes through math-verify
    (sympy), so 0.5 == \\frac{1}{2} and x+1 == 1+x. Unparsable input compares as text.
    """
    if pred is None or gold is None:
        return False
    pred, gold = _clean(str(pred)), _clean(str(gold))
    if normalize(pred) == normalize(gold):
        return True
    a, b = _as_number(pred), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    if len(pred) > _MAX_SYMBOLIC_CHARS or len(gold) > _MAX_SYMBOLIC_CHARS:
        return False
    try:
        from math_verify import verify

        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        return bool(verify(_parse(gold), _parse(pred), timeout_seconds=timeout))
    except Exception as exc:  # math-verify raises on odd input; treat as not equivalent
        log.debug("math-verify failed on %r vs %r: %s", pred, gold, exc)
        return False


def group(answers: list[str | None]) -> list[list[int]]:
    """Indices of `answers` grouped by equivalence (first member represents a group); Nones dropped."""
    groups: list[list[int]] = []
    keys: list[str] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalize(answer)
        for k, members in zip(keys, groups):
            if key == k or equivalent(answer, answers[members[0]]):
                members.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    return groups
