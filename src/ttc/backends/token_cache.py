"""A bounded cache of tokenisations, so that a text is sent to a server's `/tokenize` once.

A step search asks for the ids of the same few strings again and again: the delimiter and the
empty string for every problem (`Stepper._piece_ids`), a probe's suffix for every trace, a
problem's chat prompt whenever a strategy renders it again. Over HTTP each is a round trip.
`TokenCache` keeps the ids of what was tokenised (least recently used dropped first once the ids
held exceed `max_ids`) and runs one computation per key at a time: callers that ask for a key
whose tokenisation is in flight wait for it instead of sending their own request (concurrent
problems of a batch all start with the same delimiter).

Ids are stored as `array('q')` (8 bytes an id, not the ~36 of a list of Python ints); callers get
a fresh list each time, so nothing they do changes the cache.
"""

from __future__ import annotations

import asyncio
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["TokenCache"]


class TokenCache:
    """Token ids by key (e.g. the /tokenize request body), LRU-bounded by the number of ids held.

    `get(key, compute)` returns the cached ids or awaits `compute()` once for all concurrent
    callers of `key` on an event loop; a result of None (nothing to cache, e.g. the server has no
    /tokenize) and exceptions are passed on and not cached. `hits` and `misses` count calls.
    """

    def __init__(self, max_ids: int = 1 << 20):
        if not isinstance(max_ids, int) or max_ids < 0:
            raise ValueError(f"max_ids must be an integer >= 0, got {max_ids!r}")
        self.max_ids = max_ids
        self._ids: OrderedDict[Hashable, array] = OrderedDict()
        self._held = 0
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future]] = \
            weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def held_ids(self) -> int:
        """Token ids held now (at most `max_ids`)."""
        return self._held

    def clear(self) -> None:
        self._ids.clear()
        self._held = 0

    def lookup(self, key: Hashable) -> list[int] | None:
        """The cached ids of `key` (marked as recently used), else None."""
        ids = self._ids.get(key)
        if ids is None:
            return None
        self._ids.move_to_end(key)
        return ids.tolist()

    def put(self, key: Hashable, ids: list[int]) -> None:
        """Remember `ids` for `key`, evicting the least recently used entries beyond `max_ids`."""
        if len(ids) > self.max_ids:
            return
        old = self._ids.pop(key, None)
        if old is not None:
            self._held -= len(old)
        self._ids[key] = array("q", ids)
        self._held += len(ids)
        while self._held > self.max_ids:
            _, dropped = self._ids.popitem(last=False)
            self._held -= len(dropped)

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[list[int] | None]]) -> list[int] | None:
        while True:
            ids = self.lookup(key)
            if ids is not None:
                self.hits += 1
                return ids
            pending = self._pending.setdefault(asyncio.get_running_loop(), {})
            future = pending.get(key)
            if future is None:
                break
            await asyncio.wait([future])  # raises only if this caller is cancelled
            if not future.cancelled():  # (the caller computing it was cancelled: compute it here)
                self.hits += 1
                result = future.result()  # the computation's exception, if it failed
                return None if result is None else list(result)
        self.misses += 1
        future = asyncio.get_running_loop().create_future()
        pending[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            if pending.get(key) is future:
                del pending[key]
        if result is not None:
            result = [int(t) for t in result]
            self.put(key, result)
        future.set_result(result)
        return None if result is None else list(result)
