"""An event loop running forever in a daemon thread: where an in-process engine's coroutines live.

Why: vLLM's `AsyncLLM` serves one event loop, while ttc's callers come on many (`asyncio.run` per
call, Jupyter's loop, `solve`); the engine stays on this loop and callers hand it coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


async def relay(make: Callable[[], AsyncIterator[T]], loop: asyncio.AbstractEventLoop) -> AsyncIterator[T]:
    """Iterate, on the caller's loop, the async iterator `make()` that must run on `loop`.

    A pump task on `loop` feeds a queue on this loop; its errors are raised here, and closing
    this iterator (or cancelling its consumer) cancels the pump, which closes the source there.
    """
    here = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def push(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # this loop is gone: nobody is listening
            here.call_soon_threadsafe(queue.put_nowait, item)

    async def pump() -> None:
        source = make()
        try:
            async for item in source:
                push(item)
            push(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            push(exc)
        finally:
            await source.aclose()

    pumping = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not pumping.done():
            pumping.cancel()  # cancels the pump task on `loop`, which closes the source there
