"""RPC and AdaptiveBestOfN on the demo task (SmolLM2-135M-Instruct), paired on a recorded sample stream.

    PY=.venv/bin/python
    # 1. RPC vs majority on the recorded 16 samples per problem (and on prefixes of 8 and 4):
    $PY benchmarks/adaptive_rpc.py rpc --samples benchmarks/results/adaptive_samples.jsonl
    # 2. the model's self-evaluation P(better if restarted) of every recorded sample (one 1-token request each):
    $PY benchmarks/adaptive_rpc.py self-eval --samples FILE --out benchmarks/results/self_eval.jsonl
    # 3. AdaptiveBestOfN's stopping rule on the recorded stream, for several thresholds:
    $PY benchmarks/adaptive_rpc.py abon-offline --samples FILE --scores benchmarks/results/self_eval.jsonl
    # 4. AdaptiveBestOfN live (tokens and wall time, self-evaluation included):
    $PY benchmarks/adaptive_rpc.py abon-live --problems 200 --max-n 16 --threshold 0.5

The recorded file has one line per problem: {"id", "question", "gold", "samples": [{"text", "answer",
"correct", "prompt_tokens", "completion_tokens", "logprob_sum", "mean_logprob", "finish_reason"}]}.
A voted answer is graded with the recorder's grading of the first sample that gave it.
Accuracy intervals are 95% Wilson intervals (`ttc.eval.report.wilson_interval`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ttc
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.eval.report import wilson_interval
from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ttc.strategies.rpc import rpc_vote
from ttc.types import Candidate, Problem
from ttc.votes import weighted_vote


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def graded(samples: Sequence[dict[str, Any]], answer: str | None) -> bool:
    """Whether the voted `answer` is correct: the recorder's grading of the first sample giving it."""
    if answer is None:
        return False
    return next((bool(s["correct"]) for s in samples if s["answer"] == answer), False)


def fmt_acc(correct: int, total: int) -> str:
    lo, hi = wilson_interval(correct, total)
    return f"{correct / total:6.1%} [{lo:.1%}, {hi:.1%}]"


def majority(samples: Sequence[dict[str, Any]]) -> str | None:
    return weighted_vote([s["answer"] for s in samples])[0]


def rpc(samples: Sequence[dict[str, Any]], **kwargs: Any) -> str | None:
    return rpc_vote([s["answer"] for s in samples], [s["logprob_sum"] for s in samples],
                    [s["completion_tokens"] for s in samples], texts=[s["text"] for s in samples], **kwargs)[0]


def cmd_rpc(args: argparse.Namespace) -> None:
    rows = load(args.samples)
    full = max(len(r["samples"]) for r in rows)
    print(f"{len(rows)} problems, {full} recorded samples each ({args.samples})\n")
    print(f"{'rule':<34} {'n':>3}  {'accuracy [95% CI]':<26} {'= MV(' + str(full) + ')':>8} {'tokens':>8}  "
          f"{'vs MV(n) +/-':>12}  {'vs MV(' + str(full) + ') +/-':>13}")
    reference = [majority(r["samples"]) for r in rows]
    full_right = [graded(r["samples"], a) for r, a in zip(rows, reference, strict=True)]
    rules = [("majority", majority), ("RPC (PC + pruning)", rpc),
             ("PC only (no pruning)", lambda s: rpc(s, prune="none")),
             ("RPC, product probability", lambda s: rpc(s, normalise=False))]
    for n in args.ns:
        mv_right = [graded(r["samples"][:n], majority(r["samples"][:n])) for r in rows]
        for name, rule in rules:
            correct = agree = 0
            tokens = 0
            right = []
            t0 = time.perf_counter()
            for r, ref in zip(rows, reference, strict=True):
                samples = r["samples"][:n]
                answer = rule(samples)
                right.append(graded(samples, answer))
                correct += right[-1]
                agree += answer is not None and ref is not None and ttc.answers.equivalent(answer, ref) \
                    or answer is ref is None
                tokens += sum(s["prompt_tokens"] + s["completion_tokens"] for s in samples)
            # paired: problems this rule gets right and the vote wrong (+), and the other way round (-)
            plus_n = sum(a and not b for a, b in zip(right, mv_right, strict=True))
            minus_n = sum(b and not a for a, b in zip(right, mv_right, strict=True))
            plus_f = sum(a and not b for a, b in zip(right, full_right, strict=True))
            minus_f = sum(b and not a for a, b in zip(right, full_right, strict=True))
            print(f"{name:<34} {n:>3}  {fmt_acc(correct, len(rows)):<26} {agree / len(rows):>8.1%} "
                  f"{tokens / len(rows):>8.0f}  {f'+{plus_n}/-{minus_n}':>12}  {f'+{plus_f}/-{minus_f}':>13}"
                  f"   ({time.perf_counter() - t0:.1f} s)")
        print()
    single = sum(graded(r["samples"][:1], r["samples"][0]["answer"]) for r in rows)
    print(f"one sample (the first): {fmt_acc(single, len(rows))}")


async def score_samples(args: argparse.Namespace) -> None:
    from ttc.backends.factory import make_backend

    rows = load(args.samples)[: args.problems]
    llm = make_backend(args.backend)
    strategy = AdaptiveBestOfN(sample=ttc.Sample(prompt=DEMO_PROMPT))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    async def score(r: dict[str, Any]) -> dict[str, Any]:
        ctx = ttc.Context(llm)
        problem = Problem(question=r["question"], answer=r["gold"], id=r["id"])
        cands = [Candidate(text=s["text"], answer=s["answer"]) for s in r["samples"]]
        scored = await asyncio.gather(*(strategy.p_better(problem, c, ctx) for c in cands))
        return {"id": r["id"], "p_better": [p for p, _ in scored], "tokens": [t for _, t in scored]}

    try:
        with out.open("w") as f:
            for start in range(0, len(rows), args.concurrency):  # problems scored together: one batch
                for line in await asyncio.gather(*(score(r) for r in rows[start:start + args.concurrency])):
                    f.write(json.dumps(line) + "\n")
                f.flush()
                print(f"{min(start + args.concurrency, len(rows))}/{len(rows)} problems scored, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        llm.close()
    print(f"scored {len(rows)} problems in {time.perf_counter() - t0:.0f} s -> {out}")


def adaptive_stop(p_better: Sequence[float], threshold: float, max_n: int, doubling: bool) -> int:
    """How many samples AdaptiveBestOfN draws on this stream (its rule, replayed on recorded scores)."""
    drawn, size = 0, 1
    while drawn < max_n:
        drawn += min(size, max_n - drawn)
        if min(p_better[:drawn]) < threshold:
            break
        if doubling:
            size *= 2
    return drawn


def cmd_abon_offline(args: argparse.Namespace) -> None:
    rows = {r["id"]: r for r in load(args.samples)}
    scores = {s["id"]: s for s in load(args.scores)}
    ids = [i for i in rows if i in scores]
    print(f"{len(ids)} problems with recorded samples and self-evaluations\n")
    allp = [p for i in ids for p in scores[i]["p_better"]]
    correct_p = [p for i in ids for p, s in zip(scores[i]["p_better"], rows[i]["samples"], strict=True) if s["correct"]]
    wrong_p = [p for i in ids for p, s in zip(scores[i]["p_better"], rows[i]["samples"], strict=True)
               if not s["correct"]]
    print(f"P(better) over all samples: mean {statistics.mean(allp):.3f}, median {statistics.median(allp):.3f}; "
          f"correct samples {statistics.mean(correct_p):.3f}, wrong ones {statistics.mean(wrong_p):.3f}\n")
    n = args.max_n
    print(f"{'rule':<44} {'accuracy [95% CI]':<26} {'samples':>8} {'tokens':>8}")
    for name, pick in (("majority", None), ("best-of-16 by self-eval", "all")):
        correct = tokens = 0
        for i in ids:
            samples = rows[i]["samples"][:n]
            if pick is None:
                answer = majority(samples)
            else:
                p = scores[i]["p_better"][:n]
                answer = samples[min(range(len(p)), key=p.__getitem__)]["answer"]
            correct += graded(samples, answer)
            tokens += sum(s["prompt_tokens"] + s["completion_tokens"] for s in samples) \
                + (sum(scores[i]["tokens"][:n]) if pick else 0)
        print(f"{name + f' ({n})':<44} {fmt_acc(correct, len(ids)):<26} {n:>8} {tokens / len(ids):>8.0f}")
    for doubling in (False, True):
        for threshold in args.thresholds:
            correct = drawn_total = tokens = 0
            for i in ids:
                p = scores[i]["p_better"][:n]
                drawn = adaptive_stop(p, threshold, n, doubling)
                samples = rows[i]["samples"][:drawn]
                best = min(range(drawn), key=p.__getitem__)
                correct += graded(samples, samples[best]["answer"])
                drawn_total += drawn
                tokens += sum(s["prompt_tokens"] + s["completion_tokens"] for s in samples) \
                    + sum(scores[i]["tokens"][:drawn])
            name = f"AdaptiveBoN t={threshold} ({'doubling' if doubling else 'single'})"
            print(f"{name:<44} {fmt_acc(correct, len(ids)):<26} {drawn_total / len(ids):>8.2f} "
                  f"{tokens / len(ids):>8.0f}")


async def live(args: argparse.Namespace) -> None:
    from ttc.backends.factory import make_backend

    problems = demo_problems(args.problems)
    llm = make_backend(args.backend)
    params = ttc.SamplingParams(temperature=0.7, max_tokens=args.max_tokens, logprobs=True)
    strategy = AdaptiveBestOfN(max_n=args.max_n, threshold=args.threshold, batches=args.batches,
                               sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    t0 = time.perf_counter()
    try:
        results = await ttc.asolve_many(strategy, problems, llm, seed=0, concurrency=args.concurrency)
    finally:
        llm.close()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    correct = sum(bool(r.is_correct()) for r in results)
    samples = [r.details["samples"] for r in ok]
    tokens = [r.usage.total_tokens for r in ok]
    eval_tokens = [r.details["self_eval_tokens"] for r in ok]
    stops = {s: sum(r.details["stop"] == s for r in ok) for s in ("confident", "max_n", "budget")}
    print(f"AdaptiveBestOfN(max_n={args.max_n}, threshold={args.threshold}, batches={args.batches}) on "
          f"{len(problems)} demo problems ({args.backend}): accuracy {fmt_acc(correct, len(problems))}, "
          f"errors {len(results) - len(ok)}")
    print(f"  samples/problem {statistics.mean(samples):.2f}, tokens/problem {statistics.mean(tokens):.0f} "
          f"(self-evaluation {statistics.mean(eval_tokens):.0f}), stops {stops}, wall {wall:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            for r in results:
                f.write(json.dumps({"id": r.problem.id, "answer": r.answer, "correct": bool(r.is_correct()),
                                    "details": r.details if r.ok else None,
                                    "total_tokens": r.usage.total_tokens}) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rpc")
    p.add_argument("--samples", required=True)
    p.add_argument("--ns", type=int, nargs="+", default=[16, 8, 4])
    p = sub.add_parser("self-eval")
    p.add_argument("--samples", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--problems", type=int, default=None)
    p.add_argument("--backend", default="transformers")
    p.add_argument("--concurrency", type=int, default=4, help="problems (x their samples) scored together")
    p = sub.add_parser("abon-offline")
    p.add_argument("--samples", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--max-n", type=int, default=16)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    p = sub.add_parser("abon-live")
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--max-n", type=int, default=16)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--batches", default="doubling")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--backend", default="transformers")
    p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "rpc":
        cmd_rpc(args)
    elif args.cmd == "self-eval":
        asyncio.run(score_samples(args))
    elif args.cmd == "abon-offline":
        cmd_abon_offline(args)
    else:
        asyncio.run(live(args))


if __name__ == "__main__":
    main()
