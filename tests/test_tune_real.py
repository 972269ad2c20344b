"""A live run on the suite's real vLLM server falls inside the interval that `ttc tune` predicts
from a bank recorded on the same server (other seeds: fresh samples)."""

from __future__ import annotations

import pytest

import ttc
from ttc.bank.record import arecord
from ttc.bank.replays import Vote
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.runner import asolve_many, run_sync

pytestmark = pytest.mark.slow


def test_a_live_majority_vote_falls_inside_the_replayed_interval(vllm_server, tmp_path):
    from ttc.backends.openai_compatible import OpenAICompatible

    problems = demo_problems(16, seed=3)
    params = ttc.SamplingParams(temperature=0.7, max_tokens=48)
    backend = OpenAICompatible(vllm_server.url)
    try:
        bank = tmp_path / "bank.jsonl"
        recorded = run_sync(arecord(problems, backend, bank, k=8, params=params, prompt=DEMO_PROMPT, seed=0,
                                    concurrency=4, progress=False))
        assert recorded == 16
        report = ttc.tune(bank, families=[Vote([1, 4])], draws=16, replicates=2000, level=0.99)
        row = report.row("majority(n=4)")
        vote = ttc.MajorityVote(n=4, sample=ttc.Sample(params=params.replace(logprobs=True), prompt=DEMO_PROMPT))
        live = run_sync(asolve_many(vote, problems, backend, seed=5000, progress=False))
    finally:
        run_sync(backend.aclose())
    accuracy = sum(bool(r.is_correct()) for r in live) / len(live)
    tokens = sum(r.usage.total_tokens for r in live) / len(live)
    assert row.accuracy.low <= accuracy <= row.accuracy.high, (accuracy, row.accuracy)
    assert row.tokens.low <= tokens <= row.tokens.high, (tokens, row.tokens)
    assert row.requests.value == 1 == sum(r.usage.generator_calls for r in live) / len(live)
