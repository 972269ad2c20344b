"""`ttc record`: sample K candidates per problem once and append them to a bank file.

Problem i is sampled in one request of n = K with seed `seed + i`, so a resumed recording samples
exactly what an uninterrupted one would have. Problems already in the file (all K samples) are
skipped; a last line cut short by a kill is dropped before writing resumes. The header is written
once and checked on resume: a bank cannot mix models, prompts or sampling settings.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ttc.answers import ANSWER_RULES_VERSION, answer_fields, equivalent, group
from ttc.backends.base import Generator
from ttc.bank.format import FORMAT, VERSION, BankProblem, check_header, fingerprint, iter_lines, open_text
from ttc.errors import InvalidInput
from ttc.prompts import ChatPrompt
from ttc.types import Candidate, Completion, Problem, SamplingParams
from ttc.verifiers.base import Verifier

#: the sampling settings a bank's header keeps (and fingerprints)
PARAM_FIELDS = ("temperature", "top_p", "max_tokens", "stop", "top_k", "min_p", "presence_penalty",
                "frequency_penalty", "repetition_penalty", "top_logprobs")


def params_record(params: SamplingParams) -> dict[str, Any]:
    d = asdict(params)
    out = {k: d.get(k) for k in PARAM_FIELDS}
    out["stop"] = list(out["stop"] or ())
    extra = d.get("extra") or {}
    if extra:
        out["extra"] = dict(extra)
    if d.get("chat_template_kwargs"):
        out["chat_template_kwargs"] = dict(d["chat_template_kwargs"])
    return out


def make_header(model: str, prompt: ChatPrompt, params: SamplingParams, k: int, seed: int, dataset: str,
                verifiers: Sequence[str] = ()) -> dict[str, Any]:
    import ttc

    record = params_record(params)
    return {"format": FORMAT, "version": VERSION,
            "fingerprint": fingerprint(model, repr(prompt), record, ANSWER_RULES_VERSION),
            "model": model, "prompt": repr(prompt), "params": record, "samples_per_problem": k, "seed": seed,
            "dataset": dataset, "answer_rules": ANSWER_RULES_VERSION, "verifiers": list(verifiers),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ttc_version": getattr(ttc, "__version__", None)}


def _jsonable_top(tops: Any) -> list[dict[str, float]] | None:
    if tops is None:
        return None
    return [{str(k): round(float(v), 4) for k, v in t.items()} for t in tops]


def _sample(completion: Completion, gold: str | None, latency: float) -> dict[str, Any]:
    finished = completion.finish_reason != "length"
    answer = answer_fields(completion.text, finished)["answer"]
    thinking = completion.thinking
    return {"text": completion.text, "thinking": thinking.text if thinking is not None else None,
            "answer": answer, "correct": None if gold is None else (answer is not None and equivalent(answer, gold)),
            "tokens": completion.num_tokens, "reasoning_tokens": completion.reasoning_tokens,
            "logprobs": [round(float(x), 5) for x in completion.logprobs] if completion.logprobs is not None else None,
            "top_logprobs": _jsonable_top(completion.top_logprobs),
            "finish_reason": completion.finish_reason, "latency_s": round(latency, 4), "scores": {}}


async def _score(verifiers: Mapping[str, Verifier], problem: Problem, completions: Sequence[Completion],
                 samples: list[dict[str, Any]], generator: Generator) -> None:
    from ttc.context import Context

    if not verifiers:
        return
    candidates = [Candidate(text=c.text, answer=s["answer"], completion=c, finish_reason=c.finish_reason)
                  for c, s in zip(completions, samples, strict=True)]
    ctx = Context(generator)
    for name, verifier in verifiers.items():
        scores = await verifier.score(problem, candidates, ctx)
        for s, score in zip(samples, scores, strict=True):
            s["scores"][name] = float(score)


async def arecord(problems: Sequence[Problem], generator: Generator, output: str | os.PathLike, *, k: int = 16,
                  params: SamplingParams | None = None, prompt: ChatPrompt | None = None, seed: int = 0,
                  concurrency: int = 4, dataset: str = "", verifiers: Mapping[str, Verifier] | None = None,
                  progress: bool = True, on_problem: Callable[[BankProblem], None] | None = None) -> int:
    """Record `k` samples for every problem not yet in `output`; return how many were recorded now."""
    from tqdm.auto import tqdm

    from ttc.demo import DEMO_PROMPT

    if k < 1:
        raise InvalidInput(f"k (samples per problem) must be at least 1, got {k}")
    ids = [p.id for p in problems]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise InvalidInput("recording needs problems with unique ids (load them with ttc.eval.load_dataset)")
    prompt = prompt or DEMO_PROMPT
    params = (params or SamplingParams(temperature=0.7, max_tokens=96)).replace(n=k, logprobs=True)
    verifiers = dict(verifiers or {})
    header = make_header(generator.model_name, prompt, params, k, seed, dataset, sorted(verifiers))
    done: set[str] = set()
    fresh = not os.path.exists(output) or os.path.getsize(output) == 0
    if not fresh:
        lines = list(iter_lines(output))
        old = lines[0]
        check_header(old, os.fspath(output))
        if old["fingerprint"] != header["fingerprint"] or old["samples_per_problem"] != k \
                or old.get("seed") != seed or old.get("verifiers", []) != header["verifiers"]:
            raise InvalidInput(f"{output} was recorded with other settings (model {old['model']!r}, params "
                               f"{old['params']}, K={old['samples_per_problem']}, seed={old.get('seed')}, "
                               f"verifiers={old.get('verifiers', [])}): record into another file")
        done = {str(d["problem_id"]) for d in lines[1:] if len(d.get("samples", ())) == k}
        _drop_cut_line(output)
    todo = [(i, p) for i, p in enumerate(problems) if p.id not in done]
    out = open_text(output, "at")
    if fresh:
        out.write(_dumps(header) + "\n")
        out.flush()
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="record", unit="problem",
               disable=not progress, dynamic_ncols=True)
    recorded = 0

    async def one(index: int, problem: Problem) -> None:
        nonlocal recorded
        async with semaphore:
            rendered = await prompt.render(problem, generator)
            start = time.perf_counter()
            generation = await generator.generate(rendered, params.replace(seed=seed + index))
            latency = time.perf_counter() - start
            samples = [_sample(c, problem.answer, latency) for c in generation.completions]
            await _score(verifiers, problem, generation.completions, samples, generator)
        groups = group([s["answer"] for s in samples])
        for members in groups:
            for m in members:
                samples[m]["group"] = members[0]
        for s in samples:
            s.setdefault("group", None)
        line = {"problem_id": problem.id, "index": index, "question": problem.question, "gold": problem.answer,
                "prompt_tokens": generation.prompt_tokens, "latency_s": round(latency, 4), "samples": samples}
        out.write(_dumps(line) + "\n")
        out.flush()
        recorded += 1
        bar.update(1)
        if on_problem is not None:
            on_problem(BankProblem.from_dict(line))

    tasks = [asyncio.ensure_future(one(i, p)) for i, p in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # a failure stops the recording: what is written stays, the rest is resumed later
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        bar.close()
        out.close()
    return recorded


def _dumps(value: Any) -> str:
    import json

    from ttc.eval.results import jsonable

    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _drop_cut_line(path: str | os.PathLike) -> None:
    """Remove an unterminated last line (a write cut short) so that appending starts on a fresh line."""
    if str(path).endswith(".gz"):
        return  # gzip members: an unfinished one is skipped on read
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
