"""Adaptive Best-of-N by capability-aware self-evaluation (Manvi, Singh and Ermon, 2024, "Adaptive
Inference-Time Compute: LLMs Can Predict if They Can Do Better, Even Mid-Generation").

After each sample the model itself is asked whether restarting would give a better response: the
conversation (question, the model's response) is followed by the paper's self-evaluation question
`SELF_EVAL` and one greedy token is read; P(better) = P(Yes) / (P(Yes) + P(No)) over the Yes/No-like
tokens among the top logprobs (`ttc.verifiers.LLMJudge.p_yes`). Sampling goes on only while the best
sample so far (the one with the lowest P(better)) still has P(better) >= `threshold`.

Deviations and choices:
- The paper fine-tunes the model to predict this probability (on preference data, so that P(Yes) is a
  calibrated "another sample would win"). We use the model as it is: an un-tuned model's Yes/No
  probability is a much weaker signal, and with small models it often says "Yes" whatever it wrote.
- Batches: the paper samples in exponentially growing batches (1, 2, 4, ...) so that a hard question does
  not take n sequential rounds; `batches="doubling"` (default) does that, `batches="single"` samples one
  at a time (the finest stopping, the most rounds). All samples of a batch are self-evaluated.
- The paper also anneals the sampling temperature with the number of samples; we do not (the sampler's
  params are used as given).
- Mid-generation pruning (self-evaluating partial samples and dropping unpromising ones) is not done.
- The answer is the sample with the lowest P(better) (ties: the first sampled), as the paper selects the
  best-of-N by the self-evaluation score.
- Cost: self-evaluation requests are ordinary generator requests made through the run's context, so they
  are counted in the Result's usage (generator calls and tokens) and charged to its token budget, as
  the samples are; details["self_eval_calls"] and ["self_eval_tokens"] say how much of it they were.
- Budget: when the token budget refuses a batch's self-evaluations, its samples (drawn and billed) stay
  candidates without a P(better) (`details["p_better"]` holds None for them, `["unevaluated"]` counts
  them) and sampling stops ("budget"); the answer is the best evaluated sample, or the first sample
  when none could be evaluated. Only a first sample the budget refuses raises `BudgetExhausted`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import get_args

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput
from ttc.infos import SelfEvalStop
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.wrapping import check_n, sampler_for
from ttc.types import Candidate, Problem, Result, SamplingParams
from ttc.verifiers.judge import LLMJudge

#: the capability-aware self-evaluation question (asked after the model's response)
SELF_EVAL = 'Would you do better if you started over? ("Yes." or "No.")'
BATCHES = ("doubling", "single")
#: why sampling stopped. Local, closed set (a shared `StopReason` is being added elsewhere).
STOP_REASONS: tuple[str, ...] = get_args(SelfEvalStop)


class AdaptiveBestOfN(Strategy):
    """Sample until the model no longer expects a restart to do better, or `max_n` samples.

    Source: Manvi, Singh and Ermon, 2024, "Adaptive Inference-Time Compute: LLMs Can Predict if They
    Can Do Better, Even Mid-Generation". Deviations (module docstring): the model is not fine-tuned
    for the self-evaluation, no temperature annealing, no mid-generation pruning.

    Args:
        max_n: the most samples drawn.
        threshold: keep sampling while the best sample's P(better if restarted) is at least this.
        sample: the single-candidate strategy repeated (default: plain sampling).
        batches: "doubling" (1, 2, 4, ... samples per round, the paper's schedule) or "single".
        question: the self-evaluation question asked after each sample.
        top_logprobs: alternatives read for the Yes/No token.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.backends.scripted import ScriptedResponse
        >>> llm = Scripted(lambda prompt, params, i: ScriptedResponse("No", (-0.1,)) if "started over" in prompt
        ...                else "It is 7.")
        >>> r = ttc.AdaptiveBestOfN(max_n=8).solve("3 + 4?", llm)
        >>> (r.answer, r.details["samples"], r.details["stop"])  # P(better) = 0.10 < 0.5: one sample is enough
        ('7', 1, 'confident')
    """

    name = "adaptive_best_of_n"

    def __init__(self, max_n: int = 16, threshold: float = 0.5, sample: Sampler | None = None,
                 batches: str = "doubling", question: str = SELF_EVAL, top_logprobs: int = 20):
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"threshold must be a probability in [0, 1], got {threshold!r}")
        if batches not in BATCHES:
            raise InvalidInput(f"unknown batches {batches!r}; known: {', '.join(BATCHES)}")
        if not question.strip():
            raise InvalidInput("the self-evaluation question must not be empty")
        self.max_n = check_n(max_n)
        self.threshold = float(threshold)
        self.sample = sampler_for(sample, None, holder="AdaptiveBestOfN")
        self.batches = batches
        self.question = question
        self.top_logprobs = top_logprobs
        self._judge = LLMJudge(top_logprobs=top_logprobs, cache=False)  # reads P(Yes) from a 1-token answer

    def _messages(self, problem: Problem, candidate: Candidate) -> list[dict[str, str]]:
        prompt = getattr(self.sample, "prompt", None)
        first = prompt.messages(problem) if isinstance(prompt, ChatPrompt) else ChatPrompt().messages(problem)
        return [*first, {"role": "assistant", "content": candidate.text},
                {"role": "user", "content": self.question}]

    async def p_better(self, problem: Problem, candidate: Candidate, ctx: Context) -> tuple[float, int]:
        """(P(a restart does better), tokens the request cost) for one sample."""
        prompt = await ctx.generator.chat_prompt(self._messages(problem, candidate))
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        (completion, usage), = await ctx.generate(prompt, params)
        return await self._judge.p_yes(ctx.generator, completion), usage.prompt_tokens + usage.completion_tokens

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidates: list[Candidate] = []
        scores: list[float | None] = []  # one per candidate; None: its self-evaluation was refused
        calls = tokens = 0
        stop: SelfEvalStop = "max_n"
        size = 1
        while len(candidates) < self.max_n:
            k = min(size, self.max_n - len(candidates))
            try:
                new = await self.sample.candidates(problem, ctx, k)
            except BudgetExhausted:
                if not candidates:
                    raise
                stop = "budget"
                break
            evals = await asyncio.gather(*(self.p_better(problem, c, ctx) for c in new), return_exceptions=True)
            refused = False
            for c, outcome in zip(new, evals, strict=True):
                candidates.append(c)  # drawn and billed: a candidate, evaluated or not
                if isinstance(outcome, BudgetExhausted):
                    refused = True
                    scores.append(None)
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                p, t = outcome
                c.scores["p_better"] = p
                scores.append(p)
                calls += 1
                tokens += t
            scored = [p for p in scores if p is not None]
            if scored and min(scored) < self.threshold:
                stop = "confident"
                break
            if refused:
                stop = "budget"
                break
            if self.batches == "doubling":
                size *= 2
        chosen = choose(scores)
        return Result(problem=problem, answer=candidates[chosen].answer, candidates=candidates, usage=ctx.usage,
                      strategy=self.name,
                      details={"chosen": chosen, "p_better": scores, "stop": stop, "samples": len(candidates),
                               "self_eval_calls": calls, "self_eval_tokens": tokens,
                               "unevaluated": sum(p is None for p in scores)})


def choose(scores: Sequence[float | None]) -> int:
    """The sample with the lowest P(better) (ties: the first); the first sample when none was
    self-evaluated (the budget refused every evaluation)."""
    scored = [i for i, p in enumerate(scores) if p is not None]
    return min(scored, key=scores.__getitem__) if scored else 0
