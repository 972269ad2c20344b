"""Banks from older recordings: `benchmarks/adaptive.py record` files (one JSON line per problem with
"id", "question", "gold" and "samples" of text, answer, correct, prompt_tokens, completion_tokens,
logprob_sum, mean_logprob, finish_reason).

Those files keep no per-token logprobs, top logprobs or latency: each sample's token logprobs are
set to its mean logprob (so the mean, the sum and everything computed from them, mean_logprob
best-of-n and RPC, are the recorded ones), there are no top logprobs (no DeepConf or self_certainty
replays) and latency is 0. The header says so (`converted_from`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ttc.answers import ANSWER_RULES_VERSION, group
from ttc.bank.format import FORMAT, VERSION, Bank, BankProblem, BankSample, fingerprint, open_text
from ttc.errors import InvalidInput

#: what `benchmarks/adaptive.py record` sampled with (ttc.demo's prompt and parameters)
ADAPTIVE_PARAMS = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 96, "stop": [], "top_k": None, "min_p": None,
                   "presence_penalty": None, "frequency_penalty": None, "repetition_penalty": None,
                   "top_logprobs": None}


def bank_from_recording(records: Sequence[Mapping[str, Any]], model: str = "SmolLM2-135M-Instruct",
                        params: Mapping[str, Any] | None = None, source: str = "") -> Bank:
    """A `Bank` from the records of a `benchmarks/adaptive.py record` file (see the module docstring)."""
    from ttc.demo import DEMO_PROMPT

    if not records:
        raise InvalidInput("no records to convert")
    params = dict(params or ADAPTIVE_PARAMS)
    k = min(len(r["samples"]) for r in records)
    prompt = repr(DEMO_PROMPT)
    header = {"format": FORMAT, "version": VERSION,
              "fingerprint": fingerprint(model, prompt, params, ANSWER_RULES_VERSION), "model": model,
              "prompt": prompt, "params": params, "samples_per_problem": k, "seed": 0, "dataset": "demo",
              "answer_rules": ANSWER_RULES_VERSION, "verifiers": [],
              "converted_from": source or "benchmarks/adaptive.py record (per-token logprobs = each sample's mean; "
                                          "no top logprobs, no latency)"}
    problems = []
    for index, r in enumerate(records):
        raw = r["samples"][:k]
        groups: dict[int, int] = {}
        for members in group([s.get("answer") for s in raw]):
            for m in members:
                groups[m] = members[0]
        samples = tuple(
            BankSample(text=s["text"], answer=s.get("answer"), group=groups.get(i), correct=s.get("correct"),
                       tokens=int(s["completion_tokens"]), finish_reason=s.get("finish_reason", "stop"),
                       logprobs=(float(s["mean_logprob"]),) * int(s["completion_tokens"])
                       if s.get("mean_logprob") is not None else (),
                       latency_s=0.0)
            for i, s in enumerate(raw))
        problems.append(BankProblem(str(r["id"]), index, r["question"], r.get("gold"),
                                    int(raw[0]["prompt_tokens"]), 0.0, samples))
    return Bank(header, tuple(problems), source or None)


def convert_recording(path: str | os.PathLike) -> Bank:
    """`bank_from_recording` of a recording file (.jsonl or .jsonl.gz)."""
    with open_text(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return bank_from_recording(records, source=os.fspath(path))
