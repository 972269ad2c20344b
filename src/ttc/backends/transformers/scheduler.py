"""The model thread: one worker that takes requests off a queue and runs them in batches.

Why one thread: the model is not safe to run from two threads at once, and one thread that sees
every pending request is what lets concurrent requests (many strategies' `asyncio.gather`) share
a batch. Requests are served first come first served, whole, the last one of a batch possibly
split; a request that arrives at an idle worker waits `batch_window` seconds for its siblings.
Hidden-state passes (`Job`s) run between batches. A worker that dies fails every waiting request
instead of leaving its callers waiting forever.

At interpreter exit every live worker is stopped and joined (`_stop_workers_at_exit`): the worker is a
daemon thread, and one still inside torch when Python finalizes (finishing a batch whose results were
already delivered) is killed as it retakes the GIL; the forced unwind through torch's C++ frames
aborts the process ("terminate called without an active exception", exit status -6) after the
script's work is done.
"""

from __future__ import annotations

import atexit
import collections
import queue
import threading
import time
import weakref
from collections.abc import Callable

import torch

from ttc.backends.transformers.records import Batch, Job, Request, post
from ttc.errors import GenerationError

#: decode_batch(batch, more): decode `batch`; `more(running)` returns requests that may join it
DecodeBatch = Callable[[Batch, Callable[[int], Batch]], None]

_CLOSE = object()
#: how long interpreter exit waits for a worker to leave its batch (its requests are cancelled first)
EXIT_JOIN_SECONDS = 30.0


class Scheduler:
    """Queue, worker thread and batching of one backend; `decode_batch` does the model work."""

    def __init__(self, decode_batch: DecodeBatch, max_batch_size: int, batch_window: float):
        self.decode_batch = decode_batch
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._closing = False
        self.pending: collections.deque[Request] = collections.deque()
        self._running: Batch = []

    def submit(self, item: Request | Job) -> None:
        """Queue a request or job, starting the worker on first use."""
        with self._lock:
            if self._closed:
                raise GenerationError("this Transformers backend is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="ttc-transformers", daemon=True)
                self._thread.start()
                _LIVE.add(self)
            self._queue.put(item)

    def shutdown(self) -> threading.Thread | None:
        """Refuse new work; the worker finishes what was accepted, then ends. Returns it to join."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_CLOSE)
        return thread

    def abandon(self) -> threading.Thread | None:
        """At exit: cancel every accepted request (nobody waits for them any more) and shut down."""
        for request in [*self.pending, *(r for r, _ in self._running)]:
            request.cancelled.set()
        return self.shutdown()

    def take_joining(self, running: int) -> Batch:
        """Requests that arrived meanwhile, up to the room a batch of `running` sequences has left."""
        self._poll()
        if self.pending and running < self.max_batch_size:
            joining = self.take_batch(self.max_batch_size - running)
            self._running = [*self._running, *joining]
            return joining
        return []

    def take_batch(self, room: int | None = None) -> Batch:
        """Whole requests first come first served, the last one possibly split, up to `room`
        sequences (default max_batch_size)."""
        pending = self.pending
        batch: Batch = []
        room = self.max_batch_size if room is None else room
        while pending and room:
            request = pending[0]
            if request.is_cancelled():
                pending.popleft()
                continue
            take = min(room, request.params.n - request.next_index)
            batch.append((request, range(request.next_index, request.next_index + take)))
            request.next_index += take
            room -= take
            if request.next_index == request.params.n:
                pending.popleft()
        return batch

    # -- on the worker thread ----------------------------------------------------------------
    def _worker(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._lock:
                self._closed = True
            self._fail_all(GenerationError(f"the Transformers worker died: {type(exc).__name__}: {exc}"))
            raise
        self._fail_all(GenerationError("the Transformers backend was closed before this request ran"))

    def _serve(self) -> None:
        self._closing = False
        while True:  # after a close, what was accepted before it still runs
            if not self.pending:
                if self._closing:
                    break
                item = self._queue.get()
                if item is _CLOSE:
                    break
                self._accept(item)
                if self.batch_window > 0:
                    time.sleep(self.batch_window)  # let requests issued together arrive
            self._poll()
            batch = self.take_batch()
            if batch:
                self._run_batch(batch)

    def _poll(self) -> None:
        """Take everything waiting in the queue (without blocking); a close request is remembered."""
        while not self._closing:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                self._closing = True
                break
            self._accept(item)

    def _fail_all(self, error: GenerationError) -> None:
        for request in self.pending:
            request.deliver(error=error)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item.deliver(error=error)
            elif isinstance(item, Job):
                post(item.loop, item.future, error=error)

    def _accept(self, item: Request | Job) -> None:
        if isinstance(item, Job):  # hidden-state passes run at once, between batches
            try:
                with torch.inference_mode():
                    result = item.fn()
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                post(item.loop, item.future, error=GenerationError(f"hidden-state pass failed: {exc}"))
            else:
                post(item.loop, item.future, result)
            return
        self.pending.append(item)

    def _run_batch(self, batch: Batch) -> None:
        self._running = batch
        try:
            with torch.inference_mode():
                self.decode_batch(batch, self.take_joining)
        except Exception as exc:  # noqa: BLE001 - every unanswered request of the batch gets the error
            error = GenerationError(f"generation failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            for request, _ in batch:
                if request.remaining:
                    request.cancelled.set()
                    request.deliver(error=error)
        finally:
            self._running = []


_LIVE: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _stop_workers_at_exit() -> None:
    """Let every worker leave torch before Python finalizes (see the module docstring)."""
    threads = [thread for scheduler in list(_LIVE) if (thread := scheduler.abandon()) is not None]
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
