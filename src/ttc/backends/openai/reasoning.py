"""The wire format, thinking: a reasoning model's thinking read apart from its final content.

Where the server runs a reasoning parser, it sends the thinking itself: `message.reasoning` (vLLM
0.32), `reasoning_content` (older vLLM, DeepSeek's API, `transformers serve`), `delta.reasoning` /
`delta.reasoning_content` in streams. Its `return_token_ids` and logprobs still cover the whole
output (thinking, end marker, content): they are split at the marker ids when the backend knows its
thinking format and the marker ids, else the thinking keeps its text only. Where the server has no
parser (and on `/v1/completions`, which vLLM never splits), the output is split by the backend's
declared format (`ttc.thinking`): by token ids when they came back and the marker ids are known,
else by text. Pure functions; the facade finds the marker ids and what the prompt opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ttc.backends.base import Delta
from ttc.thinking import ThinkingFormat, opened_by_ids, opened_by_text, split_positions, split_text
from ttc.types import Completion, Thinking

__all__ = ["NO_SPLIT", "SERVER_MARKERS", "StreamJoiner", "ThinkingSplit", "opened_by_ids", "opened_by_text",
           "reasoning_of", "reported_reasoning", "split_completion", "with_server_thinking"]


def reasoning_of(part: Any) -> str | None:
    """The thinking text a server sent in a message, delta or choice (`reasoning`, else the older
    `reasoning_content`); None when it sent none."""
    if not isinstance(part, dict):
        return None
    for key in ("reasoning", "reasoning_content"):
        value = part.get(key)
        if isinstance(value, str):
            return value
    return None


def reported_reasoning(data: Any) -> int | None:
    """`usage.completion_tokens_details.reasoning_tokens` of a response (or a stream's usage
    chunk); None when the server did not report it."""
    usage = data.get("usage") if isinstance(data, dict) else None
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class ThinkingSplit:
    """How one request's outputs are split: the backend's format (None: no thinking declared), its
    single-token marker ids where known (None: split by text only), and whether the prompt already
    opened the thinking (None: the format's default, `opened_by_template`)."""

    fmt: ThinkingFormat | None = None
    start_id: int | None = None
    end_id: int | None = None
    opened: bool | None = None

    @property
    def by_ids(self) -> bool:
        return self.fmt is not None and self.start_id is not None and self.end_id is not None

    @property
    def is_opened(self) -> bool:
        if self.opened is not None:
            return self.opened
        return bool(self.fmt and self.fmt.opened_by_template)


NO_SPLIT = ThinkingSplit()


def _pick(values: Sequence[Any] | None, positions: Sequence[int]) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values[i] for i in positions)


def _encoded(text: str, encode: Callable[[str], Sequence[int] | None]) -> tuple[int, ...]:
    ids = encode(text) if text else ()
    return () if ids is None else tuple(int(t) for t in ids)


def _by_ids(c: Completion, split: ThinkingSplit, text: str, content: str) -> Completion | None:
    """`c` split at the marker ids (thinking text `text`, content text `content`); None when the ids
    hold no thinking."""
    ids = c.token_ids
    think, markers, rest, closed = split_positions(ids, split.start_id, split.end_id, opened=split.is_opened)
    if not think and not markers:
        return None
    return replace(c, text=content, token_ids=_pick(ids, rest), logprobs=_pick(c.logprobs, rest),
                   top_logprobs=_pick(c.top_logprobs, rest),
                   thinking=Thinking(text=text, token_ids=_pick(ids, think), closed=closed,
                                     logprobs=_pick(c.logprobs, think), top_logprobs=_pick(c.top_logprobs, think),
                                     marker_token_ids=_pick(ids, markers), marker_logprobs=_pick(c.logprobs, markers),
                                     marker_top_logprobs=_pick(c.top_logprobs, markers)))


def _ids_usable(c: Completion) -> bool:
    return bool(c.token_ids) and (c.logprobs is None or len(c.logprobs) == len(c.token_ids))


def _by_text(c: Completion, thinking: Thinking, content: str, split: ThinkingSplit,
             encode: Callable[[str], Sequence[int] | None]) -> Completion:
    """`c` split by text into `thinking` and `content`. Where the local tokenizer's encoding of the
    content ends the sampled ids (an EOS after it allowed), the content keeps those sampled ids and
    logprobs, and the ids before it are the thinking's (its markers apart where their ids are known);
    else each part's ids are the local tokenizer's (no logprobs)."""
    content_ids = _encoded(content, encode)
    at = _suffix_at(c.token_ids, content_ids) if _ids_usable(c) else None
    if at is None:
        return replace(c, text=content, token_ids=content_ids, logprobs=None, top_logprobs=None,
                       thinking=replace(thinking, token_ids=_encoded(thinking.text, encode)))
    ids, rest = c.token_ids, range(at, len(c.token_ids))
    marks = {split.start_id, split.end_id} if split.by_ids else set()
    think = [i for i in range(at) if ids[i] not in marks]
    markers = [i for i in range(at) if ids[i] in marks]
    if not marks:  # the markers' ids unknown: the thinking's ids are the local tokenizer's
        return replace(c, text=content, token_ids=_pick(ids, rest), logprobs=_pick(c.logprobs, rest),
                       top_logprobs=_pick(c.top_logprobs, rest),
                       thinking=replace(thinking, token_ids=_encoded(thinking.text, encode)))
    return replace(c, text=content, token_ids=_pick(ids, rest), logprobs=_pick(c.logprobs, rest),
                   top_logprobs=_pick(c.top_logprobs, rest),
                   thinking=replace(thinking, token_ids=_pick(ids, think), logprobs=_pick(c.logprobs, think),
                                    top_logprobs=_pick(c.top_logprobs, think), marker_token_ids=_pick(ids, markers),
                                    marker_logprobs=_pick(c.logprobs, markers),
                                    marker_top_logprobs=_pick(c.top_logprobs, markers)))


def split_completion(c: Completion, split: ThinkingSplit,
                     encode: Callable[[str], Sequence[int] | None] = lambda text: None) -> Completion:
    """`c` (the whole generated output) split into thinking and content by the backend's format:
    by the sampled ids when the server returned them and the marker ids are known (the text by its
    markers alongside), else by text (`_by_text`). Where ids and text disagree (a stream whose
    server sent no chunk for the end marker's token), the text decides. Output that neither opens
    nor is opened by the prompt has no thinking: `c` unchanged."""
    fmt = split.fmt
    if fmt is None:
        return c
    thinking, content = split_text(c.text, fmt, opened=split.is_opened)
    if split.by_ids and _ids_usable(c):
        done = _by_ids(c, split, thinking.text if thinking is not None else "", content)
        if done is None and thinking is None:
            return c
        if done is not None and thinking is not None and done.thinking.closed == thinking.closed:
            return done
    if thinking is None:
        return c
    return _by_text(c, thinking, content, split, encode)


def with_server_thinking(c: Completion, reasoning: str, content_sent: bool, split: ThinkingSplit,
                         encode: Callable[[str], Sequence[int] | None] = lambda text: None) -> Completion:
    """`c` (the content text, and the whole output's ids and logprobs where the server returned
    them) with the thinking the server's reasoning parser separated (`reasoning`). The ids and
    logprobs are split at the marker ids when known; else as `_by_text` splits them. `closed`: from
    the ids, else whether content followed or the output was not cut at max_tokens."""
    if split.by_ids and _ids_usable(c):
        done = _by_ids(c, split, reasoning, c.text)
        if done is not None:
            return done
    closed = content_sent or c.finish_reason != "length"
    return _by_text(c, Thinking(text=reasoning, closed=closed), c.text, split, encode)


def _suffix_at(ids: Sequence[int], part: Sequence[int]) -> int | None:
    """Where `part` ends `ids` (or ends `ids` but for one last token, an EOS); None if it does not."""
    n = len(part)
    if not n or n >= len(ids):
        return None
    for end in (len(ids), len(ids) - 1):
        if end - n > 0 and tuple(ids[end - n:end]) == tuple(part):
            return end - n
    return None


#: the markers a stream's deltas are joined with where the server split the thinking and the backend
#: declares no format (written by ttc, read back by ttc: `split_completion` with opened=False)
SERVER_MARKERS = ThinkingFormat("server", opened_by_template=False)


class StreamJoiner:
    """Puts a stream back together as generated, for deltas that carry the whole output (what
    `Generator.split_thinking` then splits): where the server's parser sends the thinking apart
    (`delta.reasoning`), its pieces become text, with the format's markers written around them (the
    start marker only where the prompt did not open the thinking). `split` is the stream's split;
    without a format, `SERVER_MARKERS` (both markers written)."""

    def __init__(self, split: ThinkingSplit):
        self.fmt = split.fmt or SERVER_MARKERS
        self.opened = split.is_opened if split.fmt is not None else False
        self.state = "before"  # before any thinking, inside it, or after it

    def __call__(self, delta: Delta, reasoning: str | None) -> Delta:
        text = ""
        if reasoning:
            if self.state == "before":
                text += "" if self.opened else self.fmt.start
                self.state = "thinking"
            text += reasoning
        if delta.text and self.state == "thinking":
            text += self.fmt.end
            self.state = "after"
        if not reasoning and self.state == "before" and delta.text:
            self.state = "after"  # content first: no thinking in this stream
        return delta if text == "" else replace(delta, text=text + delta.text)

    def finish(self, delta: Delta) -> Delta:
        """The last delta: a thinking that ended with no content after it is closed where the server
        said so (finish "stop"), so that the split sees its end marker."""
        if self.state == "thinking" and delta.finish_reason == "stop":
            self.state = "after"
            return replace(delta, text=delta.text + self.fmt.end)
        return delta
