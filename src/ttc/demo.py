"""The offline demo: does spending more samples buy accuracy on a real small model?

Runs Sample, MajorityVote and BestOfN at n = 1, 4, 8 on simple addition word problems, which one
sample of SmolLM2-135M-Instruct gets right 15-35% of the time (runs so far), and prints a table of
accuracy (with a 95% interval) and token cost. Everything is measured on the spot; nothing is
hard-coded. By default the settings share their samples (`ttc.backends.shared_samples`): each
problem's 8 samples are drawn once and a setting at n uses the first n of them, so the demo draws
8 samples a problem instead of 1 + 4 + 4 + 8 + 8, and every setting is judged on the same samples.
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


@dataclass(frozen=True)
class DemoSize:
    """How much the demo runs: problems, candidate counts, completion tokens per candidate."""

    problems: int
    ns: tuple[int, ...]
    max_tokens: int


#: `ttc demo`: a complete table in a few minutes on a 2-core CPU (~110 s of CPU time; README, "A first result")
QUICK = DemoSize(problems=20, ns=(1, 4, 8), max_tokens=96)
#: `ttc demo --full`: more problems (narrower intervals) and n up to 16
FULL = DemoSize(problems=100, ns=(1, 4, 16), max_tokens=96)


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
    correct: int = 0
    problems: int = 0
    interval: tuple[float, float] = (0.0, 1.0)  # Wilson 95% interval of the accuracy
    completion_tokens: float = 0.0  # mean completion tokens per candidate


def demo_settings(ns: Sequence[int]) -> list[tuple[str, int]]:
    """(strategy name, n) in the order the demo runs them: one sample, then a vote and best-of-n
    at each n > 1 (at n = 1 both are the single sample, so it is shown once)."""
    out = [("sample", 1)]
    for n in ns:
        if n > 1:
            out += [("majority", n), ("best_of_n", n)]
    return out


def demo_strategies(ns: Sequence[int], params: SamplingParams) -> list[tuple[Strategy, int]]:
    sample = Sample(params=params, prompt=DEMO_PROMPT)
    made = {"sample": lambda n: sample, "majority": lambda n: MajorityVote(n=n, sample=sample),
            "best_of_n": lambda n: BestOfN(n=n, verifier=LogprobConfidence(), sample=sample)}
    return [(made[name](n), n) for name, n in demo_settings(ns)]


def check_size(problems: int, ns: Sequence[int], max_tokens: int) -> None:
    """Reject a demo size that cannot run (`InvalidInput` naming the option)."""
    from ttc.errors import InvalidInput

    if problems < 1:
        raise InvalidInput(f"--problems must be a positive integer, got {problems}")
    if not ns or any(n < 1 for n in ns):
        raise InvalidInput(f"--n must be positive integers separated by commas, e.g. 1,4,8; got {list(ns)}")
    if max_tokens < 1:
        raise InvalidInput(f"--max-tokens must be a positive integer, got {max_tokens}")


def make_row(name: str, n: int, results: Sequence, seconds: float) -> Row:  # noqa: ANN001 - Results
    from ttc.eval.report import wilson_interval

    correct = sum(bool(r.is_correct()) for r in results)
    candidates = [c for r in results for c in r.candidates]
    return Row(strategy=name, n=n, accuracy=correct / len(results), errors=sum(not r.ok for r in results),
               tokens_per_problem=sum(r.usage.total_tokens for r in results) / len(results), seconds=seconds,
               correct=correct, problems=len(results), interval=wilson_interval(correct, len(results)),
               completion_tokens=sum(c.usage.completion_tokens for c in candidates) / max(1, len(candidates)))


async def run_demo(generator: Generator, problems: Sequence[Problem], ns: Sequence[int] = QUICK.ns,
                   max_tokens: int = QUICK.max_tokens, seed: int = 0, concurrency: int = 64,
                   progress: bool = True, on_row: Callable[[Row], None] | None = None,
                   save: Callable[[dict], None] | None = None, shared: bool = True) -> list[Row]:
    """One Row per demo setting; `on_row(row)` is called as each setting finishes (the CLI prints it
    at once, so an interrupted demo still shows the settings that finished). `shared` (default):
    the settings share their samples (see the module docstring); False draws fresh samples for
    every setting. With `save`, every result (with its candidates' texts) is passed to it as soon
    as its strategy is done, so the samples can be graded again later (`benchmarks/regrade_demo.py`)."""
    if shared:
        from ttc.backends.shared_samples import SharedSamples

        generator = SharedSamples(generator)
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, logprobs=True)
    rows = []
    for strategy, n in demo_strategies(ns, params):
        start = time.perf_counter()
        results = await asolve_many(strategy, problems, generator, concurrency=concurrency, seed=seed,
                                    progress=progress, warn=False)  # the table shows "(k failed)"
        if save is not None:
            for r in results:
                record = r.to_dict() | {"n": n}
                for c, saved in zip(r.candidates, record["candidates"], strict=False):
                    saved["text"] = c.text
                save(record)
        rows.append(make_row(strategy.name, n, results, time.perf_counter() - start))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def format_header() -> str:
    return f"{'strategy':<12} {'n':>3} {'accuracy':>9} {'95% interval':>13} {'tokens/problem':>15}\n" + "-" * 56


def format_row(r: Row) -> str:
    err = f"  ({r.errors} failed)" if r.errors else ""
    interval = f"{r.interval[0]:.2f}-{r.interval[1]:.2f}"
    return f"{r.strategy:<12} {r.n:>3} {r.accuracy:>9.3f} {interval:>13} {r.tokens_per_problem:>15.1f}{err}"


def format_footer(problems: int, shared: bool = True, pool: int | None = None) -> str:
    lines = [f"({problems} problems; tokens = prompt + completion per problem, what the setting spends on its own;",
             " 95% interval: Wilson score interval of the accuracy"]
    if shared:
        lines[-1] += ";"
        drawn = f"{pool} samples" if pool else "its samples"
        lines.append(f" every setting uses the first n of the same {drawn} per problem)")
    else:
        lines[-1] += ")"
    return "\n".join(lines)


def format_table(rows: Sequence[Row], problems: int, shared: bool = True) -> str:
    pool = max((r.n for r in rows), default=None)
    return "\n".join([format_header(), *(format_row(r) for r in rows), format_footer(problems, shared, pool)])
