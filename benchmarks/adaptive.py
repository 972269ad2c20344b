"""Adaptive compute on a real model, paired: record 16 samples per problem once, evaluate every
stopping rule on prefixes of the same recorded stream (issue 15).

    # 1. record (once): 16 samples per demo problem on the embedded SmolLM2 (vLLM in-process)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/adaptive.py record --problems 200 \\
        --out benchmarks/results/adaptive_samples.jsonl
    # 2. evaluate on the recording (seconds): every row replays the same recorded samples
    .venv/bin/python benchmarks/adaptive.py evaluate benchmarks/results/adaptive_samples.jsonl
    # 3. a live AdaptiveVote run on the real model (first 20 problems) to confirm the savings
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/adaptive.py live --problems 20

The recording is one JSON line per problem, samples in the order the model produced them:
{"id", "question", "gold", "samples": [{"text", "answer", "correct", "prompt_tokens",
"completion_tokens", "logprob_sum", "mean_logprob", "finish_reason"}]}. `prompt_tokens` is the
prompt's length, the same for every sample of a problem: what a request for that sample alone
would bill; the evaluation decides how many requests (batches) a strategy would have sent.

Paired evaluation: `ttc.backends.bank_replay.BankReplay` (the recording converted to a sample
bank, `ttc.bank.convert`) answers problem i's k-th..(k+n)-th samples from the recording, in
recorded order, billing the recorded prompt and completion tokens (`ttc tune` replays the same
strategies faster, at every n, with intervals: docs/tune.md). The real
`MajorityVote`, `AdaptiveVote` and shared-budget code run on it, so each row is a prefix of the
same 16 samples per problem, and its tokens are what those requests would have been billed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import sys
import time
from pathlib import Path

from ttc.answers import equivalent
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.types import SamplingParams

#: the demo's sampling parameters (`ttc.demo.run_demo`, `ttc demo` defaults)
DEMO_PARAMS = SamplingParams(temperature=0.7, max_tokens=96, logprobs=True)


def open_text(path: str | Path, mode: str = "rt"):  # noqa: ANN201 - a text file, gzipped if it ends in .gz
    return gzip.open(path, mode, encoding="utf-8") if str(path).endswith(".gz") else open(path, mode[0])


def load_recording(path: str | Path) -> list[dict]:
    with open_text(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# -- 1. recording -----------------------------------------------------------------------------
async def _record(backend, problems, n: int, seed: int, concurrency: int, out, progress: bool) -> None:  # noqa: ANN001
    from tqdm.auto import tqdm

    from ttc.answers import answer_fields
    from ttc.context import Context

    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(problems), desc="record", disable=not progress, dynamic_ncols=True)
    lines: dict[int, str] = {}
    written = [0]

    async def one(index: int, problem) -> None:  # noqa: ANN001
        async with semaphore:
            ctx = Context(backend, seed=seed + index)
            prompt = await DEMO_PROMPT.render(problem, backend)
            prompt_len = len(prompt) if not isinstance(prompt, str) else len(await backend.tokenize(prompt))
            got = await ctx.generate(prompt, DEMO_PARAMS.replace(n=n, seed=seed + index))
        samples = []
        for completion, _usage in got:
            fields = answer_fields(completion.text, completion.finish_reason != "length")
            lps = completion.logprobs or ()
            samples.append({
                "text": completion.text, "answer": fields["answer"],
                "correct": fields["answer"] is not None and equivalent(fields["answer"], problem.answer),
                "prompt_tokens": prompt_len, "completion_tokens": len(completion.token_ids),
                "logprob_sum": float(sum(lps)), "mean_logprob": float(sum(lps) / len(lps)) if lps else None,
                "finish_reason": completion.finish_reason})
        lines[index] = json.dumps({"id": problem.id, "question": problem.question, "gold": problem.answer,
                                   "samples": samples})
        while written[0] in lines:  # write in problem order as soon as a prefix is complete
            out.write(lines.pop(written[0]) + "\n")
            out.flush()
            written[0] += 1
        bar.update(1)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    bar.close()


def cmd_record(args: argparse.Namespace) -> int:
    from ttc.backends.factory import make_backend
    from ttc.runner import run_sync

    problems = demo_problems(args.problems, seed=args.problem_seed)[args.start:]
    start = time.perf_counter()
    backend = make_backend(args.backend, None, args.url)
    loaded = time.perf_counter()
    try:
        with open_text(args.out, "wt") as out:
            # problem i keeps seed + i when recorded in parts (--start)
            run_sync(_record(backend, problems, args.n, args.seed + args.start, args.concurrency, out,
                             not args.quiet))
    finally:
        run_sync(backend.aclose())
    end = time.perf_counter()
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "backend": args.backend,
            "problems": len(problems), "start": args.start, "n": args.n, "seed": args.seed,
            "problem_seed": args.problem_seed,
            "params": {"temperature": DEMO_PARAMS.temperature, "max_tokens": DEMO_PARAMS.max_tokens},
            "load_seconds": round(loaded - start, 1), "sampling_seconds": round(end - loaded, 1),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(str(args.out).removesuffix(".gz") + ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta), file=sys.stderr)
    return 0


# -- 2. paired evaluation on the recording ----------------------------------------------------
def replay(records: list[dict]):  # noqa: ANN201 - (BankReplay, its problems)
    """A fresh `ttc.backends.bank_replay.BankReplay` of the recording (converted to a sample bank:
    `ttc.bank.convert`) and the problems it answers: each problem's requests get its samples in
    recorded order, billed the recorded prompt and completion tokens."""
    from ttc.backends.bank_replay import BankReplay
    from ttc.bank.convert import bank_from_recording

    backend = BankReplay(bank_from_recording(records))
    return backend, backend.problems()


def summarize(name: str, results: list, reference: list | None = None) -> dict:  # noqa: ANN001
    from ttc.eval.report import wilson_interval

    n = len(results)
    correct = sum(bool(r.is_correct()) for r in results)
    low, high = wilson_interval(correct, n)
    row = {"strategy": name, "problems": n, "errors": sum(not r.ok for r in results), "accuracy": correct / n,
           "ci95": [low, high], "tokens": sum(r.usage.total_tokens for r in results) / n,
           "completion_tokens": sum(r.usage.completion_tokens for r in results) / n,
           "samples": sum(sum(c.finish_reason != "cancelled" for c in r.candidates) for r in results) / n,
           "wall_seconds": sum(r.usage.wall_seconds for r in results)}
    if reference is not None:
        same = sum((a.answer is None and b.answer is None) or (a.answer is not None and b.answer is not None
                                                                and equivalent(a.answer, b.answer))
                   for a, b in zip(results, reference, strict=True))
        ref_correct = sum(bool(r.is_correct()) for r in reference)
        row["same_as_mv16"] = same / n
        row["acc_minus_mv16"] = (correct - ref_correct) / n
        row["tokens_vs_mv16"] = row["tokens"] / (sum(r.usage.total_tokens for r in reference) / n)
    return row


def offline_rows(records: list[dict], rpc_module=None) -> list[dict]:  # noqa: ANN001
    import ttc
    from ttc.runner import asolve_many, run_sync
    from ttc.stopping import BetaStop, WindowStop

    sample = ttc.Sample(params=DEMO_PARAMS, prompt=DEMO_PROMPT)

    def run(strategy, **kw):  # noqa: ANN001, ANN202
        backend, problems = replay(records)
        return run_sync(asolve_many(strategy, problems, backend, progress=False, seed=0, **kw))

    mv16 = run(ttc.MajorityVote(n=16, sample=sample))
    rows = [summarize("MajorityVote(16)", mv16, mv16)]
    mv8 = run(ttc.MajorityVote(n=8, sample=sample))
    rows.append(summarize("MajorityVote(8)", mv8, mv16))
    rows.append(summarize("Sample (1)", run(ttc.MajorityVote(n=1, sample=sample)), mv16))
    settings = [("AdaptiveVote beta c=0.95 batch=1", BetaStop(0.95), 1),
                ("AdaptiveVote beta c=0.95 batch=2", BetaStop(0.95), 2),
                ("AdaptiveVote beta c=0.95 batch=4", BetaStop(0.95), 4),
                ("AdaptiveVote beta c=0.99 batch=2", BetaStop(0.99), 2),
                ("AdaptiveVote beta c=0.8 batch=2", BetaStop(0.8), 2),
                ("AdaptiveVote esc w=4 batch=4", WindowStop(4), 4),
                ("AdaptiveVote esc w=2 batch=2", WindowStop(2), 2),
                ("AdaptiveVote esc w=3 batch=3", WindowStop(3), 3)]
    for name, rule, batch in settings:
        rows.append(summarize(name, run(ttc.AdaptiveVote(max_n=16, batch=batch, stop=rule, sample=sample)), mv16))
    total = sum(r.usage.total_tokens for r in mv8)
    for allocation in ("uniform", "adaptive"):
        for name, rule, batch in (("beta c=0.95 batch=2", BetaStop(0.95), 2), ("esc w=4 batch=4", WindowStop(4), 4)):
            shared = run(ttc.AdaptiveVote(max_n=16, batch=batch, stop=rule, sample=sample),
                         total_budget=ttc.Budget(tokens=total), allocation=allocation)
            row = summarize(f"shared {allocation}, AdaptiveVote {name}, total = MV(8)'s", shared, mv16)
            row["total_budget"] = total
            row["spent"] = shared[0].details["shared_budget"]["spent"]
            rows.append(row)
    shared = run(ttc.MajorityVote(n=16, sample=sample), total_budget=ttc.Budget(tokens=total), allocation="uniform")
    row = summarize("shared uniform, MajorityVote(16), total = MV(8)'s", shared, mv16)
    row["total_budget"], row["spent"] = total, shared[0].details["shared_budget"]["spent"]
    rows.append(row)
    if rpc_module is not None:
        rows += rpc_rows(rpc_module, records, mv16)
    return rows


def rpc_rows(module, records: list[dict], mv16: list) -> list[dict]:  # noqa: ANN001
    """RPC rows from h15r's offline `rpc_vote(answers, logprob_sums, token_counts, texts=...)`
    (ttc.strategies.rpc) on the same 16 recorded samples per problem (its default pruning)."""
    from ttc.eval.report import wilson_interval

    try:
        picked = [module.rpc_vote([x["answer"] for x in r["samples"]], [x["logprob_sum"] for x in r["samples"]],
                                  [x["completion_tokens"] for x in r["samples"]],
                                  texts=[x["text"] for x in r["samples"]])[0] for r in records]
    except Exception as exc:  # noqa: BLE001 - report, do not lose the other rows
        return [{"strategy": f"RPC(16): offline rpc_vote failed: {type(exc).__name__}: {exc}"}]
    n = len(records)
    correct = sum(p is not None and equivalent(p, r["gold"]) for p, r in zip(picked, records, strict=True))
    same = sum((p is None and m.answer is None)
               or (p is not None and m.answer is not None and equivalent(p, m.answer))
               for p, m in zip(picked, mv16, strict=True))
    tokens = sum(m.usage.total_tokens for m in mv16) / n  # the same 16 samples in one request
    completion = sum(m.usage.completion_tokens for m in mv16) / n
    return [{"strategy": "RPC(16) (ttc.strategies.rpc.rpc_vote, offline)", "problems": n, "accuracy": correct / n,
             "ci95": list(wilson_interval(correct, n)), "tokens": tokens, "completion_tokens": completion,
             "samples": 16.0, "same_as_mv16": same / n,
             "acc_minus_mv16": (correct - sum(bool(m.is_correct()) for m in mv16)) / n, "tokens_vs_mv16": 1.0}]


def format_rows(rows: list[dict]) -> str:
    head = (f"| {'strategy':<58} | acc | 95% CI | tokens/problem | completion tokens/problem | samples/problem "
            f"| = MV(16) | acc - MV(16) | tokens vs MV(16) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "accuracy" not in r:
            lines.append(f"| {r['strategy']} | | | | | | | | |")
            continue
        ci = r.get("ci95") or [float("nan")] * 2
        lines.append(f"| {r['strategy']:<58} | {r['accuracy']:.3f} | {ci[0]:.3f}-{ci[1]:.3f} | {r['tokens']:.1f} | "
                     f"{r.get('completion_tokens', float('nan')):.1f} | "
                     f"{r['samples']:.2f} | {r.get('same_as_mv16', float('nan')):.3f} | "
                     f"{r.get('acc_minus_mv16', float('nan')):+.3f} | {r.get('tokens_vs_mv16', float('nan')):.2f} |")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    records = load_recording(args.recording)
    if args.limit:
        records = records[: args.limit]
    rpc = None
    try:
        if args.rpc_file:  # a file from another branch, loaded against this tree's ttc
            import importlib.util

            spec = importlib.util.spec_from_file_location("ttc_rpc_offline", args.rpc_file)
            rpc = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(rpc)
        else:
            import importlib

            rpc = importlib.import_module("ttc.strategies.rpc")  # present once the RPC branch is merged
    except (ImportError, OSError) as exc:
        print(f"no RPC rows: ttc.strategies.rpc not importable ({exc})", file=sys.stderr)
    start = time.perf_counter()
    rows = offline_rows(records, rpc)
    print(format_rows(rows))
    for r in rows:
        if r["strategy"].startswith("AdaptiveVote") and "same_as_mv16" in r:
            met = r["same_as_mv16"] >= 0.97 and r["tokens_vs_mv16"] <= 0.5
            print(f"goal (same answer as MV(16) on >= 97% at <= half its tokens) {'MET' if met else 'not met'} by "
                  f"{r['strategy']}: {100 * r['same_as_mv16']:.1f}% same, {r['tokens_vs_mv16']:.2f}x tokens")
    print(f"({len(records)} problems from {args.recording}; paired: every row replays the same recorded samples; "
          f"evaluated in {time.perf_counter() - start:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"recording": str(args.recording), "problems": len(records),
                                               "rows": rows}, indent=1) + "\n")
    return 0


# -- 3. live run ------------------------------------------------------------------------------
def cmd_live(args: argparse.Namespace) -> int:
    """AdaptiveVote on the real model, on the first problems of the recording: its real tokens vs
    the recorded MajorityVote(16)'s (the recording is a live MajorityVote(16) run)."""
    import ttc
    from ttc.backends.factory import make_backend
    from ttc.runner import asolve_many, run_sync
    from ttc.stopping import BetaStop, WindowStop

    records = load_recording(args.recording)[: args.problems]
    problems = [ttc.Problem(question=r["question"], answer=r["gold"], id=r["id"]) for r in records]
    sample = ttc.Sample(params=DEMO_PARAMS, prompt=DEMO_PROMPT)
    rule = BetaStop(0.95) if args.rule == "beta" else WindowStop(args.batch)
    extra = {"kv_cache_memory_bytes": int(args.kv_gib * 2**30)} if args.backend == "vllm" else {}
    backend = make_backend(args.backend, None, args.url, **extra)
    try:
        start = time.perf_counter()
        live = run_sync(asolve_many(ttc.AdaptiveVote(max_n=16, batch=args.batch, stop=rule, sample=sample),
                                    problems, backend, seed=args.seed, concurrency=args.concurrency,
                                    progress=not args.quiet))
        seconds = time.perf_counter() - start
    finally:
        run_sync(backend.aclose())
    backend, replayed = replay(records)
    mv16 = run_sync(asolve_many(ttc.MajorityVote(n=16, sample=sample), replayed, backend, progress=False))
    row = summarize(f"live AdaptiveVote {rule.name} batch={args.batch}", live, mv16)
    row["wall_seconds"] = seconds
    rec = summarize("recorded MajorityVote(16) (live when recorded)", mv16, mv16)
    print(format_rows([rec, row]))
    print(f"(live: {len(problems)} problems in {seconds:.1f} s wall; stop reasons: "
          f"{sorted((r.details.get('stop_reason'), 1) for r in live)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [rec, row], "seconds": seconds, "command": " ".join(sys.argv),
                                               "stop_reasons": [r.details.get("stop_reason") for r in live]},
                                              indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="sample n candidates per demo problem once and save them")
    rec.add_argument("--problems", type=int, default=200)
    rec.add_argument("--start", type=int, default=0,
                     help="record problems start.. of the --problems (to extend a partial recording)")
    rec.add_argument("--n", type=int, default=16)
    rec.add_argument("--seed", type=int, default=0, help="problem i is sampled with seed + i")
    rec.add_argument("--problem-seed", type=int, default=0, help="demo_problems(seed=)")
    rec.add_argument("--backend", default="vllm", choices=["vllm", "transformers", "openai"])
    rec.add_argument("--url", default=None)
    rec.add_argument("--concurrency", type=int, default=16, help="problems in flight at once")
    rec.add_argument("--out", default="benchmarks/results/adaptive_samples.jsonl")
    rec.add_argument("--quiet", action="store_true")
    rec.set_defaults(func=cmd_record)
    ev = sub.add_parser("evaluate", help="paired evaluation of every strategy on a recording")
    ev.add_argument("recording")
    ev.add_argument("--limit", type=int, default=None, help="first N problems only")
    ev.add_argument("--json", default=None, help="write the rows here")
    ev.add_argument("--rpc-file", default=None, help="load rpc_vote from this file instead of ttc.strategies.rpc")
    ev.set_defaults(func=cmd_evaluate)
    live = sub.add_parser("live", help="AdaptiveVote on the real model, first problems of a recording")
    live.add_argument("--recording", default="benchmarks/results/adaptive_samples.jsonl")
    live.add_argument("--problems", type=int, default=20)
    live.add_argument("--rule", choices=["beta", "esc"], default="beta")
    live.add_argument("--batch", type=int, default=2)
    live.add_argument("--seed", type=int, default=1000, help="not the recording's seed: fresh samples")
    live.add_argument("--backend", default="vllm", choices=["vllm", "transformers", "openai"])
    live.add_argument("--url", default=None)
    live.add_argument("--concurrency", type=int, default=20)
    live.add_argument("--kv-gib", type=float, default=0.5, help="vLLM KV cache (GiB): small, the machine is shared")
    live.add_argument("--json", default=None)
    live.add_argument("--quiet", action="store_true")
    live.set_defaults(func=cmd_live)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
