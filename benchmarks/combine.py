"""The strategies that combine candidates against MajorityVote at equal tokens, on the demo problems
through a real vLLM server (docs/strategies/combine.md).

For each combining strategy: run it, read its mean tokens per problem T and, from its own first
samples, the sampling request's prompt P and a sample's mean completion c; then MajorityVote with
n = round((T - P) / c), so that its mean tokens per problem is near T (checked: within 10%, else n
is corrected once from the measured cost and the vote is run again). Accuracy with Wilson 95%
intervals, tokens per problem.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/combine.py --problems 200          # all 200
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/combine.py --problems 60 --url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import ttc
from ttc.backends import OpenAICompatible
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.eval.report import wilson_interval
from ttc.types import SamplingParams

#: problems in flight at once (their requests share the server's batches)
CONCURRENCY = 32


def strategies(params: SamplingParams) -> dict[str, ttc.Strategy]:
    sample = ttc.Sample(params=params, prompt=DEMO_PROMPT)
    return {
        "genselect(n=4)": ttc.GenSelect(n=4, sample=sample),
        "rsa(N=4,K=2,T=1)": ttc.RSA(population=4, k=2, rounds=1, sample=sample),
        "fuse(k=3,n=4)": ttc.Fuse(k=3, n=4, sample=sample),
        "fuse(k=2,n=2)": ttc.Fuse(k=2, n=2, sample=sample),
        "rsa(N=2,K=2,T=1)": ttc.RSA(population=2, k=2, rounds=1, sample=sample),
        "archon(n=4: critique,rank,fuse k=3)": ttc.Fuse(k=3, n=4, sample=ttc.Rank(
            k=3, sample=ttc.Critique(n=4, sample=sample))),
    }


def row(name: str, results: list, seconds: float) -> dict:
    correct = sum(bool(r.is_correct()) for r in results)
    low, high = wilson_interval(correct, len(results))
    return {"strategy": name, "problems": len(results), "correct": correct, "accuracy": correct / len(results),
            "interval": [round(low, 3), round(high, 3)], "errors": sum(not r.ok for r in results),
            "tokens_per_problem": sum(r.usage.total_tokens for r in results) / len(results),
            "seconds": round(seconds, 1)}


def sample_cost(results: list, n: int) -> tuple[float, float]:
    """(the sampling request's billed prompt P, a sample's mean completion c) from the first n candidates."""
    prompts = [r.candidates[0].usage.prompt_tokens for r in results if r.ok and r.candidates]
    completions = [c.usage.completion_tokens for r in results if r.ok for c in r.candidates[:n]]
    return sum(prompts) / max(1, len(prompts)), sum(completions) / max(1, len(completions))


async def solve(strategy: ttc.Strategy, problems: list, llm: OpenAICompatible, name: str) -> dict:
    start = time.perf_counter()
    results = await ttc.asolve_many(strategy, problems, llm, concurrency=CONCURRENCY, seed=0, progress=False,
                                    warn=False)
    out = row(name, results, time.perf_counter() - start)
    out["_results"] = results
    return out


async def main(args: argparse.Namespace) -> None:
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, logprobs=True)
    problems = demo_problems(200)[:args.problems]
    llm = OpenAICompatible(args.url)
    table = []
    for name, strategy in strategies(params).items():
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        new = await solve(strategy, problems, llm, name)
        prompt, completion = sample_cost(new.pop("_results"), getattr(strategy, "n", None) or strategy.population)
        print(json.dumps(new), flush=True)
        target = new["tokens_per_problem"]
        n = max(1, round((target - prompt) / max(completion, 1.0)))
        vote = await solve(ttc.MajorityVote(n=n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT)),
                           problems, llm, f"majority(n={n})")
        vote.pop("_results")
        if abs(vote["tokens_per_problem"] - target) > 0.1 * target:  # correct n from the measured cost once
            per_sample = (vote["tokens_per_problem"] - prompt) / n
            n = max(1, round((target - prompt) / max(per_sample, 1.0)))
            vote = await solve(ttc.MajorityVote(n=n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT)),
                               problems, llm, f"majority(n={n})")
            vote.pop("_results")
        vote["against"] = name
        vote["within_10_percent"] = abs(vote["tokens_per_problem"] - target) <= 0.1 * target
        print(json.dumps(vote), flush=True)
        table += [new, vote]
    await llm.aclose()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--url", default=None, help="an OpenAI-compatible vLLM server (default: start one)")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--only", default=None, help="comma-separated labels (or their prefixes) to run")
    arguments = parser.parse_args()
    if arguments.url:
        asyncio.run(main(arguments))
    else:
        from ttc.backends.vllm_server import VLLMServer

        with VLLMServer(env={"VLLM_CPU_KVCACHE_SPACE": "1"}) as server:
            arguments.url = server.url
            asyncio.run(main(arguments))
