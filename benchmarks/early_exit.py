"""Early-exit probes and First Finish Search on a real model: tokens, accuracy, latency.

    .venv/bin/python benchmarks/early_exit.py                       # demo task, SmolLM2 on CPU
    .venv/bin/python benchmarks/early_exit.py --problems 12 --skip-hidden   # smaller

Measured on the spot, nothing hard-coded. Sections:
  1. one trace per problem: plain sampling vs EarlyExit with AnswerConsistency (Dynasor),
     with HiddenStateProbe (LYNX: probe trained here from forced exits on other problems,
     conformal threshold), and with TokenConfidence (DeepConf's threshold from warm-up traces,
     action="exit").
  2. a vote over n traces: MajorityVote vs MajorityVote over EarlyExit(TokenConfidence, drop)
     (DeepConf-online) vs the offline confidence filter.
  3. latency: FirstFinish(n) vs MajorityVote(n), problems one at a time.
Token columns: trace = tokens of the reasoning traces kept; gen = every completion token the
generator produced (traces + probe answers + cancelled/dropped traces); probe = prompt and
completion tokens of probe requests plus hidden-state forward tokens; total = usage.total_tokens
(prompts counted once per request, so chunked continuations re-count their prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import ttc
from ttc.backends.factory import make_backend
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.probes import (
    PLAIN_SUFFIX,
    AnswerConsistency,
    HiddenStateProbe,
    TokenConfidence,
    calibrate_threshold,
    lowest_group_confidence,
)
from ttc.probes.training import collect_forced_exits, train_probe
from ttc.runner import asolve_many
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish
from ttc.types import SamplingParams


def summarize(name: str, results: list[ttc.Result], seconds: float) -> dict:
    ok = [r for r in results if r.ok]
    cands = [c for r in ok for c in r.candidates]
    n = max(len(results), 1)
    trace = sum(c.completion.num_tokens for c in cands if c.completion is not None
                and c.finish_reason not in ("dropped", "cancelled", "failed"))
    probe = sum(c.scores.get("probe_tokens", 0.0) + c.usage.verifier_tokens for c in cands)
    exits = sum(c.finish_reason == "early_exit" for c in cands)
    dropped = sum(c.finish_reason == "dropped" for c in cands)
    latency = [r.usage.wall_seconds for r in ok]
    return {"strategy": name, "problems": len(results), "errors": len(results) - len(ok),
            "accuracy": sum(bool(r.is_correct()) for r in results) / n,
            "trace_tokens": trace / n, "gen_tokens": sum(r.usage.completion_tokens for r in ok) / n,
            "probe_tokens": probe / n, "total_tokens": sum(r.usage.total_tokens for r in ok) / n,
            "early_exits": exits, "dropped": dropped, "candidates": len(cands),
            "latency_mean_s": statistics.fmean(latency) if latency else float("nan"),
            "latency_median_s": statistics.median(latency) if latency else float("nan"),
            "seconds": seconds}


def table(rows: list[dict], baseline: dict | None = None) -> str:
    head = (f"{'strategy':<34} {'acc':>6} {'trace':>7} {'gen':>7} {'probe':>7} {'total':>7} "
            f"{'exits':>6} {'drop':>5} {'lat(s)':>7} {'trace Δ':>8} {'gen Δ':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        rel = ""
        if baseline is not None and baseline["gen_tokens"] and baseline["trace_tokens"]:
            rel = (f"{100 * (r['trace_tokens'] / baseline['trace_tokens'] - 1):>+7.0f}% "
                   f"{100 * (r['gen_tokens'] / baseline['gen_tokens'] - 1):>+6.0f}%")
        lines.append(f"{r['strategy']:<34} {r['accuracy']:>6.3f} {r['trace_tokens']:>7.1f} {r['gen_tokens']:>7.1f} "
                     f"{r['probe_tokens']:>7.1f} {r['total_tokens']:>7.1f} {r['early_exits']:>6} {r['dropped']:>5} "
                     f"{r['latency_mean_s']:>7.2f} {rel:>16}")
    return "\n".join(lines)


async def run(strategy: ttc.Strategy, name: str, problems, llm, concurrency: int, seed: int) -> tuple[list, dict]:
    start = time.perf_counter()
    results = await asolve_many(strategy, problems, llm, concurrency=concurrency, seed=seed, progress=False)
    row = summarize(name, results, time.perf_counter() - start)
    for r in results:
        if not r.ok:
            print(f"  error on {r.problem.id}: {r.error}", file=sys.stderr)
    print(f"  {name}: acc {row['accuracy']:.3f}, gen tokens/problem {row['gen_tokens']:.1f}, "
          f"{row['seconds']:.0f} s", file=sys.stderr)
    return results, row


async def main(args: argparse.Namespace) -> dict:
    extra = {"num_threads": args.threads} if args.backend == "transformers" and args.threads else {}
    llm = make_backend(args.backend, args.model, args.url, **extra)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, logprobs=True)
    problems = demo_problems(args.problems, seed=args.seed)
    report: dict = {"args": vars(args), "backend": llm.describe()}
    t0 = time.perf_counter()
    c = args.concurrency

    # -- 1. one trace per problem -------------------------------------------------------------
    print("1. single trace", file=sys.stderr)
    single = []
    base_results, base = await run(ttc.Sample(params=params, prompt=DEMO_PROMPT), "sample", problems, llm, c, args.seed)
    single.append(base)
    consistency = AnswerConsistency(every=args.every, window=args.window, suffix=PLAIN_SUFFIX,
                                    answer_tokens=args.answer_tokens)
    _, row = await run(EarlyExit(consistency, params=params, prompt=DEMO_PROMPT),
                       f"early_exit(consistency every={args.every} w={args.window})", problems, llm, c, args.seed)
    single.append(row)

    # DeepConf threshold from warm-up traces of other problems (seed + 1000)
    warm_problems = demo_problems(args.warmup, seed=args.seed + 1000)
    conf_mode = "topk" if args.top_k else "logprob"
    warm_params = params.replace(top_logprobs=args.top_k)
    warm, _ = await run(ttc.MajorityVote(n=args.n, sample=ttc.Sample(params=warm_params, prompt=DEMO_PROMPT)),
                        "warm-up traces", warm_problems, llm, c, args.seed + 1000)
    warm_scores = [lowest_group_confidence(cand.completion, args.conf_window, conf_mode) for r in warm if r.ok
                   for cand in r.candidates]
    threshold = calibrate_threshold(warm_scores, keep=args.keep)
    report["deepconf_threshold"] = threshold
    conf_exit = TokenConfidence(window=args.conf_window, threshold=threshold, top_k=args.top_k, action="exit",
                                every=args.every)
    _, row = await run(EarlyExit(conf_exit, params=params, prompt=DEMO_PROMPT, mode=args.conf_mode),
                       f"early_exit(confidence exit keep={args.keep})", problems, llm, c, args.seed)
    single.append(row)

    if "hidden_states" in llm.capabilities and not args.skip_hidden:
        cues = tuple(x.replace("\\n", "\n") for x in args.cues.split(","))
        train_problems = demo_problems(args.train_problems, seed=args.seed + 2000)
        start = time.perf_counter()
        data = await collect_forced_exits(llm, train_problems, prompt=DEMO_PROMPT, params=params, cues=cues,
                                          suffix=PLAIN_SUFFIX, samples=args.train_samples,
                                          max_exits_per_trace=args.max_exits,
                                          concurrency=c, seed=args.seed + 2000)
        probe, train_report = train_probe(data, alpha=args.alpha, l2=args.l2, seed=args.seed)
        train_report["collect_seconds"] = time.perf_counter() - start
        train_report["rows"] = len(data)
        train_report["right_rate"] = float(data.labels.mean())
        report["hidden_probe_training"] = train_report
        if args.save_probe:
            probe.save(args.save_probe)
        print(f"  probe: {len(data)} forced exits, {data.labels.mean():.2f} right; "
              f"threshold {probe.threshold:.3f} at alpha {args.alpha}", file=sys.stderr)
        _, row = await run(EarlyExit(HiddenStateProbe(probe, every=args.every), params=params, prompt=DEMO_PROMPT),
                           f"early_exit(hidden alpha={args.alpha})", problems, llm, c, args.seed)
        single.append(row)
    report["single"] = single

    # -- 2. vote over n traces ----------------------------------------------------------------
    print("2. vote", file=sys.stderr)
    vote_params = params.replace(top_logprobs=args.top_k)
    votes = []
    _, vbase = await run(ttc.MajorityVote(n=args.n, sample=ttc.Sample(params=vote_params, prompt=DEMO_PROMPT)),
                         f"majority n={args.n}", problems, llm, c, args.seed)
    votes.append(vbase)
    conf_drop = TokenConfidence(window=args.conf_window, threshold=threshold, top_k=args.top_k, every=args.every)
    _, row = await run(ttc.MajorityVote(n=args.n, sample=EarlyExit(conf_drop, params=vote_params, prompt=DEMO_PROMPT,
                                                                   mode=args.conf_mode)),
                       f"majority n={args.n} over early_exit(conf drop)", problems, llm, c, args.seed)
    votes.append(row)
    _, row = await run(ttc.MajorityVote(n=args.n, verifier=conf_drop.filter(),
                                        sample=ttc.Sample(params=vote_params, prompt=DEMO_PROMPT)),
                       f"majority n={args.n} conf filter (offline)", problems, llm, c, args.seed)
    votes.append(row)
    if args.vote_consistency:
        _, row = await run(ttc.MajorityVote(n=args.n, sample=EarlyExit(consistency, params=params, prompt=DEMO_PROMPT)),
                           f"majority n={args.n} over early_exit(consistency)", problems, llm, c, args.seed)
        votes.append(row)
    report["vote"] = votes

    # -- 3. latency: FirstFinish vs MajorityVote, one problem at a time -------------------------
    print("3. latency", file=sys.stderr)
    lat_problems = problems[: args.latency_problems]
    latency = []
    _, row = await run(ttc.MajorityVote(n=args.n, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT)),
                       f"majority n={args.n}", lat_problems, llm, 1, args.seed)
    latency.append(row)
    _, row = await run(FirstFinish(n=args.n, params=params, prompt=DEMO_PROMPT), f"first_finish n={args.n}",
                       lat_problems, llm, 1, args.seed)
    latency.append(row)
    _, row = await run(FirstFinish(n=args.n, k=min(3, args.n), params=params, prompt=DEMO_PROMPT),
                       f"first_finish n={args.n} k={min(3, args.n)}", lat_problems, llm, 1, args.seed)
    latency.append(row)
    report["latency"] = latency
    report["seconds"] = time.perf_counter() - t0
    await llm.aclose()
    return report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="transformers")
    p.add_argument("--model", default=None)
    p.add_argument("--url", default=None)
    p.add_argument("--problems", type=int, default=30)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--n", type=int, default=4, help="candidates for votes and FirstFinish")
    p.add_argument("--every", type=int, default=8, help="tokens between probe checks")
    p.add_argument("--window", type=int, default=2, help="AnswerConsistency: agreeing probe answers to stop")
    p.add_argument("--conf-window", type=int, default=8, help="TokenConfidence window (tokens)")
    p.add_argument("--top-k", type=int, default=0,
                   help="top logprobs per token for DeepConf's confidence (0: the sampled token's logprob, "
                        "which streams carry)")
    p.add_argument("--conf-mode", choices=["stream", "chunks"], default="stream",
                   help="EarlyExit mode for TokenConfidence (stream needs --top-k 0)")
    p.add_argument("--keep", type=float, default=0.9, help="DeepConf: keep this fraction of warm-up traces")
    p.add_argument("--warmup", type=int, default=8, help="warm-up problems (x n traces) for the DeepConf threshold")
    p.add_argument("--cues", default=".,\\n,wait,hmm,alternatively", help="HiddenStateProbe cue tokens")
    p.add_argument("--alpha", type=float, default=0.1, help="HiddenStateProbe tolerated premature-exit rate")
    p.add_argument("--train-problems", type=int, default=24)
    p.add_argument("--max-exits", type=int, default=4, help="forced exits per training trace")
    p.add_argument("--l2", type=float, default=50.0, help="L2 penalty of the hidden-state probe")
    p.add_argument("--train-samples", type=int, default=2)
    p.add_argument("--latency-problems", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answer-tokens", type=int, default=6, help="greedy tokens read by an answer probe")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: far faster when other processes share the CPU; 0: torch's default)")
    p.add_argument("--vote-consistency", action="store_true", help="also vote over answer-consistency early exits")
    p.add_argument("--skip-hidden", action="store_true")
    p.add_argument("--save-probe", default=None, help="save the trained hidden-state probe here")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    report = asyncio.run(main(args))
    print("\n## 1. one trace per problem")
    print(table(report["single"], report["single"][0]))
    print(f"\nDeepConf threshold (keep {args.keep} of warm-up): {report['deepconf_threshold']:.4f}")
    if "hidden_probe_training" in report:
        print("hidden-state probe:", json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                   for k, v in report["hidden_probe_training"].items()}))
    print(f"\n## 2. vote over n={args.n}")
    print(table(report["vote"], report["vote"][0]))
    print(f"\n## 3. latency, one problem at a time ({args.latency_problems} problems)")
    print(table(report["latency"], report["latency"][0]))
    print(f"\ntotal {report['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
