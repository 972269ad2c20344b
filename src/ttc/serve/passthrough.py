"""The passthrough path of `ttc serve`: a request without a `ttc` object is forwarded unchanged to
the next replica and its answer relayed as it comes, within the path's own connection pool and
timeouts. The upstream key never reaches the client (redacted from every byte); an upstream that
refuses ttc's credentials, a body that is not JSON and one cut short are 502s; a timeout is a
504 and the upstream request is aborted (its connection closed: vLLM stops generating)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from ttc.serve.config import ServeConfig
from ttc.serve.logs import ServerLog
from ttc.serve.metrics import Metrics
from ttc.serve.protocol import RequestError
from ttc.serve.redact import Redactor
from ttc.serve.upstream import Pool, cause_of_status, refused_credentials
from ttc.types import Usage

PATH = "passthrough"


class Passthrough:
    def __init__(self, config: ServeConfig, headers: dict[str, str], redactor: Redactor, metrics: Metrics,
                 log: ServerLog):
        c = config.connections
        self.connections = c
        self.headers = headers
        self.redactor = redactor
        self.metrics = metrics
        self.log = log
        self.pool = Pool(PATH, c.passthrough_connections, c.pool_wait, metrics, config.limits.retry_after)
        self.timeout = aiohttp.ClientTimeout(total=c.total_timeout, sock_connect=c.connect_timeout,
                                             sock_read=c.read_timeout)
        self.session: aiohttp.ClientSession | None = None
        self.bases: list[str] = []
        self._next = itertools.count()

    async def start(self, bases: Sequence[str]) -> None:
        self.bases = list(bases)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections.passthrough_connections), timeout=self.timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _base(self) -> str:
        return self.bases[next(self._next) % len(self.bases)]

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of GET `path` from the first replica that answers (`/v1/models`)."""
        async with self.pool.slot():
            for _ in range(len(self.bases)):
                base = self._base()
                try:
                    async with self.session.get(base + path, headers=self.headers) as r:
                        return r.status, await r.read()
                except asyncio.TimeoutError:
                    raise self.timeout_error(base) from None
                except aiohttp.ClientError:
                    continue
        self.metrics.upstream_errors.labels("connect", PATH).inc()
        raise RequestError("no upstream answers", None, status=502, type="upstream_error")

    async def forward(self, request: web.Request, info: dict[str, Any], path: str, raw: bytes,
                      stream: bool) -> web.StreamResponse:
        """Forward `raw` to the next replica (the following ones if it refuses connections) and
        relay the answer; `info` is the request's access-log record."""
        async with self.pool.slot():
            for _ in range(len(self.bases)):
                base = self._base()
                try:
                    upstream = await self.session.post(base + path, data=raw, headers=self.headers)
                except asyncio.TimeoutError:
                    raise self.timeout_error(base) from None
                except aiohttp.ClientConnectionError as exc:
                    self.log.error("upstream unreachable", request_id=info["request_id"], path=PATH, upstream=base,
                                   cause=type(exc).__name__)
                    continue
                try:
                    return await self._relay(request, info, upstream, base, stream)
                finally:
                    upstream.close()  # before the end (client gone, timeout): drop the connection, vLLM aborts
        self.metrics.upstream_errors.labels("connect", PATH).inc()
        raise RequestError("no upstream answers (connection refused by every replica)", None, status=502,
                           type="upstream_error")

    async def _relay(self, request: web.Request, info: dict[str, Any], upstream: aiohttp.ClientResponse,
                     base: str, stream: bool) -> web.StreamResponse:
        rid = info["request_id"]
        if upstream.status in (401, 403):
            self.log.error("the upstream refused ttc's credentials", request_id=rid, path=PATH, upstream=base,
                           status=upstream.status, detail=await _read_some(upstream))
            self.metrics.upstream_errors.labels("refused_credentials", PATH).inc()
            raise refused_credentials(upstream.status)
        headers = {k: upstream.headers[k] for k in ("Retry-After",) if k in upstream.headers}
        kind = upstream.headers.get("Content-Type", "application/json")
        if not kind.startswith("text/event-stream"):
            try:
                body = await upstream.read()
            except asyncio.TimeoutError:
                raise self.timeout_error(base) from None
            except aiohttp.ClientPayloadError as exc:
                raise self.bad_response(base, rid, f"a truncated body ({exc})") from None
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise self.bad_response(base, rid, f"HTTP {upstream.status} with a body that is not JSON ({kind})",
                                        status=upstream.status) from None
            if upstream.status >= 400:
                self.metrics.upstream_errors.labels(cause_of_status(upstream.status), PATH).inc()
                self.metrics.errors.labels(str(upstream.status)).inc()
                info["error"] = f"upstream_{upstream.status}"
                body = self.redactor.bytes(body, urls=True)
            else:
                body = self.redactor.bytes(body)
                if not stream:
                    self._count(data, info)
            return web.Response(status=upstream.status, body=body, content_type="application/json",
                                headers=headers)
        out = web.StreamResponse(status=upstream.status,
                                 headers={"Content-Type": kind, "Cache-Control": "no-cache", **headers})
        await out.prepare(request)
        redact = self.redactor.stream()
        try:
            async for chunk in upstream.content.iter_any():
                piece = redact.feed(chunk)
                if piece:
                    await out.write(piece)
            await out.write(redact.flush())
        except (asyncio.TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            error = (self.timeout_error(base) if isinstance(exc, asyncio.TimeoutError)
                     else self.bad_response(base, rid, f"a broken stream ({type(exc).__name__})"))
            self.metrics.errors.labels(str(error.status)).inc()
            info["error"] = error.type
            await out.write(redact.flush())
            await out.write(b"\n\ndata: " + json.dumps(error.body(rid)).encode() + b"\n\n")
        await out.write_eof()
        return out

    def _count(self, data: Any, info: dict[str, Any]) -> None:
        try:
            usage = data.get("usage") or {}
            prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError):
            return
        info.update(prompt_tokens=prompt, completion_tokens=completion)
        self.metrics.count_usage(Usage(prompt_tokens=prompt, completion_tokens=completion), PATH)

    def timeout_error(self, base: str) -> RequestError:
        self.metrics.upstream_errors.labels("timeout", PATH).inc()
        c = self.connections
        self.log.error("upstream timeout", path=PATH, upstream=base, connect_timeout=c.connect_timeout,
                       read_timeout=c.read_timeout, total_timeout=c.total_timeout)
        return RequestError(f"the upstream did not answer in time (connect {c.connect_timeout:g} s, read "
                            f"{c.read_timeout:g} s, total {c.total_timeout:g} s); the request was aborted", None,
                            status=504, type="upstream_timeout")

    def bad_response(self, base: str, rid: str, what: str, status: int | None = None) -> RequestError:
        self.metrics.upstream_errors.labels("bad_response" if status is None or status < 400
                                            else cause_of_status(status), PATH).inc()
        self.log.error("bad upstream response", request_id=rid, path=PATH, upstream=base, cause=what)
        return RequestError(f"the upstream answered {what}", None, status=502, type="upstream_error")


async def _read_some(response: aiohttp.ClientResponse, limit: int = 2000) -> str:
    """The start of an upstream error body, for the log (best effort)."""
    try:
        return (await response.content.read(limit)).decode("utf-8", "replace")
    except Exception:  # a log detail only
        return ""
