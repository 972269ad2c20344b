"""Shared test helpers."""

import contextlib
import dataclasses

import pytest

from ttc.types import Result, Usage


def counts_but_cache_hits(usage: Usage) -> tuple[int, ...]:
    """Usage counts without `cached_prompt_tokens`: what two backends (an engine and a server, each
    with its own prefix cache and its own past) must agree on for the same seeded run."""
    return dataclasses.replace(usage, cached_prompt_tokens=0).counts()


def assert_usage_is_sum_of_candidates(result: Result) -> None:
    total = Usage.total([c.usage for c in result.candidates])
    assert total.counts() == result.usage.counts()


def assert_top_k_confidence_exits_where_deepconf_says(llm, problems, prompt, top_k: int, window: int = 4,
                                                      max_tokens: int = 24) -> None:
    """DeepConf's token confidence through EarlyExit (chunk mode) on a real backend.

    A greedy reference run that never stops returns the real top-k logprobs; the group confidences
    are recomputed here from them (C_i = -mean of the top-k logprobs, windows of `window` tokens).
    With the threshold a little above their minimum, the probe must exit exactly at the end of the
    lowest window, with that confidence as its score; a little below, it must not exit. The lowest
    window is chosen past the first one (a probe on the sampled token's logprob, <= 0, would exit at
    the first window under any positive threshold) and inside the checked chunks (the last chunk
    of a trace is not probed), with a margin of at least 0.01 to every other window so that the
    run-to-run noise of a batched engine's logprobs cannot move the exit.
    """
    import math

    from ttc.probes import PLAIN_SUFFIX, TokenConfidence
    from ttc.strategies.early_exit import EarlyExit
    from ttc.types import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=True)
    every = 8

    def run(problem, threshold):
        probe = TokenConfidence(window=window, threshold=threshold, top_k=top_k, action="exit", every=every)
        return EarlyExit(probe, params=params, prompt=prompt, answer_suffix=PLAIN_SUFFIX,
                         answer_tokens=4).solve(problem, llm)

    for problem in problems:
        reference = run(problem, -math.inf).candidates[0]
        top = reference.completion.top_logprobs
        assert top is not None and len(top) == reference.completion.num_tokens
        assert all(len(t) >= top_k for t in top)  # the real top-k (a backend may add the sampled token)
        conf = [-math.fsum(t.values()) / len(t) for t in top]
        assert all(c >= math.log(top_k) - 1e-6 for c in conf)  # -mean of top-k logprobs >= log k
        checked = (len(conf) - 1) // every * every  # windows ending after this are in the unprobed last chunk
        groups = {end: math.fsum(conf[end - window:end]) / window for end in range(window, checked + 1)}
        if len(groups) < 2:
            continue
        lowest = min(groups.values())
        end = min(e for e, g in groups.items() if g == lowest)
        margin = min(g for e, g in groups.items() if e != end) - lowest
        if end == window or margin < 0.01:  # any formula would exit at the first window, or too close
            continue
        delta = min(margin / 2, 0.05)
        exited = run(problem, lowest + delta).candidates[0]
        assert exited.finish_reason == "early_exit"
        assert exited.scores["exit_tokens"] == end
        assert math.isclose(exited.scores["token_confidence"], lowest, abs_tol=1e-3)
        kept = run(problem, lowest - delta).candidates[0]
        assert kept.finish_reason in ("stop", "length")
        return
    raise AssertionError("no problem's lowest confidence window came after the first one")


@contextlib.contextmanager
def running_vllm_server(what: str, **kwargs):
    """A real vLLM server (`VLLMServer(**kwargs)`) for a fixture: a start failure fails the test
    naming `what`; the server is always stopped."""
    from ttc.backends.vllm_server import VLLMServer
    from ttc.errors import BackendUnavailable

    server = VLLMServer(**kwargs)
    try:
        server.start()  # stops the server itself if it dies or times out
    except BackendUnavailable as exc:
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
