"""Shared test helpers."""

from ttc.types import Result, Usage


def assert_usage_is_sum_of_candidates(result: Result) -> None:
    total = Usage.total([c.usage for c in result.candidates])
    assert total.counts() == result.usage.counts()
