"""The backend's connection slots: at most `max_concurrency` requests in flight per event loop, a
bounded wait for a slot (`pool_wait`), and the counts a server's /metrics reads (`PoolStats`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ttc.errors import PoolExhausted

__all__ = ["PoolStats", "Slots"]


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the backend's connection slots, over every event loop that uses it."""

    size: int     # slots per event loop (`max_concurrency`)
    in_use: int   # requests holding a slot now (each holds one connection to the server)
    waiting: int  # requests waiting for a slot


class Slots:
    """One event loop's slots. A request waits for a free one at most `wait` seconds (None: as
    long as it takes), then gets `PoolExhausted`: the server is busy, and a caller in front of
    clients (`ttc serve`) can say so at once (a 503) rather than queue without bound."""

    def __init__(self, size: int):
        self.size = size
        self.semaphore = asyncio.Semaphore(size)
        self.in_use = 0
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def hold(self, wait: float | None, where: str) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            if wait is None:
                await self.semaphore.acquire()
            else:
                await asyncio.wait_for(self.semaphore.acquire(), wait)
        except asyncio.TimeoutError:
            raise PoolExhausted(f"all {self.size} connection slots to {where} stayed busy for {wait:g} s "
                                f"(pool_wait): retry later") from None
        finally:
            self.waiting -= 1
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self.semaphore.release()
