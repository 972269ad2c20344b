"""The wire format, requests: the JSON bodies built from `SamplingParams`. Pure functions of their
arguments (no I/O, nothing shared is changed); how a refused body is rewritten is in `adapting.py`.

What a body asks for depends on what the server showed (`ServerFeatures`: logprobs, the most top
logprobs, stream usage) and on whether vLLM's extra fields are still sent (`extensions`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ttc.backends.base import checked_prompt
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.prompts import ChatMessages
from ttc.errors import InvalidInput
from ttc.types import Prompt, SamplingParams

__all__ = ["EXTENSION_FIELDS", "MENTIONS_N", "chat_payload", "check_messages", "completion_payload", "sampling_fields",
           "top_k", "wants_logprobs", "wire_prompt"]

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
    top = params.top_logprobs or 0  # None: unspecified, no alternatives
    return top if limit is None else min(top, limit)


def wire_prompt(prompt: Prompt) -> Any:
    """The prompt as sent: the text, or a list of non-negative int ids (else `InvalidInput`)."""
    return checked_prompt(prompt)


def _stream_fields(payload: dict[str, Any], features: ServerFeatures) -> None:
    payload["stream"] = True
    if features.stream_usage is not False:
        payload["stream_options"] = {"include_usage": True}  # the usage in a last chunk


def completion_payload(model: str, prompt: Prompt, params: SamplingParams, features: ServerFeatures, *,
                       extensions: bool, stream: bool) -> dict[str, Any]:
    """A `/v1/completions` body for a text or token-id prompt."""
    payload = {"model": model, "prompt": wire_prompt(prompt), **sampling_fields(params)}
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


def request_body(model: str, prompt: Prompt, params: SamplingParams, features: ServerFeatures, *,
                 extensions: bool, stream: bool) -> tuple[str, dict[str, Any]]:
    """(path, body) of a request for `prompt`: `ChatMessages` to `/chat/completions`, else `/completions`."""
    if isinstance(prompt, ChatMessages):
        return "/chat/completions", chat_payload(model, prompt.messages, params, features, extensions=extensions,
                                                 stream=stream, continue_final=prompt.continue_final)
    return "/completions", completion_payload(model, prompt, params, features, extensions=extensions, stream=stream)


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
