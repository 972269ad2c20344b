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
from ttc.thinking import ThinkingFormat, split_positions, split_text
from ttc.types import Completion, Thinking

__all__ = ["NO_SPLIT", "StreamSplitter", "ThinkingSplit", "opened_by_ids", "opened_by_text", "reasoning_of",
           "reported_reasoning", "split_completion", "with_server_thinking"]


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


def opened_by_ids(prompt: Sequence[int], start_id: int, end_id: int) -> bool | None:
    """Whether a token-id prompt ends inside an open thinking segment (its last marker is the start
    marker); None when it holds no marker (the format's default applies)."""
    for token in reversed(prompt):
        if token == start_id:
            return True
        if token == end_id:
            return False
    return None


def opened_by_text(prompt: str, fmt: ThinkingFormat) -> bool | None:
    """As `opened_by_ids`, for a text prompt: which of the markers comes last."""
    start, end = prompt.rfind(fmt.start), prompt.rfind(fmt.end)
    if start < 0 and end < 0:
        return None
    return start > end


def _pick(values: Sequence[Any] | None, positions: Sequence[int]) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values[i] for i in positions)


def _encoded(text: str, encode: Callable[[str], Sequence[int] | None]) -> tuple[int, ...]:
    ids = encode(text) if text else ()
    return () if ids is None else tuple(int(t) for t in ids)


def split_completion(c: Completion, split: ThinkingSplit,
                     encode: Callable[[str], Sequence[int] | None] = lambda text: None) -> Completion:
    """`c` (the whole generated output) split into thinking and content by the backend's format:
    by the sampled ids when the server returned them and the marker ids are known (the text by its
    markers alongside), else by text (thinking ids from the local tokenizer, if any). Output that
    neither opens nor is opened by the prompt has no thinking: `c` unchanged."""
    fmt = split.fmt
    if fmt is None:
        return c
    thinking, content = split_text(c.text, fmt, opened=split.is_opened)
    if split.by_ids and c.token_ids and (c.logprobs is None or len(c.logprobs) == len(c.token_ids)):
        ids = c.token_ids
        think, markers, rest, closed = split_positions(ids, split.start_id, split.end_id, opened=split.is_opened)
        if not think and not markers:
            return c
        text = thinking.text if thinking is not None else ""
        if thinking is None or thinking.closed != closed:  # the text disagrees (a marker as plain text): ids win
            text, content = c.text, ""
        return replace(c, text=content, token_ids=_pick(ids, rest), logprobs=_pick(c.logprobs, rest),
                       top_logprobs=_pick(c.top_logprobs, rest),
                       thinking=Thinking(text=text, token_ids=_pick(ids, think), closed=closed,
                                         logprobs=_pick(c.logprobs, think), top_logprobs=_pick(c.top_logprobs, think),
                                         marker_token_ids=_pick(ids, markers)))
    if thinking is None:
        return c
    return replace(c, text=content, token_ids=_encoded(content, encode), logprobs=None, top_logprobs=None,
                   thinking=replace(thinking, token_ids=_encoded(thinking.text, encode)))


def with_server_thinking(c: Completion, reasoning: str, content_sent: bool, split: ThinkingSplit,
                         encode: Callable[[str], Sequence[int] | None] = lambda text: None) -> Completion:
    """`c` (the content text, and the whole output's ids and logprobs where the server returned
    them) with the thinking the server's reasoning parser separated (`reasoning`). The ids and
    logprobs are split at the marker ids when known; else the thinking keeps its text (and the
    local tokenizer's ids, if any) and the content its text, ids re-counted. `closed`: from the ids,
    else whether content followed or the output was not cut at max_tokens."""
    if split.by_ids and c.token_ids and (c.logprobs is None or len(c.logprobs) == len(c.token_ids)):
        ids = c.token_ids
        think, markers, rest, closed = split_positions(ids, split.start_id, split.end_id, opened=split.is_opened)
        if think or markers:
            return replace(c, token_ids=_pick(ids, rest), logprobs=_pick(c.logprobs, rest),
                           top_logprobs=_pick(c.top_logprobs, rest),
                           thinking=Thinking(text=reasoning, token_ids=_pick(ids, think), closed=closed,
                                             logprobs=_pick(c.logprobs, think),
                                             top_logprobs=_pick(c.top_logprobs, think),
                                             marker_token_ids=_pick(ids, markers)))
    closed = content_sent or c.finish_reason != "length"
    return replace(c, token_ids=_encoded(c.text, encode), logprobs=None, top_logprobs=None,
                   thinking=Thinking(text=reasoning, token_ids=_encoded(reasoning, encode), closed=closed))


class StreamSplitter:
    """Splits one stream's deltas into thinking and content as they arrive, by the backend's format
    (by the marker ids where the deltas carry ids and the markers are known, else by text; a marker
    never spans two deltas of single-token markers). A delta the server already split (`reasoning`
    in it) is taken as it is."""

    def __init__(self, split: ThinkingSplit):
        self.split = split
        self.state = "content" if split.fmt is None else ("thinking" if split.is_opened else "start")
        self.server = False  # the server's parser splits this stream

    def read(self, delta: Delta) -> Delta:
        """`delta` with its thinking apart: as the server sent it, else split by the format."""
        if delta.thinking is not None:
            return self.server_delta(delta)
        return delta if self.server else self(delta)

    def server_delta(self, delta: Delta) -> Delta:
        """A delta whose thinking the server's parser sent (`delta.thinking`, text only): the ids of
        a delta that is all thinking are its thinking's. From then on, content is not split again."""
        self.server = True
        assert delta.thinking is not None
        if delta.text or not delta.token_ids:
            return delta
        return replace(delta, token_ids=(), logprobs=None,
                       thinking=replace(delta.thinking, token_ids=delta.token_ids, logprobs=delta.logprobs))

    def __call__(self, delta: Delta) -> Delta:
        fmt = self.split.fmt
        if fmt is None or self.state == "content":
            return delta
        if self.split.by_ids and delta.token_ids:
            return self._by_ids(delta)
        text, thinking = delta.text, ""
        markers = False
        if self.state == "start":
            lead = text.lstrip()
            if not lead:
                return delta
            if not lead.startswith(fmt.start):
                self.state = "content"
                return delta
            text, self.state, markers = lead[len(fmt.start):], "thinking", True
        end = text.find(fmt.end)
        if end < 0:
            thinking, text = text, ""
        else:
            thinking, text, self.state, markers = text[:end], text[end + len(fmt.end):], "content", True
        closed = self.state == "content"
        return replace(delta, text=text, token_ids=() if thinking or markers else delta.token_ids, logprobs=None,
                       thinking=Thinking(text=thinking, closed=closed) if thinking or markers else None)

    def _by_ids(self, delta: Delta) -> Delta:
        split, ids = self.split, delta.token_ids
        opened = self.state == "thinking"
        if self.state == "start" and ids[0] != split.start_id:
            self.state = "content"
            return delta
        think, markers, rest, closed = split_positions(ids, split.start_id, split.end_id, opened=opened)
        if closed:
            self.state = "content"
        elif markers or think:
            self.state = "thinking"
        fmt = split.fmt
        text = delta.text
        if fmt is not None:
            body = text[text.find(fmt.start) + len(fmt.start):] if not opened and fmt.start in text else text
            cut = body.find(fmt.end)
            thinking_text, text = (body, "") if cut < 0 else (body[:cut], body[cut + len(fmt.end):])
        lp = delta.logprobs if delta.logprobs is not None and len(delta.logprobs) == len(ids) else None
        return replace(delta, text=text, token_ids=_pick(ids, rest), logprobs=_pick(lp, rest),
                       thinking=Thinking(text=thinking_text, token_ids=_pick(ids, think), closed=closed,
                                         logprobs=_pick(lp, think), marker_token_ids=_pick(ids, markers)))
