"""Where a reasoning model's thinking ends: the markers of each model family, declared, never guessed.

A reasoning model writes `<think> ... </think>` (or its family's markers) and then its final content.
Where a server runs a reasoning parser, it separates the two itself (`message.reasoning`); in process,
and on a server without a parser, ttc splits the generated tokens at the family's end marker, which
the user names (`thinking="qwen3"`, `thinking=ThinkingFormat(...)`) or the model's folder declares.

What counts as what, so that every total equals the server's (vLLM's `count_reasoning_tokens`):
thinking tokens are those strictly between the markers; the marker tokens the model generates count
as completion tokens, neither thinking nor content; the content is what follows the end marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttc.errors import InvalidInput
from ttc.types import Thinking


@dataclass(frozen=True)
class ThinkingFormat:
    """A model family's thinking markers.

    `opened_by_template`: the chat template ends the prompt with the start marker (DeepSeek-R1's
    does; the model then generates only the end marker), so generated text before the end marker is
    thinking even without a start marker, as vLLM's `deepseek_r1` parser reads it. `step_delimiter`
    splits the thinking into steps for step searches. `answer_cue` is what budget forcing and the
    answer probe write after the end marker to ask for the final answer.
    """

    name: str
    start: str = "<think>"
    end: str = "</think>"
    opened_by_template: bool = True
    step_delimiter: str = "\n\n"
    answer_cue: str = "\n\nThe final answer is \\boxed{"

    def __post_init__(self) -> None:
        if not self.end or not self.start:
            raise InvalidInput(f"ThinkingFormat {self.name!r} needs non-empty start and end markers")
        if self.start == self.end:
            raise InvalidInput(f"ThinkingFormat {self.name!r}: start and end markers must differ, "
                               f"both are {self.start!r}")


#: the families ttc knows; vLLM's reasoning parser of the same name reads the same markers
FORMATS: dict[str, ThinkingFormat] = {
    "deepseek_r1": ThinkingFormat("deepseek_r1", opened_by_template=True),
    "qwen3": ThinkingFormat("qwen3", opened_by_template=False),
}


def thinking_format(spec: str | ThinkingFormat | None) -> ThinkingFormat | None:
    """The format `spec` names: a `ThinkingFormat`, a family name of `FORMATS`, or None (no thinking)."""
    if spec is None or isinstance(spec, ThinkingFormat):
        return spec
    if isinstance(spec, str) and spec in FORMATS:
        return FORMATS[spec]
    raise InvalidInput(f"unknown thinking format {spec!r}: use one of {sorted(FORMATS)} or "
                       f"ttc.thinking.ThinkingFormat(name, start=..., end=...) for other markers")


def split_text(text: str, fmt: ThinkingFormat, *, opened: bool | None = None) -> tuple[Thinking | None, str]:
    """(thinking, content) of generated `text` by `fmt`'s markers (text only: no token ids).

    `opened` says whether the prompt already opened the thinking (default: `fmt.opened_by_template`).
    Output that neither opens nor is opened has no thinking: (None, text). Thinking that never
    closes is all thinking, `closed=False`, and the content is empty.
    """
    opened = fmt.opened_by_template if opened is None else opened
    body = text
    if not opened:
        lead = len(body) - len(body.lstrip())
        if not body[lead:].startswith(fmt.start):
            return None, text
        body = body[lead + len(fmt.start):]
    end = body.find(fmt.end)
    if end < 0:
        return Thinking(text=body, closed=False), ""
    return Thinking(text=body[:end], closed=True), body[end + len(fmt.end):]


IdSplit = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


def split_ids(token_ids: Sequence[int], start_id: int, end_id: int, *, opened: bool) -> IdSplit:
    """(thinking ids, marker ids, content ids, closed) of generated `token_ids`, split at the marker
    tokens (`start_id`, `end_id`: each marker is one token in the families ttc knows).

    Output that is not opened and does not start with `start_id` is all content (closed False).
    Logprobs are split by the caller with `split_positions`.
    """
    thinking, markers, content, closed = split_positions(token_ids, start_id, end_id, opened=opened)
    ids = tuple(token_ids)
    return (tuple(ids[i] for i in thinking), tuple(ids[i] for i in markers),
            tuple(ids[i] for i in content), closed)


def split_positions(token_ids: Sequence[int], start_id: int, end_id: int, *,
                    opened: bool) -> tuple[list[int], list[int], list[int], bool]:
    """Positions of the thinking, marker and content tokens of `token_ids` (see `split_ids`)."""
    positions = list(range(len(token_ids)))
    if not opened:
        if not token_ids or token_ids[0] != start_id:
            return [], [], positions, False
        markers, rest = [0], positions[1:]
    else:
        markers, rest = [], positions
    for k, i in enumerate(rest):
        if token_ids[i] == end_id:
            return rest[:k], markers + [i], rest[k + 1:], True
    return rest, markers, [], False
