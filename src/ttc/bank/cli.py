"""`ttc record` and `ttc tune` on the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _prompt(value: str | None) -> Any:
    from ttc.demo import DEMO_PROMPT
    from ttc.prompts import ChatPrompt

    if value in (None, "demo"):
        return DEMO_PROMPT
    if value == "default":
        return ChatPrompt()
    if "{question}" not in value:
        from ttc.errors import InvalidInput

        raise InvalidInput(f"--prompt must be demo, default or a template with {{question}}, got {value!r}")
    return ChatPrompt(instruction=value)


def _problems(args: argparse.Namespace) -> tuple[list, str]:
    if args.dataset == "demo":
        from ttc.demo import demo_problems

        return demo_problems(args.limit or 200, seed=0), f"demo({args.limit or 200})"
    from ttc.eval.datasets import load_dataset

    return load_dataset(args.dataset, split=args.split, limit=args.limit), args.dataset


def cmd_record(args: argparse.Namespace) -> int:
    from ttc.backends.factory import make_backend
    from ttc.bank.record import arecord
    from ttc.runner import run_sync
    from ttc.types import SamplingParams
    from ttc.verifiers import LogprobConfidence

    problems, label = _problems(args)
    prompt = _prompt(args.prompt)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                            logprobs=True, top_logprobs=args.top_logprobs or None)
    verifiers = {name: LogprobConfidence(name) for name in (args.verifier or [])}
    backend = make_backend(args.backend, args.model, args.url, threads=args.threads)
    try:
        count = run_sync(arecord(problems, backend, args.output, k=args.k, params=params, prompt=prompt,
                                 seed=args.seed, concurrency=args.concurrency, dataset=label, verifiers=verifiers,
                                 progress=not args.quiet))
    finally:
        run_sync(backend.aclose())
    print(f"recorded {count} problems now; bank: {args.output}", file=sys.stderr)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from ttc.bank.format import join_banks, load_bank, save_bank

    bank = join_banks([load_bank(path) for path in args.banks])
    save_bank(bank, args.output)
    print(f"joined {len(bank.problems)} problems x {bank.k} samples: {args.output}", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import os

    from ttc.bank.tune import parse_budgets, tune
    from ttc.strategies.registry import REPLAY

    report = tune(args.banks, budgets=parse_budgets(args.budget), split=args.split, split_seed=args.split_seed,
                  draws=args.draws, replicates=args.replicates, seed=args.seed, rpc_mixture=args.rpc_mixture,
                  progress=not args.quiet)
    print(report)
    if args.all:
        print("\nEvery setting:\n" + report.table(sorted(report.rows, key=lambda r: r.tokens.value)))
    if args.split is not None:
        for budget in report.budgets or [None]:
            best = report.best(budget)
            if best.row is not None:
                lo, hi = best.row.predicted
                inside = lo <= best.row.held_out <= hi
                print(f"held-out check ({'any budget' if budget is None else f'budget {budget:g}'}): "
                      f"{best.row.label} predicted [{lo:.3f}, {hi:.3f}], held-out {best.row.held_out:.3f}: "
                      f"{'inside' if inside else 'OUTSIDE'}")
    skipped = sorted(name for name, r in REPLAY.items() if not r.replayable)
    print(f"\nnot replayable (need fresh generation): {', '.join(skipped)}", file=sys.stderr)
    if args.plot:
        try:
            report.plot(args.plot)
            print(f"plot: {args.plot}", file=sys.stderr)
        except ImportError as exc:
            print(f"ttc: warning: no plot ({exc})", file=sys.stderr)
    if args.json:
        report.save_json(args.json)
        print(f"json: {os.fspath(args.json)}", file=sys.stderr)
    return 0


def register(sub: Any, add_backend_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `ttc record`, `ttc join` and `ttc tune`."""
    rec = sub.add_parser("record", help="sample K candidates per problem once into a sample bank (resumable)",
                         description="Record a sample bank: K samples per problem, with answers, tokens, "
                         "logprobs and latency, into a JSONL file that `ttc tune` replays. Re-running the "
                         "same command resumes it.")
    rec.add_argument("--dataset", default="demo", help="demo (the addition problems) | gsm8k | math500 | a file")
    rec.add_argument("--split", default=None)
    rec.add_argument("--limit", type=int, default=None, help="first LIMIT problems (demo: how many, default 200)")
    add_backend_args(rec)
    rec.add_argument("--k", type=int, default=16, help="samples per problem")
    rec.add_argument("--prompt", default="demo", help="demo | default | a template with {question}")
    rec.add_argument("--max-tokens", type=int, default=96)
    rec.add_argument("--temperature", type=float, default=0.7)
    rec.add_argument("--top-p", type=float, default=1.0)
    rec.add_argument("--top-logprobs", type=int, default=5,
                     help="top logprobs per token kept (DeepConf replays need them; 0: none)")
    rec.add_argument("--verifier", action="append", choices=["mean_logprob", "self_certainty"],
                     help="score every sample with this verifier too (repeatable)")
    rec.add_argument("--seed", type=int, default=0, help="problem i samples with seed SEED+i")
    rec.add_argument("--concurrency", type=int, default=4, help="problems in flight at once")
    rec.add_argument("--output", required=True, help="bank file (.jsonl or .jsonl.gz); resumed when it exists")
    rec.add_argument("--quiet", action="store_true")
    rec.set_defaults(func=cmd_record)

    join = sub.add_parser("join", help="join banks of one model, prompt and sampling recorded with different seeds",
                          description="Join sample banks of the same problems, model, prompt and sampling, recorded "
                          "with non-overlapping seeds, into one bank with all their samples per problem: K = 32 "
                          "recorded with --seed 0 and K = 8 with --seed 1000 make a K = 40 bank.")
    join.add_argument("banks", nargs="+", help="bank files, in the order their samples are kept")
    join.add_argument("--output", required=True, help="the joined bank (.jsonl or .jsonl.gz)")
    join.set_defaults(func=cmd_join)

    tun = sub.add_parser("tune", help="replay every sample-based strategy at every n on recorded banks",
                         description="Replay every replayable strategy and setting at every n up to K on one or "
                         "more sample banks (ttc record): accuracy, tokens, requests and latency per problem with "
                         "90%% intervals, the Pareto frontier, the best setting per token budget.")
    tun.add_argument("banks", nargs="+", help="bank files (several: e.g. one per temperature, same problems)")
    tun.add_argument("--budget", action="append",
                     help="per-problem token budget(s), e.g. 500,1000 (repeatable): the best setting within each, "
                     "and the shared budget across problems replayed at each")
    tun.add_argument("--split", type=float, default=None,
                     help="fit on this fraction of the problems, predict the others (e.g. 0.5)")
    tun.add_argument("--split-seed", type=int, default=0)
    tun.add_argument("--draws", type=int, default=8, help="orderings of each problem's samples replayed")
    tun.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates")
    tun.add_argument("--seed", type=int, default=0)
    tun.add_argument("--rpc-mixture", action="store_true",
                     help="replay RPC with its Weibull-mixture pruning too (slow: a fit per subsample)")
    tun.add_argument("--all", action="store_true", help="print every setting, not only the frontier")
    tun.add_argument("--plot", default=None, help="save the frontier plot here (.png)")
    tun.add_argument("--json", default=None, help="save the whole report here")
    tun.add_argument("--quiet", action="store_true")
    tun.set_defaults(func=cmd_tune)
