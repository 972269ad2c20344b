"""The upstream side of `ttc serve` that is not a backend: the passthrough path's bounded
connection pool, and the background health probe that `/health` answers from."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp

from ttc.serve.metrics import Metrics
from ttc.serve.protocol import RequestError


class Pool:
    """At most `size` upstream requests of one path at once; a request that waits `wait` seconds
    for a slot gets a 503 with `Retry-After` (the client may go to another replica). Its counts
    are the /metrics gauges `ttc_serve_upstream_connections_in_use` and `ttc_serve_upstream_waiting`."""

    def __init__(self, path: str, size: int, wait: float, metrics: Metrics, retry_after: int = 1):
        self.path = path
        self.size = size
        self.wait = wait
        self.retry_after = retry_after
        self.metrics = metrics
        self.in_use = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        self.metrics.pool_waiting.labels(self.path).inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait)
        except asyncio.TimeoutError:
            self.metrics.upstream_errors.labels("pool_exhausted", self.path).inc()
            raise RequestError(f"all {self.size} upstream connections of this server are busy (waited "
                               f"{self.wait:g} s): retry later", None, status=503, type="server_overloaded",
                               headers={"Retry-After": str(self.retry_after)}) from None
        finally:
            self.waiting -= 1
            self.metrics.pool_waiting.labels(self.path).dec()
        self.in_use += 1
        self.metrics.pool_in_use.labels(self.path).inc()
        try:
            yield
        finally:
            self.in_use -= 1
            self.metrics.pool_in_use.labels(self.path).dec()
            self._slots.release()


@dataclass
class ReplicaHealth:
    ok: bool = False
    detail: str = "not probed yet"
    checked: float = 0.0  # time.monotonic() of the last probe


class HealthProbe:
    """Probes every replica every `interval` seconds on its own small connection pool (never
    behind traffic): a replica is up when its `/health` answers 200, or, on servers without one
    (OpenAI, LiteLLM, Ollama, `transformers serve`), when `/v1/models` does."""

    def __init__(self, bases: Sequence[str], headers: dict[str, str], interval: float, timeout: float,
                 metrics: Metrics):
        self.bases = list(bases)
        self.headers = headers
        self.interval = interval
        self.timeout = timeout
        self.metrics = metrics
        self.replicas = [ReplicaHealth() for _ in self.bases]
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None

    @property
    def ok(self) -> bool:
        return any(r.ok for r in self.replicas)

    async def start(self) -> None:
        """Probe once (so /health is right from the first request), then every `interval` s."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * len(self.bases)))
        await self.probe()
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.probe()

    async def probe(self) -> None:
        await asyncio.gather(*(self._probe(i) for i in range(len(self.bases))))

    async def _probe(self, i: int) -> None:
        base = self.bases[i]
        root = base[: -len("/v1")] if base.endswith("/v1") else base
        ok, detail = False, ""
        try:
            status = await self._get(root + "/health")
            if status == 200:
                ok, detail = True, "health 200"
            elif status in (404, 405):
                status = await self._get(base + "/models")
                ok, detail = status == 200, f"no /health; models {status}"
            else:
                detail = f"health {status}"
            if status in (401, 403):
                detail = "the upstream refused ttc's credentials"
                self.metrics.upstream_errors.labels("refused_credentials", "health").inc()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            detail = "timeout" if isinstance(exc, asyncio.TimeoutError) else f"unreachable ({type(exc).__name__})"
            self.metrics.upstream_errors.labels("timeout" if "timeout" in detail else "connect", "health").inc()
        self.replicas[i] = ReplicaHealth(ok, detail, time.monotonic())
        self.metrics.upstream_up.labels(str(i)).set(1 if ok else 0)

    async def _get(self, url: str) -> int:
        assert self._session is not None
        async with self._session.get(url, headers=self.headers, allow_redirects=False,
                                     timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
            return r.status


def cause_of_status(status: int) -> str:
    """The /metrics cause of an upstream's HTTP error status."""
    if status in (401, 403):
        return "refused_credentials"
    if status in (429, 503):
        return "rate_limited" if status == 429 else "unavailable"
    return "http_5xx" if status >= 500 else "http_4xx"


def refused_credentials(status: int, extra: dict | None = None) -> RequestError:
    """An upstream 401/403: ttc's own credentials are wrong, not the client's request (a 502)."""
    return RequestError(f"the upstream refused ttc's credentials (HTTP {status}): the server's upstream key is "
                        f"missing or wrong; tell its operator", None, status=502, type="upstream_error", extra=extra)
