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
from ttc.errors import InvalidInput, Unsupported
from ttc.types import Prompt, SamplingParams

__all__ = ["EXTENSION_FIELDS", "MENTIONS_N", "OPTIONAL_FIELDS", "chat_payload", "check_messages", "check_supported",
           "completion_payload", "requested_fields", "sampling_fields", "top_k", "wants_logprobs", "wire_prompt"]

#: vLLM's extra request fields that make completions carry the sampled token ids
EXTENSION_FIELDS = ("return_token_ids", "return_tokens_as_token_ids")
MENTIONS_N = re.compile(r"(?<![\w-])'?n'?(?![\w-])")  # the field `n` named in an error message
#: `SamplingParams` fields sent under the same name (vLLM's and OpenAI's), only when set (None: the server's default)
OPTIONAL_FIELDS = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
#: body fields ttc itself sets (or maps a `SamplingParams` field to): `SamplingParams.extra` may not name them
RESERVED_FIELDS = frozenset({
    "model", "prompt", "messages", "n", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "logprobs", "top_logprobs", "stream", "stream_options", "continue_final_message", "add_generation_prompt",
    "chat_template_kwargs", *OPTIONAL_FIELDS, *EXTENSION_FIELDS})


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
    for name in OPTIONAL_FIELDS:
        if getattr(params, name) is not None:
            fields[name] = getattr(params, name)
    return fields


def requested_fields(params: SamplingParams, *, chat: bool) -> tuple[str, ...]:
    """The body fields a request carries because the user asked for them (the optional sampling
    fields set, `chat_template_kwargs` on the chat endpoint, every `extra` key): the ones a server
    may refuse, which ttc then reports (`ttc.Unsupported`) instead of dropping."""
    names = [name for name in OPTIONAL_FIELDS if getattr(params, name) is not None]
    if chat and params.chat_template_kwargs:
        names.append("chat_template_kwargs")
    return (*names, *(params.extra or {}))


def check_supported(fields: Sequence[str], features: ServerFeatures, base_url: str) -> None:
    """`ttc.Unsupported` for a field this server has already refused (`features.unsupported`):
    not sent again, never dropped."""
    for name in fields:
        if name in features.unsupported:
            raise Unsupported(f"{name} is not supported by {base_url}: it refused the field "
                              f"({features.unsupported[name]})")


def _with_extra(payload: dict[str, Any], params: SamplingParams) -> dict[str, Any]:
    """`payload` with `params.extra` merged in verbatim; a key ttc sets itself is refused."""
    if not params.extra:
        return payload
    clash = sorted(k for k in params.extra if k in RESERVED_FIELDS or k in payload)
    if clash:
        raise InvalidInput(f"SamplingParams.extra names {', '.join(clash)}, which ttc sets itself: use the "
                           f"SamplingParams field{'s' if len(clash) > 1 else ''} instead (extra is for fields "
                           f"ttc does not know, e.g. {{'thinking_token_budget': 64}})")
    return {**payload, **params.extra}


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
    """A `/v1/completions` body for a text or token-id prompt. `chat_template_kwargs` are not sent:
    they were applied when the prompt was rendered (`chat_prompt(..., chat_template_kwargs=)`)."""
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
    return _with_extra(payload, params)


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
    if params.chat_template_kwargs:
        payload["chat_template_kwargs"] = dict(params.chat_template_kwargs)
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
    return _with_extra(payload, params)
