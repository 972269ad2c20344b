"""`ttc probes collect|train|calibrate`: forced-exit data, hidden-state probe training, conformal calibration.

    ttc probes collect --dataset demo --problems 64 --out exits.npz
    ttc probes train --data exits.npz --alpha 0.1 --out probe.npz
    ttc probes calibrate --probe probe.npz --data more_exits.npz --alpha 0.05 --out probe_05.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_CUES = "wait,hmm,alternatively"


def _cues(text: str) -> tuple[str, ...]:
    # "\n" may be given as a literal backslash-n on the command line
    return tuple(c.replace("\\n", "\n") for c in text.split(",") if c)


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="demo", help="demo (addition word problems) | gsm8k | math500 | a file")
    p.add_argument("--split", default=None, help="dataset split (e.g. train for gsm8k)")
    p.add_argument("--problems", type=int, default=64, help="number of problems")
    p.add_argument("--samples", type=int, default=1, help="sampled traces per problem")
    p.add_argument("--cues", default=DEFAULT_CUES, help="comma-separated cue words (\\n for a newline)")
    p.add_argument("--suffix", default=None, help="answer-eliciting suffix (default: ttc.probes.PLAIN_SUFFIX)")
    p.add_argument("--prompt", choices=["default", "demo"], default=None,
                   help="instruction: default (boxed, step by step) or demo (give a number); "
                        "default: demo for the demo dataset")
    p.add_argument("--label", choices=["gold", "consistent"], default="gold",
                   help="an exit is right if its answer matches the gold answer, or the trace's own final answer")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-exits", type=int, default=8, help="forced exits per trace at most")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)


def _collect(args: argparse.Namespace) -> Any:
    from ttc.backends.factory import make_backend
    from ttc.probes.base import PLAIN_SUFFIX
    from ttc.probes.training import collect_forced_exits
    from ttc.prompts import ChatPrompt
    from ttc.runner import run_sync
    from ttc.types import SamplingParams

    if args.dataset == "demo":
        from ttc.demo import demo_problems

        problems = demo_problems(args.problems, seed=args.seed)
    else:
        from ttc.eval.datasets import load_dataset

        problems = load_dataset(args.dataset, split=args.split, limit=args.problems)
    if args.prompt == "demo" or (args.prompt is None and args.dataset == "demo"):
        from ttc.demo import DEMO_PROMPT as prompt
    else:
        prompt = ChatPrompt()
    backend = make_backend(args.backend, args.model, args.url, threads=args.threads)
    try:
        params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
        return run_sync(collect_forced_exits(
            backend, problems, prompt=prompt, params=params, cues=_cues(args.cues),
            suffix=args.suffix or PLAIN_SUFFIX, samples=args.samples, max_exits_per_trace=args.max_exits,
            label=args.label, concurrency=args.concurrency, seed=args.seed))
    finally:
        run_sync(backend.aclose())


def _summary(data: Any) -> str:
    import numpy as np

    return (f"{len(data)} forced exits from {len(np.unique(data.groups))} problems, "
            f"{data.labels.mean():.3f} of them right")


def cmd_collect(args: argparse.Namespace) -> int:
    data = _collect(args)
    data.save(args.out)
    print(f"{_summary(data)}; saved to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ttc.probes.training import ForcedExits, train_probe

    if args.data:
        data = ForcedExits.load(args.data)
    else:
        data = _collect(args)
        if args.save_data:
            data.save(args.save_data)
    print(_summary(data), file=sys.stderr)
    probe, report = train_probe(data, alpha=args.alpha, calibration_fraction=args.calibration_fraction,
                                l2=args.l2, seed=args.seed)
    probe.save(args.out)
    print(json.dumps(report, indent=2))
    print(f"probe saved to {args.out} (threshold {probe.threshold:.4f} for premature-exit rate <= {args.alpha})",
          file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ttc.probes.hidden_state import LinearProbe
    from ttc.probes.training import ForcedExits, calibrate_probe

    probe = LinearProbe.load(args.probe)
    data = ForcedExits.load(args.data)
    calibrated, report = calibrate_probe(probe, data, args.alpha)
    out = args.out or args.probe
    calibrated.save(out)
    print(json.dumps(report, indent=2))
    print(f"probe saved to {out}", file=sys.stderr)
    return 0


def register(sub: Any, add_backend_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `ttc probes ...` to the main parser's subcommands."""
    probes = sub.add_parser("probes", help="hidden-state exit probes: collect forced exits, train, calibrate")
    psub = probes.add_subparsers(dest="probes_command", required=True)

    collect = psub.add_parser("collect", help="sample traces and record forced exits at cue tokens")
    add_backend_args(collect)
    _collect_args(collect)
    collect.add_argument("--out", required=True, help="forced-exit data file (.npz)")
    collect.set_defaults(func=cmd_collect)

    train = psub.add_parser("train", help="fit a logistic exit probe and calibrate it (split conformal)")
    add_backend_args(train)
    _collect_args(train)
    train.add_argument("--data", default=None, help="forced-exit data from `ttc probes collect` (else collected now)")
    train.add_argument("--save-data", default=None, help="also save the collected data here")
    train.add_argument("--alpha", type=float, default=0.1, help="tolerated premature-exit rate at a cue")
    train.add_argument("--calibration-fraction", type=float, default=0.5, help="problems held out for calibration")
    train.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic regression")
    train.add_argument("--out", required=True, help="probe file (.npz)")
    train.set_defaults(func=cmd_train)

    calibrate = psub.add_parser("calibrate", help="re-set a probe's exit threshold on forced-exit data")
    calibrate.add_argument("--probe", required=True, help="probe file from `ttc probes train`")
    calibrate.add_argument("--data", required=True, help="calibration forced-exit data (.npz)")
    calibrate.add_argument("--alpha", type=float, required=True, help="tolerated premature-exit rate at a cue")
    calibrate.add_argument("--out", default=None, help="where to save (default: overwrite --probe)")
    calibrate.set_defaults(func=cmd_calibrate)
