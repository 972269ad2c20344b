"""What ttc costs on top of vLLM: the same requests through raw vLLM and through ttc's vLLM backends.

    .venv/bin/python benchmarks/overhead.py                                   # CPU-sized defaults
    .venv/bin/python benchmarks/overhead.py --problems 32 --n 16 --max-tokens 128 --repeats 3   # full size (GPU)

Measured on the spot, nothing hard-coded. Sections:
  1. throughput, in-process: P problems, each one request for n samples of max_tokens tokens
     (best-of-n style, fixed seeds, all problems concurrent). Raw = vLLM's own `AsyncLLM.generate`
     on its engine loop; ttc = `VLLMEngine.generate` from another event loop (as `solve` calls
     it), and the whole `BestOfN` strategy through `ttc.asolve_many` (chat template, answer
     extraction, logprob verifier included). Same engine, same prompts, same seeds: the sampled
     tokens must be identical, and the script checks it.
  2. throughput, server: the same workload against a vLLM OpenAI server. Raw = the official
     `openai` client sending the same JSON; ttc = `OpenAICompatible.generate` and `BestOfN`.
  3. step-wise continuation: each problem grows in S steps of K tokens, every step a new request
     whose prompt is the prompt + all previous steps as token ids (how step search runs), against
     one request of S*K tokens; with vLLM's prefix caching on and off (a second engine).
Reported: completion tokens per second; ratios ttc/raw (1.00 = no overhead) and step-wise/one-shot.
Runs alternate their order across repeats; a warm-up pass fills the prefix cache with the prompts
first, so every timed run sees the same cache state, and one untimed run of the workload goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import ttc  # noqa: E402
from ttc.prompts import ChatPrompt  # noqa: E402
from ttc.types import Problem, SamplingParams  # noqa: E402

TEMPERATURE = 0.8


def load_questions(count: int) -> list[str]:
    """The first `count` GSM8K test questions (the copy packaged with ttc)."""
    return [p.question for p in ttc.eval.load_dataset("gsm8k", limit=count)]


STORY_TOPICS = ("a city at night", "a long train journey", "the history of bread", "a mountain village",
                "the first computers", "a lighthouse keeper", "a desert caravan", "a chess tournament")


def story_prompts(count: int) -> list[str]:
    """Prompts whose answers run long (SmolLM2 mostly writes past 256 tokens), so both sides of the
    continuation comparison generate (nearly) every token they are allowed."""
    return [f"Write a long, detailed story of at least 800 words about {STORY_TOPICS[i % len(STORY_TOPICS)]}."
            for i in range(count)]


def throughput(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else float("nan")


class Timings:
    def __init__(self) -> None:
        self.runs: dict[str, list[tuple[int, float]]] = {}

    def add(self, name: str, tokens: int, seconds: float) -> None:
        self.runs.setdefault(name, []).append((tokens, seconds))
        print(f"    {name:<38} {tokens:>7} tokens {seconds:8.2f} s {throughput(tokens, seconds):9.1f} tok/s",
              flush=True)

    def rate(self, name: str) -> float:
        runs = self.runs[name]
        return throughput(sum(t for t, _ in runs), sum(s for _, s in runs))


# -- section 1 and 2: throughput ---------------------------------------------------------------------
def sample_strategy(args: argparse.Namespace) -> ttc.BestOfN:
    sample = ttc.Sample(SamplingParams(temperature=TEMPERATURE, max_tokens=args.max_tokens, logprobs=True))
    return ttc.BestOfN(n=args.n, verifier=ttc.verifiers.LogprobConfidence(), sample=sample)


def ttc_params(args: argparse.Namespace, i: int) -> SamplingParams:
    return SamplingParams(n=args.n, temperature=TEMPERATURE, max_tokens=args.max_tokens, seed=args.seed + i,
                          logprobs=True)


async def ttc_generate(llm, prompts, args):
    start = time.perf_counter()
    gens = await asyncio.gather(*(llm.generate(p, ttc_params(args, i)) for i, p in enumerate(prompts)))
    seconds = time.perf_counter() - start
    return seconds, [[c.token_ids for c in g.completions] for g in gens]


async def ttc_strategy(llm, questions, args):
    start = time.perf_counter()
    results = await ttc.asolve_many(sample_strategy(args), questions, llm, seed=args.seed, progress=False,
                                    concurrency=len(questions))
    seconds = time.perf_counter() - start
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"strategy runs failed: {bad[:3]}")
    return seconds, [[c.completion.token_ids for c in r.candidates] for r in results]


async def raw_engine(engine, prompts, args):
    """vLLM's own call: AsyncLLM.generate with the same sampling parameters, on the engine's loop."""
    import vllm
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    async def one(i, ids):
        params = vllm.SamplingParams(n=args.n, temperature=TEMPERATURE, top_p=1.0, max_tokens=args.max_tokens,
                                     seed=args.seed + i, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for out in engine.generate(TokensPrompt(prompt_token_ids=list(ids)), params,
                                         request_id=f"raw-{uuid.uuid4().hex}"):
            final = out
        return [tuple(o.token_ids) for o in sorted(final.outputs, key=lambda o: o.index)]

    start = time.perf_counter()
    out = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - start, out


async def raw_http(url, model, prompts, args):
    """The official openai client, sending what ttc sends."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
    try:
        async def one(i, ids):
            response = await client.completions.create(
                model=model, prompt=list(ids), n=args.n, temperature=TEMPERATURE, top_p=1.0,
                max_tokens=args.max_tokens, seed=args.seed + i, logprobs=0,
                extra_body={"return_token_ids": True, "return_tokens_as_token_ids": True})
            return [tuple(c.to_dict()["token_ids"]) for c in sorted(response.choices, key=lambda c: c.index)]

        start = time.perf_counter()
        out = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        return time.perf_counter() - start, out
    finally:
        await client.close()


def count(token_lists) -> int:
    return sum(len(ids) for problem in token_lists for ids in problem)


def run_throughput(label: str, variants: dict, timings: Timings, repeats: int) -> bool:
    """Run each variant `repeats` times in rotating order; return whether all produced the same tokens."""
    names = list(variants)
    seconds, _ = variants[names[0]]()  # first runs of a fresh engine are slow: warm every code path up
    print(f"    (warm-up run of {label} {names[0]}: {seconds:.2f} s, not counted)", flush=True)
    reference = None
    same = True
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds, tokens = variants[name]()
            timings.add(f"{label} {name}", count(tokens), seconds)
            if reference is None:
                reference = tokens
            elif tokens != reference:
                same = False
    return same


# -- section 3: continuation ---------------------------------------------------------------------------
async def stepwise(llm, prompts, args):
    async def one(i, ids):
        ids = list(ids)
        made = 0
        for step in range(args.steps):
            gen = await llm.generate(ids, SamplingParams(temperature=TEMPERATURE, max_tokens=args.step_tokens,
                                                         seed=args.seed + 1000 * i + step))
            completion = gen.completions[0]
            ids += completion.token_ids
            made += completion.num_tokens
            if completion.finish_reason != "length":
                break
        return made

    start = time.perf_counter()
    made = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - start, sum(made)


async def oneshot(llm, prompts, args):
    start = time.perf_counter()
    gens = await asyncio.gather(*(
        llm.generate(p, SamplingParams(temperature=TEMPERATURE, max_tokens=args.steps * args.step_tokens,
                                       seed=args.seed + 1000 * i))
        for i, p in enumerate(prompts)))
    return time.perf_counter() - start, sum(g.completions[0].num_tokens for g in gens)


def run_continuation(label: str, llm, args, timings: Timings) -> None:
    prompts = [asyncio.run(llm.chat_prompt([{"role": "user", "content": q}]))
               for q in story_prompts(args.continuation_problems)]
    asyncio.run(warm(llm, prompts))
    seconds, _ = asyncio.run(oneshot(llm, prompts, args))
    print(f"    (warm-up run of {label} one-shot: {seconds:.2f} s, not counted)", flush=True)
    for r in range(args.repeats):
        pair = [("one-shot", oneshot), ("step-wise", stepwise)]
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            seconds, tokens = asyncio.run(fn(llm, prompts, args))
            timings.add(f"{label} {name}", tokens, seconds)


async def warm(llm, prompts) -> None:
    await asyncio.gather(*(llm.generate(p, SamplingParams(max_tokens=1, temperature=0.0)) for p in prompts))


async def chat_prompts(llm, questions):
    prompt = ChatPrompt()
    return [await llm.chat_prompt(prompt.messages(Problem(q))) for q in questions]


def on_loop(loop, coro):
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


# -- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=4, help="problems per run (full size: 32)")
    parser.add_argument("--n", type=int, default=8, help="samples per problem (full size: 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sample (full size: 128)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each variant")
    parser.add_argument("--steps", type=int, default=8, help="continuation steps")
    parser.add_argument("--step-tokens", type=int, default=32, help="tokens per continuation step")
    parser.add_argument("--continuation-problems", type=int, default=4, help="problems growing step by step at once")
    parser.add_argument("--sections", default="engine,server,continuation",
                        help="comma-separated subset of engine,server,continuation")
    parser.add_argument("--model", default=None, help="model folder or id (default: the embedded SmolLM2)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - {"engine", "server", "continuation"}
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    from ttc.backends.openai_compatible import OpenAICompatible
    from ttc.backends.vllm_engine import VLLMEngine
    from ttc.backends.vllm_server import VLLMServer

    questions = load_questions(args.problems)
    timings = Timings()
    checks: dict[str, bool] = {}
    print(f"workload: {args.problems} problems x n={args.n} x {args.max_tokens} tokens, seeds from {args.seed}; "
          f"continuation: {args.continuation_problems} problems x {args.steps} steps x {args.step_tokens} tokens; "
          f"{args.repeats} repeats", flush=True)

    if "engine" in sections or "continuation" in sections:
        start = time.perf_counter()
        llm = VLLMEngine(args.model)
        print(f"\nin-process engine (prefix caching on) up in {time.perf_counter() - start:.0f} s", flush=True)
        try:
            if "engine" in sections:
                prompts = asyncio.run(chat_prompts(llm, questions))
                asyncio.run(warm(llm, prompts))
                checks["engine"] = run_throughput("engine", {
                    "raw AsyncLLM": lambda: on_loop(llm.loop, raw_engine(llm.engine, prompts, args)),
                    "ttc VLLMEngine.generate": lambda: asyncio.run(ttc_generate(llm, prompts, args)),
                    "ttc BestOfN": lambda: asyncio.run(ttc_strategy(llm, questions, args)),
                }, timings, args.repeats)
            if "continuation" in sections:
                run_continuation("prefix-cache on:", llm, args, timings)
        finally:
            llm.close()

    if "server" in sections:
        start = time.perf_counter()
        with VLLMServer(args.model) as server:
            print(f"\nvLLM server up in {time.perf_counter() - start:.0f} s at {server.url}", flush=True)
            http = OpenAICompatible(server.url)
            model = server.models()[0]

            def ttc_http(fn, *fn_args):
                async def go():
                    try:
                        return await fn(http, *fn_args, args)
                    finally:
                        await http.aclose()
                return asyncio.run(go())

            prompts = ttc_http(lambda llm, qs, _: chat_prompts(llm, qs), questions)
            ttc_http(lambda llm, ps, _: warm(llm, ps), prompts)
            checks["server"] = run_throughput("server", {
                "raw openai client": lambda: asyncio.run(raw_http(server.url, model, prompts, args)),
                "ttc OpenAICompatible.generate": lambda: ttc_http(ttc_generate, prompts),
                "ttc BestOfN": lambda: ttc_http(ttc_strategy, questions),
            }, timings, args.repeats)

    if "continuation" in sections:
        start = time.perf_counter()
        llm = VLLMEngine(args.model, enable_prefix_caching=False)
        print(f"\nin-process engine (prefix caching off) up in {time.perf_counter() - start:.0f} s", flush=True)
        try:
            run_continuation("prefix-cache off:", llm, args, timings)
        finally:
            llm.close()

    print("\nsummary (completion tokens per second, all repeats pooled)")
    rows = []
    for label, raw in (("engine", "raw AsyncLLM"), ("server", "raw openai client")):
        if label not in checks:
            continue
        base = timings.rate(f"{label} {raw}")
        for name in timings.runs:
            if name.startswith(label + " ") and not name.endswith(raw):
                rows.append((f"{name} / {label} {raw}", timings.rate(name) / base))
        print(f"  {label}: identical tokens across raw and ttc: {checks[label]}")
    for mode in ("on", "off"):
        key = f"prefix-cache {mode}:"
        if f"{key} step-wise" in timings.runs:
            rows.append(
                (f"{key} step-wise / one-shot", timings.rate(f"{key} step-wise") / timings.rate(f"{key} one-shot"))
            )
    for name, ratio in rows:
        print(f"  {name:<70} {ratio:6.3f}")
    for name in timings.runs:
        print(f"  {name:<40} {timings.rate(name):9.1f} tok/s")


if __name__ == "__main__":
    sys.exit(main())
