"""The offline demo: does spending more samples buy accuracy on a real small model?

Runs Sample, MajorityVote and BestOfN at n = 1, 4, 16 on simple addition word problems, which
SmolLM2-135M-Instruct answers right on roughly a third of single samples, and prints a table of
accuracy and token cost. Everything is measured on the spot; nothing is hard-coded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ttc.backends.base import Generator
from ttc.prompts import ChatPrompt
from ttc.runner import asolve_many
from ttc.strategies import BestOfN, MajorityVote, Sample, Strategy
from ttc.types import Problem, SamplingParams
from ttc.verifiers import LogprobConfidence

_NAMES = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma", "Noah", "Zoe"]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells"]
#: a short instruction: this model is small and follows "give a number" better than \boxed{}
DEMO_PROMPT = ChatPrompt(instruction="{question}\nGive the final answer as a number.")


def demo_problems(count: int = 40, seed: int = 0) -> list[Problem]:
    """`count` addition word problems ("X has a things and gets b more..."), reproducible from `seed`."""
    rng = random.Random(seed)
    problems = []
    for i in range(count):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        question = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
        problems.append(Problem(question=question, answer=str(a + b), id=f"add-{i}"))
    return problems


@dataclass
class Row:
    strategy: str
    n: int
    accuracy: float
    errors: int
    tokens_per_problem: float
    seconds: float


def demo_strategies(ns: Sequence[int], params: SamplingParams) -> list[tuple[Strategy, int]]:
    sample = Sample(params=params, prompt=DEMO_PROMPT)
    out: list[tuple[Strategy, int]] = [(sample, 1)]
    for n in ns:
        if n > 1:
            out.append((MajorityVote(n=n, sample=sample), n))
            out.append((BestOfN(n=n, verifier=LogprobConfidence(), sample=sample), n))
    return out


async def run_demo(generator: Generator, problems: Sequence[Problem], ns: Sequence[int] = (1, 4, 16),
                   max_tokens: int = 96, seed: int = 0, concurrency: int = 64, progress: bool = True,
                   on_row: Callable[[Row], None] | None = None,
                   save: Callable[[dict], None] | None = None) -> list[Row]:
    """One Row per demo setting; `on_row(row)` is called as each setting finishes (the CLI prints it
    at once, so an interrupted demo still shows the settings that finished). With `save`, every
    result (with its candidates' texts) is passed to it as soon as its strategy is done, so the
    samples can be graded again later (`benchmarks/regrade_demo.py`)."""
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, logprobs=True)
    rows = []
    for strategy, n in demo_strategies(ns, params):
        start = time.perf_counter()
        results = await asolve_many(strategy, problems, generator, concurrency=concurrency, seed=seed,
                                    progress=progress, warn=False)  # the table shows "(k failed)"
        seconds = time.perf_counter() - start
        correct = sum(bool(r.is_correct()) for r in results)
        if save is not None:
            for r in results:
                record = r.to_dict() | {"n": n}
                for c, saved in zip(r.candidates, record["candidates"], strict=False):
                    saved["text"] = c.text
                save(record)
        rows.append(Row(strategy=strategy.name, n=n, accuracy=correct / len(results),
                        errors=sum(not r.ok for r in results),
                        tokens_per_problem=sum(r.usage.total_tokens for r in results) / len(results),
                        seconds=seconds))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def format_header() -> str:
    return f"{'strategy':<12} {'n':>3} {'accuracy':>9} {'tokens/problem':>15} {'seconds':>8}\n" + "-" * 51


def format_row(r: Row) -> str:
    err = f"  ({r.errors} failed)" if r.errors else ""
    return f"{r.strategy:<12} {r.n:>3} {r.accuracy:>9.3f} {r.tokens_per_problem:>15.1f} {r.seconds:>8.1f}{err}"


def format_footer(problems: int) -> str:
    return f"({problems} problems; tokens = prompt + completion per problem)"


def format_table(rows: Sequence[Row], problems: int) -> str:
    return "\n".join([format_header(), *(format_row(r) for r in rows), format_footer(problems)])
