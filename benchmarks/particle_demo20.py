"""ParticleFilter(8) on 20 demo problems on the transformers backend: wall time before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/particle_demo20.py                  # off, then on
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/particle_demo20.py --variants before,on --before a498de0~1

Issue 16 asks for the wall time of ParticleFilter(8) on 20 demo problems (`ttc.demo`, the demo
prompt) with the embedded SmolLM2-135M-Instruct, before and after the step-search work, with
identical results for the same seeds. Each variant runs in its own process (a fresh model, the
same seeds), one after the other, alternating the order between rounds so that a shared
machine's drifting load touches all alike:

- `before`: the source tree of git revision `--before` (default: the commit before the prefix
  cache), exported to a temporary folder and put first on PYTHONPATH. Caution: other branches
  merged since then changed what a search does (the final step completes the solution, answer
  extraction on math-verify), so its results differ for reasons other than speed; `off` is the
  like-for-like "before";
- `off`: this tree with the prefix cache off (`prefix_cache_bytes=0`);
- `join`: this tree with requests joining running batches (`join_running=True`, opt-in);
- `on`: this tree as a user gets it (defaults).

Variants can also run as separate invocations at the same time (`--variants before --json a.json`
and `--variants on --json b.json`): on a machine shared with other jobs they then see the same
load; the JSON files hold the fingerprints to compare.

The PRM is the gold-answer oracle of `benchmarks/step_search.py` (programmatic, so the generator's
work is what is timed) or `--prm judge` (LLMJudge on the same model and backend, so the judge's
prompts go through the prefix cache too). Reported per variant: wall seconds and CPU seconds of
the process for the 20 searches (model loading excluded), generated tokens, accuracy; and whether
every variant gave the same answers and candidate texts as the first. Exits non-zero when not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def ttc_tree(module_file: str) -> str:
    """Which source tree ran (`ttc.__file__`), without a machine path: `src/ttc` of this checkout,
    or of an export."""
    where = os.path.dirname(os.path.abspath(module_file))
    if os.path.commonpath([where, os.path.dirname(HERE)]) == os.path.dirname(HERE):
        return os.path.relpath(where, os.path.dirname(HERE))
    return "src/ttc of the exported revision (a temporary folder)"
ROOT = os.path.dirname(HERE)
DEFAULT_BEFORE = "a498de0~1"  # the commit before the transformers backend's prefix cache


def child(args) -> None:
    """Run the 20 searches in this process and print one JSON line."""
    import asyncio

    import torch

    import ttc
    from ttc.backends.transformers import Transformers
    from ttc.demo import DEMO_PROMPT, demo_problems
    from ttc.runner import asolve_many
    from ttc.steps import StepConfig
    from ttc.strategies import ParticleFilter
    from ttc.types import SamplingParams

    sys.path.insert(0, HERE)
    from step_search import oracle_prm

    torch.set_num_threads(args.threads)
    kwargs = {"prefix_cache_bytes": 0} if args.variant == "off" else {}
    llm = Transformers(args.model, device="cpu", **kwargs)
    if args.variant == "join":
        llm.join_running = True
    prm = oracle_prm() if args.prm == "oracle" else ttc.verifiers.LLMJudge()
    strategy = ParticleFilter(args.particles, prm, steps=StepConfig(max_steps=args.max_steps,
                                                                    max_step_tokens=args.step_tokens),
                              params=SamplingParams(temperature=args.temperature), prompt=DEMO_PROMPT)
    problems = demo_problems(args.problems, seed=args.seed)

    async def main():
        try:
            start, cpu = time.perf_counter(), time.process_time()
            results = await asolve_many(strategy, problems, llm, concurrency=len(problems), seed=args.seed,
                                        progress=False)
            return results, time.perf_counter() - start, time.process_time() - cpu
        finally:
            await llm.aclose()

    results, seconds, cpu = asyncio.run(main())
    print(json.dumps({
        "variant": args.variant, "seconds": seconds, "cpu_seconds": cpu, "torch": torch.__version__,
        "ttc": ttc_tree(ttc.__file__),
        "generated_tokens": sum(r.usage.completion_tokens for r in results),
        "accuracy": sum(bool(r.is_correct()) for r in results) / len(results),
        "errors": [r.error for r in results if not r.ok],
        "fingerprint": [[r.answer, r.error, [c.text for c in r.candidates]] for r in results]}))


def export(rev: str, into: str) -> str:
    """`rev`'s src/ folder exported under `into`; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return os.path.join(into, "src")


def run_variant(variant: str, src: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--variant", variant,
           *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
             if k not in ("child", "variant", "before", "variants", "rounds", "json") and v is not None)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def parent(args) -> int:
    variants = args.variants.split(",")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {v: os.path.join(ROOT, "src") for v in ("off", "on", "join")}
        if "before" in variants:
            srcs["before"] = export(args.before, tmp)
        for k in range(args.rounds):
            order = variants if k % 2 == 0 else variants[::-1]
            row = {"uptime_before": uptime()}
            for v in order:
                row[v] = run_variant(v, srcs[v], args)
                print(f"round {k}: {v}: {row[v]['seconds']:.1f} s wall, {row[v]['cpu_seconds']:.1f} s CPU, "
                      f"{row[v]['generated_tokens']} tokens, accuracy {row[v]['accuracy']:.2f}", file=sys.stderr)
            row["uptime_after"] = uptime()
            rounds.append(row)
    reference = rounds[0][variants[0]]["fingerprint"]
    identical = all(row[v]["fingerprint"] == reference for row in rounds for v in variants)
    lines = [f"ParticleFilter({args.particles}) on {args.problems} demo problems, PRM {args.prm}, "
             f"{args.max_steps} steps of <= {args.step_tokens} tokens, seed {args.seed}, "
             f"{args.threads} torch thread(s)",
             f"{'variant':>8} " + " ".join(f"{'wall s r' + str(k):>10} {'cpu s r' + str(k):>10}" for k in
                                           range(len(rounds))) + f" {'median wall':>11} {'median cpu':>10}"]
    for v in variants:
        walls = [row[v]["seconds"] for row in rounds]
        cpus = [row[v]["cpu_seconds"] for row in rounds]
        lines.append(f"{v:>8} " + " ".join(f"{w:>10.1f} {c:>10.1f}" for w, c in zip(walls, cpus, strict=True))
                     + f" {statistics.median(walls):>11.1f} {statistics.median(cpus):>10.1f}")
    first = rounds[0][variants[0]]
    lines.append(f"identical answers and texts in every run: {identical}; accuracy {first['accuracy']:.2f}; "
                 f"generated tokens {first['generated_tokens']}")
    lines.append(f"load: {rounds[0]['uptime_before']} ... {rounds[-1]['uptime_after']}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "identical": identical, "table": lines,
                       "rounds": rounds},
                      f, indent=2)
    if not identical:
        print("DIFFERENT results between variants for the same seed", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--prm", choices=["oracle", "judge"], default="oracle")
    p.add_argument("--problems", type=int, default=20)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--step-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of the 'before' variant")
    p.add_argument("--variants", default="off,on", help="comma-separated: before, off, on, join")
    p.add_argument("--json", default=None, help="write the summary here too")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="on", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
