"""Where a step search's time goes on the transformers backend.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_profile.py            # ParticleFilter(8)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_profile.py beam       # BeamSearch(2x4)

Wraps the backend's forward pass (split into decode steps and multi-token prefills), prefill,
sampling and stop-string checks with timers, and runs the search of `step_throughput.py` on 3 demo
problems with the prefix cache, then one-shot sampling of the same tokens per candidate. Prints
seconds and calls of each part, tokens per CPU second and mean rows per decode step of both.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_throughput as st  # noqa: E402

from ttc.backends.transformers import Transformers, decoding  # noqa: E402
from ttc.demo import demo_problems  # noqa: E402


def timed(record: dict, name: str, fn, kind=None):
    def wrapper(*args):
        start = time.perf_counter()
        out = fn(*args)
        label = kind(*args) if kind else name
        entry = record[label]
        entry[0] += 1
        entry[1] += time.perf_counter() - start
        return out
    return wrapper


def main() -> None:
    strategy = sys.argv[1] if len(sys.argv) > 1 else "particle"
    args = st.argparse.Namespace(strategy=strategy, particles=8, width=2, expansions=4, max_steps=4,
                                 step_tokens=32, temperature=0.8, seed=0, threads=1, problems=3)
    torch.set_num_threads(1)
    llm = Transformers(None, device="cpu")
    record: dict = collections.defaultdict(lambda: [0, 0.0])
    decoder = llm._decoder  # the model thread's batch decoder (ttc.backends.transformers.decoding)
    decoder.forward = timed(record, "forward", decoder.forward,
                            kind=lambda ids, *rest: "forward (decode)" if ids.shape[1] == 1 else "forward (prefill)")
    llm._scheduler.decode_batch = decoder.decode_batch = timed(record, "decode_batch", decoder.decode_batch)
    decoder.prefill = timed(record, "prefill", decoder.prefill)
    for name in ("sample_tokens", "finished"):
        setattr(decoding, name, timed(record, name, getattr(decoding, name)))
    problems = demo_problems(args.problems, seed=args.seed)

    async def run() -> None:
        await st.run_one_shot(llm, problems, 4, args)  # warm-up
        per = 1
        for name in ("search", "one-shot"):
            record.clear()
            llm.prefix_cache.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            if name == "search":
                r = await st.run_search(llm, problems, args)
                per = max(1, round(r["tokens"] / (len(problems) * st.lanes(args))))
            else:
                r = await st.run_one_shot(llm, problems, per, args)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{name}: {r['tokens']} tokens, {cpu:.1f} s CPU, {wall:.1f} s wall, {r['tokens'] / cpu:.1f} "
                  f"tokens per CPU second, {r['batches']} batches, "
                  f"{r['decode_rows'] / max(1, r['decode_steps']):.1f} rows per decode step")
            for part, (calls, seconds) in sorted(record.items()):
                print(f"    {part}: {calls} calls, {seconds:.2f} s")
        await llm.aclose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
