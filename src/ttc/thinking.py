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

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ttc.errors import InvalidInput
from ttc.types import Completion, Thinking


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


# -- in-process splitting: marker token ids, whether a prompt opened the thinking, a Completion split --

#: the file in a model's folder that declares its thinking format: {"format": "deepseek_r1"}, or
#: {"format": "name", "start": "<think>", "end": "</think>", "opened_by_template": true, ...}
FORMAT_FILE = "ttc_thinking.json"


def declared_format(model_dir: str | None) -> ThinkingFormat | None:
    """The format `model_dir/ttc_thinking.json` declares, or None when the folder declares none
    (not a folder, or no such file): a model thinks only where that is declared, never guessed."""
    import json
    import os

    if not model_dir or not os.path.isdir(model_dir):
        return None
    path = os.path.join(model_dir, FORMAT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("format"), str):
        raise InvalidInput(f"{path} must be a JSON object with a \"format\" name, got {spec!r}")
    fields = {k: v for k, v in spec.items() if k != "format"}
    if not fields:
        return thinking_format(spec["format"])
    base = FORMATS.get(spec["format"])
    try:
        if base is not None:
            return dataclasses.replace(base, **fields)
        return ThinkingFormat(spec["format"], **fields)
    except TypeError as exc:
        raise InvalidInput(f"{path}: {exc}") from None


def resolve_format(spec: str | ThinkingFormat | None | bool, model_dir: str | None) -> ThinkingFormat | None:
    """A backend's `thinking=` argument: a format (name or `ThinkingFormat`), False (the model does
    not think, whatever its folder says), or None (the default: what the model's folder declares)."""
    if spec is False:
        return None
    if spec is None or spec is True:
        fmt = declared_format(model_dir)
        if spec is True and fmt is None:
            raise InvalidInput(f"thinking=True, but {model_dir!r} declares no thinking format "
                               f"({FORMAT_FILE}); name the format: thinking=\"deepseek_r1\" or \"qwen3\"")
        return fmt
    return thinking_format(spec)


def marker_ids(fmt: ThinkingFormat, encode: Callable[[str], Sequence[int]], owner: str,
               vocab: Any = None) -> tuple[int, int]:
    """(start id, end id): each marker of `fmt` must encode (`encode`: text -> ids, no special tokens
    added) as one token, and be in `vocab` when given, else `InvalidInput` naming the marker (a split
    by ids needs single-token markers)."""
    ids = []
    for which, marker in (("start", fmt.start), ("end", fmt.end)):
        encoded = [int(t) for t in encode(marker)]
        if len(encoded) != 1 or (vocab is not None and marker not in vocab):
            raise InvalidInput(
                f"{owner}: the thinking {which} marker {marker!r} of format {fmt.name!r} is not one token of "
                f"this model's vocabulary (it encodes as {len(encoded)} tokens {encoded[:8]}); this model does "
                f"not write that format: pass the format it uses, or thinking=False")
        ids.append(encoded[0])
    return ids[0], ids[1]


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


def prompt_opens(prompt_ids: Sequence[int], start_id: int, end_id: int) -> bool:
    """Whether a prompt ends inside an open thinking segment: its last start marker comes after its
    last end marker (a chat template that opened the thinking, or a continuation of a thinking)."""
    return opened_by_ids(prompt_ids, start_id, end_id) is True


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` cut before the earliest of the `stop` strings in it (vLLM's rule for stop strings)."""
    cut = len(text)
    for s in stop:
        at = text.find(s) if s else -1
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def split_completion(completion: Completion, start_id: int, end_id: int, *, opened: bool,
                     decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> Completion:
    """`completion` (the whole generated output) with its thinking split off at the marker token ids:
    `text`, `token_ids`, `logprobs`, `top_logprobs` become the content's, `thinking` the rest.

    Each part's text is its ids decoded (so text and ids always agree); a completion ended by a
    stop string has its last part cut before the stop string, as the backend cut its text. Output
    that is not opened and does not start with the start marker has no thinking: returned unchanged.
    """
    ids = completion.token_ids
    think, markers, content, closed = split_positions(ids, start_id, end_id, opened=opened)
    if not opened and not markers:
        return completion

    def pick(values: Sequence[Any] | None, positions: list[int]) -> tuple[Any, ...] | None:
        return None if values is None else tuple(values[i] for i in positions if i < len(values))

    think_text = decode([ids[i] for i in think])
    content_text = decode([ids[i] for i in content])
    if completion.finish_reason == "stop" and stop and completion.eos is not True:
        if closed:
            content_text = cut_at_stop(content_text, stop)
        else:
            think_text = cut_at_stop(think_text, stop)
    thinking = Thinking(text=think_text, token_ids=tuple(ids[i] for i in think), closed=closed,
                        logprobs=pick(completion.logprobs, think), top_logprobs=pick(completion.top_logprobs, think),
                        marker_token_ids=tuple(ids[i] for i in markers),
                        marker_logprobs=pick(completion.logprobs, markers),
                        marker_top_logprobs=pick(completion.top_logprobs, markers))
    return dataclasses.replace(completion, text=content_text, token_ids=tuple(ids[i] for i in content),
                               logprobs=pick(completion.logprobs, content),
                               top_logprobs=pick(completion.top_logprobs, content), thinking=thinking)


def _wrote_start(t: Thinking) -> bool:
    """Whether the model generated the start marker itself (two markers, or one on open thinking)."""
    return len(t.marker_token_ids) == 2 or (len(t.marker_token_ids) == 1 and not t.closed)


def generated_ids(completion: Completion) -> tuple[int, ...]:
    """Every token id the model generated, in order (thinking, its markers, content): what a
    continuation appends to its prompt. Without thinking, `completion.token_ids`."""
    t = completion.thinking
    if t is None:
        return tuple(completion.token_ids)
    start = t.marker_token_ids[:1] if _wrote_start(t) else ()
    end = t.marker_token_ids[-1:] if t.closed and t.marker_token_ids else ()
    return (*start, *t.token_ids, *end, *completion.token_ids)


def generated_logprobs(completion: Completion) -> tuple[tuple[float, ...] | None, tuple[dict, ...] | None]:
    """(logprobs, top logprobs) of every generated token, in the order of `generated_ids` (None
    where the completion has none, or a part lacks them)."""
    t = completion.thinking
    if t is None:
        return completion.logprobs, completion.top_logprobs

    def whole(think: tuple | None, markers: tuple | None, content: tuple | None) -> tuple | None:
        if think is None or content is None or (t.marker_token_ids and markers is None):
            return None
        markers = markers or ()
        start = markers[:1] if _wrote_start(t) else ()
        end = markers[-1:] if t.closed and markers else ()
        return (*start, *think, *end, *content)

    return (whole(t.logprobs, t.marker_logprobs, completion.logprobs),
            whole(t.top_logprobs, t.marker_top_logprobs, completion.top_logprobs))


def generated_text(completion: Completion, fmt: ThinkingFormat | None) -> str:
    """The whole generated text with its markers written out (thinking, markers, content): the
    text form of `generated_ids`. Without thinking (or format), `completion.text`."""
    t = completion.thinking
    if t is None or fmt is None:
        return completion.text
    return (fmt.start if _wrote_start(t) else "") + t.text + (fmt.end if t.closed else "") + completion.text


def whole(completion: Completion, fmt: ThinkingFormat | None) -> Completion:
    """`completion` put back together as generated (thinking, markers, content in `text` and
    `token_ids`, no `thinking`): what a continuation of it extends (step searches, chunks)."""
    if completion.thinking is None:
        return completion
    logprobs, top = generated_logprobs(completion)
    return dataclasses.replace(completion, text=generated_text(completion, fmt), token_ids=generated_ids(completion),
                               logprobs=logprobs, top_logprobs=top, thinking=None)
