"""Step search vs one-shot sampling over a vLLM server (OpenAICompatible), in one run.

    python -m vllm.entrypoints.openai.api_server --model DIR ... &     # or let the script start one
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_throughput_server.py --url http://127.0.0.1:PORT/v1
    .venv/bin/python benchmarks/step_throughput_server.py --engine       # in-process VLLMEngine instead

The server counterpart of `step_throughput.py`. Each round runs, in alternating order:
- the step search (ParticleFilter(8) by default, or BeamSearch) on the demo problems with the
  oracle PRM, on a fresh `OpenAICompatible` with `/tokenize` answers cached (the default, "on");
- the same search on a fresh backend whose token cache holds nothing ("off": every text is sent
  to `/tokenize` again, as before the cache);
- one-shot sampling: per problem one request for as many candidates as the search keeps, each up
  to the search's mean tokens per candidate.
It reports generated tokens per second of each search over one-shot (wall clock: the server does
the work in another process), the /tokenize requests each search sent, and whether both searches
gave the same answers and texts for the same seeds (vLLM's seeded sampling; a token may flip on
float rounding of a different batch, which is reported, not hidden). With `--engine` both searches
are the same (no /tokenize): two samples of the search per round.

It also reads vLLM's own counters around each run: engine steps, generated tokens per step (the
rows decoding together), all tokens per step (prefill included), and prompt tokens processed and
found in its prefix cache. `--block-size` sets vLLM's KV block size, the prefix cache's unit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

import ttc
from ttc.backends.token_cache import TokenCache
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.runner import asolve_many
from ttc.types import SamplingParams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script from any folder
from step_throughput import add_search_options, fingerprint, lanes, search  # noqa: E402 (after the path)


def backend(args, cached: bool):
    if args.engine:
        return args.engine_backend
    from ttc.backends.openai_compatible import OpenAICompatible

    llm = OpenAICompatible(args.url, max_concurrency=256)
    if not cached:
        llm.token_cache = TokenCache(max_ids=0)
    llm.tokenize_requests = 0
    ask = llm._server_tokenize

    async def counting(payload):
        llm.tokenize_requests += 1
        return await ask(payload)

    llm._server_tokenize = counting
    return llm


#: vLLM counters that say how full its batches were: engine steps, tokens they processed, tokens generated
ENGINE_METRICS = ("iteration_tokens_total_count", "iteration_tokens_total_sum", "generation_tokens_total",
                  "prompt_tokens_total", "prefix_cache_queries_total", "prefix_cache_hits_total")


def engine_metrics(args) -> dict[str, float]:
    """vLLM's step counters now: from this process's Prometheus registry (in-process engine) or
    the server's /metrics."""
    if args.engine:
        from prometheus_client import REGISTRY, generate_latest

        text = generate_latest(REGISTRY).decode()
    else:
        with urllib.request.urlopen(args.url.rstrip("/").removesuffix("/v1") + "/metrics", timeout=30) as r:
            text = r.read().decode()
    return {name: sum(float(v) for v in re.findall(rf"^vllm:{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))
            for name in ENGINE_METRICS}


def occupancy(before: dict, after: dict) -> dict:
    """Engine steps in between, generated tokens per step (the rows decoding together), all tokens
    per step, and the prompt tokens processed and found in vLLM's prefix cache."""
    d = {name: after[name] - before[name] for name in ENGINE_METRICS}
    steps = d["iteration_tokens_total_count"]
    return {"engine_steps": steps, "rows_per_step": d["generation_tokens_total"] / steps if steps else None,
            "tokens_per_step": d["iteration_tokens_total_sum"] / steps if steps else None,
            "prompt_tokens": d["prompt_tokens_total"], "prefix_cache_queries": d["prefix_cache_queries_total"],
            "prefix_cache_hits": d["prefix_cache_hits_total"]}


async def run_search(args, problems, cached: bool) -> dict:
    llm = backend(args, cached)
    try:
        before = engine_metrics(args)
        start = time.perf_counter()
        results = await asolve_many(search(args), problems, llm, concurrency=len(problems), seed=args.seed,
                                    progress=False)
        seconds = time.perf_counter() - start
        engine = occupancy(before, engine_metrics(args))
    finally:
        if not args.engine:
            await llm.aclose()
    return {"seconds": seconds, "tokens": sum(r.usage.completion_tokens for r in results), **engine,
            "requests": sum(r.usage.generator_calls for r in results),
            "tokenize_requests": getattr(llm, "tokenize_requests", None),
            "errors": sum(not r.ok for r in results), "error_messages": [str(r.error) for r in results if not r.ok],
            "fingerprint": fingerprint(results)}


async def run_one_shot(args, problems, per_candidate: int) -> dict:
    llm = backend(args, True)
    try:
        params = SamplingParams(n=lanes(args), temperature=args.temperature, max_tokens=per_candidate,
                                seed=args.seed)
        prompts = [await DEMO_PROMPT.render(p, llm) for p in problems]
        before = engine_metrics(args)
        start = time.perf_counter()
        gens = await asyncio.gather(*(llm.generate(p, params) for p in prompts))
        seconds = time.perf_counter() - start
        engine = occupancy(before, engine_metrics(args))
    finally:
        if not args.engine:
            await llm.aclose()
    return {"seconds": seconds, "tokens": sum(g.usage().completion_tokens for g in gens), **engine}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def main_async(args) -> dict:
    problems = demo_problems(args.problems, seed=args.seed)
    rounds = []
    await run_one_shot(args, problems, 4)  # warm-up
    for k in range(args.rounds):
        row = {"uptime_before": uptime()}
        steps = ["off", "on", "one_shot"] if k % 2 == 0 else ["one_shot", "on", "off"]
        for what in steps:
            if what == "one_shot":
                ref = row["off"] if "off" in row else rounds[-1]["off"]  # round 0 runs the searches first
                per = max(1, round(ref["tokens"] / (len(problems) * lanes(args))))
                row["one_shot"] = await run_one_shot(args, problems, per)
                row["one_shot"]["max_tokens"] = per
            else:
                row[what] = await run_search(args, problems, cached=what == "on")
            print(f"round {k}: {what}: {row[what]['seconds']:.1f} s, {row[what]['tokens']} tokens", file=sys.stderr)
        row["uptime_after"] = uptime()
        rounds.append(row)
    per_round = []
    for row in rounds:
        shot = row["one_shot"]["tokens"] / row["one_shot"]["seconds"]
        ratios = {f"search_over_one_shot_{v}": row[v]["tokens"] / row[v]["seconds"] / shot for v in ("off", "on")}
        per_round.append(ratios | {"identical": row["off"]["fingerprint"] == row["on"]["fingerprint"]})
    return {"args": {k: v for k, v in vars(args).items() if k != "engine_backend"},
            "rounds": [{k: ({kk: vv for kk, vv in v.items() if kk != "fingerprint"} if isinstance(v, dict) else v)
                        for k, v in row.items()} for row in rounds],
            "per_round": per_round,
            "median": {key: statistics.median(r[key] for r in per_round) for key in per_round[0] if key != "identical"},
            "identical": all(r["identical"] for r in per_round)}


def report(summary: dict) -> str:
    args = summary["args"]
    name = (f"BeamSearch({args['width']}x{args['expansions']})" if args["strategy"] == "beam"
            else f"ParticleFilter({args['particles']})")
    where = "in-process VLLMEngine" if args["engine"] else args["url"]
    lines = [f"{name} on {args['problems']} demo problems, {args['max_steps']} steps of <= {args['step_tokens']} "
             f"tokens, {args['rounds']} rounds, {where}",
             "tokens/s of the search over one-shot (wall), " + (
                 "the search run twice (off/on: the same, the engine has no /tokenize to cache)" if args["engine"]
                 else "token cache off / on; /tokenize requests per search"),
             f"{'round':>6} {'off':>6} {'on':>6} {'tokenize off':>12} {'on':>4} {'identical':>9}"]
    for k, (r, row) in enumerate(zip(summary["per_round"], summary["rounds"], strict=True)):
        lines.append(f"{k:>6} {r['search_over_one_shot_off']:>6.2f} {r['search_over_one_shot_on']:>6.2f} "
                     f"{row['off']['tokenize_requests']!s:>12} {row['on']['tokenize_requests']!s:>4} "
                     f"{r['identical']!s:>9}")
    m = summary["median"]
    lines.append(f"{'median':>6} {m['search_over_one_shot_off']:>6.2f} {m['search_over_one_shot_on']:>6.2f}")
    last = summary["rounds"][-1]
    lines.append(f"last round: search {last['on']['tokens']} tokens in {last['on']['requests']} requests, "
                 f"{last['on']['seconds']:.1f} s; one-shot {last['one_shot']['tokens']} tokens "
                 f"(<= {last['one_shot']['max_tokens']} per candidate), {last['one_shot']['seconds']:.1f} s")
    if last["on"]["rows_per_step"] and last["one_shot"]["rows_per_step"]:
        lines.append(f"last round, generated tokens per vLLM engine step (rows decoding together): search "
                     f"{last['on']['rows_per_step']:.1f} over {last['on']['engine_steps']:.0f} steps, one-shot "
                     f"{last['one_shot']['rows_per_step']:.1f} over {last['one_shot']['engine_steps']:.0f}")
        lines.append("last round, prompt tokens processed / found in vLLM's prefix cache: search "
                     f"{last['on']['prompt_tokens']:.0f} / {last['on']['prefix_cache_hits']:.0f}, one-shot "
                     f"{last['one_shot']['prompt_tokens']:.0f} / {last['one_shot']['prefix_cache_hits']:.0f}")
    lines.append(f"load: {summary['rounds'][0]['uptime_before']}  ...  {summary['rounds'][-1]['uptime_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="a running vLLM server's /v1 URL (default: start one)")
    p.add_argument("--engine", action="store_true", help="an in-process VLLMEngine instead of a server")
    p.add_argument("--block-size", type=int, default=None,
                   help="vLLM's KV block size, the prefix cache's unit (default: vLLM's; 128 on its CPU backend)")
    p.add_argument("--strategy", choices=["particle", "beam"], default="particle")
    add_search_options(p)
    args = p.parse_args(argv)
    server = None
    if args.engine:
        from ttc.backends.vllm_engine import VLLMEngine

        extra = {} if args.block_size is None else {"block_size": args.block_size}
        args.engine_backend = VLLMEngine(disable_log_stats=False, **extra)  # its step counters are read
    elif args.url is None:
        from ttc.backends.vllm_server import VLLMServer

        server = VLLMServer(args=() if args.block_size is None else ("--block-size", str(args.block_size)))
        server.start()
        args.url = server.url
    try:
        summary = ttc.run_sync(main_async(args))
    finally:
        if server is not None:
            server.stop()
        if args.engine:
            args.engine_backend.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
