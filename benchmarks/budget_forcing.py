"""Budget forcing (s1) and the Dynasor probe inside the thinking, on the thinking test model.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/budget_forcing.py            # 40 problems
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/budget_forcing.py --problems 10 --budgets 16,64

Measured on the spot, nothing hard-coded: the thinking test model (`ttc.models.smollm2_thinking()`)
in process through vLLM (`VLLMEngine`, the default) or transformers, greedy, on held-out arithmetic
problems of the kind it was trained on (`ttc.thinking_traces`, a seed it was not trained on).

1. The s1 curve: accuracy, thinking tokens and completion tokens per problem against the thinking
   budget (`BudgetForcing(budget=B)`), then the budget extended by "Wait" (`waits=1, 2`), beside plain
   sampling (the model's own thinking, read to its end).
2. The Dynasor probe inside the thinking: `EarlyExit(AnswerConsistency(...))` (the probe closes the
   thinking and asks for the boxed answer every `--every` tokens) against reading every trace to its
   end: accuracy and tokens (generated, probes included; and the billed total).

Writes a JSON record (`--out`) and the plot of section 1 (`--plot`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ttc
from ttc.probes import AnswerConsistency
from ttc.runner import solve_many
from ttc.strategies.budget_forcing import BudgetForcing
from ttc.strategies.early_exit import EarlyExit
from ttc.thinking import FORMATS
from ttc.types import Problem, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=512)
#: the extension string: the test model re-checks its last step after a blank line and "Wait,"
WAIT = "\n\nWait"


def problems(count: int, seed: int) -> list[Problem]:
    from ttc.thinking_traces import arithmetic_traces

    return [Problem(question=t.question, answer=str(t.answer), id=f"arith-{seed}-{i}")
            for i, t in enumerate(arithmetic_traces(count, seed))]


def backend(kind: str) -> ttc.backends.Generator:
    path = ttc.models.smollm2_thinking()
    if kind == "vllm":
        from ttc.backends.vllm_engine import VLLMEngine

        return VLLMEngine(path, dtype="float32", max_model_len=2048, enforce_eager=True)
    return ttc.backends.Transformers(path, device="cpu")


def row(name: str, results: list[ttc.Result], seconds: float, **extra) -> dict:
    n = max(len(results), 1)
    cands = [c for r in results for c in r.candidates]
    return {"strategy": name, **extra, "problems": len(results), "errors": sum(not r.ok for r in results),
            "accuracy": sum(bool(r.is_correct()) for r in results) / n,
            "thinking_tokens": sum(r.usage.reasoning_tokens for r in results) / n,
            "completion_tokens": sum(r.usage.completion_tokens for r in results) / n,
            "total_tokens": sum(r.usage.total_tokens for r in results) / n,
            "forced": sum(c.scores.get("forced", 0.0) for c in cands) / n,
            "max_thinking": max((c.completion.thinking.num_tokens for c in cands
                                 if c.completion is not None and c.completion.thinking is not None), default=0),
            "seconds": round(seconds, 1)}


def run(name: str, strategy: ttc.Strategy, items: list[Problem], llm, **extra) -> dict:
    start = time.monotonic()
    results = solve_many(strategy, items, llm, concurrency=64, progress=False, seed=0)
    out = row(name, results, time.monotonic() - start, **extra)
    print(json.dumps(out), flush=True)
    return out


def plot(curve: list[dict], waits: list[dict], plain: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["thinking_tokens"] for r in curve], [r["accuracy"] for r in curve], "o-", label="budget B")
    for r in curve:
        ax.annotate(str(r["budget"]), (r["thinking_tokens"], r["accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    if waits:
        ax.plot([r["thinking_tokens"] for r in waits], [r["accuracy"] for r in waits], "s--",
                label=f"B={waits[0]['budget']} + Wait x" + ", x".join(str(r["waits"]) for r in waits))
    ax.axhline(plain["accuracy"], color="grey", linestyle=":", label="own thinking (no forcing)")
    ax.set_xlabel("thinking tokens per problem (mean)")
    ax.set_ylabel("accuracy")
    ax.set_title("Budget forcing on SmolLM2-135M-Thinking")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--seed", type=int, default=20261207, help="problem seed (held out from training)")
    parser.add_argument("--budgets", default="16,32,64,128,256")
    parser.add_argument("--waits", default="1,2", help="Wait extensions, at the largest budget")
    parser.add_argument("--every", type=int, default=16, help="Dynasor probe interval (tokens)")
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/budget_forcing.json")
    parser.add_argument("--plot", default="docs/img/budget_forcing.png")
    args = parser.parse_args()

    items = problems(args.problems, args.seed)
    llm = backend(args.backend)
    budgets = [int(b) for b in args.budgets.split(",") if b]
    record: dict = {"problems": args.problems, "seed": args.seed, "backend": args.backend}
    try:
        plain = run("sample (own thinking)", ttc.Sample(GREEDY), items, llm)
        plain["budget"] = "-"
        curve = [run("budget_forcing", BudgetForcing(budget=b, params=GREEDY, engine="never"), items, llm, budget=b)
                 for b in budgets]
        top = max(budgets)
        waits = [run("budget_forcing + wait", BudgetForcing(budget=top, waits=k, wait=WAIT, params=GREEDY), items, llm,
                     budget=top, waits=k) for k in (int(w) for w in args.waits.split(",") if w)]
        record |= {"plain": plain, "curve": curve, "waits": waits}
        if not args.skip_probe:
            cue = FORMATS["deepseek_r1"].answer_cue
            probe = EarlyExit(AnswerConsistency(every=args.every, window=2, suffix=cue), params=GREEDY)
            record["dynasor"] = run(f"early_exit (Dynasor every {args.every})", probe, items, llm,
                                    every=args.every)
    finally:
        if hasattr(llm, "close"):
            llm.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    plot(record["curve"], record["waits"], record["plain"], Path(args.plot))
    print("strategy budget waits accuracy thinking/problem completion/problem total/problem forced max_thinking")
    rows = [record["plain"], *record["curve"], *record["waits"]] + ([record["dynasor"]] if "dynasor" in record else [])
    for r in rows:
        print(f"{r['strategy']:<34} {r.get('budget', '-')!s:>5} {r.get('waits', '-')!s:>2} {r['accuracy']:.3f} "
              f"{r['thinking_tokens']:7.1f} {r['completion_tokens']:7.1f} {r['total_tokens']:8.1f} "
              f"{r['forced']:.2f} {r['max_thinking']}")


if __name__ == "__main__":
    main()
