"""What the model thread works on: requests, jobs and per-candidate decoding state, and its counters.

A request lives on two threads: the caller's event loop awaits its future (or reads its queue of
deltas), and the model thread fills it in. Everything that crosses from the model thread back to
the caller goes through `post`/`Request.send`, which tolerate a caller whose loop is gone.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ttc.backends.base import Delta
from ttc.types import Completion, SamplingParams, Usage

_MASK64 = (1 << 64) - 1


@dataclass
class TransformersStats:
    """What the model actually computed, for tests and benchmarks.

    prefill_tokens counts real (unpadded) prompt tokens of distinct prompts run through the model:
    a request for n candidates adds its prompt once, and a prefix found in the prefix cache
    counts in cached_tokens instead. decode_rows counts sequences fed to decode steps, so
    finished sequences visibly stop costing anything (on the static-cache path they count as
    soon as they finish, though their rows keep computing until half of the bucket is done).
    """

    requests: int = 0
    sequences: int = 0
    batches: int = 0
    prefill_calls: int = 0
    prefill_tokens: int = 0
    cached_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    generated_tokens: int = 0
    joined: int = 0  # sequences that joined a batch already decoding
    model_seconds: float = 0.0  # forward passes and sampling (up to the sampled tokens on the host)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class Request:
    """One `generate` (or `stream`) call as the worker sees it; may be split over several batches.

    A generate request is answered through `future`, a stream through `deltas` (Delta items,
    or an exception); both live on the caller's event loop `loop`.
    """

    prompt: tuple[int, ...]
    params: SamplingParams
    seeds: list[int]
    max_new: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None
    deltas: asyncio.Queue | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: list[Completion | None] = field(default_factory=list)
    next_index: int = 0      # first sample index not yet scheduled
    remaining: int = 0       # samples not yet finished
    started: bool = False
    prefilled: int = 0       # prompt tokens actually run through the model for this request
                             # (not those shared with another request or found in the prefix cache)

    @classmethod
    def create(cls, prompt: tuple[int, ...], params: SamplingParams, max_model_len: int,
               seed_source: random.Random, stream: bool) -> Request:
        """A request on the running loop; sample i's seed is `mix_seed(params.seed, i)`, or random."""
        if params.seed is None:
            seeds = [seed_source.getrandbits(63) for _ in range(params.n)]
        else:
            seeds = [mix_seed(params.seed, i) for i in range(params.n)]
        loop = asyncio.get_running_loop()
        return cls(prompt=prompt, params=params, seeds=seeds,
                   max_new=min(params.max_tokens, max_model_len - len(prompt)), loop=loop,
                   future=None if stream else loop.create_future(),
                   deltas=asyncio.Queue() if stream else None,
                   results=[None] * params.n, remaining=params.n)

    def usage(self, completion_tokens: int) -> Usage:
        """This request's usage: the prompt once per sequence is processed; all but what this
        request itself prefilled came from the KV copy (cached)."""
        processed = len(self.prompt) * self.params.n
        return Usage(prompt_tokens=len(self.prompt), processed_prompt_tokens=processed,
                     cached_prompt_tokens=max(0, processed - self.prefilled),
                     completion_tokens=completion_tokens, generator_calls=1)

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set() or (self.future is not None and self.future.cancelled())

    def deliver(self, result: Any = None, error: BaseException | None = None) -> None:
        """Answer from the worker thread; a stream gets errors only (its last delta ends it)."""
        if self.deltas is None:
            post(self.loop, self.future, result, error)
        elif error is not None:
            try:
                self.loop.call_soon_threadsafe(self.deltas.put_nowait, error)
            except RuntimeError:
                pass

    def send(self, delta: Delta) -> None:
        try:
            self.loop.call_soon_threadsafe(self.deltas.put_nowait, delta)
        except RuntimeError:  # the consumer's loop is gone
            self.cancelled.set()


@dataclass(eq=False)
class Job:
    """A function to run on the model thread (hidden-state passes), serialised with batches."""

    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


@dataclass(eq=False)
class Seq:
    """Decoding state of one candidate."""

    request: Request
    index: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[int, float]] = field(default_factory=list)
    text: str = ""            # incrementally detokenised text (kept for stop strings and streams)
    prefix_offset: int = 0
    read_offset: int = 0
    stop_at: int | None = None
    finish_reason: str | None = None
    sent_tokens: int = 0      # streams: tokens and characters already delivered
    sent_chars: int = 0


#: (request, sample indices) pairs: what one batch decodes
Batch = list[tuple[Request, range]]


def mix_seed(seed: int, index: int) -> int:
    """splitmix64 of (seed, sample index): independent streams for the n samples of one seed."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def _resolve_future(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def post(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any = None,
         error: BaseException | None = None) -> None:
    """Resolve a future from the worker thread on the loop that owns it (which may be gone)."""
    try:
        loop.call_soon_threadsafe(_resolve_future, future, result, error)
    except RuntimeError:  # that event loop is closed: nobody is waiting any more
        pass
