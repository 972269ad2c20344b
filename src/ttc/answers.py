"""Final-answer extraction and equivalence, shared by voting, grading and the probes.

`read_answer` finds the final answer in a model's text and says where it came from; `extract` is
its answer alone; `equivalent` decides whether two answers (bare, or whole solutions) mean the same
thing, so that `0.5` and `\\frac{1}{2}`, or `1,000` and `1000`, vote together and grade the same.

The rule, in order (an explicit answer always wins over a guess):

1. the last closed `\\boxed{...}` / `\\fbox{...}` ("boxed");
2. GSM8K's `#### X` ("hashes");
3. the last "the answer is X", "final answer: X", "**Answer:** X" whose X holds math ("stated");
4. only in a *finished* trace (not cut at max_tokens), the last number or expression
   ("last_number"). A cut trace with no explicit answer has no answer (None).

The answer is returned as the model wrote it, minimally cleaned (surrounding `$`, a whole
`\\text{...}`, a trailing period, markdown bold), with one reading: an equation or a chain of
equations with no variables ("17 + 25 = 42", "3 + 4 = 7 apples", "12 \\times 2 = 24") is its last
side ("42", "7", "24"), in extraction and in comparison alike; an equation with a variable ("x = 5",
"y = 2x + 3") keeps its form. math-verify decides what is such an equation (`mathparse.equation`).

`equivalent` is symmetric, and `group` does not depend on the order of the answers: answers with
the same key (`normalize`) always share a group, and a group holds only answers that are pairwise
`equivalent` (math-verify's equivalence is not transitive, so a group is never a chain of
"almost the same"). Parsing and equivalence are math-verify's
(`parse` with its LaTeX and expression extraction configs, `verify`), run with a deadline in a
helper process (`ttc.mathparse`) so that no string can hang a run on any thread. Plain numbers
and GSM8K's `####` take an exact fast path that never calls math-verify.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

from ttc import mathparse

#: the version of the rules by which answers are read and compared; results and `ttc eval` records
#: carry it, since a change of rules changes grading. 1: the rules before it was recorded; 2: an
#: equation with no variables is read as its last side, equivalence is symmetric, grouping is
#: independent of the order of the answers, "the answer is \\boxed{}" (an empty box) is no answer.
ANSWER_RULES_VERSION = 2

#: where an answer came from; the first three are explicit answers
SOURCES = ("boxed", "hashes", "stated", "last_number")
EXPLICIT = frozenset(SOURCES[:3])

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
#: a number or a plain fraction of numbers, for the last-number fallback when math-verify finds none
_LAST_VALUE_RE = re.compile(rf"(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
# "the answer is", "final answer:", "**Answer:**", "the answer to the question is", "answer =".
# math-verify's own anchors ("answer" followed by the first number within 50 characters) read
# "To find the answer, we multiply 6 by 7 to get 42." as 6, so ttc requires a copula or a colon
# right after the phrase and finds the answer's extent itself (see `_stated`).
_COPULA = r"(?:\bis\b|\bwould be\b|\bwill be\b|\bshould be\b|\bcomes out to\b)"
_STATED_RE = re.compile(
    rf"\banswer\b(?:\*\*)?(?:\s*(?:\*\*)?\s*(?::|=|{_COPULA})|\s+(?:to|for|of)\b[^.\n:=]{{0,60}}?\s{_COPULA})"
    r"\s*:?\s*(?:\*\*)?(?:\s*:)?",
    re.IGNORECASE)
#: where a stated answer's sentence ends: a period not inside a number, a new line, or a clause
_SENTENCE_END_RE = re.compile(
    r"\.(?=\s|$)|\n|;|\s(?:because|since|which|so|as|but|where|when|if|I hope)\b"
    r"|,\s+(?:so|which|because|since)\b|,\s+and\s+(?![-\d\\$(])"
)
#: a LaTeX command, or \text{...}-like groups whose words are not plain prose
_COMMAND_RE = re.compile(
    r"\\(?:text|textbf|mathrm|mbox|textrm|operatorname|begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+")
_WORD_RE = re.compile(r"(?<![A-Za-z\\])[A-Za-z]{2,}")
#: words that do not end an answer: connectors, and math written without backslashes
_CONNECTORS = {"and", "or", "pi", "sqrt", "sin", "cos", "tan", "log", "ln", "mod", "infty"}
#: math in a stated answer: a digit, a LaTeX command, an operator, or a choice letter ("C", "(c)")
_MATHY_RE = re.compile(r"\d|\\[A-Za-z]|[=<>^_+*/{}]|^\(?[A-E]\)?$|^\([a-e]\)$")
#: a trace end with any of these needs math-verify to find its last value; without them it is plain
#: numbers and words, and the last number is read directly (ttc's fast path)
_MATH_MARKS_RE = re.compile(r"[\\$/^{]")
#: an empty box: "the answer is \\boxed{}" is no answer (and no last-number guess either)
_EMPTY_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{\s*\}")
#: how much of a trace's end the last-number fallback looks at
_TAIL_CHARS = 400
#: a stated answer's sentence longer than this is not an answer
_MAX_STATED_CHARS = 300


def last_boxed(text: str) -> str | None:
    """Content of the last closed \\boxed{...} / \\fbox{...}, with nested braces balanced.

    Hand-written: math-verify finds a box with the greedy regex `\\boxed{.+}` and cuts it during
    normalisation, which returns normalised LaTeX, not the text the model wrote. A box that was
    never closed (a truncated output) is skipped for an earlier closed one.
    """
    end = len(text)
    while True:
        start = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
        if start == -1:
            return None
        head = text[start:].split("{", 1)[0]
        if head.rstrip() in ("\\boxed", "\\fbox"):  # \boxed{...}
            brace = start + len(head)
            depth = 0
            for i in range(brace, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[brace + 1: i].strip()
        else:  # the "\boxed 5" form
            rest = text[start + len("\\boxed"):].lstrip() if text.startswith("\\boxed", start) else ""
            word = re.match(r"[^\s$]+", rest) if rest and not rest.startswith("{") else None
            if word:
                return word.group(0)
        end = start


def _clean(answer: str) -> str:
    """Minimal cleaning: whitespace, markdown bold, surrounding $ / \\( \\) / \\[ \\], a trailing
    period or comma, and a \\text{...} (or \\textbf, \\mathrm) that wraps the whole answer."""
    prev = None
    while prev != answer:
        prev = answer
        answer = answer.strip().strip("*").strip()
        answer = re.sub(r"^\$+|\$+$", "", answer).strip()
        answer = re.sub(r"^\\[(\[]|\\[)\]]$", "", answer).strip()
        answer = re.sub(r"\\displaystyle\b", "", answer).strip()
        answer = answer.rstrip(".,").strip()
        whole = re.fullmatch(r"\\(?:text|textbf|mathrm|mbox|textrm)\s*\{([^{}]*)\}", answer)
        if whole:
            answer = whole.group(1)
    return answer


def _plain_words(span: str) -> list[re.Match]:
    """Prose words in `span` (two or more letters, not a LaTeX command, not inside \\text{...})."""
    masked = _COMMAND_RE.sub(lambda m: " " * len(m.group(0)), span)
    return list(_WORD_RE.finditer(masked))


def _math_env(rest: str) -> str | None:
    """The content of a math environment that opens `rest` ($...$, $$...$$, \\(...\\), \\[...\\])."""
    for open_, close in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            line_end = rest.find("\n", len(open_))
            if end != -1 and (open_ in ("$$", "\\[") or line_end == -1 or end < line_end):
                return rest[len(open_): end]
            return None  # "$18" is currency, not an opened environment
    return None


def _hashes(text: str) -> str | None:
    """The value of the last GSM8K "#### X" line; a markdown heading ("#### Step 1: ...") is none.

    Hand-written: math-verify has no notion of GSM8K's answer line."""
    for value in reversed(_HASHES_RE.findall(text)):
        value = _clean(value)
        if value and _MATHY_RE.search(value) and not _plain_words(value):
            return value
    return None


def _stated(text: str) -> str | None:
    """The last "the answer is X" whose X holds math, as written (None when there is none; "" when
    the last one is an empty box, "the answer is \\boxed{}", which states that there is none).

    Hand-written around math-verify: its anchors take the first number within 50 characters of
    "answer" (with or without "is"), and report normalised LaTeX rather than the model's text. Here
    the extent of X is the rest of its sentence (or the math environment that opens it); math-verify
    is asked only when X starts with prose ("approximately 3.14").
    """
    for anchor in reversed(list(_STATED_RE.finditer(text))):
        rest = text[anchor.end():].lstrip(" \t*:")
        span = _math_env(rest)
        if span is None:
            stop = _SENTENCE_END_RE.search(rest)
            span = rest[: stop.start()] if stop else rest
        if re.fullmatch(r"\\(?:text|textbf|mathrm|mbox|textrm)\s*\{[^{}]+\}\.?", span.strip().strip("$")):
            return _clean(span)  # a text answer the model marked as one: "\text{Evelyn}"
        span = _clean(span)
        if _EMPTY_BOX_RE.fullmatch(span):
            return ""  # "the answer is \\boxed{}": the model stated that it has no answer
        if not span or len(span) > _MAX_STATED_CHARS:
            continue
        words = [w for w in _plain_words(span) if w.group(0).lower() not in _CONNECTORS]
        if words:
            head = _clean(re.sub(r"(?:\s+(?:and|or))+\s*$", "", span[: words[0].start()].rstrip(" ,:;-")))
            if head and _MATHY_RE.search(head):
                span = head  # "15 apples" -> "15", "90 degrees" -> "90"
            else:  # prose first ("approximately 3.14", "that she has 18 apples"): math-verify finds it
                found = mathparse.find(span)
                span = _clean(found) if found else ""
        if span and _MATHY_RE.search(span):
            return span
    return None


def _last_number(text: str) -> str | None:
    """The last number or expression of a trace's end, by math-verify's extraction (rightmost match).

    The word "answer" is masked first: math-verify's anchored patterns would otherwise take the
    first number after it ("to find the answer, we multiply 6 by 7 to get 42" -> 6), and a stated
    answer has already been looked for.
    """
    tail = text[-_TAIL_CHARS:]
    if len(text) > _TAIL_CHARS:  # start at a line (or word) boundary, not inside an expression
        cut = tail.find("\n")
        cut = cut if cut != -1 else tail.find(" ")
        tail = tail[cut + 1:] if cut != -1 else tail
    masked = re.sub(r"answer", "result", tail, flags=re.IGNORECASE)
    if _MATH_MARKS_RE.search(masked) is None:
        numbers = _NUMBER_RE.findall(masked)
        return _clean(numbers[-1]) if numbers else None
    found = mathparse.find(masked)
    if found:
        found = _clean(found)
    if found:
        value = _as_number(found)
        if value is not None:  # math-verify reports "1,250" as "1250": give the form in the text
            written = [n for n in _NUMBER_RE.findall(masked) if _as_number(n.rstrip(",")) == value]
            if written:
                return _clean(written[-1])
        return found
    numbers = _LAST_VALUE_RE.findall(masked)
    return _clean(numbers[-1]) if numbers else None


def _last_side(equation: str) -> str:
    """The text after the last `=` outside braces (the caller knows `equation` is an equation)."""
    depth, cut = 0, -1
    for i, char in enumerate(equation):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "=" and depth == 0:
            cut = i
    return equation[cut + 1:].lstrip("&").strip()


def final_side(answer: str) -> str:
    """`answer` read by the equation rule: the last side of an equation or chain of equations with
    no variables ("17 + 25 = 42" -> "42", "3 + 4 = 7 apples" -> "7"); any other answer unchanged.

    Which text is such an equation is math-verify's judgement (`mathparse.equation`); only answers
    that hold a "=" ask it."""
    equation = mathparse.equation(answer) if "=" in answer else None
    if equation is None:
        return answer
    return _clean(_last_side(equation)) or answer


@functools.lru_cache(maxsize=4096)
def read_answer(text: str | None, finished: bool = True) -> tuple[str | None, str | None]:
    """(answer, source) for a model's text; source is one of `SOURCES`, or None with no answer.

    `finished` is False for a trace cut at max_tokens (or at a step limit): such a trace has no
    last-number fallback, since its last number is wherever the cut fell. An answer that is an
    equation with no variables is its last side (`final_side`).
    """
    answer, source = _find_answer(text, finished)
    return (final_side(answer), source) if answer else (None, None)


def _find_answer(text: str | None, finished: bool) -> tuple[str | None, str | None]:
    """(answer, source) by the rule of the module docstring, before the equation rule."""
    if not text:
        return None, None
    boxed = last_boxed(text)
    if boxed is not None:
        boxed = _clean(boxed)
        if boxed:
            return boxed, "boxed"
    hashes = _hashes(text)
    if hashes:
        return hashes, "hashes"
    stated = _stated(text)
    if stated:
        return stated, "stated"
    if stated == "" or not finished:  # an empty box stated, or a cut trace: no guess
        return None, None
    number = _last_number(text)
    return (number, "last_number") if number else (None, None)


def extract(text: str | None, *, finished: bool = True) -> str | None:
    """The final answer in `text` (see the module docstring for the rule), or None."""
    return read_answer(text, finished)[0]


def answer_fields(text: str | None, finished: bool = True) -> dict:
    """`answer` and `answer_source` for a `Candidate` built from `text`."""
    answer, source = read_answer(text, finished)
    return {"answer": answer, "answer_source": source}


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
    """A canonical key for an answer: numbers in lowest exact form, other text whitespace-stripped;
    an equation with no variables is keyed by its last side ("17 + 25 = 42" -> "42")."""
    answer = final_side(answer)
    number = _as_number(answer)
    if number is not None:
        return str(number)
    return re.sub(r"\s+", "", _clean(answer))


def _looks_bare(text: str) -> bool:
    """Whether `text` is an answer on its own ("\\frac{3}{4}", "x \\geq 5", "Evelyn") rather than
    a solution to read an answer from."""
    return "\n" not in text.strip() and len(text) <= mathparse.MAX_CHARS and len(_plain_words(text)) <= 2


def _answer_of(text: str) -> str | None:
    """The answer to compare in `text`: its explicit answer, itself when bare, else its last number."""
    answer, source = read_answer(text, False)  # explicit answers only
    if source is not None:
        return answer
    if _looks_bare(text):
        return final_side(_clean(text)) or None
    return read_answer(text, True)[0]


def equivalent(pred: str | None, gold: str | None) -> bool:
    """Whether two answers are mathematically the same; symmetric (the order of the two does not
    matter). Either side may be a bare answer or a whole solution (its answer is read with
    `read_answer`); an equation with no variables is its last side ("17 + 25 = 42" is 42).

    Plain numbers compare exactly (1,000 == 1000.0); anything else goes through math-verify's
    `verify` (sympy), asked both ways round (`mathparse.same`), so 0.5 == \\frac{1}{2}, x+1 == 1+x,
    x \\geq 5 == x >= 5 and x = 5 == 5. Input math-verify cannot read, or cannot decide within its
    deadline, is not equivalent unless equal as text.
    """
    if pred is None or gold is None:
        return False
    if str(pred) == str(gold):
        return True  # the same text is the same answer, even one math-verify cannot read
    p, g = _answer_of(str(pred)), _answer_of(str(gold))
    if p is None or g is None:
        return False
    if normalize(p) == normalize(g):
        return True
    a, b = _as_number(p), _as_number(g)
    if a is not None and b is not None:
        return a == b
    return mathparse.same(p, g)


def _group_key(answer: str) -> str:
    """The key under which `answer` always shares a group: its `normalize`d answer (a test
    `equivalent` makes first), or, when it has none to compare, its own text (equal texts are
    equivalent; a NUL marks the key so that it cannot meet a normalised one)."""
    comparable = _answer_of(answer)
    return "\0" + answer if comparable is None else normalize(comparable)


def group(answers: list[str | None]) -> list[list[int]]:
    """Indices of `answers` grouped by equivalence; Nones dropped. Groups are listed in first-seen
    order, each with its indices in order, so a group's first member is its representative: votes
    are keyed by the first form seen.

    Which answers share a group does not depend on their order: answers with the same key
    (`normalize`) form a block; blocks are placed largest first (then by key), each joining the
    first group all of whose answers it is `equivalent` to, else starting its own. So every group
    holds only pairwise equivalent answers, even where math-verify's equivalence is not transitive.
    """
    blocks: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            blocks.setdefault(_group_key(str(answer)), []).append(i)
    placed: list[tuple[list[int], list[str]]] = []  # (indices, distinct forms) of each group
    for key in sorted(blocks, key=lambda k: (-len(blocks[k]), k)):
        members = blocks[key]
        forms = sorted({str(answers[i]) for i in members})
        for indices, group_forms in placed:
            if all(equivalent(f, g) for f in forms for g in group_forms):
                indices.extend(members)
                group_forms.extend(forms)
                break
        else:
            placed.append((list(members), forms))
    return sorted((sorted(indices) for indices, _ in placed), key=lambda g: g[0])
