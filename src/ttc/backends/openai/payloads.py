"""The wire format, requests: the JSON bodies built from `SamplingParams`, and how a refused body
is rewritten. Pure functions of their arguments (no I/O, nothing shared is changed).

What a body asks for depends on what the server showed (`ServerFeatures`: logprobs, the most top
logprobs, stream usage) and on whether vLLM's extra fields are still sent (`extensions`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.openai.features import ServerFeatures
from ttc.errors import InvalidInput
from ttc.types import Prompt, SamplingParams

__all__ = ["EXTENSION_FIELDS", "MENTIONS_N", "Adapted", "adapt_rejected", "adapt_rejected_stream", "chat_payload",
           "completion_payload", "sampling_fields", "top_k", "wants_logprobs"]

#: vLLM's extra request fields that make completions carry the sampled token ids
EXTENSION_FIELDS = ("return_token_ids", "return_tokens_as_token_ids")
MENTIONS_N = re.compile(r"(?<![\w-])'?n'?(?![\w-])")  # the field `n` named in an error message


def sampling_fields(params: SamplingParams) -> dict[str, Any]:
    """n, temperature, top_p, max_tokens, and stop and seed where set."""
    if not isinstance(params, SamplingParams):
        raise InvalidInput(f"params must be ttc.SamplingParams, got {type(params).__name__}")
    fields: dict[str, Any] = {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens}
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = params.seed
    return fields


def wants_logprobs(params: SamplingParams, features: ServerFeatures) -> bool:
    """Logprobs are asked for when wanted and the server has not shown that it has none."""
    return bool(params.logprobs or params.top_logprobs) and features.logprobs is not False


def top_k(params: SamplingParams, features: ServerFeatures) -> int:
    """Top alternatives to ask for: as many as wanted, at most the server's limit."""
    limit = features.max_top_logprobs
    return params.top_logprobs if limit is None else min(params.top_logprobs, limit)


def _wire_prompt(prompt: Prompt) -> Any:
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidInput("empty prompt")
        return prompt
    try:
        ids = [operator.index(t) for t in prompt]
    except TypeError:
        raise InvalidInput("a prompt must be text or a sequence of integer token ids") from None
    if not ids:
        raise InvalidInput("empty prompt (no token ids)")
    if any(t < 0 for t in ids):
        raise InvalidInput(f"negative token ids in the prompt: {[t for t in ids if t < 0][:5]}")
    return ids


def _stream_fields(payload: dict[str, Any], features: ServerFeatures) -> None:
    payload["stream"] = True
    if features.stream_usage is not False:
        payload["stream_options"] = {"include_usage": True}  # the usage in a last chunk


def completion_payload(model: str, prompt: Prompt, params: SamplingParams, features: ServerFeatures, *,
                       extensions: bool, stream: bool) -> dict[str, Any]:
    """A `/v1/completions` body for a text or token-id prompt."""
    payload = {"model": model, "prompt": _wire_prompt(prompt), **sampling_fields(params)}
    wants = wants_logprobs(params, features)
    if wants:
        payload["logprobs"] = top_k(params, features)
    if extensions:
        payload["return_token_ids"] = True
        if wants:
            payload["return_tokens_as_token_ids"] = True
    if stream:
        _stream_fields(payload, features)
    return payload


def check_messages(messages: Any, what: str = "chat") -> None:
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise InvalidInput(f"{what} needs a non-empty list of {{'role': ..., 'content': ...}} messages")


def chat_payload(model: str, messages: Sequence[dict[str, str]], params: SamplingParams, features: ServerFeatures,
                 *, extensions: bool, stream: bool, continue_final: bool = False) -> dict[str, Any]:
    """A `/v1/chat/completions` body; `continue_final` continues the last (assistant) message."""
    check_messages(messages)
    payload = {"model": model, "messages": [dict(m) for m in messages], **sampling_fields(params)}
    if continue_final:
        payload["continue_final_message"] = True
        payload["add_generation_prompt"] = False
    if wants_logprobs(params, features):
        payload["logprobs"] = True
        if top_k(params, features):
            payload["top_logprobs"] = top_k(params, features)
    if extensions:
        payload["return_token_ids"] = True
        if params.logprobs or params.top_logprobs:
            payload["return_tokens_as_token_ids"] = True
    if stream:
        _stream_fields(payload, features)
    return payload


@dataclass(frozen=True)
class Adapted:
    """A refused body rewritten: the body to send instead and what the refusal showed about the
    server (`ServerFeatures` fields to set; `extensions` False: stop sending vLLM's fields)."""

    payload: dict[str, Any]
    updates: dict[str, Any] = field(default_factory=dict)
    extensions: bool | None = None


def _without(payload: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in keys}


def adapt_rejected(payload: dict[str, Any], message: str, features: ServerFeatures) -> Adapted | None:
    """What to send after a 4xx whose message is `message`, decided by what `payload` sent: drop
    vLLM's extra fields, else lower top logprobs to OpenAI's 5, else drop logprobs (unless the
    server has shown it has them); None: nothing to drop, the refusal stands."""
    if any(f in payload for f in EXTENSION_FIELDS) and any(f in message for f in EXTENSION_FIELDS):
        return Adapted(_without(payload, EXTENSION_FIELDS), {"token_ids": False}, extensions=False)
    if "logprobs" not in message or "logprobs" not in payload or features.logprobs:
        return None
    top = payload.get("top_logprobs", payload["logprobs"])
    if isinstance(top, int) and not isinstance(top, bool) and top > 5:
        key = "top_logprobs" if "top_logprobs" in payload else "logprobs"
        return Adapted({**payload, key: 5}, {"max_top_logprobs": 5})
    return Adapted(_without(payload, ("logprobs", "top_logprobs", "return_tokens_as_token_ids")),
                   {"logprobs": False})


def adapt_rejected_stream(payload: dict[str, Any], message: str, extensions: bool) -> Adapted | None:
    """What to send after a streamed request's 4xx: without `stream_options`, else without vLLM's
    extra fields. Unlike `adapt_rejected`, the extra fields are dropped only while the backend's
    shared `extensions` flag is on (see issue 27: the payload sent should decide)."""
    if "stream_options" in payload and "stream_options" in message:
        return Adapted(_without(payload, ("stream_options",)), {"stream_usage": False})
    if extensions and any(f in message for f in EXTENSION_FIELDS):
        return Adapted(_without(payload, EXTENSION_FIELDS), {"token_ids": False}, extensions=False)
    return None
