"""The demo's time estimate: which batches its settings make, and what they cost at a measured speed."""

import asyncio

from ttc.backends import Scripted
from ttc.demo_timing import (
    DecodeSpeed,
    batch_sizes,
    draws_per_problem,
    estimate_seconds,
    format_duration,
    measure_speed,
)


def test_shared_samples_draw_only_beyond_the_largest_n_so_far():
    # settings: sample@1, majority@4, best_of_n@4, majority@8, best_of_n@8
    assert draws_per_problem([1, 4, 8], shared=True) == [1, 3, 4]
    assert draws_per_problem([1, 4, 8], shared=False) == [1, 4, 4, 8, 8]


def test_requests_are_packed_whole_into_batches():
    assert batch_sizes(20, [1, 3, 4], 64) == [20, 60, 64, 16]
    assert batch_sizes(30, [3], 64) == [63, 27]  # 21 requests of 3 fill a batch of 63
    assert batch_sizes(2, [100], 64) == [100, 100]  # a request larger than a batch still counts whole


def test_the_estimate_charges_every_step_of_a_batch_and_the_tokens_its_sequences_decode():
    speed = DecodeSpeed(step_seconds=0.1, sequence_seconds=0.01, batch=64)
    assert estimate_seconds(speed, [10], max_tokens=50, mean_tokens=20) == 50 * 0.1 + 0.01 * 10 * 20
    assert estimate_seconds(speed, [10], max_tokens=50, mean_tokens=500) == estimate_seconds(speed, [10], 50, 50)
    assert estimate_seconds(speed, [], max_tokens=50, mean_tokens=20) == 0


def test_durations_read_as_minutes_and_seconds():
    assert format_duration(4.2) == "5 s" and format_duration(60) == "1 min 00 s"
    assert format_duration(125) == "2 min 05 s"


def test_speed_is_measured_on_real_requests_of_the_given_prompts():
    backend = Scripted(["one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                        "sixteen seventeen"], latency=0.01)
    speed = asyncio.run(measure_speed(backend, ["p1", "p2", "p3"], batch=8))  # below CALIBRATION_BATCH
    assert speed.batch == 8 and speed.step_seconds >= 0 and speed.sequence_seconds >= 0
    sent = [(prompt, params.n) for prompt, params in backend.requests]
    assert sent[:2] == [("p1", 1), ("p1", 1)]  # the warm-up, then one sequence
    assert sorted(sent[2:]) == [("p1", 3), ("p2", 3), ("p3", 2)]  # a batch of 8 over the demo's prompts


def test_a_large_batch_is_extrapolated_from_a_smaller_timed_one():
    from ttc.demo_timing import CALIBRATION_BATCH

    backend = Scripted(["The answer is 7."])
    speed = asyncio.run(measure_speed(backend, [f"p{i}" for i in range(100)], batch=64))
    assert speed.batch == CALIBRATION_BATCH < 64
    assert sum(params.n for _, params in backend.requests[2:]) == CALIBRATION_BATCH
