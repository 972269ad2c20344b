"""Refused requests: what to send instead when a server refuses a field (vLLM's extra fields,
too many top logprobs, logprobs, stream_options), and the loop that resends.

The decision is a pure function of the body sent, the server's message and the features
(`adapt_rejected`, `adapt_rejected_stream`); `Adapter` applies it and records what the refusal
showed. A field the user asked for (`payloads.requested_fields`: top_k, min_p, the penalties,
chat_template_kwargs, `SamplingParams.extra`) is never dropped: a refusal of one (`refused_fields`)
is recorded in `features.unsupported` and raised as `ttc.Unsupported` naming the field and server.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.payloads import EXTENSION_FIELDS
from ttc.errors import Unsupported

__all__ = ["Adapted", "Adapter", "adapt_rejected", "adapt_rejected_stream", "refused_fields"]

#: how servers refuse a field without naming it (pydantic's extra="forbid", OpenAI, FastAPI)
_GENERIC_REFUSAL = re.compile(r"unrecognized|unexpected|unknown|not supported|unsupported|not permitted|"
                              r"extra (?:fields|inputs)|not allowed", re.I)


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) is not None


def refused_fields(payload: dict[str, Any], message: str, requested: Sequence[str]) -> list[str]:
    """The fields of `requested` (sent in `payload`) that a 4xx with `message` refuses: those the
    message names; where it names no field of the body but refuses one generically ("extra inputs
    are not permitted"), the only requested field sent. Empty: the refusal is about something else."""
    sent = [name for name in requested if name in payload]
    named = [name for name in sent if _names(message, name)]
    if named or len(sent) != 1 or not _GENERIC_REFUSAL.search(message):
        return named
    return [] if any(_names(message, key) for key in payload) else sent


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
    vLLM's extra fields, else lower top logprobs to OpenAI's 5 (also where the server has shown
    logprobs, when its message names a limit), else drop logprobs (unless the server has shown it
    has them); None: nothing to drop, the refusal stands."""
    if any(f in payload for f in EXTENSION_FIELDS) and any(f in message for f in EXTENSION_FIELDS):
        return Adapted(_without(payload, EXTENSION_FIELDS), {"token_ids": False}, extensions=False)
    if "logprobs" not in message or "logprobs" not in payload:
        return None
    top = payload.get("top_logprobs", payload["logprobs"])
    # a server that has shown logprobs refuses a count (its message names a limit), not logprobs
    if isinstance(top, int) and not isinstance(top, bool) and top > 5 and (
            not features.logprobs or re.search(r"\d", message)):
        key = "top_logprobs" if "top_logprobs" in payload else "logprobs"
        return Adapted({**payload, key: 5}, {"max_top_logprobs": 5})
    if features.logprobs:
        return None
    return Adapted(_without(payload, ("logprobs", "top_logprobs", "return_tokens_as_token_ids")),
                   {"logprobs": False})


def adapt_rejected_stream(payload: dict[str, Any], message: str) -> Adapted | None:
    """What to send after a streamed request's 4xx: without `stream_options`, else without vLLM's
    extra fields. Decided by what this request sent, never by a flag that a concurrent request
    changed meanwhile: four streams refused together are each resent without the fields."""
    if "stream_options" in payload and "stream_options" in message:
        return Adapted(_without(payload, ("stream_options",)), {"stream_usage": False})
    if any(f in payload for f in EXTENSION_FIELDS) and any(f in message for f in EXTENSION_FIELDS):
        return Adapted(_without(payload, EXTENSION_FIELDS), {"token_ids": False}, extensions=False)
    return None


class Adapter:
    """Resends refused requests as `adapt_rejected` says, recording what each refusal showed in
    `features` and in the backend's `vllm_extensions` flag (`extensions`)."""

    def __init__(self, features: ServerFeatures, extensions: Extensions, base_url: str = "the server"):
        self.features = features
        self.extensions = extensions
        self.base_url = base_url

    def refuse(self, payload: dict[str, Any], error: RequestRejected, requested: Sequence[str]) -> None:
        """Raise `ttc.Unsupported` (and record it) when `error` refuses fields the user asked for."""
        refused = refused_fields(payload, error.server_message, requested)
        if not refused:
            return
        self.features.unsupported.update({name: f"HTTP {error.status}: {error.server_message}" for name in refused})
        names = ", ".join(refused)
        raise Unsupported(f"{names} {'is' if len(refused) == 1 else 'are'} not supported by {self.base_url}: it "
                          f"answered HTTP {error.status}: {error.server_message}") from error

    def adopt(self, adapted: Adapted) -> dict[str, Any]:
        """Record what a refusal showed about the server; the body to send instead."""
        self.features.update(adapted.updates)
        if adapted.extensions is False:
            self.extensions.vllm_extensions = False
        return adapted.payload

    async def request(self, send: Callable[..., Awaitable[Any]], method: str, path: str,
                      payload: dict[str, Any], requested: Sequence[str] = ()) -> Any:
        """`send` the request, dropping what the server refuses, once each: vLLM's extra fields,
        then too many top logprobs (down to OpenAI's 5), then logprobs altogether. A refused field
        of `requested` (the user's) raises `ttc.Unsupported` instead."""
        for _ in range(4):
            try:
                return await send(method, path, payload)
            except RequestRejected as exc:
                self.refuse(payload, exc, requested)
                adapted = adapt_rejected(payload, exc.server_message, self.features)
                if adapted is None:
                    raise
                payload = self.adopt(adapted)
        return await send(method, path, payload)

    def stream(self, payload: dict[str, Any], error: RequestRejected,
               requested: Sequence[str] = ()) -> dict[str, Any] | None:
        """The body to open a refused stream with instead (None: the refusal stands); a refused
        field of `requested` raises `ttc.Unsupported`."""
        self.refuse(payload, error, requested)
        adapted = adapt_rejected_stream(payload, error.server_message)
        return None if adapted is None else self.adopt(adapted)
