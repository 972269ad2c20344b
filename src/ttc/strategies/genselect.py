"""Generative selection (GenSelect: Toshniwal et al., 2025, "GenSelect: A Generative Approach to
Best-of-N", arXiv 2507.17797, v1): the model reads the N candidates and names the best one.

The rule, as in the paper: show the problem and the candidate solutions, numbered, in one prompt;
the model compares them and ends with "Judgment: <number>"; the answer is that candidate's. When
the candidates do not fit one prompt, a knockout tournament: they are split into near-equal groups
(`brackets`) no larger than `group_size` and small enough that each group's prompt fits, each
group's winner goes on to the next round, until one is left.

Deviations and choices (every one is a default you can change):
- The paper applies GenSelect with reasoning models (QwQ, DeepSeek-R1) that think at length; any
  model here, with the aggregation params of `ttc.strategies.combining.aggregation_params` (the
  sampler's temperature and max_tokens unless `params=` is given).
- The paper shows candidates as summaries of their (long) reasoning; we show each candidate's final
  content (`Candidate.text`, without the thinking) as it was written.
- One selection per group. (Sampling several selections and voting over them is left out.)
- The tournament's group size is the largest that fits `max_prompt_tokens` and the context (or
  `group_size`, if smaller); the paper fixes a group size. Groups are contiguous runs of the
  candidates in sampled order; a group of one (a bye) goes on without a call.
- Parsing (`ttc.aggregation.parse_choice`): "Judgment: N", else the last "Solution N" / "[N]", else a
  lone number. Unparsable: `fallback="vote"` (default) takes the group's plurality answer (its first
  candidate with it), `fallback="first"` the group's first candidate; the call records
  `parsed=False` and `details["fallback"]` says "unparsed".
- Budget: a selection the token budget refuses ends the tournament; the answer is then the vote
  over the candidates still in it (`details["fallback"] == "budget"`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ttc.aggregation import AggregationPrompt, aggregate, check_fits, parse_choice, prompt_limit, render
from ttc.answers import equivalent
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, PromptTooLong, check_positive
from ttc.infos import Aggregation
from ttc.strategies.base import Strategy
from ttc.strategies.combining import Pool, aggregation_params, combined, draw, source_for
from ttc.strategies.wrapping import check_n
from ttc.types import Problem, Result, SamplingParams
from ttc.votes import weighted_vote

#: the selection prompt (our wording of the paper's task: compare, then "Judgment: <number>")
GENSELECT_PROMPT = AggregationPrompt(
    instruction=("You are given a math problem and several candidate solutions. Compare the solutions, "
                 "check their reasoning and final answers, and decide which one is the most likely to be "
                 "correct.\n\nProblem: {question}\n\n{candidates}\n\nExplain briefly, then end with "
                 "\"Judgment: N\", where N is the number of the best solution."))
FALLBACKS = ("vote", "first")


def brackets(items: Sequence[int], size: int) -> list[list[int]]:
    """`items` split, in order, into the fewest contiguous groups of at most `size` (>= 2), their
    sizes differing by at most one (7 by 4: 4 + 3; 9 by 4: 3 + 3 + 3)."""
    if size < 2:
        raise InvalidInput(f"a tournament group holds at least 2 candidates, got {size}")
    groups = -(-len(items) // size)
    base, extra = divmod(len(items), groups) if groups else (0, 0)
    out, start = [], 0
    for g in range(groups):
        length = base + (1 if g < extra else 0)
        out.append(list(items[start:start + length]))
        start += length
    return out


def fallback_choice(answers: Sequence[str | None], rule: str) -> int:
    """The group member chosen when the selector named none: the first with the plurality
    answer ("vote"; the first member when none has an answer), or the first ("first")."""
    if rule == "vote":
        winner, _, _ = weighted_vote(answers)
        if winner is not None:
            return next(i for i, a in enumerate(answers) if a is not None and equivalent(a, winner))
    return 0


class GenSelect(Strategy):
    """The model reads the candidates and names the best one; a knockout tournament when they do
    not fit one prompt.

    Source: Toshniwal et al., 2025, "GenSelect: A Generative Approach to Best-of-N" (arXiv 2507.17797,
    v1). Deviations (module docstring): any model, candidates shown as written (no summaries), one
    selection per group, group size from the prompt limit, documented parse fallback.

    Args:
        n: candidates drawn from a sampler (ignored when `sample` is a whole strategy).
        sample: a Sampler repeated n times (default `Sample()`), or any strategy run once (its
            candidates, e.g. `ttc.Critique(...)`'s, are the ones selected from).
        prompt: the selection prompt (`ttc.aggregation.AggregationPrompt`, with {question} and {candidates}).
        params: the selection calls' sampling params (default: the sampler's).
        max_prompt_tokens: the longest selection prompt (None: only the model's context length limits it).
        group_size: the most candidates one selection reads (None: as many as fit).
        fallback: "vote" or "first": who wins a group whose selection names no candidate.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda prompt, params, i: "Solution 2 is right. Judgment: 2" if "Judgment" in prompt
        ...                else ["The answer is 5.", "The answer is 7."][i % 2])
        >>> r = ttc.GenSelect(n=2).solve("3 + 4?", llm)
        >>> (r.answer, r.details["chosen"], r.details["aggregations"][0]["inputs"])
        ('7', 1, [0, 1])
    """

    name = "genselect"

    def __init__(self, n: int = 8, sample: Strategy | None = None, prompt: AggregationPrompt = GENSELECT_PROMPT,
                 params: SamplingParams | None = None, max_prompt_tokens: int | None = None,
                 group_size: int | None = None, fallback: str = "vote"):
        if not isinstance(prompt, AggregationPrompt):
            raise InvalidInput(f"GenSelect's prompt= must be a ttc.aggregation.AggregationPrompt, got "
                               f"{type(prompt).__name__}")
        if fallback not in FALLBACKS:
            raise InvalidInput(f"unknown fallback {fallback!r}; known: {', '.join(FALLBACKS)}")
        if group_size is not None and (not isinstance(group_size, int) or group_size < 2):
            raise InvalidInput(f"group_size must be an int of at least 2 (or None), got {group_size!r}")
        self.n = check_n(n)
        self.sample = source_for(sample, "GenSelect")
        self.prompt = prompt
        self.params = aggregation_params(self.sample, params)
        self.max_prompt_tokens = None if max_prompt_tokens is None else check_positive("max_prompt_tokens",
                                                                                       max_prompt_tokens)
        self.group_size = group_size
        self.fallback = fallback

    async def _fitted(self, problem: Problem, pool: Pool, field: list[int], ctx: Context, limit: int | None
                      ) -> list[tuple[list[int], object, int | None]]:
        """This round's groups with their prompts and lengths: the largest group size whose every
        prompt fits `limit` (`PromptTooLong` when not even two candidates fit)."""
        size = min(self.group_size or len(field), len(field))
        while True:
            groups = brackets(field, size)
            fitted = []
            try:
                for group in groups:
                    if len(group) < 2:
                        fitted.append((group, None, None))
                        continue
                    prompt = await render(ctx, self.prompt, problem, [pool.candidates[i].text for i in group])
                    fitted.append((group, prompt, await check_fits(ctx, prompt, limit, "GenSelect", len(group))))
                return fitted
            except PromptTooLong:
                if size <= 2:
                    raise
                size -= 1

    async def _select(self, problem: Problem, pool: Pool, group: list[int], prompt: object, length: int | None,
                      round_: int, ctx: Context) -> Aggregation:
        written, = await aggregate(ctx, prompt, self.params)  # type: ignore[arg-type]
        picked = parse_choice(written.text, len(group))
        parsed = picked is not None
        if picked is None:
            picked = fallback_choice([pool.candidates[i].answer for i in group], self.fallback)
        return Aggregation(kind="select", round=round_, inputs=tuple(group), chosen=(group[picked],), parsed=parsed,
                           text=written.text, prompt_tokens=length)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.n)
        field = list(pool.outputs)
        if not field:
            raise InvalidInput("GenSelect's sample= gave no candidates to select from")
        limit = await prompt_limit(ctx, self.max_prompt_tokens, self.params.max_tokens)
        fallback = None
        round_ = 0
        while len(field) > 1:
            fitted = await self._fitted(problem, pool, field, ctx, limit)
            calls = [self._select(problem, pool, g, p, n, round_, ctx) for g, p, n in fitted if p is not None]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            done = [o for o in outcomes if isinstance(o, Aggregation)]
            pool.aggregations.extend(done)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, BudgetExhausted):
                    raise outcome
            if len(done) < len(outcomes):  # the budget refused a selection: the field votes
                fallback = "budget"
                break
            if any(not a.parsed for a in done):
                fallback = "unparsed"
            winners = iter(a.chosen[0] for a in done)
            field = [g[0] if p is None else next(winners) for g, p, _ in fitted]
            round_ += 1
        if fallback == "budget":
            answer, votes, info = weighted_vote([pool.candidates[i].answer for i in field])
            return combined(problem, ctx, pool, self.name, answer, outputs=field, chosen=None, fallback=fallback,
                            votes=votes, tie=tuple(info["tie"]) if info.get("tie") else None)
        chosen = field[0]
        return combined(problem, ctx, pool, self.name, pool.candidates[chosen].answer, outputs=[chosen],
                        chosen=chosen, fallback=fallback)
