"""Why each strategy of benchmarks/equal_tokens.py scores what it does: statistics from its per-problem
records (`OUT_DIR/STRATEGY.jsonl`), the numbers docs/strategies/equal_tokens.md quotes.

Per strategy: how often GenSelect's model named a candidate, how often Fuse/Archon's fused answer had no
answer, how many of RSA's final candidates carried a readable (and a right) answer, what stopped
Solve-Detect-Verify, how many chosen particles had no answer, and the mean prompt, completion and
verifier tokens per problem. With `--bank`, also one sample's accuracy on the same problems
(MajorityVote(n=1) replayed on the bank, as equal_tokens.py replays it).

    python benchmarks/equal_tokens_details.py all --out-dir out/ --bank demo200x32.jsonl
    # only what the first run of each strategy wrote (the records before its first run line)
    python benchmarks/equal_tokens_details.py all --out-dir out/ --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter

import ttc
from ttc.answers import equivalent
from ttc.backends.bank_replay import BankReplay
from ttc.bank.format import Bank, load_bank
from ttc.demo import DEMO_PROMPT, demo_problems

STRATEGIES = ("genselect", "rsa", "fuse", "archon", "sdv", "particle_gibbs", "parallel_tempering")


def load_records(path: str, runs: int | None = None) -> list[dict]:
    """The last record of each problem in `path`, in the order problems first appear; with `runs`, only
    the lines written before the `runs`-th run line (what the first `runs` runs finished)."""
    records: dict[str, dict] = {}
    seen_runs = 0
    with open(path) as f:
        for line in f:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill (equal_tokens.py runs that problem again)
            if "run" in d:
                seen_runs += 1
                if runs is not None and seen_runs >= runs:
                    break
            elif "id" in d:
                records[d["id"]] = d
    return list(records.values())


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


def _aggregation_stats(records: list[dict], kind: str) -> dict:
    """GenSelect's selections or Fuse's fusions: how many, how many the model's text was read from, the
    fallbacks taken (`unparsed`: no candidate named, the vote decided; `no_answer`: the fused text had
    no answer, a sample's was taken), and the right answers with each fallback ("none": no fallback)."""
    details = [r["details"] for r in records]
    steps = [a for d in details for a in d["aggregations"] if a["kind"] == kind]
    right = Counter(str(r["details"].get("fallback") or "none") for r in records if r["correct"])
    return {f"{kind}s": len(steps), "parsed": sum(bool(a["parsed"]) for a in steps),
            "fallbacks": dict(Counter(str(d["fallback"]) for d in details if d.get("fallback"))),
            "right_by_fallback": dict(right)}


def _rsa_stats(details: list[dict], golds: list[str | None]) -> dict:
    """The final population: its size, how many of its candidates carried a readable answer, and how
    many of those answers were right."""
    readable = [sum(d["votes"].values()) for d in details]
    right = [sum(w for a, w in d["votes"].items() if gold is not None and equivalent(a, gold))
             for d, gold in zip(details, golds, strict=True)]
    return {"population": _mean([len(d["outputs"]) for d in details]), "readable_per_problem": _mean(readable),
            "readable": sum(readable), "readable_right": sum(right)}


def _sdv_stats(details: list[dict]) -> dict:
    """What ended each trace, how often the detector fired, and the final verification's verdicts."""
    verdicts = Counter()
    for d in details:
        checked = [r["verification"] for r in d["rounds"] if r.get("verification")]
        if checked:
            verdicts[{True: "valid", False: "invalid", None: "unsure"}[checked[-1]["valid"]]] += 1
    return {"stopped_by": dict(Counter(d["stopped_by"] for d in details)),
            "detections": sum(d["detections"] for d in details),
            "verifications": sum(d["verifications"] for d in details),
            "escalations": sum(d["escalations"] for d in details), "final_verdicts": dict(verdicts)}


def strategy_details(name: str, records: list[dict], gold: dict[str, str | None]) -> dict:
    """Every statistic of `name`'s records (one per problem); `gold` maps problem ids to answers."""
    if name not in STRATEGIES:
        raise SystemExit(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}")
    usage = [r["usage"] for r in records]
    out = {"strategy": name, "problems": len(records), "correct": sum(bool(r["correct"]) for r in records),
           "failed": sum(not r["ok"] for r in records),
           "no_answer": sum(r["ok"] and r["answer"] is None for r in records),
           "prompt_tokens": _mean([u["prompt_tokens"] for u in usage]),
           "completion_tokens": _mean([u["completion_tokens"] for u in usage]),
           "verifier_tokens": _mean([u["verifier_tokens"] for u in usage])}
    ok = [r for r in records if r["ok"] and r["details"]]
    details = [r["details"] for r in ok]
    if name == "genselect":
        out |= _aggregation_stats(ok, "select")
    elif name in ("fuse", "archon"):
        out |= _aggregation_stats(ok, "fuse")
    elif name == "rsa":
        out |= _rsa_stats(details, [gold.get(r["id"]) for r in ok])
    elif name == "sdv":
        out |= _sdv_stats(details)
    return out


def one_sample_accuracy(bank_path: str, ids: list[str]) -> float:
    """MajorityVote(n=1) replayed on the bank's entries of `ids`: one sample's accuracy on those problems."""
    bank = load_bank(bank_path)
    entries = {p.problem_id: p for p in bank.problems}
    missing = [i for i in ids if i not in entries]
    if missing:
        raise SystemExit(f"{bank_path} lacks {len(missing)} of the problems (first: {missing[0]})")
    backend = BankReplay(Bank(bank.header, tuple(entries[i] for i in ids), bank.path))
    params = ttc.SamplingParams(temperature=bank.header["params"]["temperature"],
                                max_tokens=bank.header["params"]["max_tokens"])
    vote = ttc.MajorityVote(n=1, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    results = ttc.solve_many(vote, backend.problems(), backend, concurrency=256, seed=0, progress=False)
    return sum(bool(r.ok and r.is_correct()) for r in results) / len(ids)


def summary_line(d: dict) -> str:
    """The statistics as one readable line."""
    head = (f"{d['strategy']}: {d['problems']} problems, {d['correct']} right, {d['no_answer']} without an "
            f"answer, {d['failed']} failed; per problem {d['prompt_tokens']:.0f} prompt, "
            f"{d['completion_tokens']:.0f} completion, {d['verifier_tokens']:.0f} verifier tokens")
    extra = {k: v for k, v in d.items() if k not in
             ("strategy", "problems", "correct", "no_answer", "failed", "prompt_tokens", "completion_tokens",
              "verifier_tokens")}
    parts = [f"{k}={round(v, 2) if isinstance(v, float) else v}" for k, v in extra.items()]
    return head + ("; " + ", ".join(parts) if parts else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("strategies", nargs="+", choices=[*STRATEGIES, "all"])
    ap.add_argument("--out-dir", required=True, help="equal_tokens.py's --out-dir")
    ap.add_argument("--runs", type=int, help="only the records the first RUNS runs of each strategy wrote")
    ap.add_argument("--problems", type=int, default=200, help="the demo problems the records come from")
    ap.add_argument("--bank", help="also one sample's accuracy on the same problems, replayed on this bank")
    ap.add_argument("--json", action="store_true", help="one JSON object per strategy instead of a line")
    args = ap.parse_args()
    names = list(STRATEGIES) if "all" in args.strategies else list(dict.fromkeys(args.strategies))
    gold = {p.id: p.answer for p in demo_problems(args.problems)}
    for name in names:
        path = os.path.join(args.out_dir, f"{name}.jsonl")
        if not os.path.exists(path):
            continue
        records = [r for r in load_records(path, args.runs) if r["id"] in gold]
        if not records:
            continue
        d = strategy_details(name, records, gold)
        if args.bank:
            d["one_sample_accuracy"] = one_sample_accuracy(args.bank, [r["id"] for r in records])
        print(json.dumps(d) if args.json else summary_line(d), flush=True)


if __name__ == "__main__":
    main()
