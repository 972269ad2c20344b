"""TokenCache: bounded LRU of tokenisations, one computation per key at a time."""

from __future__ import annotations

import asyncio

import pytest

from ttc.backends.token_cache import TokenCache


def counting(ids, calls: list, delay: float = 0.0, fail: Exception | None = None):
    async def compute():
        calls.append(1)
        await asyncio.sleep(delay)
        if fail is not None:
            raise fail
        return list(ids) if ids is not None else None
    return compute


def test_concurrent_callers_share_one_computation_and_get_their_own_lists():
    async def main():
        cache, calls = TokenCache(), []
        results = await asyncio.gather(*(cache.get("k", counting([1, 2, 3], calls, 0.01)) for _ in range(5)))
        assert calls == [1] and results == [[1, 2, 3]] * 5
        results[0].append(99)  # a caller's list is its own
        assert await cache.get("k", counting([7], calls)) == [1, 2, 3] and calls == [1]
        assert (cache.hits, cache.misses) == (5, 1)
    asyncio.run(main())


def test_lru_bound_on_ids_held():
    async def main():
        cache, calls = TokenCache(max_ids=5), []
        await cache.get("a", counting([1, 2], calls))
        await cache.get("b", counting([3, 4], calls))
        await cache.get("a", counting([0], calls))  # a is now the most recent
        await cache.get("c", counting([5, 6], calls))  # 6 ids > 5: b (least recent) goes
        assert cache.held_ids == 4 and len(cache) == 2
        assert cache.lookup("b") is None and cache.lookup("a") == [1, 2] and cache.lookup("c") == [5, 6]
        await cache.get("big", counting(list(range(6)), calls))  # more than the whole budget: not kept
        assert cache.lookup("big") is None and cache.held_ids == 4
    asyncio.run(main())


def test_failures_and_none_are_passed_on_and_not_cached():
    async def main():
        cache, calls = TokenCache(), []
        results = await asyncio.gather(*(cache.get("k", counting([1], calls, 0.01, fail=RuntimeError("down")))
                                         for _ in range(3)), return_exceptions=True)
        assert calls == [1] and all(isinstance(r, RuntimeError) for r in results)
        assert await cache.get("k", counting([4], calls)) == [4] and len(calls) == 2
        assert await cache.get("n", counting(None, calls)) is None
        assert await cache.get("n", counting([5], calls)) == [5] and len(calls) == 4
    asyncio.run(main())


def test_a_cancelled_computation_is_redone_by_a_waiter():
    async def main():
        cache, calls = TokenCache(), []
        first = asyncio.create_task(cache.get("k", counting([1], calls, 10.0)))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache.get("k", counting([2], calls, 0.0)))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == [2] and len(calls) == 2
        with pytest.raises(asyncio.CancelledError):
            await first
    asyncio.run(main())
