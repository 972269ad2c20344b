"""The evaluation runner: strategies x settings x problems, streamed to a resumable JSONL file.

    report = ttc.eval.evaluate("majority", "gsm8k", llm, n=[1, 4, 16], limit=50, output="results.jsonl")
    print(report)                                   # accuracy with a 95% CI, tokens, latency per setting

Each (problem, setting) becomes one JSONL line, appended and flushed as soon as it finishes (a
setting is a strategy with its n and optional token budget). Re-running the same command resumes:
lines already in the file are read back and their (problem, setting) pairs are skipped, so no
line is written twice and none is lost; a last line cut short by a kill is detected and dropped
before writing resumes. While a run writes a file it holds a lock on it, so two runs cannot
interleave their lines.

Problem i of the dataset always gets seed `seed + i` (whichever problems are left to run), so a
resumed run samples exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttc.backends.base import Generator
from ttc.context import Budget, Context
from ttc.errors import InvalidInput
from ttc.eval.datasets import load_dataset
from ttc.eval.report import EvalReport
from ttc.eval.results import ResultsFile, ResultsWarning, read_results  # noqa: F401 (read_results: re-exported)
from ttc.runner import asolve_many, run_sync
from ttc.strategies.base import Strategy
from ttc.strategies.registry import ALIASES, make_strategy
from ttc.types import Problem, Result, SamplingParams, Usage
from ttc.verifiers.base import Verifier


@dataclass(frozen=True)
class Setting:
    """One configuration to evaluate: a strategy, its number of candidates, an optional token budget.

    `label` names it in results files and reports ("majority@n=4", "best_of_n@n=7,tokens=2000").
    """

    strategy: str
    n: int = 1
    tokens: int | None = None
    label: str | None = None

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        key = f"{self.strategy}@n={self.n}"
        return key + (f",tokens={self.tokens}" if self.tokens else "")

    @property
    def budget(self) -> Budget | None:
        return Budget(tokens=self.tokens) if self.tokens else None


@dataclass
class Planned:
    """A setting with the strategy object that runs it."""

    setting: Setting
    strategy: Strategy


def make_record(problem: Problem, setting: Setting, result: Result, run_info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSONL line for one problem under one setting."""
    from ttc.answers import equivalent

    gold = problem.answer
    candidates = []
    for c in result.candidates:
        correct = None if gold is None else (c.answer is not None and equivalent(c.answer, gold))
        candidates.append({"answer": c.answer, "correct": correct, "completion_tokens": c.usage.completion_tokens,
                           "finish_reason": c.finish_reason, "scores": dict(c.scores)})
    return {
        "problem_id": problem.id,
        "setting": setting.key,
        "strategy": setting.strategy,
        "n": setting.n,
        "tokens_budget": setting.tokens,
        "answer": result.answer,
        "gold": gold,
        "correct": result.is_correct(),
        "error": result.error,
        "truncated": result.truncated,  # candidates cut at max_tokens
        "usage": result.usage.to_dict(),
        "latency_s": round(result.usage.wall_seconds, 4),
        "candidates": candidates,
        "text": result.text,  # the text of the candidate that gave the answer, for error analysis
        "details": result.details,
        **result.versions,  # the answer rules that graded "correct"
        **run_info,
    }


# -- planning -----------------------------------------------------------------------------------
def _names(strategies: str | Sequence[str]) -> list[str]:
    if isinstance(strategies, str):
        strategies = strategies.split(",")
    return [s.strip() for s in strategies if s.strip()]


def _ns(n: int | str | Iterable[int]) -> list[int]:
    if isinstance(n, int):
        ns = [n]
    elif isinstance(n, str):
        try:
            ns = [int(x) for x in n.split(",") if x.strip()]
        except ValueError:
            raise InvalidInput(f"n must be comma-separated integers, got {n!r}") from None
    else:
        ns = [int(x) for x in n]
    if not ns or any(x <= 0 for x in ns):
        raise InvalidInput(f"n must be positive integers, got {n!r}")
    return list(dict.fromkeys(ns))


def plan(strategies: Any, n: int | str | Iterable[int] = 1, *, verifier: Verifier | None = None,
         params: SamplingParams | None = None, tokens: int | None = None) -> list[Planned]:
    """The settings to run.

    strategies: registry names ("majority", "majority,best_of_n", ["sample", "majority"]), each
        run at every n (plain sampling only at n=1); or Strategy objects (their own n), or a dict
        {label: Strategy}.
    """
    from ttc.strategies.sample import DEFAULT_PARAMS

    params = params or DEFAULT_PARAMS
    if isinstance(strategies, Strategy):
        strategies = [strategies]
    if isinstance(strategies, Mapping):
        return [Planned(Setting(s.name, getattr(s, "n", 1), tokens, label=str(label)), s)
                for label, s in strategies.items()]
    items = _names(strategies) if isinstance(strategies, str) else list(strategies)
    if not items:
        raise InvalidInput("no strategy given")
    out: list[Planned] = []
    for item in items:
        if isinstance(item, Strategy):
            out.append(Planned(Setting(item.name, getattr(item, "n", 1), tokens), item))
            continue
        if not isinstance(item, str):
            raise InvalidInput(f"expected a strategy name or a ttc Strategy, got {type(item).__name__}")
        name = ALIASES.get(item.strip().lower(), item.strip().lower())
        for k in ([1] if name == "sample" else _ns(n)):
            strategy = make_strategy(name, n=k, verifier=verifier, params=params)
            out.append(Planned(Setting(strategy.name, k, tokens), strategy))
    keys = [p.setting.key for p in out]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise InvalidInput(f"two settings share the label {sorted(dupes)[0]!r}: give them distinct labels "
                           f"(a dict {{label: strategy}})")
    return out


def prompt_label(strategy: Strategy) -> str | None:
    """The prompt a strategy samples with, as recorded in results files (None when it has none
    that ttc can see). Found on the strategy or on the sampler it repeats (`sample=`)."""
    seen: set[int] = set()
    item: Any = strategy
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        prompt = getattr(item, "prompt", None)
        if prompt is not None:
            return repr(prompt)
        item = getattr(item, "sample", None)
    return None


# -- running ------------------------------------------------------------------------------------
class _Resumable(Strategy):
    """Runs `inner`, except for problems already in the results file (their record is replayed)."""

    def __init__(self, inner: Strategy, name: str, done: Mapping[str, Mapping[str, Any]]):
        self.inner = inner
        self.name = name
        self.done = done

    async def run(self, problem: Problem, ctx: Context) -> Result:
        record = self.done.get(problem.id)
        if record is None:
            return await self.inner.run(problem, ctx)
        return Result(problem=problem, answer=record.get("answer"), candidates=[], usage=Usage(),
                      strategy=self.inner.name, error=record.get("error"))


async def arun_settings(planned: Sequence[Planned], problems: Sequence[Problem], generator: Generator, *,
                        output: str | os.PathLike | None = None, seed: int | None = 0, concurrency: int = 32,
                        progress: bool = True, retry_errors: bool = False,
                        run_info: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every planned setting on every problem; return the records of this (problems x settings) grid.

    With `output`, records stream to that JSONL file and pairs already there are not re-run
    (with `retry_errors`, pairs whose record has an error are removed from the file and re-run).
    """
    run_info = dict(run_info or {})
    ids = [p.id for p in problems]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise InvalidInput("evaluation needs problems with unique ids (load them with ttc.eval.load_dataset)")
    keys = {p.setting.key for p in planned}
    prompts = {p.setting.key: prompt_label(p.strategy) for p in planned}
    file = ResultsFile(output) if output is not None else None
    new_records: list[dict[str, Any]] = []
    try:
        existing = file.records if file else []
        if file:
            _check_config(file.path, existing, prompts, run_info)
        if file and retry_errors:
            kept = [r for r in existing if not (r.get("error") and r["setting"] in keys)]
            if len(kept) != len(existing):
                file.rewrite(kept)
                existing = kept
        done: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in keys}
        for record in existing:
            if record["setting"] in done:
                done[record["setting"]].setdefault(str(record["problem_id"]), record)

        for item in planned:
            setting = item.setting
            finished = done[setting.key]
            if all(pid in finished for pid in ids):
                continue

            def on_result(index: int, result: Result, setting: Setting = setting,
                          finished: dict = finished) -> None:
                problem = problems[index]
                if problem.id in finished:
                    return  # replayed from the file
                record = make_record(problem, setting, result, {**run_info, "prompt": prompts[setting.key]})
                finished[problem.id] = record
                if file:
                    file.append(record)
                new_records.append(record)

            wrapper = _Resumable(item.strategy, setting.key, dict(finished))
            await asolve_many(wrapper, problems, generator, concurrency=concurrency, budget=setting.budget,
                              seed=seed, progress=progress, on_result=on_result, warn=False)  # reported
        all_records = list(existing) + new_records
    finally:
        if file:
            file.close()
    wanted = set(ids)
    grid = {}
    for record in all_records:
        pair = (str(record["problem_id"]), record["setting"])
        if pair[0] in wanted and pair[1] in keys and pair not in grid:
            grid[pair] = record
    order = {pid: i for i, pid in enumerate(ids)}
    setting_order = {p.setting.key: i for i, p in enumerate(planned)}
    return sorted(grid.values(), key=lambda r: (setting_order[r["setting"]], order[str(r["problem_id"])]))


#: run settings that change what a result means: a file made with others is refused
REFUSED_CHANGES = ("model", "max_tokens", "temperature", "prompt")


def _check_config(path: Path, records: Sequence[Mapping[str, Any]], prompts: Mapping[str, str | None],
                  run_info: Mapping[str, Any]) -> None:
    """Refuse to resume a results file made with another model, max_tokens, temperature or
    prompt (their results would be mixed into one table); warn about another seed."""
    for record in records:
        key = record["setting"]
        if key not in prompts:
            continue
        wanted = {**run_info, "prompt": prompts[key]}
        for name in REFUSED_CHANGES:
            if name in wanted and name in record and record[name] != wanted[name]:
                raise InvalidInput(
                    f"{path} has results made with {name}={record[name]!r} (setting {key}), but this run "
                    f"uses {name}={wanted[name]!r}: they would be mixed into one table. Write this run to "
                    f"another file (--output / output=), or delete {path} to start over")
    _check_answer_rules(path, records)
    for record in records:
        name = "seed"
        if record["setting"] in prompts and name in run_info and name in record and record[name] != run_info[name]:
            warnings.warn(f"{path} has results made with {name}={record[name]!r}, this run uses "
                          f"{run_info[name]!r}: they are kept and not re-run; use another output "
                          f"file to start over", ResultsWarning, stacklevel=3)
            return


def _check_answer_rules(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Warn when kept records were graded by other answer rules (`ttc.answers.ANSWER_RULES_VERSION`;
    a record without the field was graded by version 1): their "correct" may differ from this run's."""
    from ttc.answers import ANSWER_RULES_VERSION

    other = sorted({r.get("answer_rules", 1) for r in records} - {ANSWER_RULES_VERSION})
    if other:
        warnings.warn(f"{path} has results graded by answer rules {other}, this run grades by "
                      f"{ANSWER_RULES_VERSION} (ttc.answers.ANSWER_RULES_VERSION): they are kept and not "
                      f"re-graded; use another output file to start over", ResultsWarning, stacklevel=4)


@dataclass
class EvalConfig:
    """What `evaluate` and `compare` were asked to do, recorded in every line they write."""

    dataset: str
    model: str
    max_tokens: int
    temperature: float
    seed: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def run_info(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "seed": self.seed, **self.extra}


def _dataset_label(dataset: Any, problems: Sequence[Problem]) -> str:
    if isinstance(dataset, (str, os.PathLike)):
        return os.fspath(dataset)
    return f"{len(problems)} problems"


def _short(label: str) -> str:
    """A dataset label for titles: a file's name rather than its whole path."""
    return Path(label).name if os.sep in label and Path(label).exists() else label


def _problems(dataset: Any, split: str | None, limit: int | None, dataset_options: Mapping[str, Any]
              ) -> list[Problem]:
    problems = load_dataset(dataset, split=split, limit=limit, **dataset_options)
    if not problems:
        raise InvalidInput("the dataset has no problems to evaluate")
    return problems


def _generator(generator: Generator | None, backend: str, model: str | None, url: str | None,
               threads: Any = "auto", options: dict[str, Any] | None = None) -> tuple[Generator, bool]:
    if generator is not None:
        if not isinstance(generator, Generator):
            raise InvalidInput(f"expected a ttc Generator backend, got {type(generator).__name__}")
        return generator, False
    from ttc.backends.factory import make_backend

    return make_backend(backend, model, url, threads=threads, **(options or {})), True


def evaluate(strategies: Any = "majority", dataset: Any = "gsm8k", generator: Generator | None = None, *,
             n: int | str | Iterable[int] = 1, split: str | None = None, limit: int | None = None,
             output: str | os.PathLike | None = None, tokens_budget: int | None = None,
             verifier: Verifier | None = None, max_tokens: int = 256, temperature: float = 0.7,
             seed: int | None = 0, concurrency: int = 32, progress: bool = True, retry_errors: bool = False,
             backend: str = "transformers", model: str | None = None, url: str | None = None,
             threads: Any = "auto", save_report: bool = True, sampling: dict[str, Any] | None = None,
             backend_options: dict[str, Any] | None = None, **dataset_options: Any) -> EvalReport:
    """Evaluate strategies on a dataset; return an `EvalReport` (accuracy, tokens, latency per setting).

    strategies: registry names ("majority", "sample,majority,best_of_n") run at every `n`, or
        Strategy objects / {label: Strategy} (run as configured; `n`, `max_tokens`,
        `temperature` and `verifier` then do not apply).
    dataset: anything `ttc.eval.load_dataset` takes; `split`, `limit` and `dataset_options`
        (question_field=, answer_field=, ...) go to it.
    generator: a ttc backend; default: `make_backend(backend, model, url, threads=threads)`, closed
        at the end (`threads`: the transformers backend's CPU threads, see `ttc.backends.threads`).
    output: JSONL file the records stream to; re-running resumes it. With `save_report`, the
        summary (.summary.md, .summary.csv) and the accuracy-vs-tokens plot (.png) are saved
        beside it.
    tokens_budget: a per-problem `ttc.Budget(tokens=...)` for every setting.
    sampling: more `SamplingParams` fields for named strategies (e.g. `{"chat_template_kwargs":
        {"enable_thinking": False}, "extra": {"thinking_token_budget": 64}}`); backend_options: more
        `make_backend` keyword arguments (e.g. `{"thinking": "deepseek_r1"}`).
    """
    return run_sync(aevaluate(strategies, dataset, generator, n=n, split=split, limit=limit, output=output,
                              tokens_budget=tokens_budget, verifier=verifier, max_tokens=max_tokens,
                              temperature=temperature, seed=seed, concurrency=concurrency, progress=progress,
                              retry_errors=retry_errors, backend=backend, model=model, url=url,
                              threads=threads, save_report=save_report, sampling=sampling,
                              backend_options=backend_options, **dataset_options))


async def aevaluate(strategies: Any = "majority", dataset: Any = "gsm8k", generator: Generator | None = None, *,
                    n: int | str | Iterable[int] = 1, split: str | None = None, limit: int | None = None,
                    output: str | os.PathLike | None = None, tokens_budget: int | None = None,
                    verifier: Verifier | None = None, max_tokens: int = 256, temperature: float = 0.7,
                    seed: int | None = 0, concurrency: int = 32, progress: bool = True,
                    retry_errors: bool = False, backend: str = "transformers", model: str | None = None,
                    url: str | None = None, threads: Any = "auto", save_report: bool = True,
                    sampling: dict[str, Any] | None = None, backend_options: dict[str, Any] | None = None,
                    **dataset_options: Any) -> EvalReport:
    """Async `evaluate` (same arguments)."""
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, logprobs=True, **(sampling or {}))
    planned = plan(strategies, n, verifier=verifier, params=params, tokens=tokens_budget)
    problems = _problems(dataset, split, limit, dataset_options)
    gen, owned = _generator(generator, backend, model, url, threads, backend_options)
    try:
        config = EvalConfig(_dataset_label(dataset, problems), gen.model_name, max_tokens, temperature, seed)
        records = await arun_settings(planned, problems, gen, output=output, seed=seed, concurrency=concurrency,
                                      progress=progress, retry_errors=retry_errors, run_info=config.run_info())
    finally:
        if owned:
            await gen.aclose()
    report = EvalReport(records, title=f"{_short(config.dataset)} · {config.model}")
    if output is not None and save_report:
        report.save(report_prefix(output))
    return report


def report_prefix(output: str | os.PathLike) -> Path:
    """results.jsonl -> results (the report files are results.summary.md, .summary.csv, .png)."""
    path = Path(output)
    return path.with_suffix("") if path.suffix in (".jsonl", ".json", ".ndjson") else path


# -- equal-budget comparison --------------------------------------------------------------------
async def prompt_tokens(problems: Sequence[Problem], generator: Generator, sample: int = 16) -> int:
    """Mean prompt length (tokens) of the default chat prompt over the first `sample` problems."""
    from ttc.prompts import ChatPrompt

    prompt = ChatPrompt()
    lengths = []
    for problem in problems[:sample]:
        rendered = await prompt.render(problem, generator)
        lengths.append(len(await generator.tokenize(rendered)) if isinstance(rendered, str) else len(rendered))
    return math.ceil(sum(lengths) / len(lengths))


def n_for_budget(strategy: str, tokens: int, prompt_len: int, max_tokens: int) -> int:
    """How many candidates of up to `max_tokens` fit in `tokens` with one prompt of `prompt_len`.

    Plain sampling always makes one candidate. Sample-based strategies send all n candidates in
    one request, so the prompt is counted once: n = (tokens - prompt) // max_tokens, at least 1.
    """

    if ALIASES.get(strategy, strategy) == "sample":
        return 1
    return max(1, (tokens - prompt_len) // max_tokens)


def compare(strategies: Any = "majority,best_of_n", dataset: Any = "gsm8k", generator: Generator | None = None,
            *, tokens_budget: int | Iterable[int] | str = 2048, **kwargs: Any) -> EvalReport:
    """Compare strategies at equal per-problem token budgets; see `acompare`."""
    return run_sync(acompare(strategies, dataset, generator, tokens_budget=tokens_budget, **kwargs))


async def acompare(strategies: Any = "majority,best_of_n", dataset: Any = "gsm8k",
                   generator: Generator | None = None, *, tokens_budget: int | Iterable[int] | str = 2048,
                   split: str | None = None, limit: int | None = None, output: str | os.PathLike | None = None,
                   verifier: Verifier | None = None, max_tokens: int = 256, temperature: float = 0.7,
                   seed: int | None = 0, concurrency: int = 32, progress: bool = True, retry_errors: bool = False,
                   backend: str = "transformers", model: str | None = None, url: str | None = None,
                   threads: Any = "auto", save_report: bool = True, sampling: dict[str, Any] | None = None,
                   backend_options: dict[str, Any] | None = None, **dataset_options: Any) -> EvalReport:
    """Run each named strategy at each per-problem token budget B (prompt + completion tokens).

    Every setting is held to `ttc.Budget(tokens=B)` on every problem (enforced: no problem spends
    more), and each strategy gets as many candidates as fit: n = (B - prompt) // max_tokens, with
    the prompt length measured on the dataset (plain sampling: n = 1). The report shows what was
    actually spent, so strategies are compared at equal cap and at their real cost.
    """
    budgets = _ns(tokens_budget)
    names = _names(strategies) if isinstance(strategies, str) else list(strategies)
    if not all(isinstance(s, str) for s in names):
        raise InvalidInput("compare takes strategy names (e.g. 'majority,best_of_n')")
    problems = _problems(dataset, split, limit, dataset_options)
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, logprobs=True, **(sampling or {}))
    gen, owned = _generator(generator, backend, model, url, threads, backend_options)
    try:
        prompt_len = await prompt_tokens(problems, gen)
        planned: list[Planned] = []
        for budget in budgets:
            if budget <= prompt_len:
                raise InvalidInput(f"a token budget of {budget} does not cover the prompt ({prompt_len} tokens)")
            for name in names:
                k = n_for_budget(name.lower(), budget, prompt_len, max_tokens)
                planned += plan([name], k, verifier=verifier, params=params, tokens=budget)
        config = EvalConfig(_dataset_label(dataset, problems), gen.model_name, max_tokens, temperature, seed,
                            {"prompt_tokens_estimate": prompt_len})
        records = await arun_settings(planned, problems, gen, output=output, seed=seed, concurrency=concurrency,
                                      progress=progress, retry_errors=retry_errors, run_info=config.run_info())
    finally:
        if owned:
            await gen.aclose()
    report = EvalReport(records, title=f"{_short(config.dataset)} · {config.model} · equal token budgets")
    if output is not None and save_report:
        report.save(report_prefix(output))
    return report
