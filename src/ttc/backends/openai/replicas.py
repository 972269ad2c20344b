"""Replicas: a base URL read into its parts, the request headers with the bearer key, and the
served model's name asked of the first replica that answers (synchronously, at construction)."""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from ttc.errors import InvalidInput

__all__ = ["Replica", "discover_model", "request_headers", "split_base"]


@dataclass(eq=False)
class Replica:
    base: str               # ".../v1"
    root: str               # the server root, where vLLM serves /tokenize, /health, /metrics
    outstanding: int = 0    # requests sent and not yet answered
    down_until: float = 0.0  # monotonic time until which the replica is skipped
    failures: int = 0       # connection failures in a row



def split_base(url: str) -> Replica:
    """A replica from a base URL (a URL without a path gets `/v1`)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"a base URL must be a non-empty string, got {url!r}")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"base URL {url!r} must look like http://host:port/v1")
    if not parts.path:
        url += "/v1"
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    return Replica(base=url, root=root)


def request_headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    """JSON content type, `extra`, and the bearer key: `api_key`, else $OPENAI_API_KEY, else $VLLM_API_KEY."""
    key = api_key if api_key is not None else (os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY"))
    headers = {"Content-Type": "application/json", **(extra or {})}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def discover_model(replicas: list[Replica], headers: dict[str, str], timeout: float) -> str | None:
    """The served model's name from the first replica whose `/v1/models` answers, now and
    synchronously (so that a backend's `model_name` is real from the start); None if none does."""
    headers = {k: v for k, v in headers.items() if k != "Content-Type"}
    for replica in replicas:
        try:
            request = urllib.request.Request(replica.base + "/models", headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return str(json.loads(response.read())["data"][0]["id"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
    return None
