"""`/live` and `/health` on a port of their own (`--health-port`), answered by a thread with its
own event loop: an orchestrator's probes then never queue behind a burst of requests that the main
loop is parsing (the same answers as on the main port, read from the same state)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProbeListener:
    """Serves `live` and `health` on `host:port` from a daemon thread; `stop()` ends it."""

    def __init__(self, host: str, port: int, live: Handler, health: Handler):
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/live", live)
        app.router.add_get("/health", health)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self.thread = threading.Thread(target=self.loop.run_forever, name="ttc-serve-probes", daemon=True)

    def start(self) -> int:
        """Listen; returns the port (useful when `port` is 0)."""
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, self.host, self.port)
            await site.start()
            return self.runner.addresses[0][1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return self.port

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()
