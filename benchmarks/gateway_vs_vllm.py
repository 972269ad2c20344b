"""Every registered strategy through a LiteLLM proxy next to the same run directly on vLLM: the
answers, candidates and usage of each, and vLLM's own token counters (`/metrics`) around each run.

    # a vLLM server (SmolLM2, CPU) and LiteLLM's proxy in front of it (docs/backends.md, "Behind a gateway")
    .venv/bin/python benchmarks/gateway_vs_vllm.py --vllm http://127.0.0.1:8000 \\
        --gateway http://127.0.0.1:4000/v1 --key sk-my-gateway-key [--tokenizer FOLDER] [--max-tokens 32] [NAME ...]

The vLLM server must serve nothing else meanwhile (each run waits until it is idle before and
after). One problem, seed 7, n=2; step searches with a programmatic PRM (it calls no server) and
`max_steps=3`. Each line: ttc's processed prompt / completion tokens, then the counters' deltas,
whether the usage is estimated, closed streams, and whether the candidates' texts equal the direct
run's.
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request

import ttc
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.strategies.registry import OPTIONS, STRATEGIES, make_strategy

QUESTION = "What is 12 + 30? End with 'The answer is N.'"
PRM = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 1.0 / (1 + len(steps[-1])))
STEP_SEARCHES = tuple(name for name, options in OPTIONS.items() if "max_steps" in options)
COUNTERS = ("prompt_tokens_total", "generation_tokens_total")
BUSY = ("num_requests_running", "num_requests_waiting")


def counters(root: str) -> dict[str, float]:
    """vLLM's token counters once it is idle and two reads agree."""
    def read() -> dict[str, float]:
        with urllib.request.urlopen(root + "/metrics", timeout=30) as r:
            text = r.read().decode()
        return {n: sum(float(v) for v in re.findall(rf"^vllm:{n}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))
                for n in COUNTERS + BUSY}
    last = read()
    while True:
        time.sleep(0.2)
        now = read()
        if now == last and not any(now[b] for b in BUSY):
            return now
        last = now


def run(name: str, llm: OpenAICompatible, root: str, params: ttc.SamplingParams):
    ttc.run_sync(llm.probe())  # the probe's own requests stay out of the counters' deltas
    options = {"max_steps": 3} if name in STEP_SEARCHES else {}
    strategy = make_strategy(name, n=2, verifier=PRM if name in STEP_SEARCHES else None, params=params, **options)
    before = counters(root)
    try:
        result = strategy.solve(QUESTION, llm, seed=7)
    except ttc.TTCError as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:70]}"
    after = counters(root)
    u = result.usage
    line = (f"{u.processed_prompt_tokens} / {u.completion_tokens} (counters "
            f"{after[COUNTERS[0]] - before[COUNTERS[0]]:.0f} / {after[COUNTERS[1]] - before[COUNTERS[1]]:.0f})"
            f"{' estimated' if u.estimated else ''}{f' closed={u.closed_streams}' if u.closed_streams else ''}"
            f" answer={result.answer}")
    return result, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", required=True, help="the vLLM server's root, e.g. http://127.0.0.1:8000")
    parser.add_argument("--gateway", required=True, help="the proxy's /v1 base URL")
    parser.add_argument("--key", required=True, help="the proxy's key")
    parser.add_argument("--tokenizer", default=None, help="also run through the proxy with this tokenizer=")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("names", nargs="*", default=list(STRATEGIES))
    args = parser.parse_args()
    params = ttc.SamplingParams(temperature=0.8, max_tokens=args.max_tokens)
    root = args.vllm.rstrip("/")
    for name in args.names:
        direct, line = run(name, OpenAICompatible(root + "/v1"), root, params)
        print(f"{name}\n  direct vLLM:        {line}", flush=True)
        runs = [("through the gateway", OpenAICompatible(args.gateway, api_key=args.key))]
        if args.tokenizer:
            runs.append(("gateway, tokenizer=", OpenAICompatible(args.gateway, api_key=args.key,
                                                                 tokenizer=args.tokenizer)))
        for label, llm in runs:
            result, line = run(name, llm, root, params)
            same = (result is not None and direct is not None
                    and [c.text for c in result.candidates] == [c.text for c in direct.candidates])
            print(f"  {label:<20}{line}{' same texts' if same else ''}", flush=True)


if __name__ == "__main__":
    main()
