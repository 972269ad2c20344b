"""transformers' own continuous batching (CB) against ttc's decode loop, on the same strategies (CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/continuous_batching.py check
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/continuous_batching.py bench --workload majority --rounds 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/continuous_batching.py bench --workload beam --rounds 2

`check` runs transformers' `generate_batch` / `init_continuous_batching` on SmolLM2 on the CPU and
prints, per need of ttc's backend, what CB does (seen here, with its source named): per-request
seeds, temperature, n, logprobs and top logprobs, stop strings, token-level continuation, hidden
states, cancellation. The KV cache is sized explicitly: CB sizes it from the device's memory, which
on a CPU is psutil's *total* RAM (`continuous_batching/requests.py`,
`get_device_and_memory_breakdown`), so an unsized manager allocates most of the machine.

`bench` runs one workload on two backends over two copies of SmolLM2 in one process: ttc's
`Transformers` (its own loop, dynamic cache, prefix cache) and `ContinuousBatching` below, a ttc
`Generator` over a CB manager. The adapter serves what CB can: n candidates as n CB requests, stop
strings by streaming and `cancel_request` at the first stop string (CB has none), token-id prompts
(continuations) with CB's block sharing as its prefix cache. It cannot honour per-request seeds
(CB's seed is per manager), so its results are not the same samples: compare throughput, and
accuracy only as a sanity check. Rounds alternate the order (ttc, CB), (CB, ttc), ...; each run
reports wall seconds, CPU seconds of the process (both backends' threads), the completion tokens
the strategy received, tokens/s by wall and by CPU, and the CB/ttc ratios of the round. Workloads:
- majority: MajorityVote(16) on the demo problems (one request of n=16 per problem);
- beam: BeamSearch(2 x 4), particle: ParticleFilter(8), each with the programmatic oracle PRM of
  benchmarks/step_search.py, steps of at most 32 tokens, at most 4 steps (as step_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

import ttc
from ttc.backends.base import TOKEN_IDS, Generation, Generator
from ttc.backends.transformers import Transformers
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.runner import asolve_many
from ttc.steps import StepConfig
from ttc.strategies import BeamSearch, MajorityVote, ParticleFilter, Sample
from ttc.types import Completion, Prompt, SamplingParams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_search import oracle_prm  # noqa: E402


def cb_config(args: argparse.Namespace, **extra: Any) -> Any:
    """A CB config with an explicit KV budget (see the module docstring) and a seed."""
    from transformers import ContinuousBatchingConfig

    return ContinuousBatchingConfig(num_blocks=args.num_blocks, page_size=args.page_size,
                                    max_batch_tokens=args.max_batch_tokens, seed=args.seed, **extra)


def generation_config(tokens: Transformers, temperature: float, n: int = 1, max_new_tokens: int = 256) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                            top_p=1.0, num_return_sequences=n, max_new_tokens=max_new_tokens,
                            eos_token_id=sorted(tokens.eos_token_ids), pad_token_id=tokens.tokenizer.pad_token_id)


class ContinuousBatching(Generator):
    """ttc's Generator API over a transformers CB manager (this benchmark's adapter, not a backend).

    One sampling temperature per manager (CB's generation config); a request asking for another,
    or for logprobs, is refused. Seeds are ignored: CB has one RNG per manager.
    """

    capabilities = frozenset({TOKEN_IDS})

    def __init__(self, model: Any, tokens: Transformers, args: argparse.Namespace):
        self.tokens = tokens  # tokenizer, chat template and EOS of the same model (ttc's backend)
        self.temperature = args.temperature
        self.manager = model.init_continuous_batching(
            generation_config=generation_config(tokens, args.temperature),
            continuous_batching_config=cb_config(args))
        self.manager.start()
        self._ids = itertools.count()
        self.generated = 0

    @property
    def model_name(self) -> str:
        return "cb:" + self.tokens.model_name

    async def tokenize(self, text: str) -> list[int]:
        return await self.tokens.tokenize(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokens.decode(token_ids)

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return await self.tokens.chat_prompt(messages)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        if params.temperature != self.temperature or params.logprobs or params.top_logprobs:
            raise ttc.InvalidInput("this CB manager samples at one temperature, without logprobs")
        ids = list(await self.tokenize(prompt)) if isinstance(prompt, str) else list(prompt)
        completions = await asyncio.gather(*(self._one(ids, params) for _ in range(params.n)))
        return Generation(prompt_tokens=len(ids), completions=list(completions),
                          processed_prompt_tokens=len(ids) * params.n)

    async def _one(self, ids: list[int], params: SamplingParams) -> Completion:
        """One CB request; with stop strings, streamed and cancelled at the first one."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        request_id = f"ttc-{next(self._ids)}"
        stops = tuple(s for s in params.stop if s)

        def on_output(output: Any) -> None:
            if done.done():
                return
            tokens = list(output.generated_tokens)
            if stops:
                text = self.decode(tokens)
                at = min((i for i in (text.find(s) for s in stops) if i != -1), default=-1)
                if at != -1:
                    self.manager.cancel_request(request_id)
                    with self.manager.output_router._lock:  # a cancelled request gets no final output
                        self.manager.output_router.result_handlers.pop(request_id, None)
                    self.generated += len(tokens)
                    done.set_result(Completion(text=text[:at], token_ids=tuple(tokens), finish_reason="stop"))
                    return
            if output.is_finished():
                self.generated += len(tokens)
                if output.error:
                    done.set_exception(ttc.GenerationError(f"CB failed: {output.error}"))
                    return
                ended = bool(tokens) and tokens[-1] in self.tokens.eos_token_ids
                done.set_result(Completion(text=self.decode(tokens), token_ids=tuple(tokens),
                                           finish_reason="stop" if ended else "length"))

        self.manager.register_result_handler(request_id, on_output)
        self.manager.add_request(ids, request_id=request_id, max_new_tokens=params.max_tokens,
                                 streaming=bool(stops), eos_token_id=sorted(self.tokens.eos_token_ids))
        return await done

    async def aclose(self) -> None:
        await asyncio.to_thread(self.manager.stop, True, 10)


# -- the workloads --------------------------------------------------------------------------------
def strategy(args: argparse.Namespace) -> ttc.Strategy:
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    if args.workload == "majority":
        return MajorityVote(n=16, sample=Sample(params=params, prompt=DEMO_PROMPT))
    common = dict(steps=StepConfig(max_steps=4, max_step_tokens=32),
                  params=SamplingParams(temperature=args.temperature), prompt=DEMO_PROMPT)
    if args.workload == "beam":
        return BeamSearch(2, 4, oracle_prm(), **common)
    return ParticleFilter(8, oracle_prm(), **common)


async def run(llm: Generator, args: argparse.Namespace, problems: list[ttc.Problem]) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    results = await asolve_many(strategy(args), problems, llm, concurrency=len(problems), seed=args.seed,
                                progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = sum(r.usage.completion_tokens for r in results)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": tokens,
            "tok_per_wall_s": round(tokens / wall, 1), "tok_per_cpu_s": round(tokens / cpu, 1),
            "correct": sum(r.answer == p.answer for r, p in zip(results, problems, strict=True)),
            "errors": [r.error for r in results if not r.ok][:3]}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    own = Transformers(args.model, device="cpu", num_threads=args.threads)
    other = Transformers(args.model, device="cpu", num_threads=args.threads)  # a second copy for CB
    cb = ContinuousBatching(other.model, own, args)
    problems = demo_problems(args.problems, seed=args.seed)
    rounds = []
    try:
        warm = argparse.Namespace(**{**vars(args), "workload": "majority", "max_tokens": 8})
        for llm in (own, cb):
            await asolve_many(strategy(warm), problems[:2], llm, concurrency=2, progress=False)
        for k in range(args.rounds):
            order = ("ttc", "cb") if k % 2 == 0 else ("cb", "ttc")
            row: dict[str, Any] = {"round": k, "order": order, "load_before": uptime()}
            for name in order:
                if own.prefix_cache is not None:
                    own.prefix_cache.clear()  # every run starts cold (CB's blocks are freed with its requests)
                row[name] = await run(own if name == "ttc" else cb, args, problems)
                print(f"round {k} {name}: {json.dumps(row[name])}", file=sys.stderr, flush=True)
            row["load_after"] = uptime()
            row["cb/ttc tok_per_wall_s"] = round(row["cb"]["tok_per_wall_s"] / row["ttc"]["tok_per_wall_s"], 3)
            row["cb/ttc tok_per_cpu_s"] = round(row["cb"]["tok_per_cpu_s"] / row["ttc"]["tok_per_cpu_s"], 3)
            rounds.append(row)
    finally:
        await cb.aclose()
        await own.aclose()
        await other.aclose()
    ratios = [r["cb/ttc tok_per_cpu_s"] for r in rounds]
    return {"workload": args.workload, "problems": args.problems, "max_tokens": args.max_tokens,
            "rounds": rounds, "median cb/ttc tok_per_cpu_s": statistics.median(ratios),
            "median cb/ttc tok_per_wall_s": statistics.median(r["cb/ttc tok_per_wall_s"] for r in rounds)}


# -- what CB does with each of ttc's needs ------------------------------------------------------------
def check(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    own = Transformers(args.model, device="cpu", num_threads=args.threads)
    model, tok = own.model, own.tokenizer
    prompt = tok("Tom has 3 apples and gets 4 more. How many apples does Tom have?")["input_ids"]
    seen: dict[str, Any] = {"device": str(model.device), "attn_implementation": model.config._attn_implementation}

    def batch(prompts: list[list[int]], n: int = 1, seed: int = 0, temperature: float = 0.7, **extra: Any) -> list:
        config = cb_config(argparse.Namespace(**{**vars(args), "seed": seed}), **extra)
        out = model.generate_batch(prompts, generation_config=generation_config(own, temperature, n, 12),
                                   continuous_batching_config=config, progress_bar=False)
        return [list(o.generated_tokens) for o in out.values()]

    try:
        started = time.perf_counter()
        first = batch([prompt])
        seen["runs_on_cpu"] = f"yes: generate_batch answered in {time.perf_counter() - started:.1f} s"
    except Exception as exc:  # noqa: BLE001 - the finding is the error itself
        seen["runs_on_cpu"] = f"no: {type(exc).__name__}: {exc}"
        seen["traceback"] = traceback.format_exc()
        return seen
    # per-request seeds: there is no seed argument per request; the manager's seed decides
    import inspect

    from transformers.generation.continuous_batching import ContinuousBatchingManager

    seen["add_request_parameters"] = list(inspect.signature(ContinuousBatchingManager.add_request).parameters)
    alone = batch([prompt], seed=1)
    crowded = batch([prompt] + [prompt[:-k] for k in range(1, 4)], seed=1)
    seen["same manager seed, request alone vs with 3 others"] = {"alone": alone[0], "in a crowd": crowded[0],
                                                                 "equal": alone[0] == crowded[0]}
    again = batch([prompt], seed=1)
    seen["same manager seed, same request twice"] = alone[0] == again[0]
    seen["first run (seed 0)"] = first[0]
    seen["n per request"] = "num_return_sequences of the manager's generation config (one n for all requests)"
    seen["logprobs"] = ("return_logprobs=True: the chosen token's logprob after the logits processors "
                        "(temperature, top-p), model_runner.py _sample; no top logprobs")
    seen["stop strings"] = "none (add_request takes eos_token_id only)"
    seen["hidden states"] = "none (only generated_tokens, logprobs, timestamps in GenerationOutput)"
    seen["cancellation"] = "cancel_request(request_id)"
    seen["continuation"] = "add_request(input_ids): any token ids; block sharing reuses full pages of a shared prefix"
    seen["greedy per request"] = "no: do_sample is per manager (model_runner.py _sample)"
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("check", "bench"))
    parser.add_argument("--workload", choices=("majority", "beam", "particle"), default="majority")
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128, help="majority's completion tokens per candidate")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None)
    parser.add_argument("--num-blocks", type=int, default=256, help="CB's KV cache, in pages")
    parser.add_argument("--page-size", type=int, default=64, 
                        help="tokens per CB page (block sharing reuses whole pages)")
    parser.add_argument("--max-batch-tokens", type=int, default=512, help="tokens per CB forward pass")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = check(args) if args.mode == "check" else asyncio.run(bench(args))
    result["args"] = {k: v for k, v in vars(args).items() if k != "output"}
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
