"""What a probe sees and says: the partial trace of one candidate, and a continue/exit/drop decision.

A probe is a small configured object shared by every candidate of a run; whatever it must
remember about one trace (past probe answers, say) lives in that trace's `TraceState.memory`.
Probes that call the generator do it through the context and charge the tokens to the trace
(`TraceState.charge`), so a candidate's usage includes what probing it cost.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from ttc.answers import extract
from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.forcing import marker_token_ids
from ttc.needs import NOTHING, Needs
from ttc.thinking import prompt_opens, split_positions
from ttc.types import Problem, SamplingParams, Usage

CONTINUE, EXIT, DROP = "continue", "exit", "drop"
ACTIONS = (CONTINUE, EXIT, DROP)

#: Dynasor's probe (Fu et al., 2024): the model is told it has the answer and must box it.
BOXED_SUFFIX = "\n\n... Oh, I suddenly got the answer to the whole problem, the final answer is \\boxed{"
#: for small models that do not box their answers
PLAIN_SUFFIX = "\n\nThe final answer is"


@dataclass
class Decision:
    """What a probe says at a check point.

    action: "continue", "exit" (stop now and answer) or "drop" (abandon the trace: it does not vote).
    answer: the answer to give on exit, when the probe already elicited one.
    at: exit as if the trace had stopped after this many generated tokens (a check point can
        come after the position that triggered it, e.g. a cue token inside a generated chunk).
    score: the probe's number at this check point (agreement count, confidence, probability).
    appended: the text the probe appended to elicit `answer` (becomes the end of the candidate's text).
    probe: the name of the probe that decided, when a container (`AnyOf`) passes a member's decision on.
    """

    action: str = CONTINUE
    answer: str | None = None
    at: int | None = None
    score: float | None = None
    appended: str = ""
    probe: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InvalidInput(f"unknown probe action {self.action!r}; known: {', '.join(ACTIONS)}")

    @property
    def stop(self) -> bool:
        return self.action != CONTINUE


@dataclass
class TraceState:
    """The partial trace of one candidate as a probe sees it (token ids are never re-tokenised)."""

    problem: Problem
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    #: the candidate's usage: generation and probing are both charged here
    usage: Usage = field(default_factory=Usage)
    probe_calls: int = 0
    probe_tokens: int = 0
    #: per-trace scratch space for probes (keyed by probe name)
    memory: dict[str, Any] = field(default_factory=dict)
    #: tokens already looked at by probes that scan every token (cue words, confidence windows)
    scanned: int = 0

    def charge(self, usage: Usage) -> None:
        """Count a probe request's cost in this candidate's usage."""
        self.usage.add(usage)
        self.probe_calls += 1
        self.probe_tokens += usage.prompt_tokens + usage.completion_tokens


class Probe(abc.ABC):
    """Decides, at check points of a partial trace, whether to go on, exit and answer, or drop it.

    A probe declares what it needs and how it behaves in class (or instance) attributes, which
    `EarlyExit` reads; it never looks at a probe's type or name:

    - `every`: check every this many generated tokens (EarlyExit's chunk size in chunked mode);
    - `scans_tokens`: the probe looks at every new token since `TraceState.scanned` (cue words,
      confidence windows), so a stream asks it at every token rather than every `every` tokens;
    - `suffix`: the answer-eliciting text the probe uses; EarlyExit forces an answer with it
      when the probe stops without one (None: `PLAIN_SUFFIX`);
    - `needs` (`ttc.needs.Needs`): what it reads beyond the text (token logprobs, top logprobs,
      hidden states); EarlyExit asks its sampling for them and checks the backend for hidden states;
    - `required_capabilities`: other backend capabilities it needs (e.g. "stream").
    """

    name: str = "probe"
    every: int = 32
    scans_tokens: bool = False
    suffix: str | None = None
    needs: Needs = NOTHING
    required_capabilities: frozenset[str] = frozenset()

    @abc.abstractmethod
    async def check(self, state: TraceState, ctx: Context) -> Decision:
        """Look at `state` (new tokens since `state.scanned`, if the probe scans) and decide."""

    def reset(self, state: TraceState) -> None:  # noqa: B027 (an optional hook)
        """Called once before a trace starts."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


@dataclass
class Elicited:
    """A forced answer: the answer read, the text that ends the candidate (suffix + the answer,
    closed), and the whole probe response (for hedge checks)."""

    answer: str | None
    appended: str
    response: str


@dataclass(frozen=True)
class ThinkingView:
    """Where a partial trace of a reasoning model stands: the positions of its thinking tokens in
    `TraceState.token_ids` (markers excluded) and whether the thinking is still open."""

    positions: list[int]
    open: bool


async def thinking_view(state: TraceState, ctx: Context | None, upto: int | None = None) -> ThinkingView | None:
    """The thinking of `state`'s trace (its first `upto` tokens), or None where there is none: a
    generator without a thinking format, or a trace that never opened a thinking (then every probe
    behaves as on an instruct model)."""
    fmt = None if ctx is None else ctx.generator.thinking  # no context: a probe checked on its own
    if fmt is None:
        return None
    markers = await marker_token_ids(ctx.generator, fmt)
    ids = state.token_ids if upto is None else state.token_ids[:upto]
    opened = prompt_opens(state.prompt_ids, markers.start, markers.end)
    thinking, marks, _, closed = split_positions(ids, markers.start, markers.end, opened=opened)
    if not opened and not marks:
        return None
    return ThinkingView(thinking, not closed)


async def elicit(state: TraceState, ctx: Context, suffix: str, max_tokens: int = 12,
                 upto: int | None = None) -> Elicited:
    """Force an answer now: append `suffix` to the trace (cut after `upto` tokens) and read a short
    greedy continuation. The request is charged to the trace.

    Inside an open thinking segment (a reasoning model), the end-of-thinking marker goes before the
    suffix, as Dynasor does for reasoning models: the model is made to leave its thinking and answer.
    The marker is then part of `Elicited.appended`.

    A suffix ending in "{" (a \\boxed{) is answered as Dynasor does: `max_tokens` tokens without a
    stop, the answer read up to the first unpaired "}", and the whole response kept, so that hedging
    after the box ("7} Wait, ...") is seen. Other suffixes stop at the end of the line.
    """
    ids = await suffix_ids(ctx, suffix)
    trace = state.token_ids if upto is None else state.token_ids[:upto]
    view = await thinking_view(state, ctx, upto)
    if view is not None and view.open:
        fmt = ctx.generator.thinking
        ids = [(await marker_token_ids(ctx.generator, fmt)).end] + ids
        suffix = fmt.end + suffix
    boxed = suffix.rstrip().endswith("{")
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, stop=() if boxed else ("\n",))
    (completion, usage), = await ctx.generate(list(state.prompt_ids) + list(trace) + ids, params)
    state.charge(usage)
    out = completion.text
    if not boxed:
        return Elicited(read_answer(suffix, out), suffix + out, out)
    close = unpaired_brace(out)
    return Elicited(read_answer(suffix, out), suffix + (out + "}" if close is None else out[: close + 1]), out)


async def elicit_answer(state: TraceState, ctx: Context, suffix: str, max_tokens: int = 12,
                        upto: int | None = None) -> tuple[str | None, str]:
    """`elicit`'s (answer, the text that was appended after the trace)."""
    got = await elicit(state, ctx, suffix, max_tokens, upto)
    return got.answer, got.appended


def unpaired_brace(text: str) -> int | None:
    """Index of the first "}" in `text` that closes a brace opened before it (None: there is none)."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
    return None


def read_answer(suffix: str, out: str) -> str | None:
    """The answer in a probe's continuation `out` of `suffix` (None when there is none)."""
    if suffix.rstrip().endswith("{"):
        close = unpaired_brace(out)
        value = (out if close is None else out[:close]).strip().rstrip(".").strip().strip("$").strip()
        return value or None
    # a forced answer is explicit by construction: read it as stated after the suffix ("The final
    # answer is \frac{3}{4}." -> \frac{3}{4}), or, for a suffix without "answer", as the continuation's value
    return (extract(suffix + out, finished=False) or extract(out)) if out.strip() else None


async def suffix_ids(ctx: Context, suffix: str) -> list[int]:
    """Token ids of a probe suffix, tokenised on its own and appended to the trace's ids."""
    return list(await ctx.generator.tokenize(suffix))
