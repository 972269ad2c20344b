"""A generative PRM/ORM from any ttc Generator: the probability that the model answers "Yes".

For step k of a trace the judge shows the model the problem and the steps 1..k, asks whether
step k is correct, generates one token (greedy) with its top logprobs, and reads
P(correct) = P(Yes) / (P(Yes) + P(No)), summing the probabilities of the "Yes"-like and "No"-like
tokens (any case, with or without a leading space) among the top-k. A solution scored as a
single step makes it an outcome judge (`judge.as_verifier(split=False)`).

Cost: the judge's requests do not go through the context's token budget (that budget is the
policy's); each PRM call is counted as one verifier call per trace by `score_steps`, and the
judge records the tokens it processed (prompt + generated) as verifier tokens. Scores of step
prefixes already judged are cached per judge, so scoring a trace that grew by one step costs one
request, not one per step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from ttc.backends.base import Generator
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.types import Completion, Problem, SamplingParams
from ttc.verifiers.process import ProcessRewardModel

#: the question asked about step k (steps are listed as "Step i: ...")
STEP_INSTRUCTION = ("Problem: {question}\n\nSolution steps:\n{steps}\n\n"
                    "Is step {k} correct? Answer Yes or No.")
_YES = "yes"
_NO = "no"


def _norm(token_text: str) -> str:
    return token_text.strip().strip(".,:;!\"'").lower()


class LLMJudge(ProcessRewardModel):
    """A language model as a process (or outcome) reward model.

        judge = ttc.verifiers.LLMJudge(llm)          # a separate judge model
        judge = ttc.verifiers.LLMJudge()             # judge with the policy's own generator

    `generator`: the judging model (default: the generator of the context the search runs in).
    `instruction`: the user message, with {question}, {steps} and {k}. `top_logprobs`: how many
    alternatives to read. Backends that return no top logprobs fall back to the sampled token:
    exp(logprob) if it says Yes, 1 - exp(logprob) if it says No, 0.5 otherwise.

    Source: an LLM judge read as P(Yes) of its next token. Deviations: no paper is followed.

    Args:
        generator: the judging model (None: the generator of the run).
        instruction: the user message, with {question}, {steps} and {k}.
        system: an optional system message.
        top_logprobs: alternatives read for Yes/No.
        cache: reuse the judgement of a step prefix already judged.
        name: the score's name.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> judge = ttc.verifiers.LLMJudge(Scripted(["Yes"]))
        >>> ttc.BeamSearch(width=1, expansions=2, prm=judge).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    def __init__(self, generator: Generator | None = None, *, instruction: str = STEP_INSTRUCTION,
                 system: str | None = None, top_logprobs: int = 20, cache: bool = True, name: str = "llm_judge"):
        if generator is not None and not isinstance(generator, Generator):
            raise InvalidInput(f"LLMJudge needs a ttc Generator (or None), got {type(generator).__name__}")
        for key in ("{question}", "{steps}", "{k}"):
            if key not in instruction:
                raise InvalidInput(f"LLMJudge instruction must contain {key}")
        check_positive("top_logprobs", top_logprobs)
        self.generator = generator
        self.instruction = instruction
        self.system = system
        self.top_logprobs = top_logprobs
        self.name = name
        self._cache: dict[tuple, float] | None = {} if cache else None
        self._token_text: dict[tuple[int, int], str] = {}
        self._yes_no_ids: dict[int, tuple[frozenset[int], frozenset[int]]] = {}

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """The chat messages that ask whether the last of `steps` is correct."""
        listed = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
        content = self.instruction.format(question=question, steps=listed, k=len(steps))
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": content})
        return out

    async def score(self, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context) -> list[list[float]]:
        generator = self.generator or ctx.generator
        keys: dict[tuple, tuple[str, ...]] = {}
        rows = []
        for steps in traces:
            row = []
            for k in range(1, len(steps) + 1):
                key = (id(generator), problem.question, tuple(steps[:k]))
                row.append(key)
                if self._cache is None or key not in self._cache:
                    keys[key] = tuple(steps[:k])
            rows.append(row)
        todo = list(keys)
        results = await asyncio.gather(*(self._judge(generator, problem.question, keys[k], ctx) for k in todo))
        fresh = dict(zip(todo, results, strict=False))
        if self._cache is not None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache.update(fresh)
        lookup = fresh if self._cache is None else self._cache
        return [[fresh[key] if key in fresh else lookup[key] for key in row] for row in rows]

    async def _judge(self, generator: Generator, question: str, steps: Sequence[str], ctx: Context) -> float:
        prompt = await generator.chat_prompt(self.messages(question, steps))
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        try:
            generation = await asyncio.wait_for(generator.generate(prompt, params), ctx.remaining_seconds())
        except asyncio.TimeoutError:
            raise BudgetExhausted(f"time budget of {ctx.budget.seconds} s exhausted") from None
        completion = generation.completions[0]
        ctx.record_verifier_tokens(generation.prompt_tokens + generation.tokens_of(0))  # as the backend counted
        return await self.p_yes(generator, completion)

    async def p_yes(self, generator: Generator, completion: Completion) -> float:
        """P(Yes) / (P(Yes) + P(No)) from a one-token completion (0.5 when neither is seen)."""
        top = completion.top_logprobs[0] if completion.top_logprobs else None
        if top:
            yes = no = 0.0
            for token, logprob in top.items():
                # servers without token ids key the alternatives by their text (OpenAI style)
                word = _norm(token) if isinstance(token, str) else await self._word(generator, int(token))
                if word == _YES:
                    yes += math.exp(logprob)
                elif word == _NO:
                    no += math.exp(logprob)
            return yes / (yes + no) if yes + no > 0 else 0.5
        word = _norm(completion.text)
        p = math.exp(completion.logprobs[0]) if completion.logprobs else 1.0
        if word.startswith(_YES):
            return p
        if word.startswith(_NO):
            return 1.0 - p
        return 0.5

    async def _word(self, generator: Generator, token_id: int) -> str:
        """The normalised text of one token id (via decode, else via the ids of 'Yes'/'No' variants)."""
        key = (id(generator), token_id)
        if key in self._token_text:
            return self._token_text[key]
        decode = generator.decode if generator.can_decode else None
        if decode is not None:
            word = _norm(decode([token_id]))
        else:
            yes_ids, no_ids = await self._variant_ids(generator)
            word = _YES if token_id in yes_ids else _NO if token_id in no_ids else ""
        self._token_text[key] = word
        return word

    async def _variant_ids(self, generator: Generator) -> tuple[frozenset[int], frozenset[int]]:
        key = id(generator)
        if key not in self._yes_no_ids:
            found: dict[str, set[int]] = {_YES: set(), _NO: set()}
            for word in (_YES, _NO):
                for variant in (word, word.capitalize(), word.upper()):
                    for text in (variant, " " + variant):
                        ids = await generator.tokenize(text)
                        if ids:
                            found[word].add(int(ids[-1]))
            self._yes_no_ids[key] = (frozenset(found[_YES]), frozenset(found[_NO]))
        return self._yes_no_ids[key]

    def __repr__(self) -> str:
        model = "the policy's generator" if self.generator is None else getattr(self.generator, "model_name", "?")
        return f"LLMJudge(generator={model!r}, top_logprobs={self.top_logprobs})"

    def describe(self) -> dict[str, Any]:
        return {"prm": self.name, "generator": None if self.generator is None else self.generator.model_name}
