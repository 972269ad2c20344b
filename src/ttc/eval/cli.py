"""`ttc eval`, `ttc compare` and `ttc report`: the evaluation harness on the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ttc.eval.datasets import DATASETS


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="gsm8k",
                   help=f"{' | '.join(DATASETS)} | a .jsonl/.parquet/.json/.csv file | a hub id (default: gsm8k)")
    p.add_argument("--split", default=None, help="dataset split (default: test for named datasets)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first LIMIT problems")
    p.add_argument("--question-field", default=None, help="record field with the question")
    p.add_argument("--answer-field", default=None, help="record field with the gold answer")
    p.add_argument("--answer-format", choices=["auto", "gsm8k", "raw"], default=None,
                   help="gsm8k: text after '####', commas removed; raw: as is; auto: gsm8k when '####' is there")


def _run_args(p: argparse.ArgumentParser, output: str) -> None:
    p.add_argument("--output", default=output, help=f"results JSONL, resumed when it exists (default: {output}); "
                   "the summary (.summary.md, .summary.csv) and plot (.png) are written beside it")
    p.add_argument("--verifier", choices=["mean_logprob", "self_certainty"], default=None,
                   help="logprob-confidence verifier (weights votes; picks for best_of_n)")
    p.add_argument("--max-tokens", type=int, default=256, help="completion tokens per candidate")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="problem i samples with seed SEED+i")
    p.add_argument("--concurrency", type=int, default=32, help="problems solved at once")
    p.add_argument("--retry-errors", action="store_true", help="re-run problems whose stored result is an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from ttc.thinking_cli import add_thinking_args

    add_thinking_args(p)


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {"question_field": args.question_field, "answer_field": args.answer_field,
               "answer_format": args.answer_format}
    return {k: v for k, v in options.items() if v is not None}


def _common(args: argparse.Namespace) -> dict[str, Any]:
    # the backend is built only after the strategies and the dataset were checked (no model load for a typo)
    from ttc.thinking_cli import backend_options, sampling_options
    from ttc.verifiers import LogprobConfidence

    return dict(backend=args.backend, model=args.model, url=args.url, threads=args.threads,
                sampling=sampling_options(args), backend_options=backend_options(args),
                split=args.split, limit=args.limit, output=args.output,
                verifier=LogprobConfidence(args.verifier) if args.verifier else None,
                max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                concurrency=args.concurrency, progress=not args.quiet, retry_errors=args.retry_errors,
                **_dataset_options(args))


def _finish(report: Any, output: str, max_tokens: int) -> int:
    """Print the table and where the files are; warn for each setting whose candidates were
    mostly cut at max_tokens (at least half: its accuracy says more about --max-tokens than about
    the strategy); exit 1 with one line per setting whose every problem failed (a run that
    produced nothing must not look like a run that answered wrong)."""
    from ttc.eval.runner import report_prefix

    print(report.table())
    prefix = report_prefix(output)
    plot = f"{prefix}.png" if os.path.exists(f"{prefix}.png") else "(none: matplotlib is not installed)"
    print(f"results: {output}\nsummary: {prefix}.summary.md, {prefix}.summary.csv\nplot:    {plot}", file=sys.stderr)
    for row in report.rows:
        if row.cut is not None and row.cut >= 0.5:
            where = f"{row.setting}: " if len(report.rows) > 1 else ""
            print(f"ttc: warning: {where}{row.cut:.0%} of the candidates were cut at max_tokens (finish_reason "
                  f"\"length\"): the accuracy rests on unfinished answers; raise --max-tokens (it was {max_tokens})",
                  file=sys.stderr)
    failed = report.failed_settings()
    for setting, count, error in failed:
        where = f"{setting}: " if len(report.rows) > 1 else ""
        print(f"ttc: error: {where}{count}/{count} problems failed: {error}; re-run with --retry-errors",
              file=sys.stderr)
    return 1 if failed else 0


def _plain_warnings() -> None:
    """Show ttc's dataset/results warnings as `ttc: warning: ...` lines, without source locations."""
    import warnings

    from ttc.eval.datasets import DatasetWarning
    from ttc.eval.runner import ResultsWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, (DatasetWarning, ResultsWarning)):
            print(f"ttc: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def cmd_eval(args: argparse.Namespace) -> int:
    from ttc.eval.runner import evaluate

    _plain_warnings()

    report = evaluate(args.strategy, args.dataset, n=args.n, tokens_budget=args.tokens_budget, **_common(args))
    return _finish(report, args.output, args.max_tokens)


def cmd_compare(args: argparse.Namespace) -> int:
    from ttc.eval.runner import compare

    _plain_warnings()

    report = compare(args.strategies, args.dataset, tokens_budget=args.tokens_budget, **_common(args))
    return _finish(report, args.output, args.max_tokens)


def cmd_report(args: argparse.Namespace) -> int:
    from ttc.eval.report import EvalReport
    from ttc.eval.runner import report_prefix

    _plain_warnings()
    if not os.path.exists(args.results):
        print(f"ttc: error: {args.results} does not exist", file=sys.stderr)
        return 2
    report = EvalReport.from_jsonl(args.results)
    if not report.records:
        print(f"ttc: error: {args.results} has no results", file=sys.stderr)
        return 2
    print(report.to_markdown() if args.markdown else report.table())
    if args.save:
        paths = report.save(report_prefix(args.results))
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def register(sub: Any, add_backend_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the `eval`, `compare` and `report` subcommands to the `ttc` parser's subparsers."""
    ev = sub.add_parser("eval", help="evaluate strategies on a dataset (resumable JSONL, summary, plot)",
                        description="Evaluate strategies at several n on a dataset. Results stream to "
                        "--output; re-running the same command resumes where it stopped.")
    _dataset_args(ev)
    add_backend_args(ev)
    ev.add_argument("--strategy", "--strategies", dest="strategy", default="majority",
                    help="comma-separated strategy names: sample, majority, best_of_n, ... (default: majority)")
    ev.add_argument("--n", default="1", help="comma-separated numbers of candidates, e.g. 1,4,16")
    ev.add_argument("--tokens-budget", type=int, default=None,
                    help="per-problem token budget (prompt + completion), enforced for every setting")
    _run_args(ev, "results.jsonl")
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser("compare", help="compare strategies at equal per-problem token budgets",
                         description="Run each strategy at each token budget B: every problem is held to "
                         "B tokens (prompt + completion) and each strategy gets as many candidates of "
                         "--max-tokens as fit in B.")
    _dataset_args(cmp)
    add_backend_args(cmp)
    cmp.add_argument("--strategies", default="majority,best_of_n", help="comma-separated strategy names")
    cmp.add_argument("--tokens-budget", required=True,
                     help="comma-separated per-problem token budgets, e.g. 512,1024,2048")
    _run_args(cmp, "results-compare.jsonl")
    cmp.set_defaults(func=cmd_compare)

    rep = sub.add_parser("report", help="summarise a results JSONL file written by `ttc eval`/`ttc compare`")
    rep.add_argument("results", help="results JSONL file")
    rep.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    rep.add_argument("--save", action="store_true", help="write the .summary.md, .summary.csv and .png beside it")
    rep.set_defaults(func=cmd_report)
