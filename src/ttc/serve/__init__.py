"""`ttc serve`: test-time compute behind an OpenAI-compatible endpoint (docs/serve.md)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ttc.serve.app import TTCServer
from ttc.serve.config import Limits, ServeConfig
from ttc.serve.schema import RequestError

__all__ = ["Limits", "RequestError", "RunningServer", "ServeConfig", "TTCServer", "serve", "start_in_thread"]


def serve(config: ServeConfig) -> None:
    """Run the server in the foreground until interrupted (what `ttc serve` does)."""
    server = TTCServer(config)
    web.run_app(server.app(), host=config.host, port=config.port, handler_cancellation=True, access_log=None)


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

    def stop(self) -> None:
        """Stop serving, close the upstream sessions and end the thread. Safe to call twice."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(config: ServeConfig, port: int | None = None) -> RunningServer:
    """Start `ttc serve` in a daemon thread of this process (a notebook, a test, a benchmark) on
    `config.host` and `port` (default `config.port`; 0 picks a free one); returns once it listens."""
    server = TTCServer(config)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def start() -> None:
        runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None)
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
