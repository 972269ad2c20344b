"""How long `ttc demo` will take, from the decode speed measured on the spot.

A batched decode step costs a fixed part (the weights are read once per step) plus a part per
sequence in the batch. Two short timed batches (1 sequence, then a full batch of the demo's own
prompts, sent as the demo sends them) give both parts;
the demo's batches follow from its settings, and each batch runs for up to `max_tokens` steps
while its sequences, `mean_tokens` long on average, leave as they finish. A CPU shared with other
jobs changes the speed from one minute to the next, so this is an estimate, not a promise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ttc.backends.base import Generator
from ttc.types import Prompt, SamplingParams

#: steps timed per calibration batch, and the largest batch timed (a batch's cost grows about
#: linearly with its size, so a bigger one is extrapolated: timing a full batch of 64 cost ~45 s
#: of a 4-minute demo on a busy 2-core machine)
CALIBRATION_STEPS = 12
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class DecodeSpeed:
    """Seconds per decode step: `step_seconds` + `sequence_seconds` x sequences in the batch."""

    step_seconds: float
    sequence_seconds: float
    batch: int  # the batch size the per-sequence part was measured at

    def step(self, batch: int) -> float:
        return self.step_seconds + self.sequence_seconds * batch

    def describe(self) -> str:
        return f"{self.step(1):.3f} s per decode step of 1 sequence, {self.step(self.batch):.3f} s of {self.batch}"


async def _seconds_per_step(generator: Generator, prompts: Sequence[Prompt], batch: int) -> float:
    """Seconds per decode step of one batch of `batch` sequences spread over `prompts`, sent
    together as the demo sends its requests (one request per prompt)."""
    import asyncio

    prompts = list(prompts)[:batch]
    share, extra = divmod(batch, len(prompts))
    counts = [share + (i < extra) for i in range(len(prompts))]
    start = time.perf_counter()
    generations = await asyncio.gather(*(
        generator.generate(p, SamplingParams(n=k, max_tokens=CALIBRATION_STEPS, temperature=0.7, seed=i))
        for i, (p, k) in enumerate(zip(prompts, counts, strict=True))))
    steps = max((c.num_tokens for g in generations for c in g.completions), default=0)
    return (time.perf_counter() - start) / max(1, steps)


async def measure_speed(generator: Generator, prompts: Sequence[Prompt], batch: int) -> DecodeSpeed:
    """Time a few decode steps of 1 sequence and of `batch` sequences (at most `CALIBRATION_BATCH`)
    of `prompts` (after a warm-up request, so one-time costs are not counted as speed)."""
    batch = min(batch, CALIBRATION_BATCH)
    await generator.generate(prompts[0], SamplingParams(n=1, max_tokens=2, temperature=0.7, seed=0))
    one = await _seconds_per_step(generator, prompts[:1], 1)
    if batch <= 1:
        return DecodeSpeed(step_seconds=one, sequence_seconds=0.0, batch=1)
    full = await _seconds_per_step(generator, prompts, batch)
    per_sequence = max(0.0, (full - one) / (batch - 1))
    return DecodeSpeed(step_seconds=max(0.0, one - per_sequence), sequence_seconds=per_sequence, batch=batch)


def draws_per_problem(ns: Sequence[int], shared: bool) -> list[int]:
    """The samples each setting draws per problem, in the demo's order (see `ttc.demo.demo_settings`):
    with shared samples only the ones beyond the largest n drawn so far; else n per setting."""
    from ttc.demo import demo_settings

    draws, pooled = [], 0
    for _, n in demo_settings(ns):
        if shared:
            draws.append(max(0, n - pooled))
            pooled = max(pooled, n)
        else:
            draws.append(n)
    return [d for d in draws if d > 0]


def batch_sizes(problems: int, draws: Sequence[int], max_batch: int) -> list[int]:
    """The batches a batching backend makes of each setting's requests (one request of `d`
    samples per problem, all sent at once; whole requests are packed up to `max_batch`)."""
    sizes = []
    for d in draws:
        per_batch = max(1, max_batch // d)
        full, rest = divmod(problems, per_batch)
        sizes += [per_batch * d] * full + ([rest * d] if rest else [])
    return sizes


def estimate_seconds(speed: DecodeSpeed, batches: Sequence[int], max_tokens: int, mean_tokens: float) -> float:
    """Decode time of `batches`: `max_tokens` steps of the fixed part each, and the per-sequence
    part for the tokens their sequences actually decode (`mean_tokens` each on average)."""
    mean_tokens = min(float(max_tokens), mean_tokens)
    return sum(max_tokens * speed.step_seconds + speed.sequence_seconds * b * mean_tokens for b in batches)


def format_duration(seconds: float) -> str:
    """'45 s', '2 min 05 s'."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
