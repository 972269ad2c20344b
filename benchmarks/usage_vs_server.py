"""ttc's usage next to a vLLM server's own token counters (`/metrics`), run by run.

    .venv/bin/python benchmarks/usage_vs_server.py                          # starts a server (SmolLM2, CPU)
    .venv/bin/python benchmarks/usage_vs_server.py --url http://127.0.0.1:8000   # a server already running

The server must serve nothing else meanwhile (each run waits until it is idle before and after).
Start your own with `--enable-prompt-tokens-details` to see its prefix-cache hits in `usage`.
Runs: MajorityVote(8) on three short problems; one long prompt with n=8 (twice: cold, then with
its blocks in the prefix cache); ParticleFilter(4) with a PRM that does not call the server.
Columns: ttc's billed / processed / cached prompt tokens and completion tokens, then the deltas of
`vllm:prompt_tokens_total` (the prompt once per sequence), `vllm:generation_tokens_total` and
`vllm:prompt_tokens_cached_total`.
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request

import ttc
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.demo import DEMO_PROMPT
from ttc.steps import StepConfig

COUNTERS = ("prompt_tokens_total", "generation_tokens_total", "prompt_tokens_cached_total")
BUSY = ("num_requests_running", "num_requests_waiting")
PROBLEMS = ["What is 2 + 3?", "What is 7 times 6?", "What is 100 minus 37?"]


def counters(root: str) -> dict[str, float]:
    """The token counters once the server is idle and they stop moving."""
    def read() -> dict[str, float]:
        text = urllib.request.urlopen(root + "/metrics", timeout=30).read().decode()
        return {name: sum(float(v) for v in re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))
                for name in COUNTERS + BUSY}
    last = read()
    while True:
        time.sleep(0.3)
        now = read()
        if now == last and not any(now[b] for b in BUSY):
            return now
        last = now


def measure(label: str, root: str, run) -> None:
    before = counters(root)
    start = time.time()
    results = run()
    after = counters(root)
    assert all(r.ok for r in results), [r.error for r in results]
    u = ttc.Usage.total([r.usage for r in results])
    d = {k: int(after[k] - before[k]) for k in COUNTERS}
    print(f"{label} ({time.time() - start:.0f} s)\n"
          f"  ttc:    billed prompt {u.prompt_tokens}, processed prompt {u.processed_prompt_tokens}, "
          f"cached {u.cached_prompt_tokens}, completion {u.completion_tokens}, estimated {u.estimated}\n"
          f"  server: prompt_tokens_total +{d['prompt_tokens_total']}, generation_tokens_total "
          f"+{d['generation_tokens_total']}, prompt_tokens_cached_total +{d['prompt_tokens_cached_total']}",
          flush=True)


def main(root: str) -> None:
    llm = OpenAICompatible(root + "/v1")
    params = ttc.SamplingParams(temperature=0.8, max_tokens=48)
    vote = ttc.MajorityVote(n=8, sample=ttc.Sample(params=params, prompt=DEMO_PROMPT))
    measure("MajorityVote(8), 3 short problems", root,
            lambda: ttc.solve_many(vote, PROBLEMS, llm, concurrency=1, progress=False, seed=0))
    long_q = "Add up these numbers and say the total. " + " ".join(str(i % 97) for i in range(560))
    one = ttc.MajorityVote(n=8, sample=ttc.Sample(params=params.replace(max_tokens=8), prompt=DEMO_PROMPT))
    for when in ("cold", "again"):
        measure(f"one long prompt, n=8 ({when})", root, lambda: [one.solve(long_q, llm, seed=0)])
    prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 1.0 / (1 + len(steps[-1])))
    pf = ttc.ParticleFilter(4, prm, steps=StepConfig(max_steps=3, max_step_tokens=24), params=params,
                            prompt=DEMO_PROMPT)
    measure("ParticleFilter(4), 3 short problems", root,
            lambda: ttc.solve_many(pf, PROBLEMS, llm, concurrency=1, progress=False, seed=0))
    ttc.run_sync(llm.aclose())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="root of a running vLLM server (default: start one)")
    args = parser.parse_args()
    if args.url:
        main(args.url.rstrip("/"))
    else:
        from ttc.backends.vllm_server import VLLMServer

        with VLLMServer(args=("--enable-prompt-tokens-details",)) as server:
            main(server.root)
