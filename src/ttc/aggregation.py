"""What the strategies that combine candidates share: their prompts, the context-length check,
one aggregation request, and parsing what the model named.

An aggregation shows the model several candidates at once (GenSelect names the best, RSA and
Archon's fuser write a new one, Archon's ranker orders them, its critic judges one). Its prompt
grows with the number of candidates times their length, so before any request is sent its length
is checked against `max_prompt_tokens` and the model's context length (`context_length`): past it,
the strategy splits the work (GenSelect's tournament) or raises `PromptTooLong`. Every request goes
through the run's `Context`, so its tokens are in the usage and under the budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ttc.answers import answer_fields
from ttc.backends.base import Generator
from ttc.context import Context
from ttc.errors import InvalidInput, PromptTooLong, Unsupported
from ttc.types import Candidate, Problem, Prompt, SamplingParams


@dataclass(frozen=True)
class AggregationPrompt:
    """A replaceable aggregation prompt: a user message `instruction` with the named fields
    {question} and {candidates}, each candidate rendered by `candidate` (named fields {label}: its
    1-based number in this prompt, and {text}; {note}: a critique of it, where a Critique layer
    wrote one, else ""), joined by `separator`, after an optional `system` message."""

    instruction: str
    candidate: str = "Solution {label}:\n{text}{note}"
    separator: str = "\n\n"
    system: str | None = None

    def __post_init__(self) -> None:
        for key in ("{question}", "{candidates}"):
            if key not in self.instruction:
                raise InvalidInput(f"an aggregation instruction must contain {key}: {self.instruction[:80]!r}")
        if "{text}" not in self.candidate:
            raise InvalidInput(f"an aggregation's candidate template must contain {{text}}: {self.candidate!r}")

    def messages(self, question: str, texts: Sequence[str], notes: Sequence[str] | None = None
                 ) -> list[dict[str, str]]:
        """The chat messages that show `texts` (numbered from 1) for `question`."""
        notes = notes or [""] * len(texts)
        listed = self.separator.join(self.candidate.format(label=i, text=text, note=note)
                                     for i, (text, note) in enumerate(zip(texts, notes, strict=True), 1))
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": self.instruction.format(question=question, candidates=listed)})
        return out


async def context_length(generator: Generator) -> int | None:
    """The model's context length in tokens, where the backend says it: `max_model_len` (the
    transformers backend, `VLLMEngine`) or an async `context_length()` (`OpenAICompatible`:
    vLLM's /v1/models `max_model_len`); None when unknown."""
    known = getattr(generator, "max_model_len", None)
    if isinstance(known, int) and not isinstance(known, bool):
        return known
    reader = getattr(generator, "context_length", None)
    if callable(reader):
        return await reader()
    return None


async def prompt_limit(ctx: Context, max_prompt_tokens: int | None, max_tokens: int) -> int | None:
    """The longest aggregation prompt allowed: `max_prompt_tokens`, and the context length less the
    `max_tokens` the aggregation may write; None when neither is known."""
    limits = [] if max_prompt_tokens is None else [max_prompt_tokens]
    length = await context_length(ctx.generator)
    if length is not None:
        limits.append(length - max_tokens)
    return min(limits) if limits else None


async def prompt_tokens(ctx: Context, prompt: Prompt) -> int | None:
    """Tokens of `prompt` as the backend counts them; None when the backend cannot tokenize
    (then only the server's own refusal guards its context)."""
    if not isinstance(prompt, str):
        return len(prompt)
    try:
        return len(await ctx.generator.tokenize(prompt))
    except Unsupported:
        return None


@dataclass(frozen=True)
class Written:
    """What one aggregation request returned: its completions as candidates, and its prompt's length."""

    candidates: list[Candidate]
    prompt_tokens: int | None


async def render(ctx: Context, template: AggregationPrompt, problem: Problem, texts: Sequence[str],
                 notes: Sequence[str] | None = None) -> Prompt:
    return await ctx.generator.chat_prompt(template.messages(problem.question, texts, notes))


async def check_fits(ctx: Context, prompt: Prompt, limit: int | None, who: str, shown: int) -> int | None:
    """The prompt's length; `PromptTooLong` when it is over `limit` (None: no limit known)."""
    length = await prompt_tokens(ctx, prompt) if limit is not None or ctx.budget.tokens is not None else None
    if limit is not None and length is not None and length > limit:
        raise PromptTooLong(f"{who}: an aggregation prompt showing {shown} candidate(s) has {length} tokens, over "
                            f"the limit of {limit} (max_prompt_tokens and the model's context length less "
                            f"max_tokens); lower k, the candidates' max_tokens, or raise max_prompt_tokens",
                            tokens=length, limit=limit)
    return length


async def aggregate(ctx: Context, prompt: Prompt, params: SamplingParams) -> list[Candidate]:
    """One aggregation request through the run's context (budgeted, counted in the usage); each
    completion as a candidate whose answer is read as any candidate's."""
    params = params.replace(seed=ctx.next_seed(params.seed))
    return [Candidate(text=c.text, **answer_fields(c.text, c.finish_reason != "length"), completion=c, usage=usage,
                      finish_reason=c.finish_reason, thinking=c.thinking.text if c.thinking is not None else None)
            for c, usage in await ctx.generate(prompt, params)]


_JUDGMENT = re.compile(r"judg(?:e)?ment[\s:*\-]*(?:solution|candidate|response)?[\s#\[]*(\d+)", re.I)
_NAMED = re.compile(r"(?:solution|candidate|response)\s*#?\[?(\d+)\]?", re.I)
_BRACKETED = re.compile(r"\[(\d+)\]")
_NUMBER = re.compile(r"(?<![\d.])(\d+)(?![\d.])")


def parse_choice(text: str, count: int) -> int | None:
    """The 0-based index of the candidate `text` names among `count` (labelled 1..count), or None.

    Read in this order, the first rule that finds a label in range deciding: the last
    "Judgment: N" (GenSelect's answer format); the last "Solution N" / "Candidate N" / "[N]";
    the whole text being one number. A label out of range is skipped, not clamped.
    """
    for pattern in (_JUDGMENT, _NAMED, _BRACKETED):
        for match in reversed(pattern.findall(text)):
            if 1 <= int(match) <= count:
                return int(match) - 1
    stripped = text.strip().strip(".*#:[]() ")
    if stripped.isdigit() and 1 <= int(stripped) <= count:
        return int(stripped) - 1
    return None


def parse_ranking(text: str, count: int) -> list[int] | None:
    """The 0-based order `text` ranks `count` candidates in ("[2] > [1] > [3]"), or None when it
    names none. Labels are read in order of appearance ("[N]" first, else bare numbers), out of
    range and repeated labels skipped; candidates it leaves out follow in their given order."""
    labels = _BRACKETED.findall(text) or _NUMBER.findall(text)
    order: list[int] = []
    for label in labels:
        i = int(label) - 1
        if 0 <= i < count and i not in order:
            order.append(i)
    if not order:
        return None
    return order + [i for i in range(count) if i not in order]
