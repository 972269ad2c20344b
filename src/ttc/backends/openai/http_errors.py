"""HTTP answers that went wrong: ttc's errors for an error status, the server's own message,
`Retry-After`, and invalid JSON."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Any

from ttc.errors import GenerationError, InvalidInput, MalformedResponse

__all__ = ["AUTH_HINT", "AuthenticationFailed", "HTTPStatusError", "RequestRejected", "error_message", "mentions_auth",
           "parse_json", "retry_after", "status_error"]

#: what an error body says when a key is missing or wrong: LiteLLM's proxy answers a wrong key with
#: 400 "No connected db." (it looks virtual keys up in a database it does not have)
_AUTH_WORDS = re.compile(r"\bapi[ _-]?key\b|\bkey\b|\bauth(entication|enticate|orization|ori[sz]ed)?\b|"
                         r"\bunauthori[sz]ed\b|\bforbidden\b|no connected db|\bdatabase\b", re.I)
AUTH_HINT = ("check api_key: pass OpenAICompatible(..., api_key=...) with the key of the server or of the gateway in "
             "front of it (LiteLLM: its master key or a virtual key), or set $OPENAI_API_KEY / $VLLM_API_KEY")


class HTTPStatusError(GenerationError):
    """The server answered with an HTTP error status (after retries, for 5xx and 429)."""

    def __init__(self, status: int, message: str, url: str, retry_after: float | None = None):
        self.status = status
        self.server_message = message
        self.url = url
        self.retry_after = retry_after  # seconds the server's Retry-After header asked for
        super().__init__(f"HTTP {status} from {url}: {message}")


class RequestRejected(HTTPStatusError, InvalidInput):
    """The server refused the request as invalid (a 4xx other than 429): not retried.

    Also an `InvalidInput`: the request, not the server, has to change (e.g. max_tokens beyond
    the model's context).
    """


class AuthenticationFailed(RequestRejected):
    """The server, or a gateway in front of it, refused the request's key (a 401/403, or an error
    whose message names a key, authentication or a missing key database). Not retried."""


def mentions_auth(message: str) -> bool:
    """Whether an error message is about a key or authentication (or a gateway's key database)."""
    return bool(_AUTH_WORDS.search(message))


def error_message(body: bytes) -> str:
    """The server's own error message from an error body (vLLM and OpenAI formats)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:1000] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
        if data.get("detail"):
            return str(data["detail"])
    return text[:1000]


def retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (a number or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def status_error(status: int, body: bytes, url: str, headers: Any = None, *, first: bool = False,
                 keyless: bool = False) -> HTTPStatusError:
    """The error for an HTTP error status: `RequestRejected` for a 4xx other than 429 (not retried),
    `AuthenticationFailed` for a 401/403 or a message about a key (whatever the status: a gateway
    may answer 400 or 500). `first`: no request to this server has succeeded yet, and `keyless`:
    none carried a key; then any error status gets the api_key hint too (LiteLLM answers a request
    without its key with a bare 500)."""
    message = error_message(body)
    if status in (401, 403) or (status >= 400 and mentions_auth(message)):
        return AuthenticationFailed(status, f"{message} ({AUTH_HINT})", url)
    if first and keyless and status >= 400 and status not in (404, 429):
        message += (f" (the first request to this server failed and sent no key: if a gateway such as LiteLLM "
                    f"is in front of it, {AUTH_HINT})")
    if 400 <= status < 500 and status != 429:
        return RequestRejected(status, message, url)
    wait = retry_after(headers.get("Retry-After")) if headers is not None and status in (429, 503) else None
    return HTTPStatusError(status, message, url, wait)


def parse_json(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        preview = raw[:200].decode("utf-8", "replace")
        raise MalformedResponse(f"{url} answered with invalid JSON ({exc}): {preview!r}") from None
