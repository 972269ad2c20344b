"""Refused requests: what to send instead when a server refuses a field (vLLM's extra fields,
too many top logprobs, logprobs, stream_options), and the loop that resends.

The decision is a pure function of the body sent, the server's message and the features
(`adapt_rejected`, `adapt_rejected_stream`); `Adapter` applies it and records what the refusal
showed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.payloads import EXTENSION_FIELDS

__all__ = ["Adapted", "Adapter", "adapt_rejected", "adapt_rejected_stream"]


class Extensions(Protocol):
    vllm_extensions: bool  # whether vLLM's extra request fields are sent (a backend's shared flag)


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


class Adapter:
    """Resends refused requests as `adapt_rejected` says, recording what each refusal showed in
    `features` and in the backend's `vllm_extensions` flag (`extensions`)."""

    def __init__(self, features: ServerFeatures, extensions: Extensions):
        self.features = features
        self.extensions = extensions

    def adopt(self, adapted: Adapted) -> dict[str, Any]:
        """Record what a refusal showed about the server; the body to send instead."""
        self.features.update(adapted.updates)
        if adapted.extensions is False:
            self.extensions.vllm_extensions = False
        return adapted.payload

    async def request(self, send: Callable[..., Awaitable[Any]], method: str, path: str,
                      payload: dict[str, Any]) -> Any:
        """`send` the request, dropping what the server refuses, once each: vLLM's extra fields,
        then too many top logprobs (down to OpenAI's 5), then logprobs altogether."""
        for _ in range(4):
            try:
                return await send(method, path, payload)
            except RequestRejected as exc:
                adapted = adapt_rejected(payload, exc.server_message, self.features)
                if adapted is None:
                    raise
                payload = self.adopt(adapted)
        return await send(method, path, payload)

    def stream(self, payload: dict[str, Any], error: RequestRejected) -> dict[str, Any] | None:
        """The body to open a refused stream with instead (None: the refusal stands)."""
        adapted = adapt_rejected_stream(payload, error.server_message, self.extensions.vllm_extensions)
        return None if adapted is None else self.adopt(adapted)
