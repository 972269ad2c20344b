"""Grade the samples of one `ttc demo --save` run with two answer extractors: what the extractor
alone changes, on the very same samples.

    ttc demo --save demo.jsonl
    python benchmarks/regrade_demo.py demo.jsonl --old-commit 60e66bf

"old" is `src/ttc/answers.py` at `--old-commit` (loaded from git), "new" is the installed
`ttc.answers`. Each result's answer is chosen again from its saved candidates the way the strategy
chose it (Sample: its one candidate; MajorityVote: the most votes, first seen on ties; BestOfN: the
highest saved score, first on ties), then graded against the gold answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import types
from collections import defaultdict
from pathlib import Path


def old_answers(commit: str) -> types.ModuleType:
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{commit}:src/ttc/answers.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"answers_{commit}")
    exec(compile(source, f"answers@{commit}", "exec"), module.__dict__)
    return module


def choose(record: dict, answers: list[str | None], group) -> str | None:
    if record["strategy"] == "best_of_n":
        scores = record["details"]["scores"]
        return answers[max(range(len(scores)), key=scores.__getitem__)]
    if record["strategy"] == "majority":
        votes: dict[str, int] = {}
        for g in group(answers):
            votes[answers[g[0]]] = len(g)
        return max(votes, key=votes.get) if votes else None
    return answers[0]


def grade(records: list[dict], read, group, equivalent) -> dict[tuple[str, int], list[int]]:
    """(strategy, n) -> [right, answered, problems]."""
    out: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in records:
        answers = [read(c["text"], c["finish_reason"]) for c in record["candidates"]]
        answer = choose(record, answers, group)
        row = out[(record["strategy"], record["n"])]
        row[0] += bool(answer is not None and equivalent(answer, record["gold"]))
        row[1] += answer is not None
        row[2] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", help="JSON lines written by `ttc demo --save`")
    parser.add_argument("--old-commit", default="60e66bf")
    args = parser.parse_args()
    records = [json.loads(line) for line in open(args.outputs)]

    import ttc.answers as new

    old = old_answers(args.old_commit)
    before = grade(records, lambda text, finish: old.extract(text), old.group, old.equivalent)
    after = grade(records, lambda text, finish: new.extract(text, finished=finish != "length"),
                  new.group, new.equivalent)
    saved: dict[tuple[str, int], int] = defaultdict(int)
    for record in records:
        saved[(record["strategy"], record["n"])] += bool(record["correct"])
    print(f"{'strategy':<12} {'n':>3} {'before':>8} {'after':>8} {'answered before':>16} {'answered after':>15}"
          f" {'as run':>7}")
    for key, (right, answered, total) in after.items():
        b_right, b_answered, _ = before[key]
        print(f"{key[0]:<12} {key[1]:>3} {b_right / total:>8.3f} {right / total:>8.3f} {b_answered:>16}"
              f" {answered:>15} {saved[key] / total:>7.3f}")
    print(f"(before: answers.py at {args.old_commit}; after: this checkout; as run: the run's own grading)")


if __name__ == "__main__":
    main()
