"""The thinking test model's two numbers (issue 22): how long it takes to build, and how many
sampled traces close their thinking within 256 tokens and answer after it (required: >= 80 of 100).

    # build time (into a fresh cache folder, so the cached model is not reused), then the trace rule
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/thinking_model.py --fresh-cache /tmp/ttc-build
    # the trace rule only, on the cached model
    .venv/bin/python benchmarks/thinking_model.py

The rule is checked through a real vLLM server with `--reasoning-parser qwen3` (`--parser`; the
`deepseek_r1` parser works as well but reports 0 reasoning tokens for this model): each of
100 held-out problems (`ttc.thinking_model.held_out_traces`) is one chat request at temperature
0.7 with `max_tokens=256`; a trace passes when the server's `message.content` (what follows
`</think>`) holds a `\\boxed{}` answer. It also reports how many answers are right, the mean
reasoning tokens, and the build's own record (`ttc_recipe.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ttc.answers import equivalent, last_boxed
from ttc.backends.vllm_server import VLLMServer
from ttc.thinking_model import RECIPE_FILE, held_out_traces


def chat(url: str, model: str, question: str, *, seed: int, temperature: float, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "seed": seed,
            "temperature": temperature, "max_tokens": max_tokens}
    request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh-cache", help="build into this empty TTC_CACHE_DIR and time the build")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--parser", default="qwen3", help="vLLM's --reasoning-parser")
    args = parser.parse_args()
    if args.fresh_cache:
        os.environ["TTC_CACHE_DIR"] = args.fresh_cache
    from ttc.models import smollm2, smollm2_thinking

    smollm2()  # the base model is not part of the thinking model's build time
    started = time.monotonic()
    folder = smollm2_thinking()
    print(f"model: {folder} (found or built in {time.monotonic() - started:.0f} s; load {os.getloadavg()[0]:.1f})")
    record = json.loads((Path(folder) / RECIPE_FILE).read_text())
    print(f"recipe {record['recipe']} build_seconds={record['build_seconds']} final loss={record['losses'][-1]}")
    problems = held_out_traces(args.problems)
    with VLLMServer(folder, args=("--reasoning-parser", args.parser),
                    env={"VLLM_CPU_KVCACHE_SPACE": "1"}) as server:
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda item: chat(server.url, folder, item[1].question, seed=item[0],
                                                        temperature=args.temperature, max_tokens=args.max_tokens),
                                      enumerate(problems)))
        seconds = time.monotonic() - started
    passed = right = 0
    reasoning_tokens = []
    for trace, response in zip(problems, responses, strict=True):
        message = response["choices"][0]["message"]
        content = message.get("content") or ""
        answer = last_boxed(content)
        passed += answer is not None
        right += equivalent(answer, str(trace.answer))
        reasoning_tokens.append(response["usage"]["completion_tokens_details"]["reasoning_tokens"])
    print(f"{passed}/{len(problems)} traces closed their thinking within {args.max_tokens} tokens and "
          f"answered after it (temperature {args.temperature}); {right} answers right; "
          f"mean reasoning_tokens {sum(reasoning_tokens) / len(reasoning_tokens):.1f}; {seconds:.0f} s of sampling")
    example = responses[0]["choices"][0]["message"]
    print("example:", json.dumps({"reasoning": example.get("reasoning"), "content": example.get("content")}))
    return 0 if passed >= 0.8 * len(problems) else 1


if __name__ == "__main__":
    sys.exit(main())
