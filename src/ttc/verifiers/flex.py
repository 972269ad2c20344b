"""A prompted stand-in for FlexiVe (Zhong et al., 2025, arXiv 2505.11966): check fast, escalate when unsure.

FlexiVe is a generative verifier trained (GRPO) to name the first wrong paragraph of a solution, or
-1 when there is none, in `\\boxed{}`. Its "Flexible Allocation of Verification Budget" (the
authors' `verify_solution`): `fast` quick verdicts first (the thinking closed at once); when the
most common verdict (valid or not, and the same paragraph) reaches `threshold` of the readable
ones, it is the answer; otherwise `slow` = ceil(fast / 4) long verdicts (thinking open) decide by
their own majority. The verdict's text is the feedback the solver gets.

Here the verifier is any ttc Generator with the authors' critique prompt: a deviation (FlexiVe's
weights are a trained model). A model without thinking checks "fast" with a short answer
(`fast_tokens`, told to answer at once) and "slow" with a long one (`slow_tokens`, told to review
each paragraph first); a reasoning model (the verifying backend's thinking format, or `thinking=`)
checks fast with its thinking closed by the authors' placeholder and slow with it open, as the
authors do. The verdict is read from the final content only (a `\\boxed{}` inside the thinking is
never the verdict); the critique the solver is shown is the thinking, as the authors clean it.

Every request is a verifier call whose tokens count in `Usage.verifier_tokens` and against the
problem's `Budget` (`Context.verifier_generate`).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttc.backends.base import Generator
from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.hesitation import HESITATION_WORDS, close_thinking, hesitation_pattern, split_paragraphs
from ttc.thinking import ThinkingFormat, opened_by_text, split_text, thinking_format
from ttc.types import Completion, SamplingParams, Usage

#: the critique prompt (after the authors' `templates/critique_template.txt`), with {problem} and {paragraphs}
CRITIQUE_PROMPT = ("Below are a math problem and a proposed solution, split into paragraphs that are tagged and "
                   "numbered from 0.\n\n[Math Problem]\n\n{problem}\n\n[Solution]\n\n{paragraphs}\n\n"
                   "Review the solution paragraph by paragraph. If a paragraph contains an error, give the index of "
                   "the first paragraph with an error; if no paragraph does, give -1.\n\n"
                   "Put that index in \\boxed{{}}.")
#: what a model without thinking is told in each mode (a reasoning model is steered by its thinking instead)
FAST_NOTE = "\n\nAnswer at once: write only the index in \\boxed{}."
SLOW_NOTE = "\n\nFirst review every paragraph carefully, then write the index in \\boxed{}."
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")

Mode = Literal["fast", "slow"]


@dataclass(frozen=True)
class Check:
    """One verifier request: its mode, the verdict read (True: no error; False: an error at
    `error_step`; None: no readable verdict), the tokens it cost, its final content (`text`) and,
    for a reasoning verifier, its thinking."""

    mode: Mode
    valid: bool | None
    error_step: int | None
    tokens: int
    text: str = ""
    thinking: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer on one solution: valid (None: no readable verdict at all), the first
    wrong paragraph, the agreement of the fast checks, whether it escalated, every check, and the
    feedback text (the chosen check's critique, its boxed index removed)."""

    valid: bool | None
    error_step: int | None
    agreement: float
    escalated: bool
    checks: tuple[Check, ...]
    feedback: str | None
    paragraphs: int

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.checks)


def read_verdict(text: str) -> tuple[bool | None, int | None]:
    """(valid, first wrong paragraph) from a critique's last `\\boxed{index}`: -1 is valid, an index
    >= 0 an error there, anything else (or nothing) no verdict, as in the authors' code."""
    found = _BOXED.findall(text)
    if not found:
        return None, None
    index = int(found[-1])
    if index == -1:
        return True, -1
    if index >= 0:
        return False, index
    return None, None


def majority(checks: Sequence[Check]) -> tuple[tuple[bool, int] | None, float]:
    """The most common (valid, error step) of the readable checks (the first seen wins a tie) and
    its share of them; (None, 0.0) when none is readable."""
    keys = [(c.valid, c.error_step) for c in checks if c.valid is not None]
    if not keys:
        return None, 0.0
    counts = Counter(keys)
    best = max(counts.values())
    key = next(k for k in keys if counts[k] == best)
    return key, best / len(keys)  # type: ignore[return-value]


def feedback_of(check: Check) -> str:
    """The critique the solver is shown, its boxed index removed: a reasoning verifier's thinking
    (the authors keep what comes before `</think>`), else its text."""
    text = check.thinking if check.thinking and check.thinking.strip() else check.text
    return _BOXED.sub("", text).strip()


class FlexVerifier:
    """A generative verifier with FlexiVe's fast-then-slow allocation, prompted on any generator.

    Args:
        generator: the verifying model (None: the generator of the run, i.e. the solver itself).
        fast: quick checks per solution (the authors' `verification_k`, default 4).
        threshold: the agreement of the readable fast checks that settles the verdict (default 0.9).
        slow: long checks when they do not agree (default ceil(fast / 4), the authors' rule).
        fast_tokens / slow_tokens: max_tokens of a fast and of a slow check.
        temperature: sampling temperature of the checks (the authors': 0.6).
        prompt: the critique prompt, with {problem} and {paragraphs}.
        words: the hesitation words the solution is split into paragraphs at.
        thinking: the verifier's thinking format (name or `ThinkingFormat`); None: the verifying
            backend's (a model without one checks with the notes above).
    """

    def __init__(self, generator: Generator | None = None, *, fast: int = 4, threshold: float = 0.9,
                 slow: int | None = None, fast_tokens: int = 48, slow_tokens: int = 384,
                 temperature: float = 0.6, prompt: str = CRITIQUE_PROMPT,
                 words: Sequence[str] = HESITATION_WORDS, thinking: str | ThinkingFormat | None = None):
        if generator is not None and not isinstance(generator, Generator):
            raise InvalidInput(f"FlexVerifier needs a ttc Generator (or None), got {type(generator).__name__}")
        check_positive("fast", fast)
        check_positive("fast_tokens", fast_tokens)
        check_positive("slow_tokens", slow_tokens)
        if not 0.0 < threshold <= 1.0:
            raise InvalidInput(f"FlexVerifier threshold must be in (0, 1], got {threshold!r}")
        if slow is not None and slow < 0:
            raise InvalidInput(f"FlexVerifier slow must be >= 0, got {slow!r}")
        for key in ("{problem}", "{paragraphs}"):
            if key not in prompt:
                raise InvalidInput(f"FlexVerifier prompt must contain {key}")
        self.generator = generator
        self.fast = fast
        self.threshold = threshold
        self.slow = math.ceil(fast / 4) if slow is None else slow
        self.fast_tokens = fast_tokens
        self.slow_tokens = slow_tokens
        self.temperature = temperature
        self.prompt = prompt
        self.words = tuple(words)
        self.thinking = thinking_format(thinking)
        self._pattern = hesitation_pattern(self.words)

    def paragraphs(self, solution: str) -> list[str]:
        """The solution's paragraphs, cut at the hesitation words (indexed from 0)."""
        return split_paragraphs(solution, self._pattern) or [solution.strip()]

    def format_of(self, generator: Generator) -> ThinkingFormat | None:
        """The verifier's thinking format: its own, else the verifying backend's."""
        return self.thinking or generator.thinking

    def message(self, question: str, solution: str, mode: Mode, fmt: ThinkingFormat | None = None) -> str:
        """The user message of one check (`fmt`: the verifier's thinking format, default its own)."""
        tagged = "\n\n".join(f"<paragraph_{i}>\n{p}\n</paragraph_{i}>" for i, p in enumerate(self.paragraphs(solution)))
        text = self.prompt.format(problem=question, paragraphs=tagged)
        if (fmt or self.thinking) is None:
            text += FAST_NOTE if mode == "fast" else SLOW_NOTE
        return text

    async def verify(self, question: str, solution: str, ctx: Context, *, spent: Usage | None = None,
                     seed: int | None = None) -> Verdict:
        """Check `solution` fast; escalate to slow checks when the fast ones do not agree.

        `spent` (optional) gets each finished check's verifier call and tokens, also when a later
        one runs out of budget; `seed` seeds check i with seed + i (fast) and seed + fast + i (slow).
        """
        spent = Usage() if spent is None else spent
        fast = await self._checks(question, solution, "fast", self.fast, ctx, spent, seed)
        key, agreement = majority(fast)
        escalated = key is None or agreement < self.threshold
        checks = fast
        if escalated and self.slow > 0:
            slow = await self._checks(question, solution, "slow", self.slow, ctx, spent, _seed(seed, self.fast))
            checks = fast + slow
            key, _ = majority(slow)
            chosen = [c for c in slow if key is not None and (c.valid, c.error_step) == key]
        else:
            chosen = [c for c in fast if key is not None and (c.valid, c.error_step) == key]
        if key is None:
            return Verdict(None, None, agreement, escalated, tuple(checks), None, len(self.paragraphs(solution)))
        return Verdict(key[0], key[1], agreement, escalated, tuple(checks), feedback_of(chosen[0]),
                       len(self.paragraphs(solution)))

    async def _checks(self, question: str, solution: str, mode: Mode, k: int, ctx: Context, spent: Usage,
                      seed: int | None) -> list[Check]:
        generator = self.generator or ctx.generator
        fmt = self.format_of(generator)
        message = self.message(question, solution, mode, fmt)
        prompt = await generator.chat_prompt([{"role": "user", "content": message}])
        if fmt is not None and mode == "fast":
            prompt = await close_thinking(generator, prompt, fmt)
        params = SamplingParams(n=1, temperature=self.temperature,
                                max_tokens=self.fast_tokens if mode == "fast" else self.slow_tokens)
        # a backend without the format returns the markers in its text: split it here (a fast
        # check's prompt closed the thinking, a slow one's left it as the template did)
        opened = None
        if fmt is not None and generator.thinking is None:
            text = prompt if isinstance(prompt, str) else generator.decode(prompt) if generator.can_decode else ""
            opened = opened_by_text(text, fmt) is True

        async def one(i: int) -> Check:
            (completion, tokens), = await ctx.verifier_generate(prompt, params.replace(seed=_seed(seed, i)), generator)
            spent.verifier_calls += 1
            spent.verifier_tokens += tokens
            thinking, content = _parts(completion, fmt, opened)
            valid, step = read_verdict(content)
            return Check(mode, valid, step, tokens, content, thinking)

        # one request per check, sent together (the backend batches them), each a verifier call
        return list(await asyncio.gather(*(one(i) for i in range(k))))

    def __repr__(self) -> str:
        model = "the run's generator" if self.generator is None else getattr(self.generator, "model_name", "?")
        return (f"FlexVerifier(generator={model!r}, fast={self.fast}, threshold={self.threshold}, slow={self.slow}, "
                f"fast_tokens={self.fast_tokens}, slow_tokens={self.slow_tokens})")


def _parts(completion: Completion, fmt: ThinkingFormat | None, opened: bool | None) -> tuple[str | None, str]:
    """(thinking, final content) of a check: as the backend split them, or (`opened` not None: a
    backend that does not know the format) split from its text at `fmt`'s markers."""
    if opened is None or fmt is None:
        return (None if completion.thinking is None else completion.thinking.text), completion.text
    thought, content = split_text(completion.text, fmt, opened=opened)
    return (None if thought is None else thought.text), content


def _seed(seed: int | None, i: int) -> int | None:
    return None if seed is None else seed + i
