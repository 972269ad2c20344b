"""Step search vs one-shot sampling on the transformers backend, prefix cache off vs on, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_throughput.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_throughput.py --strategy beam --problems 4

One SmolLM2-135M-Instruct in memory, two backends over it: `prefix_cache_bytes=0` ("off") and
the default prefix cache ("on"). Each round runs, alternating so that a machine whose load
drifts affects both alike:
- the step search (ParticleFilter(8) by default, or BeamSearch) on the demo problems with a
  programmatic oracle PRM (cheap, so the generator's work dominates), cache off, then on;
- one-shot sampling: per problem one request for as many candidates as the search keeps, each
  up to the search's mean tokens per candidate, on the cache-off backend.
It reports generated tokens per second of each, the ratio search / one-shot before and after,
the time ratio off / on, by wall clock and by CPU time of the process (with one torch thread,
CPU time is the work done, much less disturbed by other jobs on a shared machine), and checks that
both searches give identical answers and trace texts for the same seed (the cache changes float
rounding only; a flip of a sampled token is possible in principle and is reported, not hidden).
Ratios, not absolute times, are what carry over between machines; the script prints `uptime`
beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import ttc
from ttc.backends.transformers import Transformers
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.runner import asolve_many
from ttc.steps import StepConfig
from ttc.strategies import BeamSearch, ParticleFilter
from ttc.types import SamplingParams

sys.path.insert(0, os.path.dirname(__file__))
from step_search import oracle_prm  # noqa: E402


def search(args) -> ttc.Strategy:
    common = dict(steps=StepConfig(max_steps=args.max_steps, max_step_tokens=args.step_tokens),
                  params=SamplingParams(temperature=args.temperature), prompt=DEMO_PROMPT)
    if args.strategy == "beam":
        return BeamSearch(args.width, args.expansions, oracle_prm(), **common)
    return ParticleFilter(args.particles, oracle_prm(), **common)


def lanes(args) -> int:
    """Candidates a search keeps alive per problem: what one-shot sampling generates at once."""
    return args.width * args.expansions if args.strategy == "beam" else args.particles


def fingerprint(results: list[ttc.Result]) -> list:
    """What must not change with the cache: answers and every candidate's text."""
    return [(r.answer, r.error, [c.text for c in r.candidates]) for r in results]


async def run_search(llm: Transformers, problems, args) -> dict:
    llm.reset_stats()
    start, cpu = time.perf_counter(), time.process_time()
    results = await asolve_many(search(args), problems, llm, concurrency=len(problems), seed=args.seed,
                                progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = llm.stats
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens": stats.generated_tokens,
        "prefill_tokens": stats.prefill_tokens,
        "cached_tokens": stats.cached_tokens,
        "requests": stats.requests,
        "batches": stats.batches,
        "decode_steps": stats.decode_steps,
        "decode_rows": stats.decode_rows,
        "errors": sum(not r.ok for r in results),
        "fingerprint": fingerprint(results),
    }


async def run_one_shot(llm: Transformers, problems, per_candidate: int, args) -> dict:
    params = SamplingParams(n=lanes(args), temperature=args.temperature, max_tokens=per_candidate, seed=args.seed)
    prompts = [await DEMO_PROMPT.render(p, llm) for p in problems]
    llm.reset_stats()
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(llm.generate(p, params) for p in prompts))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = llm.stats
    return {"seconds": seconds, "cpu_seconds": cpu, "tokens": stats.generated_tokens, "batches": stats.batches,
            "decode_steps": stats.decode_steps, "decode_rows": stats.decode_rows}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


async def main_async(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.compare == "cache":  # prefix cache off vs on
        off = Transformers(args.model, device="cpu", prefix_cache_bytes=0)
        on = Transformers.from_model(off.model, off.tokenizer, name=off.model_name)
    else:  # both with the prefix cache; requests joining running batches off vs on
        on = Transformers(args.model, device="cpu")
        off = Transformers.from_model(on.model, on.tokenizer, name=on.model_name)
        on.join_running, off.join_running = True, False
    problems = demo_problems(args.problems, seed=args.seed)
    rounds = []
    try:
        for backend in (off, on):  # warm-up (allocator, kernels)
            await run_one_shot(backend, problems, 4, args)
        for k in range(args.rounds):
            order = ("off", "on") if k % 2 == 0 else ("on", "off")
            row = {"uptime_before": uptime()}
            for which in order:
                backend = off if which == "off" else on
                for each in (off, on):
                    if each.prefix_cache is not None:
                        each.prefix_cache.clear()  # every search starts cold: no reuse across runs
                row[which] = await run_search(backend, problems, args)
                print(f"round {k}: search, {args.compare} {which}: {row[which]['seconds']:.1f} s, "
                      f"{row[which]['tokens']} tokens", file=sys.stderr)
            per_candidate = max(1, round(row["off"]["tokens"] / (len(problems) * lanes(args))))
            for each in (off, on):
                if each.prefix_cache is not None:
                    each.prefix_cache.clear()
            row["one_shot"] = await run_one_shot(off, problems, per_candidate, args)
            row["one_shot"]["max_tokens"] = per_candidate
            row["uptime_after"] = uptime()
            print(f"round {k}: one-shot: {row['one_shot']['seconds']:.1f} s, {row['one_shot']['tokens']} tokens",
                  file=sys.stderr)
            rounds.append(row)
    finally:
        await off.aclose()
        await on.aclose()
    return summarise(rounds, args)


def summarise(rounds: list[dict], args) -> dict:
    def rate(part: dict, clock: str = "seconds") -> float:
        return part["tokens"] / part[clock]

    per_round = []
    for row in rounds:
        shot, shot_cpu = rate(row["one_shot"]), rate(row["one_shot"], "cpu_seconds")
        per_round.append({
            "search_over_one_shot_off": rate(row["off"]) / shot,
            "search_over_one_shot_on": rate(row["on"]) / shot,
            "wall_off_over_on": row["off"]["seconds"] / row["on"]["seconds"],
            "cpu_search_over_one_shot_off": rate(row["off"], "cpu_seconds") / shot_cpu,
            "cpu_search_over_one_shot_on": rate(row["on"], "cpu_seconds") / shot_cpu,
            "cpu_off_over_on": row["off"]["cpu_seconds"] / row["on"]["cpu_seconds"],
            "identical": row["off"]["fingerprint"] == row["on"]["fingerprint"],
        })
    med = {key: statistics.median(r[key] for r in per_round) for key in per_round[0] if key != "identical"}
    last = rounds[-1]
    return {"args": vars(args), "rounds": [{k: ({kk: vv for kk, vv in v.items() if kk != "fingerprint"}
                                                 if isinstance(v, dict) else v) for k, v in row.items()}
                                           for row in rounds],
            "per_round": per_round, "median": med,
            "identical": all(r["identical"] for r in per_round),
            "prefill_tokens_off": last["off"]["prefill_tokens"], "prefill_tokens_on": last["on"]["prefill_tokens"],
            "cached_tokens_on": last["on"]["cached_tokens"]}


def report(summary: dict) -> str:
    args = summary["args"]
    name = (f"BeamSearch({args['width']}x{args['expansions']})" if args["strategy"] == "beam"
            else f"ParticleFilter({args['particles']})")
    lines = [f"{name} on {args['problems']} demo problems, {args['max_steps']} steps of <= {args['step_tokens']} "
             f"tokens, {args['rounds']} rounds, torch threads {args['threads']}, CPU",
             f"tokens/s of the search over one-shot, {args['compare']} off and on; time off/on; "
             "by wall clock and by CPU time",
             f"{'round':>6} {'wall: off':>9} {'on':>5} {'off/on':>6} {'cpu: off':>8} {'on':>5} {'off/on':>6} "
             f"{'identical':>9}"]

    def line(label: str, r: dict, same: str = "") -> str:
        return (f"{label:>6} {r['search_over_one_shot_off']:>9.2f} {r['search_over_one_shot_on']:>5.2f} "
                f"{r['wall_off_over_on']:>6.2f} {r['cpu_search_over_one_shot_off']:>8.2f} "
                f"{r['cpu_search_over_one_shot_on']:>5.2f} {r['cpu_off_over_on']:>6.2f} {same:>9}")
    for k, r in enumerate(summary["per_round"]):
        lines.append(line(str(k), r, str(r["identical"])))
    lines.append(line("median", summary["median"]))
    lines.append(f"prefill tokens (last round): off {summary['prefill_tokens_off']}, on {summary['prefill_tokens_on']} "
                 f"(+ {summary['cached_tokens_on']} from the prefix cache)")
    last = summary["rounds"][-1]
    occupancy = "; ".join(f"{k} {last[k]['decode_rows'] / max(1, last[k]['decode_steps']):.1f} rows in "
                          f"{last[k]['batches']} batches" for k in ("off", "on", "one_shot"))
    lines.append(f"mean rows per decode step (last round): {occupancy}")
    lines.append(f"load: {summary['rounds'][0]['uptime_before']}  ...  {summary['rounds'][-1]['uptime_after']}")
    return "\n".join(lines)


def add_search_options(p: argparse.ArgumentParser) -> None:
    """The search's shape and the run's size (shared with step_throughput_server.py)."""
    p.add_argument("--problems", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--width", type=int, default=2)
    p.add_argument("--expansions", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--step-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the summary here too")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--strategy", choices=["particle", "beam"], default="particle")
    p.add_argument("--compare", choices=["cache", "join"], default="cache",
                   help="what 'off' and 'on' differ in: the prefix cache (off: prefix_cache_bytes=0), or "
                        "requests joining running batches (off: join_running=False; both with the cache)")
    add_search_options(p)
    args = p.parse_args(argv)
    summary = asyncio.run(main_async(args))
    print(report(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if not summary["identical"]:
        print(f"DIFFERENT results with {args.compare} on and off for the same seed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
