"""The wire format, responses: choices and stream chunks read into `Completion`s and `Delta`s.

Pure functions of dicts: nothing is sent and nothing shared is changed. What a response shows
about the server (it has logprobs, it says `stop_reason`, it sends no token ids) comes back as
feature updates (`Parsed.updates`, fields of `ServerFeatures`) for the caller to record; within
one response, what an earlier choice showed applies to the later ones, as if recorded at once.
Token ids the server did not send come from `encode` (the local tokenizer's, given by the
caller); the choices still without ids are listed in `Parsed.needs_ids`. A reasoning model's
thinking is read apart from its content (`reasoning.py`): the server's `reasoning` field where it
sends one, else the backend's declared thinking format (`ThinkingSplit`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import Delta
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import error_message
from ttc.backends.openai.payloads import wants_logprobs
from ttc.backends.openai.reasoning import NO_SPLIT, ThinkingSplit, reasoning_of, split_completion, with_server_thinking
from ttc.errors import GenerationError, MalformedResponse
from ttc.types import Completion, SamplingParams

__all__ = ["Parsed", "choices", "finish_reason", "parse_chat", "parse_completions", "parse_token", "stream_delta",
           "stream_reasoning"]

_TOKEN_ID_PREFIX = "token_id:"

#: the local tokenizer's encoding of a text (no special tokens); None where there is no local tokenizer
Encode = Callable[[str], "Sequence[int] | None"]


def _no_encode(text: str) -> None:
    return None


def _no_eos() -> frozenset[int]:
    return frozenset()


@dataclass
class Parsed:
    """A response read: its completions in order, the `ServerFeatures` updates it showed, and the
    indices of completions that came without token ids and still need them (from /tokenize)."""

    completions: list[Completion]
    updates: dict[str, Any] = field(default_factory=dict)
    needs_ids: tuple[int, ...] = ()


class _Reading:
    """The features as this response shows them: a private copy plus the updates made to it."""

    def __init__(self, features: ServerFeatures):
        self.features = dataclasses.replace(features)
        self.updates: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        setattr(self.features, name, value)
        self.updates[name] = value


def parse_token(token: Any) -> int | None:
    """The id in a `token_id:N` logprob token (vLLM's `return_tokens_as_token_ids`), else None."""
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        try:
            return int(token[len(_TOKEN_ID_PREFIX):])
        except ValueError:
            return None
    return None


def finish_reason(reason: Any) -> str:
    if reason is None:
        return "stop"
    if reason == "abort":
        return "cancelled"
    if not isinstance(reason, str):
        raise MalformedResponse(f"finish_reason must be a string, got {reason!r}")
    return reason


def choices(data: Any, n: int) -> list[dict[str, Any]]:
    """The choices in order: n of them, or 1 from a server that ignores n (the caller makes up the rest)."""
    found = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        raise MalformedResponse(f"the response has no list of choices: {str(data)[:300]}")
    if len(found) != n and len(found) != 1:
        raise MalformedResponse(f"asked for {n} completions, the server returned {len(found)}")
    return sorted(found, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def _token_ids(raw: Any, from_logprobs: list[int] | None) -> tuple[int, ...] | None:
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(t, int) for t in raw):
            raise MalformedResponse(f"token_ids must be a list of integers: {str(raw)[:300]}")
        return tuple(raw)
    if from_logprobs is not None:
        return tuple(from_logprobs)
    return None


def _ended_by_eos(choice: dict[str, Any], finish: str, text: str, ids: Sequence[int], params: SamplingParams,
                  reading: _Reading, eos_ids: Callable[[], frozenset[int]]) -> bool | None:
    """Whether a "stop" was the model's end-of-sequence token rather than a stop string:
    vLLM says so in `stop_reason` (the matched stop string, or null for EOS); else the last
    returned id is an EOS id of the local tokenizer; else, on a server that keeps matched stop
    strings in the text, a stop whose text ends with none of them. None: cannot tell."""
    if finish != "stop":
        return False
    if "stop_reason" in choice:
        reading.set("stop_reason", True)
        return choice["stop_reason"] is None
    eos = eos_ids()
    if ids and eos:
        return ids[-1] in eos
    if reading.features.stop_in_text and params.stop:
        return not any(s in text for s in params.stop)
    return None


def _completion(choice: dict[str, Any], text: str, ids: tuple[int, ...], logprobs: Any, top: Any,
                params: SamplingParams, reading: _Reading, eos_ids: Callable[[], frozenset[int]]) -> Completion:
    finish = finish_reason(choice.get("finish_reason"))
    return Completion(text=text, token_ids=ids, finish_reason=finish, logprobs=logprobs, top_logprobs=top,
                      eos=_ended_by_eos(choice, finish, text, ids, params, reading, eos_ids))


def _thinking(c: Completion, part: Any, content_sent: bool, split: ThinkingSplit, reading: _Reading,
              encode: Encode) -> Completion:
    """`c` with its thinking: what the server's parser sent in `part` (a message or choice), else
    split by the backend's format."""
    reasoning = reasoning_of(part)
    if reasoning is not None:
        reading.set("reasoning", True)
        return with_server_thinking(c, reasoning, content_sent, split, encode)
    return split_completion(c, split, encode)


def _completion_logprobs(lp: Any, params: SamplingParams, reading: _Reading) -> tuple[Any, Any, list[int] | None]:
    """(logprobs, top logprobs, token ids named by the logprob tokens) of a /completions choice."""
    if not wants_logprobs(params, reading.features):
        return None, None, None
    if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs"), list):
        if reading.features.logprobs:
            raise MalformedResponse(f"logprobs were asked for but the choice has none: {str(lp)[:300]}")
        reading.set("logprobs", False)  # the server ignores the field: stop asking
        return None, None, None
    reading.set("logprobs", True)
    try:
        logprobs = tuple(float(x) for x in lp["token_logprobs"])
    except (TypeError, ValueError):
        raise MalformedResponse("token_logprobs must be numbers") from None
    tokens = lp.get("tokens")
    ids = [parse_token(t) for t in tokens] if isinstance(tokens, list) else []
    lp_ids = ids if ids and all(i is not None for i in ids) else None
    top = None
    if params.top_logprobs:
        raw = lp.get("top_logprobs")
        if isinstance(raw, list):
            parsed = []
            for step in raw:
                entry: dict[int | str, float] = {}
                for k, v in (step or {}).items():
                    tid = parse_token(k)
                    entry[k if tid is None else tid] = float(v)  # token strings when no ids
                parsed.append(entry)
            top = tuple(parsed)
    return logprobs, top, lp_ids  # type: ignore[return-value]


def parse_completions(data: Any, params: SamplingParams, features: ServerFeatures, *, extensions: bool,
                      eos_ids: Callable[[], frozenset[int]] = _no_eos, encode: Encode = _no_encode,
                      split: ThinkingSplit = NO_SPLIT) -> Parsed:
    """The completions of a `/v1/completions` answer. `extensions`: vLLM's `return_token_ids` was
    asked for; `eos_ids`: the local tokenizer's end-of-sequence ids (asked only when needed);
    `split`: how the thinking is split where the server sends no `reasoning_content`."""
    reading = _Reading(features)
    out: list[Completion] = []
    needs: list[int] = []
    try:
        for choice in choices(data, params.n):
            text = choice.get("text")
            if not isinstance(text, str):
                raise MalformedResponse(f"a completion choice has no text: {str(choice)[:300]}")
            logprobs, top, lp_ids = _completion_logprobs(choice.get("logprobs"), params, reading)
            ids = _token_ids(choice.get("token_ids"), lp_ids)
            if ids is None:  # not the sampled ids: re-tokenised (which is why TOKEN_IDS needs return_token_ids)
                if extensions and reading.features.token_ids is None:
                    reading.set("token_ids", False)  # asked for and not sent
                counted = encode(text) if text else ()
                if counted is None:
                    needs.append(len(out))
                ids = () if counted is None else tuple(int(t) for t in counted)
            elif logprobs is not None and len(logprobs) != len(ids):
                raise MalformedResponse(f"{len(logprobs)} logprobs for {len(ids)} tokens")
            c = _completion(choice, text, ids, logprobs, top, params, reading, eos_ids)
            out.append(_thinking(c, choice, bool(text), split, reading, encode))
    except MalformedResponse as exc:
        exc.feature_updates = reading.updates  # what the choices before it showed still holds
        raise
    return Parsed(out, reading.updates, tuple(needs))


def _chat_logprobs(choice: dict[str, Any], params: SamplingParams, reading: _Reading) -> tuple[Any, Any, Any]:
    logprobs = top = lp_ids = None
    wants = wants_logprobs(params, reading.features)
    content = (choice.get("logprobs") or {}).get("content") if wants else None
    if wants and not isinstance(content, list):
        if reading.features.logprobs:
            raise MalformedResponse("logprobs were asked for but the chat choice has none")
        reading.set("logprobs", False)  # the server ignores the field: stop asking
    elif isinstance(content, list):
        reading.set("logprobs", True)
        logprobs = tuple(float(e["logprob"]) for e in content)
        ids = [parse_token(e.get("token")) for e in content]
        lp_ids = ids if all(i is not None for i in ids) else None
        if params.top_logprobs:
            tops = []
            for e in content:
                entry: dict[int | str, float] = {}
                for a in e.get("top_logprobs") or []:
                    tid = parse_token(a.get("token"))
                    entry[a.get("token") if tid is None else tid] = float(a["logprob"])
                tops.append(entry)
            top = tuple(tops)
    return logprobs, top, lp_ids


def parse_chat(data: Any, params: SamplingParams, features: ServerFeatures, *, extensions: bool,
               eos_ids: Callable[[], frozenset[int]] = _no_eos, encode: Encode = _no_encode,
               split: ThinkingSplit = NO_SPLIT) -> Parsed:
    """The replies of a `/v1/chat/completions` answer; ids the server did not send are counted
    with `encode` (never asked of /tokenize: `needs_ids` stays empty)."""
    reading = _Reading(features)
    out: list[Completion] = []
    try:
        for choice in choices(data, params.n):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if text is None and isinstance(message, dict):
                text = ""
            if not isinstance(text, str):
                raise MalformedResponse(f"a chat choice has no message content: {str(choice)[:300]}")
            logprobs, top, lp_ids = _chat_logprobs(choice, params, reading)
            ids = _token_ids(choice.get("token_ids"), lp_ids)
            if ids is None:
                if extensions and reading.features.token_ids is None:
                    reading.set("token_ids", False)
                counted = encode(text)  # the local tokenizer (not the sampled ids: no TOKEN_IDS)
                ids = tuple(int(t) for t in counted) if counted is not None and text else ()
            c = _completion(choice, text, ids, logprobs, top, params, reading, eos_ids)
            out.append(_thinking(c, message, message.get("content") is not None, split, reading, encode))
    except MalformedResponse as exc:
        exc.feature_updates = reading.updates
        raise
    return Parsed(out, reading.updates)


def stream_delta(chunk: Any, params: SamplingParams, features: ServerFeatures, chat: bool) -> Delta | None:
    """The delta in one stream chunk (None: a chunk with nothing new, e.g. usage only)."""
    if not isinstance(chunk, dict):
        raise MalformedResponse(f"a stream chunk is not a JSON object: {str(chunk)[:300]}")
    if "error" in chunk:
        raise GenerationError(f"the server failed mid-stream: {error_message(json.dumps(chunk).encode())}")
    found = chunk.get("choices")
    if not isinstance(found, list):
        raise MalformedResponse(f"a stream chunk has no choices: {str(chunk)[:300]}")
    if not found:
        return None  # e.g. a usage-only chunk
    choice = found[0]
    reasoning = None
    if chat:
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        reasoning = reasoning_of(delta)
        content = (choice.get("logprobs") or {}).get("content") or []
        logprob_list = [float(e["logprob"]) for e in content]
        lp_ids = [parse_token(e.get("token")) for e in content]
    else:
        text = choice.get("text") or ""
        reasoning = reasoning_of(choice)
        lp = choice.get("logprobs") or {}
        logprob_list = [float(x) for x in lp.get("token_logprobs") or []]
        lp_ids = [parse_token(t) for t in lp.get("tokens") or []]
    raw_ids = choice.get("token_ids")
    if raw_ids is None and lp_ids and all(i is not None for i in lp_ids):
        raw_ids = lp_ids
    if raw_ids is None:
        raw_ids = []
    if not isinstance(raw_ids, list) or not all(isinstance(t, int) for t in raw_ids):
        raise MalformedResponse(f"token_ids must be a list of integers: {str(raw_ids)[:300]}")
    reason = choice.get("finish_reason")
    logprobs = tuple(logprob_list) if wants_logprobs(params, features) and logprob_list else None
    if not text and not raw_ids and reason is None and not reasoning:
        return None
    return Delta(text=text, token_ids=tuple(raw_ids), logprobs=logprobs,
                 finish_reason=None if reason is None else finish_reason(reason))


def stream_reasoning(chunk: Any, chat: bool) -> str | None:
    """The thinking a stream chunk carries apart from its content (`delta.reasoning` or
    `delta.reasoning_content`; a completions choice's `reasoning_content`), else None."""
    found = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(found, list) or not found or not isinstance(found[0], dict):
        return None
    return reasoning_of(found[0].get("delta") if chat else found[0])
