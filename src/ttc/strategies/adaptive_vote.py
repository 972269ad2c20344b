"""Adaptive self-consistency: sample in small batches and stop as soon as the vote is decided."""

from __future__ import annotations

import asyncio
from typing import Any

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput
from ttc.infos import AdaptiveVoteInfo
from ttc.stopping import StoppingRule, StopReason, as_rule
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.first_finish import StreamSample, _Tracked
from ttc.strategies.sample import Sample
from ttc.strategies.wrapping import check_n, sampler_for
from ttc.types import Candidate, Problem, Result
from ttc.votes import weighted_vote


async def draw_round(sample: Sampler, problem: Problem, ctx: Context, k: int) -> list[Candidate]:
    """k more candidates from `sample`, as one round. A plain `Sample` asks for n=k in one request
    (the prompt is billed once per round); each request gets its own seed by the seed rule
    (`Context.next_seed`), so rounds of a seeded run do not repeat each other's samples."""
    return await sample.candidates(problem, ctx, k)


def vote_result(name: str, problem: Problem, ctx: Context, candidates: list[Candidate], reason: StopReason,
                rounds: int | None, rule: StoppingRule, seen: list[Candidate] | None = None, **stream: Any) -> Result:
    """The plurality of the answers drawn (ties: the answer seen first, recorded), with why sampling stopped.
    When the rule decided, only its `voters` vote (ESC: the unanimous window); it is asked about the
    samples in the order it saw them, `seen` (default: `candidates`; stream mode: finish order).
    `stream` holds the stream mode's `launched` and `finish_order` (it has no rounds)."""
    voting = candidates
    if reason == "decided":
        order = candidates if seen is None else seen
        voting = [order[i] for i in rule.voters([c.answer for c in order])]
    answer, votes, info = weighted_vote([c.answer for c in voting])
    cancelled = sum(c.finish_reason == "cancelled" for c in candidates)
    details = AdaptiveVoteInfo(votes=votes, vote_fallback=info.get("vote_fallback"), tie=info.get("tie"),
                               samples=len(candidates) - cancelled, cancelled=cancelled, rounds=rounds,
                               stop_reason=reason, stop_rule=rule.name, **stream)
    return Result(problem=problem, answer=answer, candidates=candidates, usage=ctx.usage, strategy=name,
                  details=details)


class AdaptiveVote(Strategy):
    """Majority vote that stops sampling when the vote is decided (adaptive self-consistency).

    Samples `batch` candidates at a time, up to `max_n`, and after each round asks the stopping rule
    `stop` whether the answers so far settle the vote: `ttc.stopping.BetaStop(confidence=0.95)`
    (Adaptive-Consistency, Aggarwal et al., 2023; the default) or `ttc.stopping.WindowStop(window)`
    (ESC, Li et al., 2024). The answer is the plurality of every answer drawn (Adaptive-Consistency's
    code), except when `WindowStop` decides: then it is the unanimous window's answer, as ESC's code
    (the rule's `voters`).
    `details["stop_reason"]` is one of `ttc.stopping.STOP_REASONS`: "decided" (the rule stopped it),
    "max_n", or "budget" (the problem's token budget could not pay for another round; at least one
    round must fit, else `BudgetExhausted` is raised as for any strategy).

    Two ways to sample, and what happens to samples in flight when the rule stops:
    - stream=False (default): each round is one request for `batch` samples (a plain `Sample` asks
      for n=batch, so the prompt is prefilled and billed once per round) and the rule is asked when
      the round is back. The running round always finishes; nothing is cancelled, every token is
      counted, and every finished sample votes. Chosen as the default because on a batching
      backend a round costs one decode pass whatever its size, and billing the prompt per round
      instead of per sample is what makes small batches cheap.
    - stream=True: `batch` streamed samples are kept in flight; a finished one is replaced at once
      (up to max_n) and the rule is asked after each one finishes, in finish order. When it stops,
      the streams still running are cancelled: they stay in `candidates` with finish_reason
      "cancelled", no answer (they do not vote) and exactly the tokens they had received (each
      stream bills its own prompt). A custom sampler that does not stream is cancelled too, but a
      request it had in flight counts nothing (as in `FirstFinish`).

    `sample` is the single-candidate strategy repeated (default: plain sampling), so it composes
    like `MajorityVote(sample=...)`. Deviations from the papers: they sample one at a time (ESC in
    windows); here the batch size is free, and a rule is only asked at round ends (batch mode) or
    sample ends (stream mode), so a rule that would have stopped mid-round sees the whole round.

    `max_n` defaults to 16; the authors' codes draw up to 40 (Adaptive-Consistency's
    `AC(max_gens=40)`, ESC's `sc_num=40`): pass `max_n=40` to match their cap.

    Args:
        max_n: the most samples drawn (default 16; the authors' 40).
        batch: samples per round (batch mode) or in flight (stream mode).
        stop: the stopping rule: a `ttc.stopping.StoppingRule`, a name ("beta", "esc"), or None
            (`BetaStop(confidence=0.95)`).
        sample: the single-candidate strategy repeated (default: plain sampling).
        stream: stream samples and cancel those in flight when the rule stops.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> r = ttc.AdaptiveVote(max_n=8, batch=2).solve("3 + 4?", Scripted(["The answer is 7."]), seed=0)
        >>> (r.answer, r.details["samples"], r.details["stop_reason"])  # 4-0 settles it at c = 0.95
        ('7', 4, 'decided')
    """

    name = "adaptive_vote"

    def __init__(self, max_n: int = 16, batch: int = 4, stop: StoppingRule | str | None = None,
                 sample: Sampler | None = None, stream: bool = False):
        self.max_n = check_n(max_n)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise InvalidInput(f"AdaptiveVote.batch must be a positive integer, got {batch!r}")
        self.batch = min(batch, self.max_n)
        self.stop = as_rule(stop)
        self.sample = sampler_for(sample, None, holder="AdaptiveVote")
        self.stream = bool(stream)

    async def run(self, problem: Problem, ctx: Context) -> Result:
        if self.stream:
            return await self._run_streams(problem, ctx)
        candidates: list[Candidate] = []
        rounds = 0
        reason: StopReason = "max_n"
        while len(candidates) < self.max_n:
            try:
                new = await draw_round(self.sample, problem, ctx, min(self.batch, self.max_n - len(candidates)))
            except BudgetExhausted:
                if not candidates:
                    raise
                reason = "budget"
                break
            candidates += new
            rounds += 1
            if self.stop.should_stop([c.answer for c in candidates]):
                reason = "decided"
                break
        return vote_result(self.name, problem, ctx, candidates, reason, rounds, self.stop)

    async def _run_streams(self, problem: Problem, ctx: Context) -> Result:
        sample = self.sample
        if type(sample) is Sample:
            sample = StreamSample(sample.params, sample.prompt)
        views: list[_Tracked] = []
        futures: list[asyncio.Future] = []
        finished: list[tuple[int, Candidate]] = []
        reason: StopReason = "max_n"
        budget_hit = False
        pending: set[asyncio.Future] = set()
        try:
            while True:
                while not budget_hit and len(pending) < self.batch and len(views) < self.max_n:
                    views.append(_Tracked(ctx))
                    futures.append(asyncio.ensure_future(sample.candidate(problem, views[-1])))
                    pending.add(futures[-1])
                if not pending:
                    break
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                decided = False
                for task in sorted(done, key=futures.index):
                    exc = task.exception()
                    if isinstance(exc, BudgetExhausted):
                        budget_hit = True
                        continue
                    if exc is not None:
                        raise exc
                    finished.append((futures.index(task), task.result()))
                    decided = decided or self.stop.should_stop([c.answer for _, c in finished])
                if decided:
                    reason = "decided"
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if not finished:
            raise BudgetExhausted(f"token budget exhausted before {self.name} finished one sample")
        if reason != "decided" and budget_hit:
            reason = "budget"
        done_at = dict(finished)
        candidates = []
        for i, (view, task) in enumerate(zip(views, futures, strict=True)):
            if i in done_at:
                candidates.append(done_at[i])
            elif task.done() and not task.cancelled() and isinstance(task.exception(), BudgetExhausted):
                continue  # refused before it started: it spent nothing and is not a candidate
            else:
                partial = view.partial()  # counts the thinking tokens of its streams first
                candidates.append(Candidate(**partial, answer=None, usage=view.spent_total(),
                                            finish_reason="cancelled"))
        return vote_result(self.name, problem, ctx, candidates, reason, None, self.stop, [c for _, c in finished],
                           launched=len(views),
                           finish_order=tuple(i for i, _ in finished))
