"""A deterministic scripted 'model' for evaluation tests, and a problem set it half-solves.

The script answers "What is A + B?" from the prompt alone (never from call order), so results do
not depend on concurrency or on which problems were already done: right when a hash of the
prompt and the sample index says so, else off by one.
"""

import hashlib
import json
import re
from pathlib import Path

from ttc.backends import Scripted
from ttc.types import Problem


def script(prompt: str, params, i: int) -> str:
    match = re.search(r"What is (\d+) \+ (\d+)\?", prompt)
    if not match:
        return "I do not know."
    a, b = int(match.group(1)), int(match.group(2))
    h = int(hashlib.sha256(f"{prompt}|{i}".encode()).hexdigest(), 16)
    answer = a + b if h % 5 < 3 else a + b + 1 + h % 2
    return f"We add {a} and {b}. The answer is \\boxed{{{answer}}}."


def scripted(latency: float = 0.0) -> Scripted:
    return Scripted(script, latency=latency)


def addition_problems(count: int) -> list[Problem]:
    return [Problem(question=f"What is {7 * i % 23 + 2} + {5 * i % 17 + 3}?",
                    answer=str(7 * i % 23 + 2 + 5 * i % 17 + 3), id=f"add-{i}") for i in range(count)]


def write_jsonl(path: Path, problems: list[Problem]) -> Path:
    with open(path, "w") as f:
        for p in problems:
            f.write(json.dumps({"id": p.id, "question": p.question, "answer": p.answer}) + "\n")
    return path


TIMING_KEYS = ("latency_s",)


def normalized(record: dict) -> str:
    """A record without its timings, as a canonical JSON string (for comparing runs)."""
    record = {k: v for k, v in record.items() if k not in TIMING_KEYS}
    record["usage"] = {k: v for k, v in record["usage"].items() if k != "wall_seconds"}
    return json.dumps(record, sort_keys=True)
