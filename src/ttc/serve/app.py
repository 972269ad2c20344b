"""`ttc serve`: an OpenAI-compatible endpoint that runs ttc strategies against upstream deployments.

Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /health`,
`GET /metrics`. A request with a `ttc` object (or any request, with `default="strategy"`) is
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
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ttc.backends.openai_compatible import OpenAICompatible, RequestRejected
from ttc.context import Context
from ttc.errors import BudgetExhausted, GenerationError, InvalidInput
from ttc.eval.results import jsonable
from ttc.runner import note_truncation
from ttc.serve import schema
from ttc.serve.config import ServeConfig
from ttc.serve.metrics import CONTENT_TYPE, Metrics
from ttc.serve.schema import RequestError, StrategyRequest
from ttc.strategies import registry
from ttc.types import Problem, Result, Usage

#: strategies that search over steps: the ones a PRM (`--prm-upstream`, `ttc.prm`) guides
STEP_SEARCHES = frozenset({"beam", "dvts", "astar", "particle"})
#: characters of the chosen text per SSE chunk of a strategy's streamed answer
STREAM_CHUNK = 48
#: seconds between SSE keep-alive comments while a streamed strategy runs
KEEPALIVE_SECONDS = 10.0
_SERVER_KEY = web.AppKey("ttc_server", object)


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
    """The server's state: config, upstream backend, passthrough session, metrics, in-flight count."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.in_flight = 0
        self.backend: OpenAICompatible | None = None
        self.session: aiohttp.ClientSession | None = None
        self.worker: _WorkerLoop | None = None
        self._replicas = itertools.cycle(range(len(config.upstream)))
        self._bases: list[str] = []  # the replicas' /v1 base URLs, from the backend once started
        self._prm: Any = None
        self._prm_model: str | None = None
        headers = {"Content-Type": "application/json"}
        key = config.upstream_api_key
        if key is None:
            import os

            key = os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._upstream_headers = headers

    # -- lifecycle ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_body_bytes,
                              middlewares=[self._errors, self._auth])
        app[_SERVER_KEY] = self
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self.worker = _WorkerLoop()
        self.backend = OpenAICompatible(list(self.config.upstream), api_key=self.config.upstream_api_key,
                                        max_concurrency=max(64, 8 * self.config.limits.max_in_flight))
        self._bases = [r.base for r in self.backend.replicas]
        if self.config.prm_upstream:
            self._prm_model = await self._first_model(self.config.prm_upstream)
        # start math-verify's helper process now, not on the first request (it imports sympy: seconds)
        from ttc import mathparse

        self.worker.loop.call_soon_threadsafe(lambda: self.worker.loop.run_in_executor(None, mathparse.find, "$x$"))

    async def _stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()
        if self.worker is not None:
            if self.backend is not None:
                try:
                    await self.worker.run(self.backend.aclose())
                except Exception:  # closing is best effort
                    pass
            self.worker.stop()

    async def _first_model(self, url: str) -> str:
        """The first model of `url`'s /v1/models (a PRM deployment serves one)."""
        base = url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        try:
            async with self.session.get(base + "/models", headers=self._upstream_headers) as r:
                data = await r.json(content_type=None)
            return str(data["data"][0]["id"])
        except (aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise InvalidInput(f"--prm-upstream: no model list at {base}/models ({type(exc).__name__})") from None

    # -- middlewares --------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.config.api_key
        if key and request.path != "/health":
            given = request.headers.get("Authorization", "")
            token = given[7:] if given.startswith("Bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                raise RequestError("missing or wrong API key (send Authorization: Bearer KEY)", None, status=401,
                                   type="authentication_error")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            self.metrics.errors.labels(str(exc.status)).inc()
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except web.HTTPRequestEntityTooLarge:
            self.metrics.errors.labels("413").inc()
            error = RequestError(f"the request body is over this server's cap of "
                                 f"{self.config.limits.max_body_bytes} bytes", None, status=413)
            return web.json_response(error.body(), status=413)
        except web.HTTPException as exc:
            self.metrics.errors.labels(str(exc.status)).inc()
            error = RequestError(exc.reason, None, status=exc.status)
            return web.json_response(error.body(), status=exc.status)
        except (asyncio.CancelledError, ConnectionResetError):
            raise  # the client left
        except Exception as exc:  # a bug: an OpenAI-style 500 rather than aiohttp's text page
            self.metrics.errors.labels("500").inc()
            error = RequestError(f"internal error: {type(exc).__name__}: {self._redact(str(exc))}", None,
                                 status=500, type="server_error")
            return web.json_response(error.body(), status=500)

    # -- routes -------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def models(self, request: web.Request) -> web.StreamResponse:
        status, body = await self._upstream_get("/models")
        return web.Response(status=status, body=body, content_type="application/json")

    async def health(self, request: web.Request) -> web.StreamResponse:
        ok = await asyncio.gather(*(self._replica_ok(i) for i in range(len(self._bases))))
        status = 200 if any(ok) else 503
        return web.json_response({"status": "ok" if any(ok) else "no upstream answers", "upstreams": list(ok),
                                  "problems_in_flight": self.in_flight}, status=status)

    async def metrics_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _replica_ok(self, i: int) -> bool:
        root = self._bases[i][: -len("/v1")] if self._bases[i].endswith("/v1") else self._bases[i]
        try:
            async with self.session.get(root + "/health", headers=self._upstream_headers,
                                        timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def _upstream_get(self, path: str) -> tuple[int, bytes]:
        for _ in range(len(self._bases)):
            base = self._bases[next(self._replicas)]
            try:
                async with self.session.get(base + path, headers=self._upstream_headers,
                                            timeout=aiohttp.ClientTimeout(total=30)) as r:
                    return r.status, await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
        raise RequestError("no upstream answers", None, status=502, type="upstream_error")

    async def _handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        endpoint = "/chat/completions" if kind == "chat" else "/completions"
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.metrics.requests.labels(endpoint, "invalid").inc()
            raise RequestError(f"the request body is not valid JSON: {exc}", None) from None
        if not isinstance(body, dict):
            self.metrics.requests.labels(endpoint, "invalid").inc()
            raise RequestError("the request body must be a JSON object", None)
        if "ttc" not in body and self.config.default == "passthrough":
            self.metrics.requests.labels(endpoint, "passthrough").inc()
            schema.check_passthrough(body, self.config)
            return await self._passthrough(request, endpoint, raw, bool(body.get("stream")))
        self.metrics.requests.labels(endpoint, "strategy").inc()
        req = schema.parse(body, kind, self.config, prm_available=self.config.prm_upstream is not None)
        return await self._run(request, req)

    # -- passthrough --------------------------------------------------------------------------
    async def _passthrough(self, request: web.Request, path: str, raw: bytes, stream: bool) -> web.StreamResponse:
        """Forward the request unchanged to the next replica (the following ones if it refuses
        connections) and relay the answer; upstream URLs and credentials never reach the client."""
        for _ in range(len(self._bases)):
            base = self._bases[next(self._replicas)]
            try:
                upstream = await self.session.post(base + path, data=raw, headers=self._upstream_headers)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                continue
            try:
                kind = upstream.headers.get("Content-Type", "application/json")
                if not kind.startswith("text/event-stream"):
                    body = await upstream.read()
                    if upstream.status == 200 and not stream:
                        self._count_passthrough(body)
                    elif upstream.status >= 400:
                        self.metrics.errors.labels(str(upstream.status)).inc()
                    return web.Response(status=upstream.status, body=body, content_type="application/json")
                out = web.StreamResponse(status=upstream.status, headers={"Content-Type": kind,
                                                                          "Cache-Control": "no-cache"})
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            finally:
                upstream.close()  # before the end (client gone): drop the connection, vLLM aborts
        raise RequestError("no upstream answers (connection refused by every replica)", None, status=502,
                           type="upstream_error")

    def _count_passthrough(self, body: bytes) -> None:
        try:
            usage = json.loads(body).get("usage") or {}
            prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError):
            return
        self.metrics.count_usage(Usage(prompt_tokens=prompt, completion_tokens=completion), "passthrough")

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
            if outcome.error is not None:
                error = _error_of(outcome.error, outcome.usage, self._redact)
                if stream is None:
                    raise error  # the error middleware answers and counts it
                self.metrics.errors.labels(str(error.status)).inc()
                await _sse(stream, error.body())
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
        """`message` without the upstreams' URLs (they may carry credentials or internal names)."""
        for url in sorted({*self.config.upstream, *self._bases, self.config.prm_upstream or ""}, key=len,
                          reverse=True):
            if url:
                message = message.replace(url.rstrip("/"), "<upstream>")
        return message

    # -- responses ----------------------------------------------------------------------------
    def _model(self, req: StrategyRequest) -> str:
        return self.backend.model_name if self.backend._model else (req.model or "")

    def _completion(self, req: StrategyRequest, result: Result) -> dict[str, Any]:
        text, finish = _chosen(result)
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if req.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {"id": _id(req), "object": "chat.completion" if req.kind == "chat" else "text_completion",
                "created": int(time.time()), "model": self._model(req), "choices": [choice],
                "usage": _usage(result.usage), "ttc": self._ttc_field(req, result)}

    def _chunk(self, req: StrategyRequest, delta: Any, finish: str | None, **extra: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if req.kind == "chat":
            choice["delta"] = delta if isinstance(delta, dict) else {"content": delta}
        else:
            choice["text"] = delta
        return {"id": _id(req), "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
                "created": int(time.time()), "model": self._model(req), "choices": [choice], **extra}

    async def _stream_result(self, stream: web.StreamResponse, req: StrategyRequest, result: Result) -> None:
        """The chosen text in SSE chunks, then a chunk with the finish reason, then the usage and the
        `ttc` field in a last chunk with no choices (OpenAI's `include_usage` shape), then [DONE]."""
        text, finish = _chosen(result)
        for i in range(0, len(text), STREAM_CHUNK):
            await _sse(stream, self._chunk(req, text[i:i + STREAM_CHUNK], None))
        await _sse(stream, self._chunk(req, {} if req.kind == "chat" else "", finish))
        last = self._chunk(req, None, None, usage=_usage(result.usage), ttc=self._ttc_field(req, result))
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
            out["candidates"] = [{"text": c.text, "answer": c.answer,
                                  "scores": jsonable(c.scores, nonfinite_as_str=True),
                                  "finish_reason": c.finish_reason, "completion_tokens": c.usage.completion_tokens}
                                 for c in result.candidates]
        return out


# -- helpers --------------------------------------------------------------------------------------
def _id(req: StrategyRequest) -> str:
    return ("chatcmpl-ttc-" if req.kind == "chat" else "cmpl-ttc-") + req.id


def _usage(u: Usage) -> dict[str, int]:
    """Billed usage: every prompt and completion token the strategy's requests cost; `total_tokens`
    adds the verifier's (judge or PRM) tokens."""
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens + u.verifier_tokens}


def _ttc_usage(u: Usage) -> dict[str, Any]:
    """Every count of `Usage` (the `ttc.usage` field, of answers and of errors alike), so a count added
    to `Usage` reaches clients without a change here. Not `Usage.to_dict()`: its `total_tokens`
    leaves out the verifier's tokens, which the response's own `usage.total_tokens` includes."""
    return asdict(u) | {"wall_seconds": round(u.wall_seconds, 3)}


def _chosen(result: Result) -> tuple[str, str]:
    """The chosen candidate's text and OpenAI finish reason: the first candidate with the answer."""
    chosen = next((c for c in result.candidates if c.answer == result.answer), None)
    if chosen is None and result.candidates:
        chosen = result.candidates[0]
    if chosen is None:
        return "", "stop"
    return chosen.text, "length" if chosen.finish_reason == "length" else "stop"


def _param_named(message: str, req: StrategyRequest) -> str:
    """The `ttc` field an InvalidInput message is about: a strategy parameter it names, else `ttc`."""
    for key in req.options:
        if key in message:
            return f"ttc.{key}"
    return "ttc.n" if " n=" in message or "n must" in message else "ttc"


def _error_of(exc: BaseException, usage: Usage, redact: Any) -> RequestError:
    """The OpenAI-style error for a failed strategy run, with what it had spent (`ttc.usage`).
    Upstream URLs never appear: only the upstream's own message."""
    extra = {"usage": _usage(usage), "ttc": {"usage": _ttc_usage(usage)}}
    if isinstance(exc, RequestRejected):
        return RequestError(f"the upstream refused a request: {redact(exc.server_message)}", None, status=400,
                            extra=extra)
    if isinstance(exc, BudgetExhausted):
        return RequestError(str(exc), "ttc.budget", status=422, type="budget_exhausted", extra=extra)
    if isinstance(exc, InvalidInput):
        return RequestError(redact(str(exc)), "ttc", status=400, extra=extra)
    if isinstance(exc, GenerationError):
        return RequestError(f"the upstream failed: {type(exc).__name__}", None, status=502, type="upstream_error",
                            extra=extra)
    return RequestError(f"internal error: {type(exc).__name__}: {redact(str(exc))}", None, status=500,
                        type="server_error", extra=extra)


async def _sse(stream: web.StreamResponse, data: dict[str, Any] | str) -> None:
    await stream.write(b"data: " + json.dumps(data).encode() + b"\n\n")
