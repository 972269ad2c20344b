"""Layers in the manner of Archon (Saad-Falcon et al., 2024, "Archon: An Architecture Search Framework
for Inference-Time Techniques", arXiv 2409.15254, v6): each layer takes the candidates of the
strategy it wraps and passes candidates on, so layers stack by wrapping:

    ttc.Fuse(k=3, sample=ttc.Rank(k=5, sample=ttc.Critique(n=8)))   # generate, critique, rank, fuse

Archon's layer kinds, and what ttc builds of them:
- generator: the wrapped sampler itself (`sample=`, n candidates). Archon also ensembles several
  models in one layer; here one generator runs the whole stack (use a backend per layer's model
  to mix models: left out).
- critic (`Critique`): writes the strengths and weaknesses of each candidate; the next fuser or
  ranker reads them beside the candidates. Archon's critic writes all critiques in one call; ours
  writes one per candidate (concurrently), so a critique cannot be attributed to the wrong one.
- ranker (`Rank`): the model reads all candidates and orders them ("[2] > [1] > [3]"); the top k
  go on. Unparsable rankings keep the given order (recorded, `parsed=False`).
- fuser (`Fuse`): the model reads the top k and writes `fusions` new candidates; the first fused
  candidate with an answer gives the answer.
- verifier (`Verify`): keeps the candidates a ttc verifier scores at least `threshold` (Archon's
  verifier is a prompted yes/no judge: `ttc.verifiers.LLMJudge().as_verifier(split=False)` is one).
- left out: unit-test generation and evaluation (for code tasks), multi-model ensembles in one
  layer, and Archon's architecture search (ITAS) that picks the stack.

Every layer's Result holds its inner strategy's candidates followed by its own, `details` is a
`CombineInfo` whose `aggregations` list every call of the whole stack with the candidates it read,
and `outputs` the candidates it passes on (best first).
"""

from __future__ import annotations

import asyncio

from ttc.aggregation import AggregationPrompt, aggregate, check_fits, parse_ranking, prompt_limit, render
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.infos import Aggregation
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.combining import Pool, aggregation_params, combined, draw, source_for
from ttc.strategies.wrapping import as_verifier, check_n, sampler_for
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.base import Verifier, score_candidates

#: the fuser's prompt (our wording of Archon's: merge the best responses into one better one)
FUSE_PROMPT = AggregationPrompt(
    instruction=("You are given a problem and several responses to it. Critically evaluate them: some may "
                 "be wrong. Combine what is correct into one accurate, complete response; do not simply "
                 "copy one.\n\nProblem: {question}\n\n{candidates}\n\nWrite the response and put the final "
                 "answer within \\boxed{{}}."))
#: the ranker's prompt: the order as bracketed numbers, best first
RANK_PROMPT = AggregationPrompt(
    instruction=("You are given a problem and several responses to it, numbered. Rank them from the best "
                 "(most likely correct) to the worst.\n\nProblem: {question}\n\n{candidates}\n\nAnswer with "
                 "the ranking only, best first, as bracketed numbers, for example: [2] > [1] > [3]."),
    candidate="[{label}]\n{text}{note}")
#: the critic's prompt: one candidate at a time
CRITIQUE_PROMPT = AggregationPrompt(
    instruction=("Here is a problem and a response to it.\n\nProblem: {question}\n\n{candidates}\n\nList the "
                 "strengths and the weaknesses of the response in a few short bullet points. Say whether its "
                 "final answer is right. Do not write a new solution."),
    candidate="Response:\n{text}")
#: how a critique is shown beside its candidate to a later fuser or ranker
NOTE = "\n(Critique: {critique})"


def _notes(pool: Pool, shown: list[int]) -> list[str]:
    critiques = pool.critiques()
    return [NOTE.format(critique=critiques[i].strip()) if i in critiques else "" for i in shown]


class _Layer(Strategy):
    """What every layer has: the strategy it wraps (`sample=`; a sampler is repeated n times), its
    prompt, its calls' params and its prompt limit."""

    def __init__(self, sample: Strategy | None, n: int, prompt: AggregationPrompt, params: SamplingParams | None,
                 max_prompt_tokens: int | None):
        if not isinstance(prompt, AggregationPrompt):
            raise InvalidInput(f"{type(self).__name__}'s prompt= must be a ttc.aggregation.AggregationPrompt, "
                               f"got {type(prompt).__name__}")
        self.n = check_n(n)
        self.sample = source_for(sample, type(self).__name__)
        self.prompt = prompt
        self.params = aggregation_params(self.sample, params)
        self.max_prompt_tokens = None if max_prompt_tokens is None else check_positive("max_prompt_tokens",
                                                                                       max_prompt_tokens)

    async def _prompt(self, problem: Problem, pool: Pool, shown: list[int], ctx: Context) -> tuple[object, int | None]:
        """The prompt showing candidates `shown` (with their critiques), checked against the limit."""
        limit = await prompt_limit(ctx, self.max_prompt_tokens, self.params.max_tokens)
        prompt = await render(ctx, self.prompt, problem, [pool.candidates[i].text for i in shown], _notes(pool, shown))
        return prompt, await check_fits(ctx, prompt, limit, type(self).__name__, len(shown))


class Fuse(_Layer):
    """Archon's fuser: the model reads the top k candidates of the strategy it wraps and writes
    `fusions` new ones; the answer is the first fused candidate's that has one.

    Source: Saad-Falcon et al., 2024, "Archon" (arXiv 2409.15254, v6), the fusion layer. Deviations
    (module docstring): one model, our prompt. The top k are the wrapped strategy's outputs best
    first (a Rank layer's order, best-of-N's scores, else the sampled order). When no fused candidate
    has an answer, or the budget refuses the fusion, the answer is the top input's
    (`details["fallback"]`: "no_answer" or "budget").

    Args:
        k: the candidates the fuser reads (the top k).
        sample: the strategy whose candidates are fused: a Sampler repeated n times (default
            `Sample()`), or any strategy (e.g. `ttc.BestOfN`, `ttc.Rank`) run once.
        n: candidates drawn when `sample` is a sampler.
        fusions: fused candidates written (one request with n=fusions).
        prompt: the fusion prompt (`ttc.aggregation.AggregationPrompt`).
        params: the fusion's sampling params (default: the sampler's).
        max_prompt_tokens: the longest fusion prompt (None: only the context length limits it).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda prompt, params, i: "Combining them: 7." if "responses" in prompt
        ...                else ["The answer is 7.", "The answer is 5."][i % 2])
        >>> r = ttc.Fuse(k=2, n=2).solve("3 + 4?", llm)
        >>> (r.answer, r.details["aggregations"][0]["inputs"], r.details["chosen"])
        ('7', [0, 1], 2)
    """

    name = "fuse"

    def __init__(self, k: int = 3, sample: Strategy | None = None, n: int = 8, fusions: int = 1,
                 prompt: AggregationPrompt = FUSE_PROMPT, params: SamplingParams | None = None,
                 max_prompt_tokens: int | None = None):
        super().__init__(sample, n, prompt, params, max_prompt_tokens)
        self.k = check_positive("k", k)
        self.fusions = check_positive("fusions", fusions)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.n)
        top = pool.outputs[:self.k]
        if not top:
            raise InvalidInput("Fuse's sample= gave no candidates to fuse")
        prompt, length = await self._prompt(problem, pool, top, ctx)
        try:
            fused = await aggregate(ctx, prompt, self.params.replace(n=self.fusions))  # type: ignore[arg-type]
        except BudgetExhausted:
            return combined(problem, ctx, pool, self.name, pool.candidates[top[0]].answer, outputs=top,
                            chosen=top[0], fallback="budget")
        new = pool.add(fused)
        pool.aggregations.append(Aggregation(kind="fuse", round=0, inputs=tuple(top), outputs=tuple(new),
                                             prompt_tokens=length))
        chosen = next((i for i in new if pool.candidates[i].answer is not None), None)
        if chosen is None:
            return combined(problem, ctx, pool, self.name, pool.candidates[top[0]].answer, outputs=new,
                            chosen=top[0], fallback="no_answer")
        return combined(problem, ctx, pool, self.name, pool.candidates[chosen].answer, outputs=new, chosen=chosen)


class Rank(_Layer):
    """Archon's ranker: the model reads the candidates of the strategy it wraps and orders them;
    the top k go on, best first, and the answer is the best one's.

    Source: Saad-Falcon et al., 2024, "Archon" (arXiv 2409.15254, v6), the ranking layer. Deviations
    (module docstring): one listwise call by the same model, our prompt. Parsing
    (`ttc.aggregation.parse_ranking`): bracketed labels in order, repeats and out-of-range labels
    skipped, the ones it leaves out after in their given order; a ranking naming none keeps the given
    order (`parsed=False`, `details["fallback"] == "unparsed"`), as does a ranking the budget refuses
    ("budget"). One candidate is passed on without a call.

    Args:
        k: the candidates passed on (None: all, reordered).
        sample: the strategy whose candidates are ranked (a Sampler repeated n times, or any strategy).
        n: candidates drawn when `sample` is a sampler.
        prompt: the ranking prompt. params: its sampling params (default: the sampler's).
        max_prompt_tokens: the longest ranking prompt.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda prompt, params, i: "[2] > [1]" if "Rank them" in prompt
        ...                else ["The answer is 5.", "The answer is 7."][i % 2])
        >>> r = ttc.Rank(k=1, n=2).solve("3 + 4?", llm)
        >>> (r.answer, r.details["outputs"])
        ('7', [1])
    """

    name = "rank"

    def __init__(self, k: int | None = None, sample: Strategy | None = None, n: int = 8,
                 prompt: AggregationPrompt = RANK_PROMPT, params: SamplingParams | None = None,
                 max_prompt_tokens: int | None = None):
        super().__init__(sample, n, prompt, params, max_prompt_tokens)
        self.k = None if k is None else check_positive("k", k)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.n)
        shown = list(pool.outputs)
        if not shown:
            raise InvalidInput("Rank's sample= gave no candidates to rank")
        fallback = None
        order = shown
        if len(shown) > 1:
            prompt, length = await self._prompt(problem, pool, shown, ctx)
            try:
                written, = await aggregate(ctx, prompt, self.params)  # type: ignore[arg-type]
            except BudgetExhausted:
                fallback = "budget"
            else:
                ranking = parse_ranking(written.text, len(shown))
                if ranking is None:
                    fallback = "unparsed"
                else:
                    order = [shown[i] for i in ranking]
                pool.aggregations.append(Aggregation(kind="rank", round=0, inputs=tuple(shown), chosen=tuple(order),
                                                     parsed=ranking is not None, text=written.text,
                                                     prompt_tokens=length))
        outputs = order[:self.k] if self.k is not None else order
        return combined(problem, ctx, pool, self.name, pool.candidates[outputs[0]].answer, outputs=outputs,
                        chosen=outputs[0], fallback=fallback)


class Critique(_Layer):
    """Archon's critic: the model writes the strengths and weaknesses of each candidate of the
    strategy it wraps; a later Fuse or Rank shows each critique beside its candidate. The
    candidates pass on unchanged; the answer is the first one's.

    Source: Saad-Falcon et al., 2024, "Archon" (arXiv 2409.15254, v6), the critic. Deviations (module
    docstring): one call per candidate (Archon: one call for all), our prompt. A critique the budget
    refuses is left out (`details["fallback"] == "budget"`).

    Args:
        sample: the strategy whose candidates are critiqued (a Sampler repeated n times, or any strategy).
        n: candidates drawn when `sample` is a sampler.
        prompt: the critique prompt (shows one candidate). params: its sampling params (default: the sampler's).
        max_prompt_tokens: the longest critique prompt.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda prompt, params, i: "- wrong sum" if "weaknesses" in prompt else "The answer is 5.")
        >>> ttc.Critique(n=1).solve("3 + 4?", llm).details["aggregations"][0]["text"]
        '- wrong sum'
    """

    name = "critique"

    def __init__(self, sample: Strategy | None = None, n: int = 8, prompt: AggregationPrompt = CRITIQUE_PROMPT,
                 params: SamplingParams | None = None, max_prompt_tokens: int | None = None):
        super().__init__(sample, n, prompt, params, max_prompt_tokens)

    async def _critique(self, problem: Problem, pool: Pool, i: int, ctx: Context) -> Aggregation:
        prompt, length = await self._prompt(problem, pool, [i], ctx)
        written, = await aggregate(ctx, prompt, self.params)  # type: ignore[arg-type]
        return Aggregation(kind="critique", round=0, inputs=(i,), text=written.text, prompt_tokens=length)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.n)
        shown = list(pool.outputs)
        if not shown:
            raise InvalidInput("Critique's sample= gave no candidates to critique")
        outcomes = await asyncio.gather(*(self._critique(problem, pool, i, ctx) for i in shown),
                                        return_exceptions=True)
        fallback = None
        for outcome in outcomes:
            if isinstance(outcome, Aggregation):
                pool.aggregations.append(outcome)
            elif isinstance(outcome, BudgetExhausted):
                fallback = "budget"
            else:
                raise outcome
        return combined(problem, ctx, pool, self.name, pool.candidates[shown[0]].answer, outputs=shown,
                        chosen=shown[0], fallback=fallback)


class Verify(Strategy):
    """Archon's verifier layer: keeps the candidates of the strategy it wraps that `verifier` scores
    at least `threshold` (order kept); when none passes, all go on (`details["fallback"] ==
    "none_verified"`). The answer is the first kept candidate's.

    Source: Saad-Falcon et al., 2024, "Archon" (arXiv 2409.15254, v6), the verification layer.
    Deviations: any ttc verifier scores (Archon prompts the model for a verdict per candidate: use
    `ttc.verifiers.LLMJudge().as_verifier(split=False)` for that); its cost follows the verifier's
    rules (`score_candidates`: verifier calls and tokens).

    Args:
        verifier: scores each candidate (a `Verifier` or a plain `fn(problem, candidate) -> float`).
        threshold: the lowest score kept.
        sample: the strategy whose candidates are verified (a Sampler repeated n times, or any strategy).
        n: candidates drawn when `sample` is a sampler.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(["The answer is 5.", "The answer is 7."])
        >>> ttc.Verify(verifier=lambda p, c: float(c.answer == "7"), n=2).solve("3 + 4?", llm).details["outputs"]
        [1]
    """

    name = "verify"

    def __init__(self, verifier: Verifier | None = None, threshold: float = 0.5, sample: Strategy | None = None,
                 n: int = 8):
        if verifier is None:
            raise InvalidInput("Verify needs a verifier= (e.g. ttc.verifiers.LLMJudge().as_verifier(split=False))")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise InvalidInput(f"threshold must be a number, got {threshold!r}")
        self.verifier = as_verifier(verifier)
        self.threshold = float(threshold)
        self.n = check_n(n)
        if sample is None or isinstance(sample, Sampler):  # asked for what the verifier needs
            self.sample: Strategy = sampler_for(sample, self.verifier, holder="Verify")
        else:
            self.sample = source_for(sample, "Verify")

    async def run(self, problem: Problem, ctx: Context) -> Result:
        pool = await draw(self.sample, problem, ctx, self.n)
        shown = list(pool.outputs)
        if not shown:
            raise InvalidInput("Verify's sample= gave no candidates to verify")
        scores = await score_candidates(self.verifier, problem, [pool.candidates[i] for i in shown], ctx)
        kept = [i for i, s in zip(shown, scores, strict=True) if s >= self.threshold]
        fallback = None if kept else "none_verified"
        outputs = kept or shown
        return combined(problem, ctx, pool, self.name, pool.candidates[outputs[0]].answer, outputs=outputs,
                        chosen=outputs[0], fallback=fallback)
