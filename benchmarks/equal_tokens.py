"""Issue 25's new strategies against MajorityVote at equal tokens, on the demo problems through vLLM.

Each strategy runs live on a vLLM server over the first `--problems` demo problems; MajorityVote is
the real class replayed (`ttc.backends.bank_replay.BankReplay`) over a recorded sample bank of the
same problems (`ttc record`: same model, prompt and sampling) at every n up to the bank's K, and is
reported at the n whose mean tokens per problem are nearest the strategy's (said whether within 10 %),
with the nearest n below and above. Tokens per problem are every token any model read or wrote for
the problem: billed prompt + completion + verifier tokens (`Usage`). Accuracy with Wilson 95 %
intervals (a failed problem counts as wrong); requests per problem; the server's own counts
(`/metrics` deltas), kept only when the server generated no more tokens than this run counted
(i.e. nothing else used it meanwhile; otherwise they are reported as shared and left out).

    # the bank (once; 200 problems x 40 samples, demo prompt, temperature 0.7, 96 tokens: 32, then 8
    # more joined, as measured; parallel tempering and Archon spend more than 32 samples' tokens)
    ttc record --dataset demo --limit 200 --k 32 --backend openai --url http://127.0.0.1:PORT/v1 \
        --output demo200x32.jsonl
    ttc record --dataset demo --limit 200 --k 8 --seed 1000 --backend openai --url http://127.0.0.1:PORT/v1 \
        --output demo200x8_seed1000.jsonl
    ttc join demo200x32.jsonl demo200x8_seed1000.jsonl --output demo200x40.jsonl
    # one strategy (or several, one after the other; `all` = every one), resumable per problem
    nice -n 10 python benchmarks/equal_tokens.py genselect --url http://127.0.0.1:PORT/v1 --problems 200 \
        --bank demo200x40.jsonl --out-dir out/
    # the table of what out/ holds, running nothing
    python benchmarks/equal_tokens.py all --report-only --problems 200 --bank demo200x40.jsonl --out-dir out/ \
        --markdown table.md

Each finished problem is one JSON line in `OUT_DIR/STRATEGY.jsonl` (problems already there are not
run again; failed ones are retried); problem i is solved with seed `--seed + i`, so a resumed run
samples what an uninterrupted one would. Each strategy's row goes to `OUT_DIR/STRATEGY.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import ttc
from ttc.backends.bank_replay import BankReplay
from ttc.bank.format import Bank, load_bank
from ttc.bank.record import params_record
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.eval.report import wilson_interval
from ttc.runner import asolve_many
from ttc.steps import StepConfig
from ttc.verifiers import FlexVerifier, LLMJudge

#: the sampling every strategy's candidates use, and the bank must have been recorded with
SAMPLING = ttc.SamplingParams(temperature=0.7, max_tokens=96)

_METRICS = {"requests": "vllm:request_success_total", "prompt_tokens": "vllm:prompt_tokens_total",
            "generation_tokens": "vllm:generation_tokens_total"}


@dataclass(frozen=True)
class Setting:
    """A strategy as benchmarked: its label (with its settings) and how to build it."""

    label: str
    build: Callable[[], ttc.Strategy]


def _sample() -> ttc.Strategy:
    return ttc.Sample(params=SAMPLING, prompt=DEMO_PROMPT)


def _steps() -> dict:
    """Step search over the same sampling: at most 2 steps of at most 48 tokens (a particle's 96 tokens, a
    sample's max_tokens), each judged by LLMJudge on the same server."""
    return {"prm": LLMJudge(), "steps": StepConfig(max_steps=2, max_step_tokens=48),
            "params": SAMPLING.replace(max_tokens=48), "prompt": DEMO_PROMPT}


def _archon() -> ttc.Strategy:
    """The registry's `archon` stack over the demo prompt: each of 3 samples critiqued, ranked, the top 2
    fused (with 4 samples and the top 3 it spends ~2,200 tokens a problem, beyond MajorityVote(40) of a
    40-sample bank, ~2,000)."""
    stack = ttc.Fuse(k=2, sample=ttc.Rank(k=2, sample=ttc.Critique(n=3, sample=_sample())))
    stack.name = "archon"
    return stack


#: the new strategies of issue 25 at modest settings (each ~10 min for 200 problems on the 2-core CPU)
SETTINGS: dict[str, Setting] = {
    "genselect": Setting("GenSelect(n=4)", lambda: ttc.GenSelect(n=4, sample=_sample())),
    "rsa": Setting("RSA(N=4, K=2, T=1)", lambda: ttc.RSA(population=4, k=2, rounds=1, sample=_sample())),
    "fuse": Setting("Fuse(k=3, n=4)", lambda: ttc.Fuse(k=3, n=4, sample=_sample())),
    "archon": Setting("Archon(critique n=3 -> rank k=2 -> fuse k=2)",
                      lambda: _archon()),
    "sdv": Setting("SolveDetectVerify(every=16, fast=4 x 48 tokens, slow<=256 tokens)",
                   lambda: ttc.SolveDetectVerify(verifier=FlexVerifier(fast=4, slow_tokens=256), params=SAMPLING,
                                                 prompt=DEMO_PROMPT, detector=ttc.probes.SolutionComplete(every=16))),
    "particle_gibbs": Setting("ParticleGibbs(particles=3, iterations=2; 2 steps x 48 tokens, LLMJudge)",
                              lambda: ttc.ParticleGibbs(particles=3, iterations=2, **_steps())),
    "parallel_tempering": Setting(
        "ParallelTempering(particles=2, iterations=2, temperatures=(1, 4); 2 steps x 48 tokens, LLMJudge)",
        lambda: ttc.ParallelTempering(particles=2, iterations=2, temperatures=(1.0, 4.0), **_steps())),
}


# --- the bank ---------------------------------------------------------------------------------------

def checked_bank(path: str, problems: list[ttc.Problem], model: str | None) -> Bank:
    """The bank's entries for `problems`, in order; refuses a bank recorded with another prompt,
    sampling or model (when `model` is given), or lacking any of the problems."""
    bank = load_bank(path)
    header = bank.header
    if header.get("prompt") != repr(DEMO_PROMPT):
        raise SystemExit(f"{path} was recorded with the prompt {header.get('prompt')!r}, not the demo prompt "
                         f"{DEMO_PROMPT!r} the strategies use")
    want = params_record(SAMPLING)
    got = dict(header["params"])
    differ = {k: (got.get(k), v) for k, v in want.items() if k != "top_logprobs" and got.get(k) != v}
    if differ:
        raise SystemExit(f"{path}'s sampling differs from the strategies' (bank, live): {differ}")
    if model is not None and header["model"] != model:
        raise SystemExit(f"{path} was recorded from {header['model']!r}, the server serves {model!r} "
                         "(--any-model to compare anyway)")
    entries = {p.problem_id: p for p in bank.problems}
    missing = [p.id for p in problems if p.id not in entries]
    if missing:
        raise SystemExit(f"{path} holds {len(bank.problems)} complete problems; {len(missing)} of the first "
                         f"{len(problems)} demo problems are not among them (first: {missing[0]})")
    for p in problems:
        if entries[p.id].question != p.question:
            raise SystemExit(f"{path}: problem {p.id}'s question differs from the demo problem's")
    return Bank(header, tuple(entries[p.id] for p in problems), bank.path)


def majority_curve(bank: Bank) -> list[dict]:
    """The real MajorityVote(n) replayed on the bank at every n from 1 to K: one row per n."""
    rows = []
    for n in range(1, bank.k + 1):
        backend = BankReplay(bank)
        vote = ttc.MajorityVote(n=n, sample=_sample())
        results = ttc.solve_many(vote, backend.problems(), backend, concurrency=256, seed=0, progress=False)
        rows.append(summary(f"MajorityVote(n={n})", list(results)) | {"n": n})
    return rows


def matched(curve: list[dict], target: float) -> dict:
    """The vote nearest `target` tokens per problem, and its neighbours below and above `target`."""
    nearest = min(curve, key=lambda r: abs(r["tokens_per_problem"] - target))
    below = [r for r in curve if r["tokens_per_problem"] <= target]
    above = [r for r in curve if r["tokens_per_problem"] >= target]
    out = {"nearest": nearest, "within_10_percent": abs(nearest["tokens_per_problem"] - target) <= 0.1 * target,
           "below": below[-1] if below else None, "above": above[0] if above else None}
    if not above:
        out["note"] = (f"MajorityVote(n={curve[-1]['n']}), the bank's largest n, spends "
                       f"{curve[-1]['tokens_per_problem']:.0f} tokens per problem, under {target:.0f}")
    return out


# --- rows -------------------------------------------------------------------------------------------

def summary(label: str, results: list[ttc.Result]) -> dict:
    """Accuracy (Wilson 95 %), tokens, requests of a list of results (one per problem)."""
    correct = sum(bool(r.ok and r.is_correct()) for r in results)
    low, high = wilson_interval(correct, len(results))
    usage = [r.usage for r in results]
    return {"strategy": label, "problems": len(results), "correct": correct, "accuracy": correct / len(results),
            "ci95": [round(low, 4), round(high, 4)],
            "tokens_per_problem": statistics.mean(u.total_tokens + u.verifier_tokens for u in usage),
            "prompt_tokens": statistics.mean(u.prompt_tokens for u in usage),
            "completion_tokens": statistics.mean(u.completion_tokens for u in usage),
            "verifier_tokens": statistics.mean(u.verifier_tokens for u in usage),
            "requests": statistics.mean(u.generator_calls + u.verifier_calls for u in usage),
            "failed": sum(not r.ok for r in results)}


def server_counts(url: str) -> dict[str, float]:
    """The server's running totals (summed over label sets) of the counters in `_METRICS`."""
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for key, metric in _METRICS.items():
        pattern = re.compile(rf"^{re.escape(metric)}(?:{{[^}}]*}})?\s+([0-9.eE+-]+)$", re.MULTILINE)
        out[key] = sum(float(v) for v in pattern.findall(text))
    return out


def server_model(url: str) -> str:
    with urllib.request.urlopen(f"{url.rstrip('/')}/models", timeout=10) as r:
        return json.load(r)["data"][0]["id"]


# --- the live run -----------------------------------------------------------------------------------

def _record(setting: Setting, problem: ttc.Problem, r: ttc.Result) -> dict:
    details = r.details
    return {"id": problem.id, "setting": setting.label, "ok": r.ok, "answer": r.answer,
            "correct": bool(r.ok and r.is_correct()), "error": r.error, "usage": r.usage.to_dict(),
            "wall_seconds": r.usage.wall_seconds,
            "details": details.to_dict() if r.ok and hasattr(details, "to_dict") else None}


def _result(problem: ttc.Problem, record: dict) -> ttc.Result:
    usage = ttc.Usage(**{k: v for k, v in record["usage"].items() if k in ttc.Usage.__dataclass_fields__})
    return ttc.Result(problem=problem, answer=record["answer"], candidates=[], usage=usage, strategy="recorded",
                      error=record["error"])


def load_done(path: str) -> tuple[dict[str, dict], list[dict]]:
    """The last record of each problem in a strategy's JSONL, and its run lines (server deltas)."""
    done: dict[str, dict] = {}
    runs: list[dict] = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: that problem is run again
                if "id" in d:
                    done[d["id"]] = d
                elif "run" in d:
                    runs.append(d)
    return done, runs


async def run_live(setting: Setting, todo: list[tuple[int, ttc.Problem]], url: str, path: str,
                   concurrency: int, seed: int, stop_after: float | None = None) -> dict:
    """Solve `todo` (index, problem) on the server, appending each finished problem to `path`; the
    run's line (wall time, the server's counter deltas, this run's own token count). After
    `stop_after` seconds no new problem starts (those in flight finish)."""
    llm = ttc.backends.OpenAICompatible(url)
    strategy = setting.build()
    gate = asyncio.Semaphore(concurrency)
    own = {"problems": 0, "tokens": 0, "completion_tokens": 0, "verifier_tokens": 0, "requests": 0}
    before = server_counts(url)
    start = time.monotonic()
    with open(path, "a") as out:
        async def one(index: int, problem: ttc.Problem) -> None:
            async with gate:
                if stop_after is not None and time.monotonic() - start > stop_after:
                    return
                result, = await asolve_many(strategy, [problem], llm, concurrency=1, seed=seed + index,
                                            progress=False, warn=False)
            u = result.usage
            own["problems"] += 1
            own["tokens"] += u.total_tokens + u.verifier_tokens
            own["completion_tokens"] += u.completion_tokens
            own["verifier_tokens"] += u.verifier_tokens
            own["requests"] += u.generator_calls + u.verifier_calls
            out.write(json.dumps(_record(setting, problem, result)) + "\n")
            out.flush()
            print(f"  {problem.id}: {'ok' if result.ok else 'FAILED'} answer={result.answer!r} "
                  f"tokens={u.total_tokens + u.verifier_tokens} {u.wall_seconds:.1f}s", file=sys.stderr, flush=True)

        try:
            await asyncio.gather(*(one(i, p) for i, p in todo))
        finally:
            await llm.aclose()
            after = server_counts(url)
            seconds = round(time.monotonic() - start, 1)
            run = {"run": setting.label, "problems": own.pop("problems"), "wall_seconds": seconds,
                   "server": {k: after[k] - before[k] for k in after}, "own": own,
                   "load_average": os.getloadavg(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            run["alone"] = ran_alone(run)
            out.write(json.dumps(run) + "\n")
    print(json.dumps(run), file=sys.stderr, flush=True)
    return run


def ran_alone(run: dict) -> bool:
    """Whether nothing else used the server during `run`: the server answered no more requests than the
    run sent (a few capability probes of slack) and generated no more than the run's completions and
    verifier calls (whose prompts and outputs bound what the verifier generated; 2 % for streams closed
    early). The request count is the tight test: another client's requests show in it at once."""
    own, server = run["own"], run["server"]
    generated = own["completion_tokens"] + own["verifier_tokens"]
    return (server["requests"] <= 1.02 * own["requests"] + 10
            and server["generation_tokens"] <= 1.02 * generated + 1)


def strategy_row(name: str, problems: list[ttc.Problem], path: str) -> dict | None:
    setting = SETTINGS[name]
    done, runs = load_done(path)
    other = {d.get("setting") for d in done.values()} - {setting.label}
    if other:
        raise SystemExit(f"{path} holds results of {sorted(map(str, other))}, not of {setting.label}: "
                         "use another --out-dir")
    graded = [p for p in problems if p.id in done]
    if not graded:
        return None
    row = summary(setting.label, [_result(p, done[p.id]) for p in graded]) | {"key": name}
    row["complete"] = len(graded) == len(problems)
    row["wall_seconds"] = sum(r["wall_seconds"] for r in runs)
    row["seconds_per_problem"] = statistics.mean(done[p.id]["wall_seconds"] for p in graded)
    row["load_average"] = [r["load_average"] for r in runs]
    if runs and all(ran_alone(r) for r in runs) and sum(r["problems"] for r in runs) == len(graded):
        server = {k: sum(r["server"][k] for r in runs) / len(graded) for k in _METRICS}
        row["server_per_problem"] = server
    else:
        row["server_per_problem"] = None
        row["server_note"] = ("the server was shared during the run (it generated more than this run counted), "
                              "or the file holds problems from runs without counts: /metrics deltas left out")
    if name == "sdv":
        stops = [done[p.id]["details"]["stopped_by"] for p in graded if done[p.id]["details"]]
        row["stopped_by"] = {s: stops.count(s) for s in sorted(set(stops))}
    return row


# --- report -----------------------------------------------------------------------------------------

def _acc(r: dict) -> str:
    return f"{r['accuracy']:.3f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})"


def markdown(rows: list[dict], bank: str) -> str:
    lines = ["| strategy | problems | accuracy (95% CI) | tokens/problem | requests/problem | server tokens/problem "
             "| wall s | MajorityVote at equal tokens | its accuracy (95% CI) | its tokens/problem | within 10% |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s, m = row["strategy"], row["majority"]
        v = m["nearest"]
        server = s.get("server_per_problem")
        server_text = (f"{server['prompt_tokens'] + server['generation_tokens']:.0f}" if server else "shared")
        lines.append(f"| {s['strategy']} | {s['problems']} | {_acc(s)} | {s['tokens_per_problem']:.0f} | "
                     f"{s['requests']:.1f} | {server_text} | {s['wall_seconds']:.0f} | n={v['n']} | {_acc(v)} | "
                     f"{v['tokens_per_problem']:.0f} | {'yes' if m['within_10_percent'] else 'no'} |")
    lines += ["", f"MajorityVote replayed from `{bank}` (the real class on `BankReplay`); the nearest n on "
                  "either side of each strategy's tokens:", ""]
    for row in rows:
        m = row["majority"]
        sides = [f"{k}: n={m[k]['n']} {_acc(m[k])} at {m[k]['tokens_per_problem']:.0f} tokens"
                 for k in ("below", "above") if m[k]]
        note = f" ({m['note']})" if "note" in m else ""
        lines.append(f"- {row['strategy']['strategy']}: " + "; ".join(sides) + note)
    return "\n".join(lines) + "\n"


def recorded_args(args: argparse.Namespace) -> dict:
    """The command's arguments as the JSON keeps them: file names without their folders, no URL (a
    results file committed to the repository must hold no machine path)."""
    named = {k: os.path.basename(os.path.normpath(v)) for k in ("bank", "out_dir", "markdown", "json")
             if isinstance(v := getattr(args, k, None), str)}
    return vars(args) | named | {"url": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("strategies", nargs="+", choices=[*SETTINGS, "all"], help="run one after the other")
    ap.add_argument("--url", help="a running vLLM server's /v1 URL (needed unless --report-only)")
    ap.add_argument("--bank", required=True, help="a ttc-bank file of the same problems (ttc record)")
    ap.add_argument("--problems", type=int, default=200, help="the first N demo problems")
    ap.add_argument("--out-dir", default="out", help="per-strategy JSONL (resumed) and JSON rows")
    ap.add_argument("--concurrency", type=int, default=16, help="problems in flight at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-after", type=float, help="start no new problem after this many seconds (per "
                    "strategy; those in flight finish, the rest wait for the next run)")
    ap.add_argument("--any-model", action="store_true", help="accept a bank recorded under another model name")
    ap.add_argument("--report-only", action="store_true", help="run nothing; report what --out-dir holds")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--json", help="write every row (and the MajorityVote curve) here")
    args = ap.parse_args()
    names = list(SETTINGS) if "all" in args.strategies else list(dict.fromkeys(args.strategies))
    if not args.report_only and not args.url:
        ap.error("--url is needed to run strategies (or --report-only)")
    problems = demo_problems(args.problems)
    model = None if args.any_model or args.report_only else server_model(args.url)
    bank = checked_bank(args.bank, problems, model)
    os.makedirs(args.out_dir, exist_ok=True)
    curves: dict[tuple[int, ...], list[dict]] = {}
    rows = []
    for name in names:
        path = os.path.join(args.out_dir, f"{name}.jsonl")
        if not args.report_only:
            strategy_row(name, problems[:0], path)  # refuses a file of other settings before running
            done, _ = load_done(path)
            todo = [(i, p) for i, p in enumerate(problems) if not (p.id in done and done[p.id]["ok"])]
            if todo:
                print(f"{name}: {len(todo)} problems to run", file=sys.stderr, flush=True)
                asyncio.run(run_live(SETTINGS[name], todo, args.url, path, args.concurrency, args.seed,
                                     args.stop_after))
        row = strategy_row(name, problems, path)
        if row is None:
            continue
        done, _ = load_done(path)
        key = tuple(i for i, p in enumerate(problems) if p.id in done)
        if key not in curves:
            sub = Bank(bank.header, tuple(bank.problems[i] for i in key), bank.path)
            curves[key] = majority_curve(sub)
        entry = {"strategy": row, "majority": matched(curves[key], row["tokens_per_problem"]),
                 "bank": os.path.basename(args.bank), "bank_fingerprint": bank.header["fingerprint"]}
        rows.append(entry)
        with open(os.path.join(args.out_dir, f"{name}.json"), "w") as f:
            json.dump(entry | {"curve": curves[key]}, f, indent=1)
        print(json.dumps({"strategy": row, "majority_nearest": entry["majority"]["nearest"],
                          "within_10_percent": entry["majority"]["within_10_percent"]}), flush=True)
    if args.markdown and rows:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, os.path.basename(args.bank)))
    if args.json:
        with open(args.json, "w") as f:
            curve_rows = [{"problems": len(k), "rows": v} for k, v in curves.items()]
            json.dump({"args": recorded_args(args), "rows": rows, "curves": curve_rows}, f, indent=1)


if __name__ == "__main__":
    main()
