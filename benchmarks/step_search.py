"""Step-level search vs sampling on a real model, at (roughly) equal token budget.

    .venv/bin/python benchmarks/step_search.py                        # SmolLM2, LLMJudge as PRM
    .venv/bin/python benchmarks/step_search.py --prm oracle           # a gold-answer oracle PRM
    .venv/bin/python benchmarks/step_search.py --backend vllm         # in-process vLLM engine

Runs MajorityVote, BestOfN, BeamSearch, AStar and ParticleFilter on the demo task (addition word
problems, `ttc.demo`) with SmolLM2-135M-Instruct, every strategy under the same per-problem
`Budget(tokens=...)` (prompt tokens count once per request, so step searches pay again for the
prefix of every continuation), and prints accuracy, tokens, PRM calls and time per strategy.
Problems of a strategy run concurrently (`asolve_many`), so the backend batches across them.

PRMs: `judge` = `LLMJudge` on the same SmolLM2 (P(Yes) for "is step k correct?"); `oracle` = a
programmatic PRM that knows the gold answer (0.9 for a step whose last number is the gold answer,
0.2 for a step ending on another number, 0.5 for a step without numbers): what an informative PRM
can do for the searches.
BestOfN uses the same PRM on whole solutions (one call per candidate). Everything is measured on
the spot; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import ttc
from ttc.backends.factory import make_backend
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.runner import asolve_many
from ttc.steps import StepConfig
from ttc.strategies import AStar, BeamSearch, BestOfN, MajorityVote, ParticleFilter, Sample
from ttc.types import SamplingParams
from ttc.verifiers import LLMJudge, ProgrammaticPRM

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def oracle_prm() -> ProgrammaticPRM:
    """Knows the gold answer: a step whose last number is it scores 0.9, another number 0.2, none 0.5
    (the last number is what answer extraction takes from a solution without a box)."""

    def score(problem: ttc.Problem, steps: list[str]) -> float:
        numbers = _NUMBER.findall(steps[-1])
        if not numbers:
            return 0.5
        return 0.9 if float(numbers[-1]) == float(problem.answer) else 0.2

    return ProgrammaticPRM(score, name="oracle")


def strategies(make_prm, args) -> list[tuple[str, ttc.Strategy]]:
    """Each strategy gets its own PRM (a judge's cache of judged prefixes is not shared)."""
    steps = StepConfig(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
    step_params = SamplingParams(temperature=args.temperature)
    sample = Sample(params=SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, logprobs=True),
                    prompt=DEMO_PROMPT)
    common = dict(steps=steps, params=step_params, prompt=DEMO_PROMPT)
    return [
        (f"MajorityVote(n={args.n})", MajorityVote(n=args.n, sample=sample)),
        (f"BestOfN(n={args.n})", BestOfN(n=args.n, verifier=make_prm().as_verifier(split=False), sample=sample)),
        (f"BeamSearch({args.width}x{args.expansions})", BeamSearch(args.width, args.expansions, make_prm(), **common)),
        (f"AStar(k={args.expansions})", AStar(make_prm(), args.expansions, **common)),
        (f"ParticleFilter({args.particles})", ParticleFilter(args.particles, make_prm(), **common)),
    ]


async def run(args) -> list[dict]:
    kwargs = {"num_threads": args.threads} if args.backend == "transformers" else {}
    llm = make_backend(args.backend, args.model, **kwargs)
    problems = demo_problems(args.problems, seed=args.seed)
    budget = ttc.Budget(tokens=args.tokens)
    rows = []
    try:
        for label, strategy in strategies(oracle_prm if args.prm == "oracle" else LLMJudge, args):
            start = time.perf_counter()
            results = await asolve_many(strategy, problems, llm, concurrency=len(problems), budget=budget,
                                        seed=args.seed, progress=False)
            seconds = time.perf_counter() - start
            n = len(results)
            ok = [r for r in results if r.ok]
            for r in ok:  # the search trees account for every token and PRM call
                if r.tree is not None:
                    assert r.tree.usage().counts() == r.usage.counts()
            rows.append({
                "strategy": label, "problems": n, "errors": n - len(ok),
                "accuracy": sum(bool(r.is_correct()) for r in results) / n,
                "answered": sum(r.answer is not None for r in results) / n,
                "tokens": sum(r.usage.total_tokens for r in ok) / n,
                "completion_tokens": sum(r.usage.completion_tokens for r in ok) / n,
                "prm_calls": sum(r.usage.verifier_calls for r in ok) / n,
                "prm_tokens": sum(r.usage.verifier_tokens for r in ok) / n,
                "max_tokens": max((r.usage.total_tokens for r in ok), default=0),
                "seconds": seconds})
            print(f"{label}: done in {seconds:.0f} s", file=sys.stderr)
    finally:
        await llm.aclose()
    return rows


def table(rows: list[dict], args) -> str:
    head = (f"{'strategy':<22} {'accuracy':>8} {'answered':>8} {'tokens':>7} {'max':>5} {'PRM calls':>9} "
            f"{'PRM tokens':>10} {'seconds':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        err = f"  ({r['errors']} failed)" if r["errors"] else ""
        lines.append(f"{r['strategy']:<22} {r['accuracy']:>8.2f} {r['answered']:>8.2f} {r['tokens']:>7.0f} "
                     f"{r['max_tokens']:>5} {r['prm_calls']:>9.1f} {r['prm_tokens']:>10.0f} {r['seconds']:>7.0f}{err}")
    lines.append(f"({rows[0]['problems']} demo problems, {args.backend} backend, PRM = {args.prm}, "
                 f"budget {args.tokens} tokens/problem; tokens, PRM calls and PRM tokens are per problem; "
                 f"max = the largest problem's tokens)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (transformers backend)")
    p.add_argument("--prm", choices=["judge", "oracle"], default="judge")
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1200, help="token budget per problem, every strategy")
    p.add_argument("--n", type=int, default=16, help="samples of MajorityVote and BestOfN")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per sampled solution")
    p.add_argument("--width", type=int, default=2)
    p.add_argument("--expansions", type=int, default=3)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--step-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the rows here too")
    args = p.parse_args(argv)
    rows = asyncio.run(run(args))
    print(table(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
