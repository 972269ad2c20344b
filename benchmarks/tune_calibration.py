"""Calibration of `ttc tune` (issue 26): split the bank's problems 10 times at random into halves;
on each split, the setting tuned on one half (the best within a token budget) should reach, on the
other half, an accuracy inside its predicted 90% interval (corrected for picking the best of all
settings: a bootstrap max-|t| band over every setting, widened for the held-out half's own size).

    python benchmarks/tune_calibration.py BANK [BANK ...] --budget 300 --budget 600 [--json out.json]

The bank is replayed once; each split re-summarises the same replays on its halves (the shared
budget across problems, whose allocation couples the problems, is replayed again per split: each
half shares its own total, as `ttc tune --split` does). For each split
and budget it prints the picked setting, its predicted interval, its held-out accuracy, and its
margin on the held-out half over the best fixed setting (one sample or an unweighted majority vote
at a fixed n, self-consistency, chosen on the fit half within the picked setting's tokens), with a
paired bootstrap 90% interval over the held-out problems.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from ttc.bank.arrays import problem_arrays
    from ttc.bank.format import check_compatible, load_bank
    from ttc.bank.shared import default_shared
    from ttc.bank.tune import orderings, replay_bank, replay_shared, summarize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("banks", nargs="+")
    parser.add_argument("--budget", type=float, action="append", default=None)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    banks = [load_bank(b) for b in args.banks]
    if len(banks) > 1:
        check_compatible(banks)
    settings, blocks, shared = [], [], []
    for bank in banks:
        got, out = replay_bank(bank, draws=args.draws, seed=args.seed, name=bank.name if len(banks) > 1 else "",
                               budgets=args.budget or ())
        settings += got
        blocks.append(out)
        arrays = [problem_arrays(p) for p in bank.problems]
        family = default_shared(bank.k, bank.header.get("params", {}).get("max_tokens"), arrays, args.budget or ())
        if family is not None:  # replay_bank puts its rows last
            shared.append((len(blocks) - 1, family, arrays, orderings(len(arrays), bank.k, args.draws, args.seed)))
    outcomes = np.concatenate(blocks, axis=0)
    count = outcomes.shape[1]
    replayed = time.perf_counter() - start
    budgets = args.budget or [None]
    rows = []
    for split in range(args.splits):
        order = np.random.default_rng(1000 + split).permutation(count)
        fit, held = np.sort(order[: count // 2]), np.sort(order[count // 2:])
        for b, family, arrays, perms in shared:  # each half shares its own total
            blocks[b][-len(family.settings):] = replay_shared(family, arrays, perms, [fit, held])
        outcomes = np.concatenate(blocks, axis=0)
        report = summarize(settings, outcomes, fit, held, replicates=args.replicates, seed=split + 1)
        report.k = min(b.k for b in banks)
        for budget in budgets:
            best = report.best(budget)
            row = best.row
            if row is None:
                continue
            fixed = report.best_fixed(row.tokens.value)
            margin = report.margin(row, fixed) if fixed is not None else (float("nan"),) * 3
            rows.append({"split": split, "budget": budget, "picked": row.label, "tokens": row.tokens.value,
                         "fit_accuracy": row.accuracy.value, "plain_interval": [row.accuracy.low, row.accuracy.high],
                         "predicted": list(row.predicted), "held_out": row.held_out,
                         "inside": bool(row.predicted[0] <= row.held_out <= row.predicted[1]),
                         "inside_plain": bool(row.accuracy.low <= row.held_out <= row.accuracy.high),
                         "factor": report.simultaneous_factor, "best_fixed": fixed.label if fixed else None,
                         "best_fixed_held_out": fixed.held_out if fixed else None,
                         "margin": list(margin), "warning": best.warning})
    print(f"{count} problems, K = {min(b.k for b in banks)}, {len(settings)} settings; replayed in "
          f"{replayed:.1f} s; {args.splits} splits into halves\n")
    print("| split | budget | picked | tokens | fit acc | predicted (corrected) | held-out | inside | "
          "best fixed (fit half) | its held-out | margin [90%] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["margin"]
        print(f"| {r['split']} | {r['budget'] if r['budget'] is not None else 'any'} | {r['picked']} | "
              f"{r['tokens']:.0f} | {r['fit_accuracy']:.3f} | [{r['predicted'][0]:.3f}, {r['predicted'][1]:.3f}] | "
              f"{r['held_out']:.3f} | {'yes' if r['inside'] else 'NO'} | {r['best_fixed']} | "
              f"{r['best_fixed_held_out']:.3f} | {m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}] |")
    for budget in budgets:
        mine = [r for r in rows if r["budget"] == budget]
        inside = sum(r["inside"] for r in mine)
        plain = sum(r["inside_plain"] for r in mine)
        margins = np.array([r["margin"][0] for r in mine])
        print(f"\nbudget {budget if budget is not None else 'any'}: held-out accuracy inside the corrected predicted "
              f"interval in {inside}/{len(mine)} splits (inside the plain fit interval: {plain}/{len(mine)}); "
              f"mean margin over the best fixed setting {margins.mean():+.3f}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"banks": args.banks, "problems": count, "rows": rows, "command": " ".join(sys.argv)}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
