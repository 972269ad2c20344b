"""Command line: `ttc demo`, `ttc run "question"`, `ttc eval`, `ttc compare`, `ttc report`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ttc.backends.factory import BACKENDS, make_backend
from ttc.errors import TTCError
from ttc.types import SamplingParams


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="transformers", help="generator backend")
    p.add_argument("--model", default=None, help="HF id or local folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--url", default=None, help="base URL of an OpenAI-compatible server (--backend openai)")


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def cmd_demo(args: argparse.Namespace) -> int:
    from ttc.demo import demo_problems, format_table, run_demo
    from ttc.runner import run_sync

    problems = demo_problems(args.problems, seed=args.seed)
    backend = make_backend(args.backend, args.model, args.url)
    print(f"ttc demo: {len(problems)} addition word problems, backend={args.backend}, "
          f"model={getattr(backend, 'model_name', args.model)}", file=sys.stderr)
    saved = open(args.save, "w") if args.save else None

    def save(record: dict) -> None:
        saved.write(json.dumps(record) + "\n")
        saved.flush()

    try:
        rows = run_sync(run_demo(backend, problems, ns=_int_list(args.n), max_tokens=args.max_tokens,
                                 seed=args.seed, progress=not args.quiet, save=save if saved else None))
    finally:
        run_sync(backend.aclose())
        if saved is not None:
            saved.close()
    print(format_table(rows, len(problems)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ttc.runner import run_sync
    from ttc.strategies.registry import make_strategy
    from ttc.verifiers import LogprobConfidence

    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, logprobs=True, seed=args.seed)
    verifier = LogprobConfidence(args.verifier) if args.verifier else None
    strategy = make_strategy(args.strategy, n=args.n, verifier=verifier, params=params)
    backend = make_backend(args.backend, args.model, args.url)
    try:
        result = strategy.solve(args.question, backend, seed=args.seed)
    finally:
        run_sync(backend.aclose())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"answer: {result.answer}")
        if "votes" in result.details:
            print(f"votes: {result.details['votes']}")
        u = result.usage
        print(f"usage: {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
              f"{u.generator_calls} generator calls, {u.verifier_calls} verifier calls, {u.wall_seconds:.1f} s")
        if args.show:
            for i, c in enumerate(result.candidates):
                print(f"--- candidate {i}: answer={c.answer} scores={c.scores}\n{c.text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttc", description="Test-time-compute strategies for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="accuracy vs samples on the embedded model, offline")
    _add_backend_args(demo)
    demo.add_argument("--problems", type=int, default=40, help="number of demo problems")
    demo.add_argument("--n", default="1,4,16", help="comma-separated numbers of candidates")
    demo.add_argument("--max-tokens", type=int, default=96)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--save", default=None, metavar="PATH",
                      help="write every result, with its candidates' texts, to PATH (JSON lines)")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="solve one question with a strategy")
    run.add_argument("question")
    _add_backend_args(run)
    run.add_argument("--strategy", default="majority", help="sample, majority, best_of_n, ...")
    run.add_argument("--n", type=int, default=8, help="number of candidates")
    run.add_argument("--verifier", choices=["mean_logprob", "self_certainty"], default=None,
                     help="logprob-confidence verifier (weights votes; picks for best_of_n)")
    run.add_argument("--max-tokens", type=int, default=256)
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--show", action="store_true", help="print every candidate")
    run.set_defaults(func=cmd_run)

    from ttc.eval.cli import register as register_eval_commands

    register_eval_commands(sub, _add_backend_args)  # `ttc eval`, `ttc compare`, `ttc report`

    from ttc.probes.cli import register as register_probe_commands

    register_probe_commands(sub, _add_backend_args)  # `ttc probes collect|train|calibrate`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TTCError as exc:
        print(f"ttc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
