"""What the combining strategies (GenSelect, RSA, Archon's layers) share: where their candidates
come from (`sample=`: a sampler repeated n times, or any strategy run once), which of them a
wrapped strategy passes on (`outputs_of`), and the sampling params of their aggregation calls."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.infos import Aggregation, CombineInfo, SelectionInfo
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.sample import DEFAULT_PARAMS, Sample
from ttc.types import Candidate, Problem, Result, SamplingParams


@dataclass
class Pool:
    """The candidates a combining strategy works on: every candidate so far (its own are appended),
    the indices of those its source passed on (best first where the source ranks), and the
    aggregation calls made so far (the source's first)."""

    candidates: list[Candidate]
    outputs: list[int]
    aggregations: list[Aggregation] = field(default_factory=list)

    def add(self, new: list[Candidate]) -> list[int]:
        """Append `new` candidates; their indices."""
        start = len(self.candidates)
        self.candidates.extend(new)
        return list(range(start, len(self.candidates)))

    def critiques(self) -> dict[int, str]:
        """Candidate index -> the latest critique a Critique layer wrote of it."""
        return {a.inputs[0]: a.text or "" for a in self.aggregations if a.kind == "critique" and a.inputs}


def source_for(sample: Strategy | None, holder: str, *, sampler_only: bool = False) -> Strategy:
    """`sample=` checked: None is plain sampling; a Sampler is repeated n times; any other strategy
    (unless `sampler_only`) is run once and its candidates are combined."""
    if sample is None:
        return Sample()
    if isinstance(sample, Sampler):
        return sample
    if isinstance(sample, Strategy) and not sampler_only:
        return sample
    wanted = "a single-candidate strategy (a ttc Sampler)" if sampler_only else "a ttc Sampler or Strategy"
    raise InvalidInput(f"{holder}'s sample= must be {wanted}, got {type(sample).__name__}")


def outputs_of(result: Result) -> list[int]:
    """The candidates a strategy passes on, best first where it ranks them: a combining layer's
    `outputs`, best-of-N's candidates by score (ties in sampled order), else all in order."""
    info = result.details
    if isinstance(info, CombineInfo):
        return list(info.outputs)
    if isinstance(info, SelectionInfo):
        return sorted(range(len(info.scores)), key=lambda i: -info.scores[i])
    return list(range(len(result.candidates)))


async def draw(source: Strategy, problem: Problem, ctx: Context, n: int) -> Pool:
    """The pool to combine: n candidates of a sampler, or the result of a strategy run once."""
    if isinstance(source, Sampler):
        candidates = await source.candidates(problem, ctx, n)
        return Pool(candidates, list(range(len(candidates))))
    result = await source.run(problem, ctx)
    info = result.details
    done = list(info.aggregations) if isinstance(info, CombineInfo) else []
    return Pool(list(result.candidates), outputs_of(result), done)


def aggregation_params(source: Strategy, params: SamplingParams | None) -> SamplingParams:
    """The aggregation calls' params: the ones given, else the source sampler's (its temperature and
    max_tokens), else plain sampling's defaults; n=1 (a call asks for more itself)."""
    if params is None:
        params = getattr(source, "params", None)
        if not isinstance(params, SamplingParams):
            inner = getattr(source, "sample", None)
            params = getattr(inner, "params", None)
        if not isinstance(params, SamplingParams):
            params = DEFAULT_PARAMS
    return params.replace(n=1)


def combined(problem: Problem, ctx: Context, pool: Pool, name: str, answer: str | None, *,
             outputs: list[int], chosen: int | None, fallback: str | None = None, votes: dict | None = None,
             tie: tuple[str, ...] | None = None) -> Result:
    """The Result of a combining strategy: all its candidates, and a `CombineInfo` of its calls."""
    return Result(problem=problem, answer=answer, candidates=pool.candidates, usage=ctx.usage, strategy=name,
                  details=CombineInfo(aggregations=tuple(pool.aggregations), outputs=tuple(outputs), chosen=chosen,
                                      votes=votes, fallback=fallback, tie=tie))
