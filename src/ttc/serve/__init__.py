"""`ttc serve`: test-time compute behind an OpenAI-compatible endpoint (docs/serve.md)."""

from __future__ import annotations

import asyncio
import signal
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ttc.serve.app import TTCServer
from ttc.serve.config import Connections, Limits, ServeConfig
from ttc.serve.schema import RequestError

__all__ = ["Connections", "Limits", "RequestError", "RunningServer", "ServeConfig", "TTCServer", "serve",
           "start_in_thread"]


def serve(config: ServeConfig) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT (what `ttc serve` does), then shut
    down gracefully: stop accepting, let in-flight requests finish for up to
    `config.connections.shutdown_timeout` s, cancel the rest (and their upstream requests), exit."""
    asyncio.run(_serve_until_signalled(config))


async def _serve_until_signalled(config: ServeConfig) -> None:
    server = TTCServer(config)
    runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server.log.info("listening", host=config.host, port=config.port, upstreams=len(config.upstream))
    await stop.wait()
    server.log.info("shutting down", in_flight=server.in_flight,
                    shutdown_timeout=config.connections.shutdown_timeout)
    await _shut_down(server, runner)
    server.log.info("stopped")


async def _shut_down(server: TTCServer, runner: web.AppRunner, timeout: float | None = None) -> None:
    """Stop listening, drain (`TTCServer.drain`), then close every connection and session."""
    for site in list(runner.sites):
        await site.stop()
    await server.drain(server.config.connections.shutdown_timeout if timeout is None else timeout)
    await runner.cleanup()


@dataclass
class RunningServer:
    """A server running in a background thread (`start_in_thread`): `url` is its /v1 base URL."""

    url: str
    server: TTCServer
    _loop: asyncio.AbstractEventLoop
    _runner: web.AppRunner
    _thread: threading.Thread

    @property
    def root(self) -> str:
        return self.url[: -len("/v1")]

    def stop(self, timeout: float | None = None) -> None:
        """Shut down gracefully (as on SIGTERM; `timeout`: how long in-flight requests may finish,
        default the config's shutdown_timeout), close the upstream sessions, end the thread. Safe
        to call twice."""
        if not self._thread.is_alive():
            return
        wait = self.server.config.connections.shutdown_timeout if timeout is None else timeout
        asyncio.run_coroutine_threadsafe(_shut_down(self.server, self._runner, wait), self._loop).result(wait + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(config: ServeConfig, port: int | None = None, log_stream: Any = None) -> RunningServer:
    """Start `ttc serve` in a daemon thread of this process (a notebook, a test, a benchmark) on
    `config.host` and `port` (default `config.port`; 0 picks a free one); returns once it listens.
    `log_stream`: where its log lines go (default stderr)."""
    server = TTCServer(config, log_stream=log_stream)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def start() -> None:
        runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port if port is None else port)
        await site.start()
        ready["runner"] = runner
        ready["port"] = runner.addresses[0][1]

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name="ttc-serve", daemon=True)
    thread.start()
    started.wait()
    if "error" in ready:
        raise ready["error"]
    host = config.host if ":" not in config.host else f"[{config.host}]"
    return RunningServer(f"http://{host}:{ready['port']}/v1", server, loop, ready["runner"], thread)
