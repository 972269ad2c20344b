"""The sample-bank file format (version 1): what `ttc record` writes and `ttc tune` reads.

A bank is a JSONL file (gzipped when its name ends in `.gz`). Line 1 is the header, every other
line is one problem with all its recorded samples, in the order the model produced them:

    {"format": "ttc-bank", "version": 1, "fingerprint": "...", "model": ..., "prompt": ...,
     "params": {...}, "samples_per_problem": K, "seed": S, "dataset": ..., "answer_rules": 2,
     "top_logprobs": T, "verifiers": [...], "created_utc": ..., "ttc_version": ...}
    {"problem_id": ..., "index": i, "question": ..., "gold": ..., "prompt_tokens": P,
     "latency_s": L, "samples": [{"text", "thinking", "answer", "group", "correct", "tokens",
       "reasoning_tokens", "logprobs", "top_logprobs", "finish_reason", "latency_s", "scores"}]}

`fingerprint` hashes what makes samples comparable (model, prompt, sampling parameters,
answer rules); `ttc tune` refuses to mix banks that differ in anything but the sampling
parameters (several temperatures of one model and prompt may be tuned together: their settings
are named after the bank). See docs/tune.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ttc.errors import InvalidInput

FORMAT = "ttc-bank"
VERSION = 1


def open_text(path: str | os.PathLike, mode: str = "rt") -> TextIO:
    """A text file, gzipped when its name ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode[0] if mode[0] != "a" else "a", encoding="utf-8")


def fingerprint(model: str, prompt: str | None, params: Mapping[str, Any], answer_rules: int) -> str:
    """A short hash of what makes two banks' samples comparable."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": dict(params), "answer_rules": answer_rules},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BankSample:
    """One recorded sample. `group` is the index (within its problem) of the first sample whose
    answer is equivalent (`ttc.answers.group` over all K answers); None without an answer."""

    text: str
    answer: str | None
    group: int | None
    correct: bool | None
    tokens: int
    finish_reason: str
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None
    thinking: str | None = None
    reasoning_tokens: int = 0
    latency_s: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def logprob_sum(self) -> float:
        return float(sum(self.logprobs)) if self.logprobs else 0.0

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / len(self.logprobs) if self.logprobs else 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BankSample:
        tops = d.get("top_logprobs")
        return cls(text=d["text"], answer=d.get("answer"), group=d.get("group"), correct=d.get("correct"),
                   tokens=int(d["tokens"]), finish_reason=d.get("finish_reason", "stop"),
                   logprobs=tuple(d["logprobs"]) if d.get("logprobs") is not None else None,
                   top_logprobs=tuple(dict(t) for t in tops) if tops is not None else None,
                   thinking=d.get("thinking"), reasoning_tokens=int(d.get("reasoning_tokens") or 0),
                   latency_s=d.get("latency_s"), scores=dict(d.get("scores") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "thinking": self.thinking, "answer": self.answer, "group": self.group,
                "correct": self.correct, "tokens": self.tokens, "reasoning_tokens": self.reasoning_tokens,
                "logprobs": list(self.logprobs) if self.logprobs is not None else None,
                "top_logprobs": [dict(t) for t in self.top_logprobs] if self.top_logprobs is not None else None,
                "finish_reason": self.finish_reason, "latency_s": self.latency_s, "scores": dict(self.scores)}


@dataclass(frozen=True)
class BankProblem:
    """One problem's recorded samples, in recorded order."""

    problem_id: str
    index: int
    question: str
    gold: str | None
    prompt_tokens: int
    latency_s: float
    samples: tuple[BankSample, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BankProblem:
        return cls(problem_id=str(d["problem_id"]), index=int(d["index"]), question=d["question"],
                   gold=d.get("gold"), prompt_tokens=int(d["prompt_tokens"]), latency_s=float(d["latency_s"]),
                   samples=tuple(BankSample.from_dict(s) for s in d["samples"]))

    def to_dict(self) -> dict[str, Any]:
        return {"problem_id": self.problem_id, "index": self.index, "question": self.question, "gold": self.gold,
                "prompt_tokens": self.prompt_tokens, "latency_s": self.latency_s,
                "samples": [s.to_dict() for s in self.samples]}


@dataclass(frozen=True)
class Bank:
    """A loaded bank: its header and its problems (those with all K samples recorded)."""

    header: Mapping[str, Any]
    problems: tuple[BankProblem, ...]
    path: str | None = None

    @property
    def k(self) -> int:
        return int(self.header["samples_per_problem"])

    @property
    def name(self) -> str:
        """A short label: the file's name, or the header's `name`."""
        if self.header.get("name"):
            return str(self.header["name"])
        return Path(self.path).name.split(".")[0] if self.path else "bank"

    @property
    def temperature(self) -> float | None:
        return self.header.get("params", {}).get("temperature")

    def subset(self, indices: Sequence[int]) -> Bank:
        return Bank(self.header, tuple(self.problems[i] for i in indices), self.path)


def check_header(header: Mapping[str, Any], where: str) -> None:
    if header.get("format") != FORMAT:
        raise InvalidInput(f"{where} is not a ttc sample bank (its first line has no \"format\": \"{FORMAT}\")")
    if header.get("version") != VERSION:
        raise InvalidInput(f"{where} is a version {header.get('version')!r} bank; this ttc reads version {VERSION}")
    for key in ("model", "params", "samples_per_problem", "fingerprint"):
        if key not in header:
            raise InvalidInput(f"{where}: the bank header lacks {key!r}")
    want = fingerprint(header["model"], header.get("prompt"), header["params"], header.get("answer_rules", 1))
    if want != header["fingerprint"]:
        raise InvalidInput(f"{where}: the header's fingerprint {header['fingerprint']} does not match its model, "
                           f"prompt and params ({want}): the header was edited")


def iter_lines(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The JSON lines of a bank; a last line cut short by a kill is skipped."""
    with open_text(path) as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if number >= len(lines) - 2:  # the (unterminated) last line: a write cut short
                return
            raise InvalidInput(f"{path}: line {number + 1} is not JSON") from None


def load_bank(path: str | os.PathLike) -> Bank:
    """Read a bank file; check its header; keep only problems with all K samples."""
    if not os.path.exists(path):
        raise InvalidInput(f"no bank at {path}")
    lines = iter_lines(path)
    header = next(lines, None)
    if header is None:
        raise InvalidInput(f"{path} is empty")
    check_header(header, str(path))
    k = int(header["samples_per_problem"])
    problems: dict[str, BankProblem] = {}
    for d in lines:
        problem = BankProblem.from_dict(d)
        if len(problem.samples) == k:
            problems.setdefault(problem.problem_id, problem)
    ordered = tuple(sorted(problems.values(), key=lambda p: p.index))
    if not ordered:
        raise InvalidInput(f"{path} has no problem with all {k} samples recorded")
    return Bank(dict(header), ordered, os.fspath(path))


def _require_alike(banks: Sequence[Bank], keys: Sequence[str], otherwise: str) -> None:
    """Refuse banks whose headers differ in any of `keys` or that hold different problems."""
    first = banks[0]
    for other in banks[1:]:
        for key in keys:
            if other.header.get(key) != first.header.get(key):
                raise InvalidInput(f"banks {first.name} and {other.name} differ in {key} "
                                   f"({first.header.get(key)!r} vs {other.header.get(key)!r}): {otherwise}")
        if [p.problem_id for p in other.problems] != [p.problem_id for p in first.problems]:
            raise InvalidInput(f"banks {first.name} ({len(first.problems)} complete problems) and {other.name} "
                               f"({len(other.problems)}) hold different problems: record the same problems in each")


def check_compatible(banks: Sequence[Bank]) -> None:
    """Banks tuned together must share model, prompt and problems (they may differ in sampling)."""
    _require_alike(banks, ("model", "prompt", "answer_rules"), "tune them apart")
    names = [b.name for b in banks]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two banks share the name {names!r}: rename a file")


def _regrouped(samples: Sequence[BankSample]) -> tuple[BankSample, ...]:
    """`samples` with their answer groups recomputed over exactly these samples."""
    from ttc.answers import group

    groups: dict[int, int] = {}
    for members in group([s.answer for s in samples]):
        for m in members:
            groups[m] = members[0]
    return tuple(BankSample(**{**s.__dict__, "group": groups.get(i)}) for i, s in enumerate(samples))


def cut_bank(bank: Bank, problems: int | None = None, k: int | None = None) -> Bank:
    """The first `problems` problems with their first `k` samples (answer groups recomputed): a
    smaller bank of the same model, prompt and sampling settings."""
    k = bank.k if k is None else k
    if not 1 <= k <= bank.k:
        raise InvalidInput(f"k must be in [1, {bank.k}], got {k}")
    out = [BankProblem(p.problem_id, p.index, p.question, p.gold, p.prompt_tokens, p.latency_s,
                       _regrouped(p.samples[:k]))
           for p in bank.problems[:problems]]
    return Bank({**bank.header, "samples_per_problem": k}, tuple(out), bank.path)


def _seed_parts(bank: Bank) -> list[dict[str, int]]:
    """The (seed, K) recordings a bank is made of: one, or several after `join_banks`."""
    return list(bank.header.get("joined") or [{"seed": int(bank.header.get("seed", 0)), "samples_per_problem": bank.k}])


def join_banks(banks: Sequence[Bank]) -> Bank:
    """One bank of K1 + K2 + ... samples per problem from banks of the same model, prompt, sampling
    and problems recorded with different seeds (`ttc record --seed`): more samples per problem
    without re-recording the ones already paid for. Each problem's samples are the banks' in the
    order given, answer groups recomputed; its latency is the sum (the requests were sequential).

    Refused where the samples could repeat each other: problem i of a bank recorded with seed S and
    K samples is one request of n = K with seed S + i, which vLLM splits into seeds S + i ... S + i + K - 1,
    so two banks' seed ranges [S, S + K) must not overlap."""
    if len(banks) < 2:
        raise InvalidInput("joining needs at least two banks")
    _require_alike(banks, ("fingerprint", "verifiers", "top_logprobs"),
                   "only banks of one model, prompt and sampling join")
    parts = [part for bank in banks for part in _seed_parts(bank)]
    ranges = [(p["seed"], p["seed"] + p["samples_per_problem"]) for p in parts]
    for i, (a0, a1) in enumerate(ranges):
        for b0, b1 in ranges[i + 1:]:
            if a0 < b1 and b0 < a1:
                raise InvalidInput(f"seed ranges [{a0}, {a1}) and [{b0}, {b1}) overlap: their samples could repeat; "
                                   f"record the extra bank with --seed {max(end for _, end in ranges)} or more")
    problems = []
    for rows in zip(*(bank.problems for bank in banks), strict=True):
        head = rows[0]
        problems.append(BankProblem(head.problem_id, head.index, head.question, head.gold, head.prompt_tokens,
                                    sum(r.latency_s for r in rows), _regrouped([s for r in rows for s in r.samples])))
    k = sum(bank.k for bank in banks)
    return Bank({**banks[0].header, "samples_per_problem": k, "joined": parts}, tuple(problems), None)


def save_bank(bank: Bank, path: str | os.PathLike) -> None:
    """Write `bank` in the bank format (gzipped when `path` ends in .gz)."""
    from ttc.eval.results import jsonable

    with open_text(path, "wt") as f:
        f.write(json.dumps(jsonable(dict(bank.header)), separators=(",", ":")) + "\n")
        for p in bank.problems:
            f.write(json.dumps(jsonable(p.to_dict()), ensure_ascii=False, separators=(",", ":")) + "\n")


def example_bank() -> str:
    """Path of the tiny bank shipped with ttc (12 demo problems x 8 samples of the embedded SmolLM2
    through vLLM, temperature 0.7, 96 tokens, top-5 logprobs): for docs, tests and trying `ttc tune`."""
    from importlib.resources import files

    return str(files("ttc.data") / "bank_demo_tiny.jsonl.gz")
