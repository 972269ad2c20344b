"""What a failed strategy run tells the client, by the error's type: the HTTP status, the
OpenAI-shaped error and its /metrics cause. Upstream URLs and the upstream key never appear, only
the upstream's own message, redacted."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ttc.backends.openai_compatible import HTTPStatusError, RequestRejected
from ttc.errors import (
    BackendUnavailable,
    BudgetExhausted,
    GenerationError,
    GenerationTimeout,
    InvalidInput,
    MalformedResponse,
    PoolExhausted,
)
from ttc.serve.schema import RequestError
from ttc.serve.upstream import cause_of_status, refused_credentials

__all__ = ["cause_of", "error_of"]


def error_of(exc: BaseException, extra: dict[str, Any], redact: Callable[[str], str],
             retry_after: int = 1) -> RequestError:
    """The client's error for a failed strategy run; `extra` (what the run had spent) rides along.

    An upstream 429/503 is a 503 with the upstream's own Retry-After (the backend does not retry
    it: `retry_on_overload=0`); no free upstream connection within `--pool-wait` is a 503 with
    ours; any upstream timeout (connect, read, total) is a 504."""
    if isinstance(exc, HTTPStatusError) and exc.status in (401, 403):
        return refused_credentials(exc.status, extra)
    if isinstance(exc, HTTPStatusError) and exc.status in (429, 503):
        wait = exc.retry_after if exc.retry_after is not None else retry_after
        return RequestError(f"the upstream is overloaded (HTTP {exc.status}): retry later", None, status=503,
                            type="upstream_overloaded", headers={"Retry-After": str(max(1, math.ceil(wait)))},
                            extra=extra)
    if isinstance(exc, PoolExhausted):
        return RequestError("all upstream connections of this server's strategy path are busy: retry later", None,
                            status=503, type="server_overloaded", headers={"Retry-After": str(retry_after)},
                            extra=extra)
    if isinstance(exc, RequestRejected):
        return RequestError(f"the upstream refused a request: {redact(exc.server_message)}", None, status=400,
                            extra=extra)
    if isinstance(exc, BudgetExhausted):
        return RequestError(str(exc), "ttc.budget", status=422, type="budget_exhausted", extra=extra)
    if isinstance(exc, InvalidInput):
        return RequestError(redact(str(exc)), "ttc", status=400, extra=extra)
    if isinstance(exc, GenerationTimeout):
        return RequestError(f"the upstream did not answer in time ({exc.phase} timeout); the request was aborted",
                            None, status=504, type="upstream_timeout", extra=extra)
    if isinstance(exc, GenerationError):
        return RequestError(f"the upstream failed: {type(exc).__name__}", None, status=502, type="upstream_error",
                            extra=extra)
    return RequestError(f"internal error: {type(exc).__name__}: {redact(str(exc))}", None, status=500,
                        type="server_error", extra=extra)


def cause_of(exc: GenerationError) -> str:
    """The /metrics cause of an upstream failure on the strategy path."""
    if isinstance(exc, HTTPStatusError):
        return cause_of_status(exc.status)
    for kind, cause in ((PoolExhausted, "pool_exhausted"), (GenerationTimeout, "timeout"),
                        (BackendUnavailable, "connect"), (MalformedResponse, "bad_response")):
        if isinstance(exc, kind):
            return cause
    return "other"
