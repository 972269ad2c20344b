"""Solve-Detect-Verify's detector (Zhong et al., 2025, arXiv 2505.11966): has the solution ended?

The paper's "Detect" stage watches the trace for hesitation words ("wait", "hmm", "let me
check", ...): a model that hesitates has often already written its answer and is about to
second-guess it. At each such word the model is asked, in a side request, whether the solution so
far is complete, and one token is read: the trace is complete when "Yes" is more probable than "No"
among the top log-probabilities (the authors' `solve_detect_verify.py`: `lp(Yes) > lp(No)`, with
No absent as -inf). The trace is then stopped before the hesitation word and its answer elicited.

The words and where they count are `ttc.hesitation`'s (the verifier splits a solution into paragraphs
at the same words, as the authors do, so its error index means the same steps).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.hesitation import HESITATION_WORDS, close_thinking, find_hesitations, hesitation_pattern
from ttc.probes.base import CONTINUE, EXIT, Decision, Probe, TraceState
from ttc.thinking import ThinkingFormat, thinking_format
from ttc.types import SamplingParams

#: the question put to the model at a hesitation word (the authors' wording, shortened)
COMPLETE_QUESTION = ("Given the current solution to the problem above, check whether it is a complete "
                     "solution (i.e. it contains the final answer). Respond with only one word: `Yes` if "
                     "it is complete, `No` if it is not.")


def complete_by_logprobs(top: dict[str, float]) -> float:
    """P(Yes) / (P(Yes) + P(No)) from one token's top alternatives (keys: their text); 0.5 when neither
    is there. The trace is complete when this exceeds 0.5: lp(Yes) > lp(No), the authors' rule."""
    yes = no = 0.0
    for token, logprob in top.items():
        word = token.strip().strip(".,:;!\"'`").lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else 0.5


@dataclass(frozen=True)
class Detection:
    """One hesitation word the detector asked about: where (generated tokens before it), which word,
    the model's P(complete) and whether it stopped the trace there."""

    at: int
    word: str
    p_complete: float
    complete: bool


class SolutionComplete(Probe):
    """Stop a trace at the first hesitation word where the model says its solution is complete.

    Checked every `every` tokens (EarlyExit's chunk) over the new text; each hesitation word at a step
    boundary costs one side request of one token with `top_logprobs` alternatives, charged to the
    trace (`TraceState.charge`: probe calls and tokens, under the budget). On "complete" the trace is
    cut before the word (`Decision.at`) and EarlyExit elicits the answer.

    Reasoning models (a backend with a thinking format, or `thinking=` a `ttc.thinking` format for
    one that does not split it): only the thinking is watched (the text before the end marker; once
    the model closes its thinking the detector is silent), the solution it is asked about is that
    thinking, and the completeness question is asked the authors' way: a closed placeholder
    thinking, then the answer token. EarlyExit then closes the thinking before the answer cue.

    Source: Zhong et al., 2025 (arXiv 2505.11966), the authors' `solve_detect_verify.py`. Deviations:
    a word counts only at a step boundary and as a whole word (the authors' check fires whenever the
    text ends with a keyword), and the trace is cut before the word (they keep it); see
    docs/strategies/solve_detect_verify.md.

    Args:
        words: the hesitation words (default: the authors' ten).
        question: the user message asking whether the solution is complete.
        every: check every this many generated tokens.
        top_logprobs: alternatives read for Yes/No.
        thinking: a reasoning model's thinking format (name or `ThinkingFormat`); None: the backend's.
        max_checks: at most this many completeness requests per trace (None: no limit).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.probes import PLAIN_SUFFIX, SolutionComplete
        >>> trace = "3 + 4 = 7.\\nHmm, is it? Yes, 7."
        >>> def script(prompt, params, i):
        ...     if "complete solution" in prompt: return "Yes"
        ...     if prompt.endswith(PLAIN_SUFFIX): return " 7"
        ...     return trace[len(prompt.split("<assistant>\\n", 1)[1]):]
        >>> r = ttc.EarlyExit(SolutionComplete(every=4)).solve("3 + 4?", Scripted(script))
        >>> r.answer, r.candidates[0].text
        ('7', '3 + 4 = 7.\\n\\n\\nThe final answer is 7')
    """

    name = "solution_complete"
    scans_tokens = True

    def __init__(self, words: Sequence[str] = HESITATION_WORDS, question: str = COMPLETE_QUESTION,
                 every: int = 32, top_logprobs: int = 10, thinking: str | ThinkingFormat | None = None,
                 max_checks: int | None = None):
        words = tuple(w.strip() for w in words)
        if not words or not all(words):
            raise InvalidInput("SolutionComplete needs at least one non-empty hesitation word")
        check_positive("every", every)
        check_positive("top_logprobs", top_logprobs)
        if max_checks is not None:
            check_positive("max_checks", max_checks)
        self.words = words
        self.question = question
        self.every = every
        self.top_logprobs = top_logprobs
        self.thinking = thinking_format(thinking)
        self.max_checks = max_checks
        self._pattern = hesitation_pattern(words)

    @property
    def pattern(self) -> re.Pattern[str]:
        return self._pattern

    def reset(self, state: TraceState) -> None:
        state.memory[self.name] = {"chars": 0, "detections": []}

    def detections(self, state: TraceState) -> list[Detection]:
        """The detections of this trace so far (in order)."""
        return state.memory.get(self.name, {}).get("detections", [])

    def format_of(self, ctx: Context) -> ThinkingFormat | None:
        """The thinking format the trace is read with: the detector's own, else the backend's."""
        return self.thinking or ctx.generator.thinking

    def watched(self, text: str, fmt: ThinkingFormat | None = None) -> str:
        """The part of the trace the detector reads: all of it, or a reasoning model's thinking
        (`fmt`, default the detector's format)."""
        fmt = fmt or self.thinking
        if fmt is None:
            return text
        end = text.find(fmt.end)
        return text if end < 0 else text[:end]

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        memory = state.memory.setdefault(self.name, {"chars": 0, "detections": []})
        fmt = self.format_of(ctx)
        text = self.watched(state.text, fmt)
        state.scanned = len(state.token_ids)
        # the last few characters may hold the first letters of a word ("let me che"): look at
        # them again next time; a word at the very end may go on ("waiting"): decide later
        resume = max(memory["chars"], len(text) - max(len(w) for w in self.words) - 4)
        for at_char, word in find_hesitations(text, self._pattern, memory["chars"]):
            if at_char + len(word) >= len(text):
                resume = at_char
                break
            resume = max(resume, at_char + 1)
            if self.max_checks is not None and len(memory["detections"]) >= self.max_checks:
                continue
            at = await _tokens_before(ctx, state, at_char)
            p = await self._p_complete(state, ctx, text[:at_char], fmt)
            complete = p > 0.5
            memory["detections"].append(Detection(at=at, word=word, p_complete=p, complete=complete))
            if complete:
                memory["chars"] = at_char + 1
                return Decision(EXIT, at=at, score=p)
        memory["chars"] = resume
        return Decision(CONTINUE)

    async def _p_complete(self, state: TraceState, ctx: Context, solution: str, fmt: ThinkingFormat | None) -> float:
        if fmt is not None:  # the thinking so far, without a start marker the model wrote itself
            solution = solution.lstrip().removeprefix(fmt.start).lstrip()
        messages = [{"role": "user", "content": state.problem.question},
                    {"role": "assistant", "content": solution.rstrip()},
                    {"role": "user", "content": self.question}]
        prompt = await ctx.generator.chat_prompt(messages)
        if fmt is not None:
            prompt = await close_thinking(ctx.generator, prompt, fmt)
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        (completion, usage), = await ctx.generate(prompt, params)
        state.charge(usage)
        return await _p_yes(ctx, completion)


async def _p_yes(ctx: Context, completion) -> float:  # noqa: ANN001 - a ttc Completion
    """P(complete) of a one-token answer: its top alternatives by text, else the sampled token."""
    top = completion.top_logprobs[0] if completion.top_logprobs else None
    if top:
        decode = ctx.generator.decode if ctx.generator.can_decode else None
        named = {}
        for token, logprob in top.items():
            text = token if isinstance(token, str) else (decode([int(token)]) if decode else "")
            named[text] = max(logprob, named.get(text, -math.inf))
        return complete_by_logprobs(named)
    word = completion.text.strip().lower()
    p = math.exp(completion.logprobs[0]) if completion.logprobs else 1.0
    return p if word.startswith("yes") else (1.0 - p if word.startswith("no") else 0.5)


async def _tokens_before(ctx: Context, state: TraceState, char: int) -> int:
    """How many generated tokens lie wholly before character `char` of the trace's text."""
    decode = ctx.generator.decode if ctx.generator.can_decode else None
    if decode is None:  # no decoder: cut at the proportional position (rounded down)
        return len(state.token_ids) * char // max(1, len(state.text))
    lo, hi = 0, len(state.token_ids)
    while lo < hi:  # the largest k whose decoded prefix ends at or before `char`
        mid = (lo + hi + 1) // 2
        if len(decode(state.token_ids[:mid])) <= char:
            lo = mid
        else:
            hi = mid - 1
    return lo
