"""`ttc serve`: an OpenAI-compatible endpoint that runs ttc strategies against upstream deployments.

Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /live`
(answers without contacting anything), `GET /health` (readiness, from a background probe of the
upstreams), `GET /metrics`. A request with a `ttc` object (or any request, with `default="strategy"`) is
solved by a registered strategy (`ttc.strategies.registry.make_strategy`) on an
`OpenAICompatible` backend over the upstream replicas; any other request is forwarded unchanged
(passthrough), streamed back byte for byte.

Event loops: the HTTP server (and passthrough) runs on one loop. Strategies run on one more loop,
in one worker thread shared by all requests (never a thread per request): a strategy reads
answers with math-verify, which waits synchronously for its helper process (`ttc.mathparse`), and
that wait must not stall the HTTP loop's passthrough, health, metrics and 429 answers.

A client that disconnects cancels its handler (aiohttp's `handler_cancellation`), which cancels its
strategy task and so every upstream request it has open (vLLM aborts a request whose connection
closes). The server keeps no state between requests: replicas scale out behind any load balancer.

Production guards (docs/serve.md "In production"): every request gets a request id (the
`X-Request-Id` header, in error bodies and in its access-log line); only `application/json`
bodies are read, within `body_timeout`; without an API key only loopback `Host`s and no foreign
`Origin` are served (a web page cannot drive the server); the upstream key is redacted from every
relayed byte, error and log line; each path has its own upstream pool and timeouts; SIGTERM
drains in-flight requests for `shutdown_timeout` s, then cancels them and their upstream requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ttc.backends.openai_compatible import OpenAICompatible
from ttc.context import Context
from ttc.errors import BudgetExhausted, GenerationError, InvalidInput
from ttc.eval.results import jsonable
from ttc.runner import note_truncation
from ttc.serve import guard, schema
from ttc.serve.config import ServeConfig
from ttc.serve.failures import cause_of, error_of
from ttc.serve.logs import ServerLog
from ttc.serve.metrics import CONTENT_TYPE, Metrics
from ttc.serve.passthrough import Passthrough
from ttc.serve.probes import ProbeListener
from ttc.serve.redact import Redactor
from ttc.serve.schema import RequestError, StrategyRequest
from ttc.serve.upstream import HealthProbe, refused_credentials
from ttc.strategies import registry
from ttc.types import Problem, Result, Usage

#: strategies that search over steps: the ones a PRM (`--prm-upstream`, `ttc.prm`) guides
STEP_SEARCHES = frozenset({"beam", "dvts", "astar", "particle"})
#: characters of the chosen text per SSE chunk of a strategy's streamed answer
STREAM_CHUNK = 48
#: seconds between SSE keep-alive comments while a streamed strategy runs
KEEPALIVE_SECONDS = 10.0
_SERVER_KEY = web.AppKey("ttc_server", object)
#: a request's id and what its access-log line reports
_INFO = web.RequestKey("ttc_request", dict)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class _WorkerLoop:
    """One event loop in one thread where every strategy runs (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ttc-serve-strategies", daemon=True)
        self.thread.start()

    async def run(self, coro: Any) -> Any:
        """Await `coro` on the worker loop; cancelling the caller cancels it there."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class _Outcome:
    result: Result | None
    usage: Usage
    error: BaseException | None


class TTCServer:
    """The server's state: config, upstream backend, passthrough pool, health probe, metrics, logs,
    in-flight requests. `log_stream`: where log lines go (default stderr)."""

    def __init__(self, config: ServeConfig, log_stream: Any = None):
        self.config = config
        self.metrics = Metrics()
        self.in_flight = 0
        self.backend: OpenAICompatible | None = None
        self.worker: _WorkerLoop | None = None
        self.probe: HealthProbe | None = None
        self.draining = False
        self.probes: ProbeListener | None = None  # /live and /health on --health-port
        self._handlers: set[asyncio.Task] = set()  # every request being answered (for shutdown)
        self._bases: list[str] = []  # the replicas' /v1 base URLs, from the backend once started
        self._prm: Any = None
        self._prm_model: str | None = None
        key = config.upstream_api_key
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._upstream_headers = headers
        self.redactor = Redactor([key], [*config.upstream, config.prm_upstream])
        self.log = ServerLog(config.log_format, config.log_level, self.redactor, log_stream)
        self.passthrough = Passthrough(config, headers, self.redactor, self.metrics, self.log)
        self.pool = self.passthrough.pool

    # -- lifecycle ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_body_bytes,
                              middlewares=[self._frame, self._guard])
        app[_SERVER_KEY] = self
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/live", self.live)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        app.on_response_prepare.append(self._stamp)
        return app

    async def _start(self, app: web.Application) -> None:
        c = self.config.connections
        self.worker = _WorkerLoop()
        # the key is given explicitly ("" = none): the backend would otherwise read $OPENAI_API_KEY
        # an upstream 429/503 is not retried (retry_on_overload=0): the client gets its Retry-After at once
        self.backend = OpenAICompatible(list(self.config.upstream), api_key=self.config.upstream_api_key or "",
                                        thinking=self.config.thinking,
                                        max_concurrency=c.strategy_connections, pool_wait=c.pool_wait,
                                        timeout=c.total_timeout, connect_timeout=c.connect_timeout,
                                        read_timeout=c.read_timeout, retry_on_overload=0, max_retry_after=0.0,
                                        tokenizer=self.config.tokenizer, use_chat=self.config.use_chat)
        self.metrics.watch_pool("strategy", self.backend.transport.pool_stats)
        self._bases = [r.base for r in self.backend.replicas]
        self.redactor.add_urls(self._bases)
        await self.passthrough.start(self._bases)
        self.probe = HealthProbe(self._bases, self._upstream_headers, c.health_interval, c.health_timeout,
                                 self.metrics)
        await self.probe.start()
        if self.config.health_port is not None:
            self.probes = ProbeListener(self.config.host, self.config.health_port, self.live, self.health)
            self.probes.start()
        if self.config.prm_upstream:
            self._prm_model = await self._first_model(self.config.prm_upstream)
        # start math-verify's helper process now, not on the first request (it imports sympy: seconds)
        from ttc import mathparse

        self.worker.loop.call_soon_threadsafe(lambda: self.worker.loop.run_in_executor(None, mathparse.find, "$x$"))

    async def _stop(self, app: web.Application) -> None:
        if self.probes is not None:
            self.probes.stop()
        if self.probe is not None:
            await self.probe.stop()
        await self.passthrough.close()
        if self.worker is not None:
            if self.backend is not None:
                try:
                    await self.worker.run(self.backend.aclose())
                except Exception:  # closing is best effort
                    pass
            self.worker.stop()

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown, once the listening socket is closed: let the requests in flight finish
        for up to `timeout` s, then cancel the rest (and so their upstream requests). Returns how
        many were cancelled."""
        self.draining = True
        pending = {t for t in self._handlers if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            self.log.error("shutdown: cancelled requests still in flight", cancelled=len(pending),
                           shutdown_timeout=timeout)
        return len(pending)

    async def _first_model(self, url: str) -> str:
        """The first model of `url`'s /v1/models (a PRM deployment serves one)."""
        base = url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        try:
            async with self.passthrough.session.get(base + "/models", headers=self._upstream_headers) as r:
                data = await r.json(content_type=None)
            return str(data["data"][0]["id"])
        except (aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise InvalidInput(f"--prm-upstream: no model list at {base}/models ({type(exc).__name__})") from None

    # -- middlewares --------------------------------------------------------------------------
    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        info = request.get(_INFO)
        if info is not None:
            response.headers["X-Request-Id"] = info["request_id"]

    @web.middleware
    async def _frame(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A request id, OpenAI-shaped error answers, one access-log line; tracked for shutdown."""
        given = request.headers.get("X-Request-Id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        info: dict[str, Any] = {"request_id": rid, "method": request.method, "path": request.path}
        request[_INFO] = info
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        started = time.monotonic()
        status = 500
        try:
            response = await self._answer(request, handler, rid)
            status = response.status
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # the client left, or shutdown cancelled the request
            raise
        finally:
            if task is not None:
                self._handlers.discard(task)
            info["status"] = status
            info["latency_ms"] = round(1000 * (time.monotonic() - started), 1)
            self.log.access(info)

    async def _answer(self, request: web.Request, handler: Any, rid: str) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return self._error_response(request, exc)
        except web.HTTPRequestEntityTooLarge:
            return self._error_response(request, RequestError(
                f"the request body is over this server's cap of {self.config.limits.max_body_bytes} bytes", None,
                status=413))
        except web.HTTPException as exc:
            return self._error_response(request, RequestError(exc.reason, None, status=exc.status))
        except (asyncio.CancelledError, ConnectionResetError):
            raise  # the client left
        except Exception as exc:  # a bug: an OpenAI-style 500 rather than aiohttp's text page
            self.log.error("internal error", request_id=rid, cause=type(exc).__name__,
                           detail=self.redactor.text(str(exc), urls=False))
            return self._error_response(request, RequestError(
                f"internal error: {type(exc).__name__}: {self._redact(str(exc))}", None, status=500,
                type="server_error"))

    def _error_response(self, request: web.Request, error: RequestError) -> web.Response:
        self.metrics.errors.labels(str(error.status)).inc()
        info = request.get(_INFO, {})
        info["error"] = error.type
        return web.json_response(error.body(info.get("request_id")), status=error.status, headers=error.headers)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The key, or no web page; only JSON bodies (`ttc.serve.guard`)."""
        guard.check(request, self.config)
        return await handler(request)

    # -- routes -------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def models(self, request: web.Request) -> web.StreamResponse:
        status, body = await self.passthrough.get("/models")
        if status in (401, 403):
            self.metrics.upstream_errors.labels("refused_credentials", "passthrough").inc()
            raise refused_credentials(status)
        return web.Response(status=status, body=self.redactor.bytes(body, urls=True), content_type="application/json")

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Liveness: the process answers. Contacts nothing."""
        return web.json_response({"status": "alive"})

    async def health(self, request: web.Request) -> web.StreamResponse:
        """Readiness, from the background probe (never a request that queues behind traffic)."""
        probe = self.probe
        ups = probe.replicas if probe is not None else []
        ok = any(r.ok for r in ups) and not self.draining
        status = "ok" if ok else ("shutting down" if self.draining else "no upstream answers")
        now = time.monotonic()
        return web.json_response({"status": status, "upstreams": [r.ok for r in ups],
                                  "details": [r.detail for r in ups],
                                  "probed_seconds_ago": [round(now - r.checked, 1) for r in ups],
                                  "problems_in_flight": self.in_flight}, status=200 if ok else 503)

    async def metrics_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.redactor.bytes(self.metrics.render()), headers={"Content-Type": CONTENT_TYPE})

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(request.read(), self.config.connections.body_timeout)
        except asyncio.TimeoutError:
            raise RequestError(f"the request body did not arrive within {self.config.connections.body_timeout:g} s",
                               None, status=408) from None

    async def _handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        endpoint = "/chat/completions" if kind == "chat" else "/completions"
        info = request[_INFO]
        raw = await self._read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.metrics.requests.labels(endpoint, "invalid").inc()
            reason = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RequestError(f"the request body is not valid JSON: {reason}", None) from None
        if not isinstance(body, dict):
            self.metrics.requests.labels(endpoint, "invalid").inc()
            raise RequestError("the request body must be a JSON object", None)
        if "ttc" not in body and self.config.default == "passthrough":
            self.metrics.requests.labels(endpoint, "passthrough").inc()
            info.update(mode="passthrough", n=body.get("n") if isinstance(body.get("n"), int) else None)
            schema.check_passthrough(body, self.config)
            return await self.passthrough.forward(request, info, endpoint, raw, bool(body.get("stream")))
        self.metrics.requests.labels(endpoint, "strategy").inc()
        info["mode"] = "strategy"
        req = schema.parse(body, kind, self.config, prm_available=self.config.prm_upstream is not None)
        req.id = info["request_id"]
        info.update(strategy=req.strategy, n=req.n)
        return await self._run(request, req)

    # -- strategies ---------------------------------------------------------------------------
    def _strategy(self, req: StrategyRequest) -> Any:
        from ttc.verifiers import LLMJudge, LogprobConfidence

        verifier: Any = None
        if req.verifier is not None:
            verifier = LogprobConfidence(req.verifier)
        elif req.prm == "judge":
            verifier = LLMJudge()
        elif req.prm == "remote" or (req.prm is None and req.strategy in STEP_SEARCHES
                                     and self.config.prm_upstream):
            verifier = self.remote_prm()
        try:
            return registry.make_strategy(req.strategy, n=req.n, verifier=verifier, params=req.params, **req.options)
        except registry.InvalidOption as exc:
            raise RequestError(str(exc), f"ttc.{exc.field}") from None
        except InvalidInput as exc:
            raise RequestError(str(exc), _param_named(str(exc), req)) from None

    def remote_prm(self) -> Any:
        """The `--prm-upstream` deployment as a PRM (`ttc.verifiers.RemotePRM`), made once."""
        if self._prm is None:
            from ttc.verifiers.remote_prm import RemotePRM

            self._prm = RemotePRM(self.config.prm_upstream, model=self._prm_model, format=self.config.prm_format)
        return self._prm

    async def _solve(self, strategy: Any, problem: Problem, req: StrategyRequest) -> _Outcome:
        """Run on the worker loop: the result, or the error with what had been spent."""
        ctx = Context(self.backend, req.budget, req.params.seed)
        try:
            result = await strategy.run(problem.validate(), ctx)
        except Exception as exc:  # reported to the client with the usage spent
            return _Outcome(None, ctx.finish(), exc)
        result.usage = ctx.finish()
        stopped = getattr(result.details, "stopped_by", None)
        if not result.candidates and isinstance(stopped, str) and stopped.endswith("budget"):
            return _Outcome(None, result.usage, BudgetExhausted(f"the budget ({stopped}) ended the search before its "
                                                                f"first step: no answer"))
        return _Outcome(note_truncation(result), result.usage, None)

    async def _run(self, request: web.Request, req: StrategyRequest) -> web.StreamResponse:
        limits = self.config.limits
        strategy = self._strategy(req)
        if self.in_flight >= limits.max_in_flight:
            self.metrics.refused.inc()
            raise RequestError(f"the server is solving {self.in_flight} problems, its cap: retry later", None,
                               status=429, type="rate_limit_error",
                               headers={"Retry-After": str(limits.retry_after)})
        metadata: dict[str, Any] = {"messages": req.messages} if req.messages else {"prompt": req.prompt}
        problem = Problem(question=req.question, metadata=metadata)
        self.in_flight += 1
        self.metrics.in_flight.inc()
        stream: web.StreamResponse | None = None
        task: asyncio.Future | None = None
        try:
            started = time.monotonic()
            task = asyncio.ensure_future(self.worker.run(self._solve(strategy, problem, req)))
            if req.stream:
                stream = await self._open_stream(request)
                await _sse(stream, self._chunk(req, {"role": "assistant", "content": ""} if req.kind == "chat"
                                               else "", None))
                while True:
                    done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
                    if done:
                        break
                    await stream.write(b": ttc is working\n\n")
            outcome: _Outcome = await task
            self.metrics.latency.labels(req.strategy).observe(time.monotonic() - started)
            self.metrics.count_usage(outcome.usage, "strategy")
            request[_INFO].update(prompt_tokens=outcome.usage.prompt_tokens,
                                  completion_tokens=outcome.usage.completion_tokens)
            if outcome.error is not None:
                error = self._strategy_error(request, outcome)
                if stream is None:
                    raise error  # the error middleware answers and counts it
                self.metrics.errors.labels(str(error.status)).inc()
                request[_INFO]["error"] = error.type
                await _sse(stream, error.body(req.id))
                await stream.write_eof()
                return stream
            if stream is None:
                return web.json_response(self._completion(req, outcome.result))
            await self._stream_result(stream, req, outcome.result)
            return stream
        finally:
            if task is not None and not task.done():
                task.cancel()  # the client left: cancel the strategy and its upstream requests
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        return out

    def _redact(self, message: str) -> str:
        """`message` without the upstream key and the upstreams' URLs (they may carry credentials or
        internal names)."""
        return self.redactor.text(message)

    def _strategy_error(self, request: web.Request, outcome: _Outcome) -> RequestError:
        """The client's error for a failed strategy run; upstream failures are logged with their
        cause (the upstream's own message, its URL: for the operator) and counted by cause."""
        exc = outcome.error
        spent = {"usage": _usage(outcome.usage), "ttc": {"usage": _ttc_usage(outcome.usage)}}
        error = error_of(exc, spent, self._redact, self.config.limits.retry_after)
        if isinstance(exc, GenerationError):
            cause = cause_of(exc)
            self.metrics.upstream_errors.labels(cause, "strategy").inc()
            self.log.error("upstream failure", request_id=request[_INFO]["request_id"], path="strategy", cause=cause,
                           error=type(exc).__name__, detail=str(exc))
        elif error.status >= 500:
            self.log.error("strategy failed", request_id=request[_INFO]["request_id"], error=type(exc).__name__,
                           detail=str(exc))
        return error

    # -- responses ----------------------------------------------------------------------------
    def _model(self, req: StrategyRequest) -> str:
        return self.backend.model_name if self.backend._model else (req.model or "")

    def _completion(self, req: StrategyRequest, result: Result) -> dict[str, Any]:
        text, finish, thinking = _chosen(result)
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if req.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, **_reasoning(thinking)}
        else:
            choice["text"] = text
            choice.update(_reasoning(thinking))
        return {"id": _id(req), "object": "chat.completion" if req.kind == "chat" else "text_completion",
                "created": int(time.time()), "model": self._model(req), "choices": [choice],
                "usage": _usage(result.usage, thinking is not None), "ttc": self._ttc_field(req, result)}

    def _chunk(self, req: StrategyRequest, delta: Any, finish: str | None, choice_fields: dict[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if req.kind == "chat":
            choice["delta"] = delta if isinstance(delta, dict) else {"content": delta}
        else:
            choice["text"] = delta
            choice.update(choice_fields or {})
        return {"id": _id(req), "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
                "created": int(time.time()), "model": self._model(req), "choices": [choice], **extra}

    async def _stream_result(self, stream: web.StreamResponse, req: StrategyRequest, result: Result) -> None:
        """The chosen text in SSE chunks, then a chunk with the finish reason, then [DONE]. The usage
        comes in a last chunk with no choices only when the client asked (`stream_options.
        include_usage`, as OpenAI and vLLM do: a `choices: []` chunk breaks the common client loop);
        the `ttc` field rides on that chunk, else on the finish chunk."""
        text, finish, thinking = _chosen(result)
        for i in range(0, len(thinking or ""), STREAM_CHUNK):  # the thinking first, as vLLM streams it
            piece = _reasoning(thinking[i:i + STREAM_CHUNK])
            await _sse(stream, self._chunk(req, piece if req.kind == "chat" else "", None,
                                           **({} if req.kind == "chat" else {"choice_fields": piece})))
        for i in range(0, len(text), STREAM_CHUNK):
            await _sse(stream, self._chunk(req, text[i:i + STREAM_CHUNK], None))
        if not req.stream_usage:  # the ttc field rides on the finish chunk
            await _sse(stream, self._chunk(req, {} if req.kind == "chat" else "", finish,
                                           ttc=self._ttc_field(req, result)))
        else:
            await _sse(stream, self._chunk(req, {} if req.kind == "chat" else "", finish))
            last = self._chunk(req, None, None, usage=_usage(result.usage, thinking is not None),
                               ttc=self._ttc_field(req, result))
            last["choices"] = []
            await _sse(stream, last)
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()

    def _ttc_field(self, req: StrategyRequest, result: Result) -> dict[str, Any]:
        u = result.usage
        out: dict[str, Any] = {
            "answer": result.answer, "strategy": result.strategy, "n": req.n,
            "verifier_calls": u.verifier_calls,
            "usage": _ttc_usage(u),
            "details": jsonable(result.details.to_dict(), nonfinite_as_str=True),
        }
        if req.return_candidates:
            out["candidates"] = [{"text": c.text, "thinking": c.thinking, "answer": c.answer,
                                  "scores": jsonable(c.scores, nonfinite_as_str=True),
                                  "finish_reason": c.finish_reason, "completion_tokens": c.usage.completion_tokens}
                                 for c in result.candidates]
        return out


# -- helpers --------------------------------------------------------------------------------------
def _id(req: StrategyRequest) -> str:
    return ("chatcmpl-ttc-" if req.kind == "chat" else "cmpl-ttc-") + req.id


def _usage(u: Usage, thinking: bool = False) -> dict[str, Any]:
    """Billed usage: every prompt and completion token the strategy's requests cost; `total_tokens`
    adds the verifier's (judge or PRM) tokens. With thinking (a reasoning model), the thinking
    tokens among the completion tokens, as vLLM reports them: `completion_tokens_details.reasoning_tokens`."""
    out: dict[str, Any] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                           "total_tokens": u.prompt_tokens + u.completion_tokens + u.verifier_tokens}
    if thinking or u.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def _reasoning(thinking: str | None) -> dict[str, str]:
    """The thinking as vLLM 0.32 returns it (`reasoning`), and under its older name
    (`reasoning_content`, which older clients and DeepSeek's API read); nothing without thinking."""
    return {} if thinking is None else {"reasoning": thinking, "reasoning_content": thinking}


def _ttc_usage(u: Usage) -> dict[str, Any]:
    """Every count of `Usage` (the `ttc.usage` field, of answers and of errors alike), so a count added
    to `Usage` reaches clients without a change here. Not `Usage.to_dict()`: its `total_tokens`
    leaves out the verifier's tokens, which the response's own `usage.total_tokens` includes."""
    return asdict(u) | {"wall_seconds": round(u.wall_seconds, 3)}


def _chosen(result: Result) -> tuple[str, str, str | None]:
    """The chosen candidate's text (its final content), OpenAI finish reason and thinking (None
    without): the first candidate with the answer."""
    chosen = next((c for c in result.candidates if c.answer == result.answer), None)
    if chosen is None and result.candidates:
        chosen = result.candidates[0]
    if chosen is None:
        return "", "stop", None
    return chosen.text, "length" if chosen.finish_reason == "length" else "stop", chosen.thinking


def _param_named(message: str, req: StrategyRequest) -> str:
    """The `ttc` field an InvalidInput message is about: a strategy parameter it names, else `ttc`."""
    for key in req.options:
        if key in message:
            return f"ttc.{key}"
    return "ttc.n" if " n=" in message or "n must" in message else "ttc"


async def _sse(stream: web.StreamResponse, data: dict[str, Any] | str) -> None:
    await stream.write(b"data: " + json.dumps(data).encode() + b"\n\n")
