"""Transport: HTTP sessions per event loop, replicas, retries, Retry-After, timeouts and SSE.

It knows nothing of completions: it sends JSON and returns JSON (or the chunks of a stream), and
turns what goes wrong on the wire into ttc's errors. What to do with a refused request is the
caller's decision (`adapt`); this module only retries what a retry can fix (connection errors,
5xx, 429).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ttc.backends.openai.http_errors import RequestRejected, parse_json, status_error
from ttc.errors import BackendUnavailable, GenerationError, InvalidInput, MalformedResponse

__all__ = ["OpenStream", "Replica", "Transport", "discover_model", "request_headers", "split_base"]


@dataclass(eq=False)
class Replica:
    base: str               # ".../v1"
    root: str               # the server root, where vLLM serves /tokenize, /health, /metrics
    outstanding: int = 0    # requests sent and not yet answered
    down_until: float = 0.0  # monotonic time until which the replica is skipped
    failures: int = 0       # connection failures in a row


@dataclass(eq=False)
class LoopState:
    """What is bound to one event loop: the HTTP session and the concurrency semaphore."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


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


#: what a caller does with a refused stream request: the payload to send instead, or None (raise)
Adapt = Callable[[dict[str, Any], RequestRejected], "dict[str, Any] | None"]


@dataclass(eq=False)
class OpenStream:
    """A streamed response the server accepted; `close(finished)` must be called once."""

    response: aiohttp.ClientResponse
    replica: Replica
    transport: Transport

    def chunks(self) -> AsyncIterator[Any]:
        return self.transport.sse(self.response)

    def close(self, finished: bool) -> None:
        if not finished:
            self.response.close()  # drop the connection: vLLM aborts the request
        else:
            self.response.release()
        self.replica.outstanding -= 1


class Transport:
    """Sends JSON to the least busy replica, with retries, backoff, Retry-After and timeouts.

    The aiohttp session and the concurrency semaphore belong to the event loop that made them
    (`states`, one per loop); `retries` counts attempts repeated after a failure.
    """

    def __init__(self, replicas: list[Replica], headers: dict[str, str], *, max_concurrency: int, timeout: float,
                 connect_timeout: float, max_retries: int, backoff: float, max_backoff: float, cooldown: float,
                 max_retry_after: float):
        for name, value in (("max_concurrency", max_concurrency), ("timeout", timeout),
                            ("connect_timeout", connect_timeout)):
            if value is None or value <= 0:
                raise InvalidInput(f"{name} must be positive, got {value!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInput(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if backoff < 0 or max_backoff < 0 or cooldown < 0 or not max_retry_after >= 0:
            raise InvalidInput("backoff, max_backoff, cooldown and max_retry_after must be >= 0")
        self.replicas = replicas
        self.headers = headers
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.cooldown = float(cooldown)
        self.max_retry_after = float(max_retry_after)
        self.states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()
        self._next = 0
        self.retries = 0  # attempts repeated after a failure, for tests and monitoring

    # -- sessions and replicas ------------------------------------------------------------------
    def state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        state = self.states.get(loop)
        if state is None or state.session.closed:
            connector = aiohttp.TCPConnector(limit=0)  # the semaphore limits concurrency
            state = LoopState(session=aiohttp.ClientSession(connector=connector),
                              semaphore=asyncio.Semaphore(self.max_concurrency))
            self.states[loop] = state
        return state

    async def aclose(self) -> None:
        """Close this event loop's HTTP session. Safe to call twice, and outside a loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self.states.pop(loop, None)
        if state is not None:
            await state.session.close()

    def pick(self) -> Replica:
        """The available replica with the fewest outstanding requests (round robin among equals);
        if all are cooling down, the one that comes back first."""
        now = time.monotonic()
        up = [r for r in self.replicas if r.down_until <= now]
        if not up:
            return min(self.replicas, key=lambda r: r.down_until)
        least = min(r.outstanding for r in up)
        candidates = [r for r in up if r.outstanding == least]
        self._next += 1
        return candidates[self._next % len(candidates)]

    def mark_down(self, replica: Replica) -> None:
        replica.failures += 1
        replica.down_until = time.monotonic() + self.cooldown

    @staticmethod
    def mark_up(replica: Replica) -> None:
        replica.failures = 0
        replica.down_until = 0.0

    def client_timeout(self, stream: bool = False) -> aiohttp.ClientTimeout:
        if stream:
            return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.timeout)
        return aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout)

    async def wait_before_retry(self, attempt: int, failed: Replica, last: GenerationError | None = None) -> None:
        """Wait before the next attempt: as long as a 429/503's `Retry-After` asks (capped at
        `max_retry_after`), else exponential backoff with jitter; not at all when another replica
        can take the request."""
        now = time.monotonic()
        if failed.down_until > now and any(r.down_until <= now for r in self.replicas):
            return  # the failed replica sits out; another one can take the request right away
        asked = getattr(last, "retry_after", None)
        if asked is not None:
            await asyncio.sleep(min(asked, self.max_retry_after) + random.random() * 0.05)
            return
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))

    # -- requests -------------------------------------------------------------------------------
    async def request(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                      root: bool = False, retries: int | None = None) -> Any:
        """Send one request (with retries and replica failover) and return its parsed JSON body."""
        state = self.state()
        retries = self.max_retries if retries is None else retries
        last: GenerationError | None = None
        async with state.semaphore:
            for attempt in range(retries + 1):
                if attempt:
                    self.retries += 1
                replica = self.pick()
                url = (replica.root if root else replica.base) + path
                replica.outstanding += 1
                try:
                    async with state.session.request(method, url, json=payload, headers=self.headers,
                                                     timeout=self.client_timeout()) as response:
                        body = await response.read()
                        self.mark_up(replica)
                        if response.status < 400:
                            return parse_json(body, url)
                        error = status_error(response.status, body, url, response.headers)
                        if isinstance(error, RequestRejected):
                            raise error
                        last = error
                except aiohttp.ClientPayloadError as exc:
                    raise MalformedResponse(f"{url} sent an incomplete response: {exc}") from None
                except (aiohttp.SocketTimeoutError, aiohttp.ClientConnectionError) as exc:
                    if isinstance(exc, aiohttp.SocketTimeoutError):
                        raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                    self.mark_down(replica)
                    last = BackendUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}")
                except asyncio.TimeoutError:
                    raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                finally:
                    replica.outstanding -= 1
                if attempt < retries:
                    await self.wait_before_retry(attempt, replica, last)
        assert last is not None
        if isinstance(last, BackendUnavailable) and len(self.replicas) > 1:
            raise BackendUnavailable(f"no replica could be reached after {retries + 1} attempts "
                                     f"({', '.join(r.base for r in self.replicas)}); last: {last}")
        raise last

    async def open_stream(self, path: str, payload: dict[str, Any], adapt: Adapt) -> OpenStream:
        """Open a streamed request, retrying until the server has accepted it; a refused request is
        sent again as `adapt` rewrites it (without waiting), or raised when `adapt` gives None."""
        state = self.state()
        last: GenerationError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            replica = self.pick()
            url = replica.base + path
            replica.outstanding += 1
            try:
                response = await state.session.post(url, json=payload, headers=self.headers,
                                                    timeout=self.client_timeout(stream=True))
            except (aiohttp.SocketTimeoutError, aiohttp.ClientConnectionError) as exc:
                replica.outstanding -= 1
                if isinstance(exc, aiohttp.SocketTimeoutError):
                    raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                self.mark_down(replica)
                last = BackendUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}")
            except BaseException:
                replica.outstanding -= 1
                raise
            else:
                self.mark_up(replica)
                if response.status < 400:
                    return OpenStream(response, replica, self)
                try:
                    body = await response.read()
                finally:
                    response.release()
                    replica.outstanding -= 1
                error = status_error(response.status, body, url, response.headers)
                if isinstance(error, RequestRejected):
                    adapted = adapt(payload, error)
                    if adapted is None:
                        raise error
                    payload = adapted
                    continue
                last = error
            if attempt < self.max_retries:
                await self.wait_before_retry(attempt, replica, last)
        assert last is not None
        raise last

    async def sse(self, response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
        """The JSON payloads of a server-sent-event stream, up to `data: [DONE]`."""
        try:
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line or line.startswith(":"):
                    continue
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise MalformedResponse(f"invalid JSON in the stream: {data[:200]!r}") from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"the stream was cut off: {exc}") from None
        except aiohttp.SocketTimeoutError:
            raise GenerationError(f"the stream stalled for more than {self.timeout} s") from None
        except aiohttp.ClientConnectionError as exc:
            raise BackendUnavailable(f"the connection was lost mid-stream: {type(exc).__name__}: {exc}") from None

    async def health(self) -> list[bool]:
        """Whether each replica answers `GET /health` with 200 (vLLM), in order."""
        return [got is not None and got[0] == 200 for got in [await self.get_text(f"{r.root}/health")
                                                              for r in self.replicas]]

    async def get_text(self, url: str) -> tuple[int, str] | None:
        """(status, body text) of a GET with the connect timeout (for /health, /metrics); None when
        the server cannot be reached."""
        try:
            async with self.state().session.get(url, headers=self.headers,
                                                timeout=aiohttp.ClientTimeout(total=self.connect_timeout)) as r:
                return r.status, (await r.text() if r.status == 200 else "")
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
