"""Transport: HTTP sessions per event loop, replicas, retries, Retry-After, timeouts and SSE.

It knows nothing of completions: it sends JSON and returns JSON (or the chunks of a stream), and
turns what goes wrong on the wire into ttc's errors. What to do with a refused request is the
caller's decision (`adapt`); this module only retries what a retry can fix (connection errors,
5xx, and 429/503 as far as `retry_on_overload` allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ttc.backends.openai.http_errors import HTTPStatusError, RequestRejected, parse_json, status_error
from ttc.backends.openai.pool import PoolStats, Slots
from ttc.backends.openai.replicas import Replica, discover_model, request_headers, split_base
from ttc.errors import (
    BackendUnavailable,
    ConnectTimeout,
    GenerationError,
    GenerationTimeout,
    InvalidInput,
    MalformedResponse,
)

__all__ = ["OpenStream", "PoolStats", "Replica", "Transport", "discover_model", "request_headers", "split_base"]


@dataclass(eq=False)
class LoopState:
    """What is bound to one event loop: the HTTP session and the connection slots."""

    session: aiohttp.ClientSession
    slots: Slots
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def semaphore(self) -> asyncio.Semaphore:
        return self.slots.semaphore


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

    The aiohttp session and the connection slots belong to the event loop that made them
    (`states`, one per loop); `retries` counts attempts repeated after a failure.

    `pool_wait`: the longest a request waits for one of the `max_concurrency` slots (None: as long
    as it takes), else `PoolExhausted`; `pool_stats()` counts the slots in use and the requests
    waiting. `read_timeout`: the longest wait between two reads of an answer (None: only
    `timeout` bounds a whole request; a stream's chunks wait `timeout` each). Expiry of any
    timeout is a `GenerationTimeout` (`ConnectTimeout` for the connection: also retried on
    another replica). `retry_on_overload`: how many of the `max_retries` may repeat a request the
    server answered 429/503 (None: all of them; 0: its `HTTPStatusError`, with the server's
    `retry_after`, is raised at once, for a caller that answers its own clients 503).
    """

    def __init__(self, replicas: list[Replica], headers: dict[str, str], *, max_concurrency: int, timeout: float,
                 connect_timeout: float, max_retries: int, backoff: float, max_backoff: float, cooldown: float,
                 max_retry_after: float, pool_wait: float | None = None, read_timeout: float | None = None,
                 retry_on_overload: int | None = None):
        for name, value in (("max_concurrency", max_concurrency), ("timeout", timeout),
                            ("connect_timeout", connect_timeout),
                            ("read_timeout", 1 if read_timeout is None else read_timeout)):
            if value is None or not value > 0:
                raise InvalidInput(f"{name} must be positive, got {value!r}")
        if pool_wait is not None and not pool_wait >= 0:
            raise InvalidInput(f"pool_wait must be None or seconds >= 0, got {pool_wait!r}")
        overload = 0 if retry_on_overload is None else retry_on_overload
        for name, count in (("max_retries", max_retries), ("retry_on_overload", overload)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise InvalidInput(f"{name} must be an integer >= 0, got {count!r}")
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
        self.pool_wait = None if pool_wait is None else float(pool_wait)
        self.read_timeout = None if read_timeout is None else float(read_timeout)
        self.retry_on_overload = retry_on_overload
        self.states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()
        self._next = 0
        self.retries = 0  # attempts repeated after a failure, for tests and monitoring
        self.answered = False  # whether any request has succeeded (an error before that may be a missing key)

    # -- sessions and replicas ------------------------------------------------------------------
    def state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        state = self.states.get(loop)
        if state is None or state.session.closed:
            connector = aiohttp.TCPConnector(limit=0)  # the semaphore limits concurrency
            state = LoopState(session=aiohttp.ClientSession(connector=connector), slots=Slots(self.max_concurrency))
            self.states[loop] = state
        return state

    def slot(self, state: LoopState | None = None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold one of this event loop's connection slots, waiting at most `pool_wait` seconds."""
        return (state or self.state()).slots.hold(self.pool_wait, self.base_urls())

    def pool_stats(self) -> PoolStats:
        """Slots in use and requests waiting, over every event loop (safe to read from another thread)."""
        while True:
            try:
                slots = [s.slots for s in list(self.states.values())]
                break
            except RuntimeError:  # another thread's event loop came or went meanwhile: read again
                continue
        return PoolStats(self.max_concurrency, sum(s.in_use for s in slots), sum(s.waiting for s in slots))

    def base_urls(self) -> str:
        return ", ".join(r.base for r in self.replicas)

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
            return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                         sock_read=self.read_timeout or self.timeout)
        return aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout, sock_read=self.read_timeout)

    def timed_out(self, url: str, exc: BaseException) -> GenerationTimeout:
        """The `GenerationTimeout` for an expired connect, read or total timeout."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ConnectTimeout(f"{url} did not accept a connection within {self.connect_timeout} s")
        if isinstance(exc, aiohttp.SocketTimeoutError):
            read = self.read_timeout or self.timeout
            return GenerationTimeout(f"{url} did not answer within {read} s (read timeout)", "read")
        return GenerationTimeout(f"{url} did not answer within {self.timeout} s", "total")

    def gives_up(self, error: GenerationError, overloads: int) -> bool:
        """Whether a 429/503 is past the retries `retry_on_overload` allows (`overloads` so far)."""
        return (isinstance(error, HTTPStatusError) and error.status in (429, 503)
                and self.retry_on_overload is not None and overloads > self.retry_on_overload)

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
        overloads = 0
        async with self.slot(state):
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
                            self.answered = True
                            return parse_json(body, url)
                        error = self.status_error(response.status, body, url, response.headers)
                        overloads += error.status in (429, 503)
                        if isinstance(error, RequestRejected) or self.gives_up(error, overloads):
                            raise error
                        last = error
                except aiohttp.ClientPayloadError as exc:
                    raise MalformedResponse(f"{url} sent an incomplete response: {exc}") from None
                except (aiohttp.ServerTimeoutError, aiohttp.ClientConnectionError) as exc:
                    last = self.connection_failed(replica, url, exc)
                except asyncio.TimeoutError as exc:
                    raise self.timed_out(url, exc) from None
                finally:
                    replica.outstanding -= 1
                if attempt < retries:
                    await self.wait_before_retry(attempt, replica, last)
        assert last is not None
        if isinstance(last, BackendUnavailable) and len(self.replicas) > 1:
            raise type(last)(f"no replica could be reached after {retries + 1} attempts "
                             f"({self.base_urls()}); last: {last}")
        raise last

    def status_error(self, status: int, body: bytes, url: str, headers: Any) -> HTTPStatusError:
        """`http_errors.status_error`, told whether this is before any success and sent no key."""
        return status_error(status, body, url, headers, first=not self.answered,
                            keyless="Authorization" not in self.headers)

    def connection_failed(self, replica: Replica, url: str, exc: BaseException) -> BackendUnavailable:
        """The error of a connection that failed or did not open in time (the replica sits out and
        the request may be retried); a read timeout is raised at once (the server had the request)."""
        if isinstance(exc, aiohttp.ServerTimeoutError):
            error = self.timed_out(url, exc)
            if not isinstance(error, ConnectTimeout):
                raise error from None
        self.mark_down(replica)
        return error if isinstance(exc, aiohttp.ServerTimeoutError) else BackendUnavailable(
            f"cannot reach {url}: {type(exc).__name__}: {exc}")

    async def open_stream(self, path: str, payload: dict[str, Any], adapt: Adapt) -> OpenStream:
        """Open a streamed request, retrying until the server has accepted it; a refused request is
        sent again as `adapt` rewrites it (without waiting), or raised when `adapt` gives None."""
        state = self.state()
        last: GenerationError | None = None
        overloads = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            replica = self.pick()
            url = replica.base + path
            replica.outstanding += 1
            try:
                response = await state.session.post(url, json=payload, headers=self.headers,
                                                    timeout=self.client_timeout(stream=True))
            except (aiohttp.ServerTimeoutError, aiohttp.ClientConnectionError) as exc:
                replica.outstanding -= 1
                last = self.connection_failed(replica, url, exc)
            except BaseException:
                replica.outstanding -= 1
                raise
            else:
                self.mark_up(replica)
                if response.status < 400:
                    self.answered = True
                    return OpenStream(response, replica, self)
                try:
                    body = await response.read()
                finally:
                    response.release()
                    replica.outstanding -= 1
                error = self.status_error(response.status, body, url, response.headers)
                if isinstance(error, RequestRejected):
                    adapted = adapt(payload, error)
                    if adapted is None:
                        raise error
                    payload = adapted
                    continue
                overloads += error.status in (429, 503)
                if self.gives_up(error, overloads):
                    raise error
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
            raise GenerationTimeout(f"the stream stalled for more than {self.read_timeout or self.timeout} s",
                                    "read") from None
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
