"""`ttc demo`: the comparison table on the embedded model, with an up-front time estimate."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ttc.errors import InvalidInput


def _say(text: str) -> None:
    print(f"ttc demo: {text}", file=sys.stderr, flush=True)


def parse_ns(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]; anything else (0, negatives, words) is an `InvalidInput`."""
    parts = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        ns = [int(x) for x in parts]
    except ValueError:
        ns = []
    if not ns or any(n < 1 for n in ns):
        raise InvalidInput(f"--n must be positive integers separated by commas, e.g. 1,4,8; got {text!r}")
    return ns


def demo_size(args: argparse.Namespace) -> Any:
    """The quick (default) or `--full` size, with --problems/--n/--max-tokens overriding it."""
    from ttc.demo import FULL, QUICK, DemoSize, check_size

    base = FULL if args.full else QUICK
    size = DemoSize(problems=base.problems if args.problems is None else args.problems,
                    ns=base.ns if args.n is None else tuple(parse_ns(args.n)),
                    max_tokens=base.max_tokens if args.max_tokens is None else args.max_tokens)
    check_size(size.problems, size.ns, size.max_tokens)
    return size


def cmd_demo(args: argparse.Namespace, make_backend: Callable[..., Any]) -> int:
    from ttc.demo import DEMO_PROMPT, demo_problems, format_footer, format_header, format_row, run_demo
    from ttc.demo_timing import batch_sizes, draws_per_problem, estimate_seconds, format_duration, measure_speed
    from ttc.runner import run_sync

    size = demo_size(args)
    shared = not args.fresh_samples
    problems = demo_problems(size.problems, seed=args.seed)
    _say(f"{len(problems)} addition word problems; Sample, MajorityVote and BestOfN at n = "
         f"{', '.join(map(str, size.ns))}; up to {size.max_tokens} tokens per candidate; backend={args.backend}")
    start = time.perf_counter()
    backend = make_backend(args.backend, args.model, args.url, threads=args.threads)
    loaded = time.perf_counter() - start
    _say(f"model {getattr(backend, 'model_name', args.model)} ready in {format_duration(loaded)}"
         " (the first run also builds the embedded model's folder, once)")
    draws = draws_per_problem(size.ns, shared)
    max_batch = getattr(backend, "max_batch_size", 64)
    batches = batch_sizes(len(problems), draws, max_batch)
    rows: list = []
    saved = open(args.save, "w") if args.save else None

    def save(record: dict) -> None:
        saved.write(json.dumps(record) + "\n")
        saved.flush()

    def on_row(row) -> None:  # noqa: ANN001 - called on ttc's loop thread as each setting finishes
        if not rows:
            print(format_header(), flush=True)
        rows.append(row)
        print(format_row(row), flush=True)
        if len(rows) == 1 and len(draws) > 1:  # the answers' real length and the real speed are known now
            mean = row.completion_tokens
            first = estimate_seconds(speed, batch_sizes(len(problems), draws[:1], max_batch), size.max_tokens, mean)
            scale = row.seconds / first if first > 0 else 1.0
            left = scale * estimate_seconds(speed, batch_sizes(len(problems), draws[1:], max_batch),
                                            size.max_tokens, mean)
            _say(f"about {format_duration(left)} left (answers average {mean:.0f} tokens; the first setting "
                 f"took {scale:.1f}x its estimate)")

    try:
        async def calibrate() -> Any:
            prompts = [await DEMO_PROMPT.render(p, backend) for p in problems[:max_batch]]
            return await measure_speed(backend, prompts, min(max_batch, max(batches)))

        speed = run_sync(calibrate())
        expected = estimate_seconds(speed, batches, size.max_tokens, size.max_tokens / 2)
        sampling = time.perf_counter()
        _say(f"expected to take about {format_duration(expected)}: {sum(batches)} samples in {len(batches)} "
             f"batches at {speed.describe()} (just measured), if answers average half of --max-tokens")
        run_sync(run_demo(backend, problems, ns=size.ns, max_tokens=size.max_tokens, seed=args.seed,
                          progress=not args.quiet, on_row=on_row, save=save if saved else None, shared=shared))
    except KeyboardInterrupt:
        if not rows:
            print(("\n" if not args.quiet else "") + "ttc demo: interrupted before the first setting finished",
                  file=sys.stderr)
        else:
            print(format_footer(len(problems), shared, max(size.ns)), flush=True)
            print(("\n" if not args.quiet else "")
                  + f"ttc demo: interrupted; the {len(rows)} row{'s' if len(rows) != 1 else ''} above finished",
                  file=sys.stderr)
        return 130
    finally:
        run_sync(backend.aclose())
        if saved is not None:
            saved.close()
    print(format_footer(len(problems), shared, max(size.ns)))
    end = time.perf_counter()
    _say(f"done in {format_duration(end - start)}: model {format_duration(loaded)}, timing "
         f"{format_duration(sampling - start - loaded)}, samples {format_duration(end - sampling)} "
         f"(expected {format_duration(expected)})")
    return 0


def register(sub: Any, add_backend_args: Callable[[argparse.ArgumentParser], None],
             make_backend: Callable[[], Callable[..., Any]]) -> None:
    """Add `ttc demo` to the `ttc` parser's subparsers. `make_backend()` returns the backend
    factory at call time (tests replace `ttc.cli.make_backend`)."""
    from ttc.demo import FULL, QUICK

    demo = sub.add_parser(
        "demo", help="accuracy vs samples on the embedded model, offline",
        description=f"Sample, MajorityVote and BestOfN on addition word problems. Default: {QUICK.problems} "
        f"problems at n = {','.join(map(str, QUICK.ns))} (a few minutes on a laptop CPU); --full: "
        f"{FULL.problems} problems at n = {','.join(map(str, FULL.ns))}. Prints how long it expects to take.")
    add_backend_args(demo)
    demo.add_argument("--full", action="store_true",
                      help=f"the long run: {FULL.problems} problems at n = {','.join(map(str, FULL.ns))}")
    demo.add_argument("--problems", type=int, default=None,
                      help=f"number of demo problems (default: {QUICK.problems}, {FULL.problems} with --full)")
    demo.add_argument("--n", default=None, help="comma-separated numbers of candidates (default: "
                      f"{','.join(map(str, QUICK.ns))}, {','.join(map(str, FULL.ns))} with --full)")
    demo.add_argument("--max-tokens", type=int, default=None,
                      help=f"completion tokens per candidate (default: {QUICK.max_tokens})")
    demo.add_argument("--fresh-samples", action="store_true",
                      help="draw new samples for every setting instead of sharing one pool per problem (slower)")
    demo.add_argument("--seed", type=int, default=0, help="problem generator and sampling seed")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--save", default=None, metavar="PATH",
                      help="write every result, with its candidates' texts, to PATH (JSON lines)")
    demo.set_defaults(func=lambda args: cmd_demo(args, make_backend()))
