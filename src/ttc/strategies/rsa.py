"""Recursive self-aggregation (RSA: Venkatraman et al., 2025, "Recursive Self-Aggregation Unlocks
Deep Thinking in Large Language Models", arXiv 2509.26626, v1).

The rule, as in the paper: sample a population of N solutions; in each of T rounds, every one of N
new solutions is written by the model from K solutions drawn uniformly without replacement from
the current population (`draw_subsets`), shown together in one aggregation prompt; the N new
solutions are the next population. The answer is the majority vote over the final population.

Deviations and choices:
- `rounds` counts the aggregation rounds (T - 1 in the paper's count, which includes the first
  sampling): rounds=0 is self-consistency over the first population.
- The aggregation prompt is ours (`RSA_PROMPT`: the paper's task of writing one improved solution
  from several, in our words); it is replaceable.
- Candidates are shown by their final content (`Candidate.text`); the paper shows whole reasoning
  chains. With a reasoning model, the thinking is left out of the aggregation prompt.
- The aggregation params are the sampler's (temperature, max_tokens) unless `params=` is given, as
  the paper samples aggregations like solutions.
- An aggregation prompt longer than `max_prompt_tokens` or the context allows is refused before
  any request of its round is sent (`PromptTooLong`). When the token budget refuses an aggregation,
  RSA stops and votes over the last complete population (`details["fallback"] == "budget"`); what
  the unfinished round wrote stays in the candidates (and the usage).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from ttc.aggregation import AggregationPrompt, aggregate, check_fits, prompt_limit, render
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.infos import Aggregation
from ttc.strategies.base import Strategy
from ttc.strategies.combining import aggregation_params, combined, draw, source_for
from ttc.strategies.wrapping import check_n
from ttc.types import Problem, Result, SamplingParams
from ttc.votes import weighted_vote

#: the aggregation prompt (our wording of the paper's: several attempts in, one better solution out)
RSA_PROMPT = AggregationPrompt(
    instruction=("Here is a problem and several candidate solutions to it. Some may be wrong. Use what is "
                 "right in them, fix what is wrong, and write one complete, correct solution.\n\nProblem: "
                 "{question}\n\n{candidates}\n\nWrite your solution and put your final answer within "
                 "\\boxed{{}}."))


def draw_subsets(rng: random.Random, population: Sequence[int], k: int, count: int) -> list[tuple[int, ...]]:
    """`count` subsets of `k` distinct members of `population`, each drawn uniformly without
    replacement and independently of the others (the paper's sampling)."""
    if not 1 <= k <= len(population):
        raise InvalidInput(f"k must be between 1 and the population size {len(population)}, got {k}")
    return [tuple(rng.sample(list(population), k)) for _ in range(count)]


class RSA(Strategy):
    """Recursive self-aggregation: a population of N; T rounds, each writing N new solutions, every
    one from K drawn from the last population; a majority vote over the final population.

    Source: Venkatraman et al., 2025, "Recursive Self-Aggregation Unlocks Deep Thinking in Large
    Language Models" (arXiv 2509.26626, v1). Deviations (module docstring): our prompt, final
    contents shown without thinking, `rounds` counts aggregation rounds only.

    Args:
        population: N, the solutions in every population (a positive int).
        k: K, the solutions each aggregation reads (1 <= k <= population; k=1 is self-refinement).
        rounds: T, the aggregation rounds (0: a vote over the first population).
        sample: the single-candidate strategy that writes the first population (default `Sample()`).
        prompt: the aggregation prompt (`ttc.aggregation.AggregationPrompt`).
        params: the aggregation calls' sampling params (default: the sampler's).
        max_prompt_tokens: the longest aggregation prompt (None: only the context length limits it).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda prompt, params, i: "Both say 7. The answer is 7." if "candidate solutions" in prompt
        ...                else "The answer is 7.")
        >>> r = ttc.RSA(population=2, k=2, rounds=1).solve("3 + 4?", llm, seed=0)
        >>> (r.answer, len(r.candidates), r.details["aggregations"][0]["outputs"])
        ('7', 4, [2])
    """

    name = "rsa"

    def __init__(self, population: int = 8, k: int = 3, rounds: int = 2, sample: Strategy | None = None,
                 prompt: AggregationPrompt = RSA_PROMPT, params: SamplingParams | None = None,
                 max_prompt_tokens: int | None = None):
        self.population = check_n(population)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.population:
            raise InvalidInput(f"k must be an int between 1 and population={self.population}, got {k!r}")
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
            raise InvalidInput(f"rounds must be a non-negative int, got {rounds!r}")
        if not isinstance(prompt, AggregationPrompt):
            raise InvalidInput(f"RSA's prompt= must be a ttc.aggregation.AggregationPrompt, "
                               f"got {type(prompt).__name__}")
        self.k = k
        self.rounds = rounds
        self.sample = source_for(sample, "RSA", sampler_only=True)
        self.prompt = prompt
        self.params = aggregation_params(self.sample, params)
        self.max_prompt_tokens = None if max_prompt_tokens is None else check_positive("max_prompt_tokens",
                                                                                       max_prompt_tokens)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.population)
        current = list(pool.outputs)
        limit = await prompt_limit(ctx, self.max_prompt_tokens, self.params.max_tokens) if self.rounds else None
        fallback = None
        for round_ in range(self.rounds):
            subsets = draw_subsets(ctx.rng, current, self.k, self.population)
            prompts = []
            for subset in subsets:  # every prompt checked before any request of the round is sent
                prompt = await render(ctx, self.prompt, problem, [pool.candidates[i].text for i in subset])
                prompts.append((prompt, await check_fits(ctx, prompt, limit, "RSA", len(subset))))
            outcomes = await asyncio.gather(*(aggregate(ctx, p, self.params) for p, _ in prompts),
                                            return_exceptions=True)
            written = []
            for subset, (_, length), outcome in zip(subsets, prompts, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, BudgetExhausted):
                        raise outcome
                    continue
                new = pool.add(outcome)
                written.extend(new)
                pool.aggregations.append(Aggregation(kind="aggregate", round=round_, inputs=subset,
                                                     outputs=tuple(new), prompt_tokens=length))
            if len(written) < len(subsets):
                fallback = "budget"
                break
            current = written
        answer, votes, info = weighted_vote([pool.candidates[i].answer for i in current])
        return combined(problem, ctx, pool, self.name, answer, outputs=current, chosen=None, fallback=fallback,
                        votes=votes, tie=tuple(info["tie"]) if info.get("tie") else None)
