"""Adaptive compute on a real model, paired: record 16 samples per problem once, evaluate every
stopping rule on prefixes of the same recorded stream (issue 15).

    # 1. record (once): 16 samples per demo problem on the embedded SmolLM2 (vLLM in-process)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/adaptive.py record --problems 200 \\
        --out benchmarks/results/adaptive_samples.jsonl
    # 2. evaluate on the recording (seconds), plus a live AdaptiveVote run on a subset
    .venv/bin/python benchmarks/adaptive.py evaluate benchmarks/results/adaptive_samples.jsonl.gz

The recording is one JSON line per problem, samples in the order the model produced them:
{"id", "question", "gold", "samples": [{"text", "answer", "correct", "prompt_tokens",
"completion_tokens", "logprob_sum", "mean_logprob", "finish_reason"}]}. `prompt_tokens` is the
prompt's length, the same for every sample of a problem: what a request for that sample alone
would bill; the evaluation decides how many requests (batches) a strategy would have sent.
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

    problems = demo_problems(args.problems, seed=args.problem_seed)
    start = time.perf_counter()
    backend = make_backend(args.backend, None, args.url)
    loaded = time.perf_counter()
    try:
        with open_text(args.out, "wt") as out:
            run_sync(_record(backend, problems, args.n, args.seed, args.concurrency, out, not args.quiet))
    finally:
        run_sync(backend.aclose())
    end = time.perf_counter()
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "backend": args.backend,
            "problems": len(problems), "n": args.n, "seed": args.seed, "problem_seed": args.problem_seed,
            "params": {"temperature": DEMO_PARAMS.temperature, "max_tokens": DEMO_PARAMS.max_tokens},
            "load_seconds": round(loaded - start, 1), "sampling_seconds": round(end - loaded, 1),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(str(args.out).removesuffix(".gz") + ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="sample n candidates per demo problem once and save them")
    rec.add_argument("--problems", type=int, default=200)
    rec.add_argument("--n", type=int, default=16)
    rec.add_argument("--seed", type=int, default=0, help="problem i is sampled with seed + i")
    rec.add_argument("--problem-seed", type=int, default=0, help="demo_problems(seed=)")
    rec.add_argument("--backend", default="vllm", choices=["vllm", "transformers", "openai"])
    rec.add_argument("--url", default=None)
    rec.add_argument("--concurrency", type=int, default=16, help="problems in flight at once")
    rec.add_argument("--out", default="benchmarks/results/adaptive_samples.jsonl")
    rec.add_argument("--quiet", action="store_true")
    rec.set_defaults(func=cmd_record)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
