"""Synthetic sample banks with known accuracy, for the tune tests."""

from __future__ import annotations

import numpy as np

from ttc.bank.format import Bank, BankProblem, BankSample, fingerprint

PARAMS = {"temperature": 0.7, "max_tokens": 64}


def header(k: int, model: str = "synthetic", params: dict | None = None, name: str | None = None) -> dict:
    params = dict(params or PARAMS)
    head = {"format": "ttc-bank", "version": 1, "model": model, "prompt": "p", "params": params,
            "samples_per_problem": k, "answer_rules": 2,
            "fingerprint": fingerprint(model, "p", params, 2)}
    if name:
        head["name"] = name
    return head


def problem(pid: str, index: int, answers: list[str | None], gold: str = "1", tokens: list[int] | None = None,
            logprobs: list[float] | None = None) -> BankProblem:
    """A problem whose samples have these answers (text "The answer is A."), `tokens` completion
    tokens each and a constant per-token logprob each (for mean_logprob / RPC)."""
    k = len(answers)
    tokens = tokens or [10 + (i % 5) for i in range(k)]
    logprobs = logprobs or [-0.1 - 0.05 * (i % 7) for i in range(k)]
    first: dict[str, int] = {}
    groups = {i: first.setdefault(a, i) for i, a in enumerate(answers) if a is not None}  # plain integers:
    # equal strings are the equivalent ones (ttc.answers.group would agree, slowly)
    samples = tuple(BankSample(text=f"s{i} The answer is {a}." if a is not None else f"s{i} no idea", answer=a,
                               group=groups.get(i), correct=a == gold, tokens=tokens[i], finish_reason="stop",
                               logprobs=(logprobs[i],) * tokens[i],
                               top_logprobs=({"a": logprobs[i], "b": logprobs[i] - 2.0},) * tokens[i],
                               latency_s=1.0)
                    for i, a in enumerate(answers))
    return BankProblem(pid, index, f"question {index}", gold, 20, 2.0, samples)


def synthetic_bank(p_correct: np.ndarray, k: int, rng: np.random.Generator, wrong: int = 4, **kw) -> Bank:
    """Problem i: each of k samples is right ("1") with probability p_correct[i], else one of
    `wrong` wrong answers ("2".."wrong+1") at random."""
    problems = []
    for i, p in enumerate(p_correct):
        answers = ["1" if rng.random() < p else str(2 + int(rng.integers(wrong))) for _ in range(k)]
        tokens = [int(t) for t in rng.integers(5, 30, k)]
        logprobs = [float(x) for x in -rng.uniform(0.05, 1.0, k)]
        problems.append(problem(f"q{i}", i, answers, tokens=tokens, logprobs=logprobs))
    return Bank(header(k, **kw), tuple(problems))
