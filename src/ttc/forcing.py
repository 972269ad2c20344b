"""The rule of budget forcing (s1), as pure functions of token ids: no generator, no I/O.

Muennighoff et al., 2025, "s1: Simple test-time scaling" (arXiv 2501.19393v3, section 3.1): a
maximum of thinking tokens is enforced by appending the end-of-thinking delimiter (and an answer
cue) once the thinking reaches it; a minimum by suppressing the delimiter when the model writes it
and appending "Wait" instead. `next_move` says which, after each request of a candidate.

What counts as what (so that every total equals the server's):

- thinking tokens: tokens the model generated strictly between the markers (vLLM's
  `count_reasoning_tokens`); an injected "Wait" is not one of them;
- marker tokens: start / end markers the model generated itself (completion tokens, neither
  thinking nor content), a suppressed end marker included;
- content tokens: tokens the model generated after the end marker (the injected cue excluded);
- discarded tokens: tokens a backend generated after an end marker that was then suppressed
  (0 where the backend honours the end marker as a stop string);
- prompt tokens: everything ttc appends (the end marker and answer cue it forces, each "Wait"):
  they are part of the next request's prompt, as the server counts them.

So completion tokens = thinking + marker + content + discarded, request by request.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttc.errors import InvalidInput
from ttc.thinking import ThinkingFormat, generated_ids, generated_logprobs, opened_by_ids, split_positions
from ttc.types import Completion

#: what the strategy does next (`next_move`)
THINK, WAIT, FORCE, ANSWER, DONE = "think", "wait", "force", "answer", "done"
#: the default extension string of the paper
WAIT_TEXT = "Wait"


@dataclass(frozen=True)
class MarkerIds:
    """The start and end markers of a thinking format as this model's token ids (one token each)."""

    start: int
    end: int


_MARKERS: weakref.WeakKeyDictionary[Any, tuple[ThinkingFormat, MarkerIds]] = weakref.WeakKeyDictionary()


async def marker_token_ids(generator: Any, fmt: ThinkingFormat) -> MarkerIds:
    """`fmt`'s markers as one token id each of `generator`'s model (cached per generator), or
    `InvalidInput` naming the marker the model does not have as a token (it never writes it)."""
    cached = _MARKERS.get(generator)
    if cached is not None and cached[0] == fmt:
        return cached[1]
    out = []
    for marker in (fmt.start, fmt.end):
        ids = list(await generator.tokenize(marker))
        if len(ids) != 1:
            convert = getattr(generator.tokenizer, "convert_tokens_to_ids", None)
            single = convert(marker) if callable(convert) else None
            if not isinstance(single, int) or single == getattr(generator.tokenizer, "unk_token_id", None):
                raise InvalidInput(f"thinking marker {fmt.start!r} / {fmt.end!r} of format {fmt.name!r}: "
                                   f"{marker!r} is {len(ids)} tokens for this model, not one token of its "
                                   f"vocabulary, so the model never writes it: is {fmt.name!r} its format?")
            ids = [single]
        out.append(ids[0])
    markers = MarkerIds(start=out[0], end=out[1])
    _MARKERS[generator] = (fmt, markers)
    return markers


def prompt_state(prompt_ids: Sequence[int], markers: MarkerIds) -> bool | None:
    """Whether `prompt_ids` end inside an open thinking segment: True (opened, e.g. by an R1-style
    chat template), False (the prompt closed its thinking: `enable_thinking=False`), None (no marker
    at all: the model may open the thinking itself, as Qwen3 does)."""
    return opened_by_ids(prompt_ids, markers.start, markers.end)


def generated(completion: Completion) -> tuple[list[int], list[float] | None, list[dict] | None]:
    """Every token id the model generated in `completion`, in order (a backend's thinking split put
    back together: `ttc.thinking.generated_ids`), with their logprobs and top logprobs where known.
    A backend that hides the thinking cannot be continued (`ValueError`)."""
    if completion.thinking is not None and completion.thinking.hidden:
        raise ValueError("the backend hid the thinking (it returned no thinking tokens)")
    logprobs, top = generated_logprobs(completion)
    return (list(generated_ids(completion)), None if logprobs is None else list(logprobs),
            None if top is None else list(top))


@dataclass(frozen=True)
class Piece:
    """One request's generated tokens, split at the markers (positions into its ids)."""

    thinking: list[int]
    markers: list[int]
    content: list[int]
    closed: bool
    opened: bool  # the thinking was open during this request (by the prompt or a generated start)


def split_piece(ids: Sequence[int], markers: MarkerIds, *, opened: bool) -> Piece:
    """Positions of the thinking, marker and content tokens of one request's generated `ids`.
    A request whose prompt did not open the thinking and whose first token is not the start
    marker did not think: all content."""
    thinking, marks, content, closed = split_positions(ids, markers.start, markers.end, opened=opened)
    started = opened or bool(marks)
    return Piece(thinking, marks, content, closed, started)


def next_move(*, thought: int, cap: int, closed: bool, finish: str, waits_done: int, waits: int,
              progressed: bool) -> str:
    """What to do after a thinking request.

    thought: thinking tokens generated so far; cap: the thinking budget; closed: the model wrote
    the end marker in this request; finish: the request's finish reason; waits_done / waits: "Wait"
    extensions applied / allowed; progressed: the request generated at least one token.

    - the model ended its thinking (closed, or stopped inside it) with budget and a "Wait" left:
      WAIT (suppress the end, append "Wait");
    - closed otherwise: ANSWER (the model answers after its own end marker);
    - still open at the cap, stopped with no "Wait" left, or stuck: FORCE (end marker + cue);
    - else THINK on (a request cut short of the cap, e.g. by the problem's token budget).
    """
    room = thought < cap
    if closed or finish == "stop":
        if room and waits_done < waits:
            return WAIT
        return ANSWER if closed else FORCE
    if not room or not progressed:
        return FORCE
    return THINK
