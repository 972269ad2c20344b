"""Pins found by mutation testing (scripts/mutation.py) of the adaptive strategies added with
issue 15: the stopping rules, RPC, adaptive best-of-N, ES-CoT and the shared budget. Each test names
the mutants it kills; all are deterministic."""

import math

import numpy as np
import pytest

from ttc.errors import InvalidInput
from ttc.stopping import BetaStop, WindowStop, beta_leader_probability
from ttc.strategies import rpc
from ttc.strategies.adaptive_vote import AdaptiveVote
from ttc.strategies.rpc import path_probability, prune_mask, rpc_vote


# -- ttc.stopping --------------------------------------------------------------------------------
def test_rule_repr_names_its_settings():
    # kills: StoppingRule.__repr__ statements dropped
    assert repr(BetaStop(confidence=0.9, min_samples=2)) == "BetaStop(confidence=0.9, min_samples=2)"
    assert repr(WindowStop(3)) == "WindowStop(window=3)"


def test_window_of_one_and_the_window_edges():
    # kills: `window < 1` -> `<= 1` / `< 2` (a window of 1 is legal: stop at the first answer)
    assert WindowStop(1).should_stop(["7"]) is True
    assert WindowStop(1).should_stop([None]) is False
    # kills: chunk = answers[start:start + w + 1] (the first window is [1, 1]; the third sample is outside it)
    assert WindowStop(2).should_stop(["1", "1", "2"]) is True
    # kills: the final `return False` dropped (None is not False)
    assert WindowStop(2).should_stop(["1", "2"]) is False


def test_beta_probability_refuses_negative_counts():
    # kills: the guard dropped, `or` -> `and`, `< 0` -> `< -1` on either count
    for leader, runner_up in ((-1, 0), (0, -1), (-1, 5), (5, -1)):
        with pytest.raises(InvalidInput):
            beta_leader_probability(leader, runner_up)


def test_beta_probability_edges():
    # kills: `top[0] > 0` -> `>= 0` / `> -1` (no votes: 0, not Beta(1, 1)'s 1/2), and `> 1` (one vote: 3/4)
    assert BetaStop.probability([]) == 0.0
    assert BetaStop().leader_probability([None, None]) == 0.0
    assert BetaStop.probability([1]) == 0.75
    assert BetaStop.probability([1, 1]) == 0.5
    # kills: `probability >= confidence` -> `>` (P = 3/4 exactly reaches a confidence of 3/4)
    assert BetaStop(confidence=0.75).should_stop(["7"]) is True
    assert BetaStop(confidence=0.76).should_stop(["7"]) is False
    # kills: `0.5 <= confidence` -> `0.5 < confidence` (1/2 is a legal confidence)
    assert BetaStop(confidence=0.5).confidence == 0.5


# -- ttc.strategies.rpc --------------------------------------------------------------------------
def test_path_probability_of_an_empty_path_is_zero():
    # kills: the `token_count <= 0` guard dropped, `<= 0` -> `< 0` / `<= -1` (0 tokens would divide by zero)
    assert path_probability(-3.0, 0) == 0.0
    assert path_probability(0.0, 0, normalise=False) == 0.0
    assert path_probability(math.log(0.5) * 4, 4) == pytest.approx(0.5)


def test_weibull_density_integrates_to_one_with_the_stated_mean():
    # kills: every arithmetic and constant mutant of _weibull_pdf and _weibull_mean (checked against a
    # trapezoid integral of the density, and two values by hand: f(1; k=1, lam=1) = 1/e, f(1; 2, 1) = 2/e)
    x = np.linspace(0.0, 15.0, 1_500_001)
    for k, lam in ((1.5, 1.3), (2.0, 0.5), (20.0, 0.3), (1.0, 0.8)):
        pdf = rpc._weibull_pdf(x, k, lam)
        assert np.trapezoid(pdf, x) == pytest.approx(1.0, abs=1e-6)
        assert rpc._weibull_mean(k, lam) == pytest.approx(np.trapezoid(x * pdf, x), abs=1e-6)
    assert rpc._weibull_pdf(np.array([1.0]), 1.0, 1.0)[0] == pytest.approx(math.exp(-1))
    assert rpc._weibull_pdf(np.array([1.0]), 2.0, 1.0)[0] == pytest.approx(2 * math.exp(-1))


def test_mixture_fit_finds_both_modes_of_the_bimodal_paths():
    # kills: mutants of the likelihood (w * pdf + (1 - w) * pdf): 12 paths near 0.3, 4 near 0.8
    from test_rpc_adaptive_bon import bimodal

    w, k1, l1, k2, l2 = rpc.fit_weibull_mixture(bimodal()[0])
    assert w == pytest.approx(0.25, abs=0.01)          # 4 of 16 paths in the high mode
    assert rpc._weibull_mean(k1, l1) == pytest.approx(0.8, abs=0.005)
    assert rpc._weibull_mean(k2, l2) == pytest.approx(0.3, abs=0.005)


class _Fit:
    def __init__(self, x):
        self.x = np.array(x, dtype=float)


def test_mixture_fit_puts_the_higher_mean_first_and_fails_on_non_finite(monkeypatch):
    import scipy.optimize

    # kills: the swap's `1 - w` -> `-w` / `2 - w` (the optimiser returned the low component first)
    monkeypatch.setattr(scipy.optimize, "minimize", lambda *a, **k: _Fit([0.3, 2.0, 0.5, 2.0, 1.0]))
    assert rpc.fit_weibull_mixture([0.1, 0.9]) == pytest.approx((0.7, 2.0, 1.0, 2.0, 0.5))
    monkeypatch.setattr(scipy.optimize, "minimize", lambda *a, **k: _Fit([0.3, 2.0, 1.0, 2.0, 0.5]))
    assert rpc.fit_weibull_mixture([0.1, 0.9]) == pytest.approx((0.3, 2.0, 1.0, 2.0, 0.5))
    # kills: the swap's `<` -> `<=` (equal means: the optimiser's order is kept)
    monkeypatch.setattr(scipy.optimize, "minimize", lambda *a, **k: _Fit([0.3, 2.0, 1.0, 2.0, 1.0]))
    assert rpc.fit_weibull_mixture([0.1, 0.9]) == pytest.approx((0.3, 2.0, 1.0, 2.0, 1.0))
    # kills: the non-finite check dropped, and prune_mask's `if fit is None: return` dropped
    monkeypatch.setattr(scipy.optimize, "minimize", lambda *a, **k: _Fit([0.5, math.nan, 1.0, 2.0, 0.5]))
    assert rpc.fit_weibull_mixture([0.1, 0.9]) is None
    assert prune_mask([0.1, 0.9, 0.95]) == [False, False, False]


def test_prune_mask_weighs_the_components_and_compares_with_the_mean(monkeypatch):
    # identical components (Weibull k=2, lam=1): only the mixture weight decides low vs high
    def fixed(w):
        monkeypatch.setattr(rpc, "fit_weibull_mixture", lambda probs: (w, 2.0, 1.0, 2.0, 1.0))

    probs = [0.25, 0.5, 0.75]  # mean exactly 0.5
    fixed(0.2)  # low weight 0.8 > 0.2 everywhere: prune exactly the paths below the mean
    # kills: `p < mean` -> `p <= mean`, `and` -> `or`
    assert prune_mask(probs) == [True, False, False]
    fixed(0.8)  # low weight 0.2 < 0.8: prune nothing
    # kills: (1 - w) -> (1 + w) / (2 - w) / (1 - w) / pdf
    assert prune_mask(probs) == [False, False, False]
    fixed(0.5)  # equal: not "more likely in the low component"
    # kills: `lo > hi` -> `lo >= hi`
    assert prune_mask(probs) == [False, False, False]


def test_prune_mask_of_two_paths():
    # kills: `len(probs) < 2` -> `<= 2` / `< 3` (two paths are fitted and the lower one is pruned)
    assert prune_mask([0.1, 0.9]) == [True, False]


def test_rpc_vote_reports_the_vote_fallback_when_every_path_weighs_zero():
    # kills: `info.update(vote_info)` dropped (paths of 0 tokens have probability 0: plurality decides)
    answer, info = rpc_vote(["1", "2", "2"], [0.0, 0.0, 0.0], [0, 0, 0], prune="none")
    assert answer == "2" and "vote_fallback" in info
    # kills: `total > 0` -> `>= 0` / `> -1` (a zero total has no confidences, not a division by zero)
    assert info["votes"] == {"1": 0.0, "2": 0.0} and info["confidence"] == {}


def test_rpc_vote_info_edges():
    # kills: `total > 0` -> `total > 1` (one path of probability 1/2 has all the confidence)
    _, info = rpc_vote(["7"], [math.log(0.5)], [1], prune="none")
    assert info["confidence"] == {"7": pytest.approx(1.0)}
    # kills: prune="none" building [True] * n (everything pruned, then the fallback)
    _, info = rpc_vote(["7", "8"], [math.log(0.5), math.log(0.9)], [1, 1], prune="none")
    assert info["pruned"] == [] and "fallback" not in info
    # kills: `range(n)` -> `range(n - 1)` in the pruned indices (the last path is the pruned one)
    answer, info = rpc_vote(["7", "8"], [math.log(0.9), math.log(0.1)], [1, 1])
    assert info["pruned"] == [1] and answer == "7"
    # kills: the fallback's `any(a is not None ...)` -> `any(a is None ...)`: no answer at all is no fallback
    answer, info = rpc_vote([None, None], [math.log(0.9), math.log(0.1)], [1, 1])
    assert answer is None and "fallback" not in info


def test_candidate_logprobs_edges():
    from ttc.errors import Unsupported
    from ttc.types import Candidate, Completion

    # kills: the `completion is None` guard dropped (an AttributeError instead of InvalidInput)
    with pytest.raises(InvalidInput, match="completion"):
        rpc.candidate_logprobs(Candidate("x", "1"))
    # kills: the empty-completion branch dropped or changed (0 tokens, no logprobs: probability 0)
    empty = Completion("", (), "stop", logprobs=None)
    assert rpc.candidate_logprobs(Candidate("", None, empty)) == (0.0, 0)
    # kills: `token_ids or text` -> `and`: text without token ids and without logprobs is refused
    with pytest.raises(Unsupported):
        rpc.candidate_logprobs(Candidate("x", None, Completion("x", (), "stop", logprobs=None)))
    with pytest.raises(Unsupported):
        rpc.candidate_logprobs(Candidate("", None, Completion("", (5,), "stop", logprobs=None)))
    assert rpc.candidate_logprobs(Candidate("x", None, Completion("x", (5, 6), "stop", (-0.5, -0.25)))) == (-0.75, 2)


def test_rpc_settings():
    import ttc

    # kills: RPC.__init__'s unknown-pruning check dropped
    with pytest.raises(InvalidInput, match="pruning"):
        rpc.RPC(prune="median")
    # kills: `isinstance(params, SamplingParams) and not params.logprobs` -> `or` (a sampler that already asks
    # for logprobs is used as is, not copied)
    sample = ttc.Sample(params=ttc.SamplingParams(logprobs=True))
    assert rpc.RPC(n=2, sample=sample).sample is sample


# -- ttc.probes.es_cot ---------------------------------------------------------------------------
def test_run_jump_edges():
    from ttc.probes.es_cot import run_jump

    # kills: the guard dropped, its `or` -> `and`, its `return` dropped (no step answer yet: no run at all)
    assert run_jump([]) == (False, 1.0)
    # kills: `step_answers[-1]` -> `step_answers[-0]` (a missing first answer is a run of its own; the 7s jump)
    assert run_jump([None, "7", "7", "7"], min_run=3) == (True, 0.0)
    # kills: `p_value < alpha` -> `<=`: earlier runs 2, 2 give q = 1/2; a run of 2 has p = 1/2, not below 1/2
    assert run_jump(["5", "5", "6", "6", "7", "7"], min_run=2, alpha=0.5) == (False, 0.5)
    assert run_jump(["5", "5", "6", "6", "7", "7"], min_run=2, alpha=0.51) == (True, 0.5)


def test_es_cot_accepts_the_smallest_settings():
    from ttc.probes.es_cot import ESCoT

    # kills: `every <= 0` -> `<= 1`, `min_run < 1` -> `<= 1` / `< 2`, `alpha <= 1` -> `< 1`
    probe = ESCoT(every=1, min_run=1, alpha=1.0)
    assert (probe.every, probe.min_run, probe.alpha) == (1, 1, 1.0)


# -- ttc.shared_budget ---------------------------------------------------------------------------
def test_token_pool_reserves_up_to_the_total_and_no_further():
    from ttc.shared_budget import TokenPool

    pool = TokenPool(10)
    # kills: `reserved = 0` -> `-1` (one phantom token)
    assert pool.available() == 10
    pool.reserve(10)
    assert pool.available() == 0
    # kills: the over-reservation check dropped (or its raise)
    with pytest.raises(AssertionError):
        pool.reserve(1)
    pool.settle(10, 7)
    assert (pool.spent, pool.reserved, pool.available()) == (7, 0, 3)


def _shared(strategy, problems, total, allocation="adaptive", **kw):
    import ttc
    from ttc.backends import Scripted
    from ttc.shared_budget import asolve_shared

    llm = Scripted(["answer \\boxed{7}"])
    results = ttc.run_sync(asolve_shared(strategy, problems, llm, total_budget=ttc.Budget(tokens=total),
                                         allocation=allocation, progress=False, **kw))
    return results, llm


def test_shared_budget_edges():
    import ttc

    params = ttc.SamplingParams(max_tokens=10)
    vote = ttc.MajorityVote(n=8, sample=ttc.Sample(params=params))
    # kills: `if not items: return []` dropped (no problem: no result, no request; uniform would divide by 0)
    for allocation in ("uniform", "adaptive"):
        results, llm = _shared(vote, [], 1000, allocation)
        assert results == [] and llm.requests == []
    # kills: the `concurrency <= 0` check dropped or `<= 0` -> `< 0` (a semaphore of 0 would hang)
    with pytest.raises(InvalidInput, match="concurrency"):
        _shared(vote, ["q"], 1000, concurrency=0)
    # kills: `waves = 1` -> 0 / 2: every problem is done after its first round of 8 (max_n)
    results, _ = _shared(vote, ["q1", "q2"], 5000, concurrency=1)
    assert all(r.details["samples"] == 8 for r in results)
    assert results[0].details["shared_budget"]["waves"] == 1
    results, _ = _shared(ttc.AdaptiveVote(max_n=8, batch=2, sample=ttc.Sample(params=params)), ["q"], 5000)
    assert results[0].details["samples"] == 4 and results[0].details["shared_budget"]["waves"] == 2


def test_shared_budget_rounds_shares_callbacks_and_failures(capsys):
    import ttc
    from ttc.backends import Scripted
    from ttc.shared_budget import asolve_shared

    params = ttc.SamplingParams(max_tokens=10)

    def solve(strategy, problems, llm, total, allocation="adaptive", **kw):
        return ttc.run_sync(asolve_shared(strategy, problems, llm, total_budget=ttc.Budget(tokens=total),
                                          allocation=allocation, **kw))

    split = Scripted([f"\\boxed{{{i}}}" for i in (1, 2)])  # a vote that never settles
    # kills: the later waves' `k = min(batch, max_n - samples)` dropped (k would stay the first wave's 4)
    results = solve(AdaptiveVote(max_n=6, batch=4, sample=ttc.Sample(params=params)), ["q"], split, 5000,
                    progress=False)
    assert results[0].details["samples"] == 6 and [p.n for _, p in split.requests] == [4, 2]
    # kills: `state.rounds += 1` dropped or off by one
    assert results[0].details["rounds"] == 2 and results[0].details["allocation"]["rounds"] == 2
    # kills: the first wave's `sum(cost) > total` -> `>=`: a total of exactly two rounds of 4 sends rounds of 4
    llm = Scripted(["\\boxed{7}"])
    plen = len(llm._ids(ttc.run_sync(llm.chat_prompt(ttc.ChatPrompt().messages(ttc.Problem("q1"))))))
    assert plen == len(llm._ids(ttc.run_sync(llm.chat_prompt(ttc.ChatPrompt().messages(ttc.Problem("q2"))))))
    solve(AdaptiveVote(max_n=4, batch=4, sample=ttc.Sample(params=params)), ["q1", "q2"], llm,
          2 * (plen + 4 * 10), progress=False)
    assert [p.n for _, p in llm.requests] == [4, 4]
    # kills: the uniform shares' `base + (i < extra)` -> `base - ...` (the remainder goes to the first problems)
    vote = ttc.MajorityVote(n=2, sample=ttc.Sample(params=params))
    seen = []
    results = solve(vote, ["q1", "q2", "q3"], Scripted(["\\boxed{7}"]), 3 * 500 + 2, "uniform", progress=False,
                    on_result=lambda i, r: seen.append((i, r.problem.question)))
    assert [r.details["allocation"]["share"] for r in results] == [501, 501, 500]
    # kills: the on_result call dropped
    assert sorted(seen) == [(0, "q1"), (1, "q2"), (2, "q3")]
    # kills: a failed problem's `result.candidates = state.candidates` dropped (its first round is kept)
    calls = []

    def script(prompt, p, i):
        calls.append(i)
        if len(calls) > 2:
            raise ttc.GenerationError("scripted failure")
        return f"\\boxed{{{len(calls)}}}"

    results = solve(AdaptiveVote(max_n=8, batch=2, sample=ttc.Sample(params=params)), ["q"], Scripted(script),
                    5000, progress=False)
    assert not results[0].ok and [c.answer for c in results[0].candidates] == ["1", "2"]
    # kills: `disable=not progress` -> `disable=progress` (progress=False prints no bar)
    capsys.readouterr()
    solve(vote, ["q1"], Scripted(["\\boxed{7}"]), 5000, progress=False)
    assert capsys.readouterr().err == ""
    # kills: the progress updates after wave 0 and after a later wave dropped: the bar ends full
    solve(vote, ["q1", "q2"], Scripted(["\\boxed{7}"]), 5000, progress=True)
    assert "2/2" in capsys.readouterr().err
    solve(AdaptiveVote(max_n=8, batch=2, sample=ttc.Sample(params=params)), ["q1"], Scripted(["\\boxed{7}"]), 5000,
          progress=True)
    assert "1/1" in capsys.readouterr().err


def test_shared_budget_later_rounds_fit_the_pool_exactly():
    import ttc
    from ttc.backends import Scripted
    from ttc.shared_budget import asolve_shared

    params = ttc.SamplingParams(max_tokens=10)
    strategy = AdaptiveVote(max_n=8, batch=2, sample=ttc.Sample(params=params))

    def run(total):
        # every sample is cut at max_tokens (no answer: the vote never settles), so it costs its worst case
        llm = Scripted(["w " * 40])
        results = ttc.run_sync(asolve_shared(strategy, ["q"], llm, total_budget=ttc.Budget(tokens=total),
                                             allocation="adaptive", progress=False))
        return results[0], [p.n for _, p in llm.requests]

    llm = Scripted(["x"])
    plen = len(llm._ids(ttc.run_sync(llm.chat_prompt(ttc.ChatPrompt().messages(ttc.Problem("q"))))))
    # kills: `cost(k) > available` -> `>=` (a round that costs exactly what is left is sent)
    result, sizes = run(2 * (plen + 20))
    assert sizes == [2, 2] and result.details["stop_reason"] == "budget"
    assert result.usage.total_tokens == 2 * (plen + 20)
    # kills: `k -= 1` -> `k -= 2`, `if k > 0` -> `if k > 1` (a smaller round that fits is sent)
    result, sizes = run(2 * plen + 30)
    assert sizes == [2, 1] and result.details["samples"] == 3
    # kills: wave 0's shrinking `k0 = [k0[0] - 1] * ...` -> `k0[1]` (one problem, a first round cut to 1)
    result, sizes = run(plen + 10)
    assert sizes == [1] and result.details["samples"] == 1


def test_shared_budget_refusals_seeds_and_a_problem_budget_below_one_round():
    import ttc
    from ttc.backends import Scripted
    from ttc.errors import BudgetExhausted
    from ttc.shared_budget import asolve_shared

    params = ttc.SamplingParams(max_tokens=10)
    vote = ttc.MajorityVote(n=2, sample=ttc.Sample(params=params))

    def solve(problems, llm, total, allocation="adaptive", **kw):
        return ttc.run_sync(asolve_shared(vote, problems, llm, total_budget=ttc.Budget(tokens=total),
                                          allocation=allocation, progress=False, **kw))

    llm = Scripted(["\\boxed{7}"])

    def plen(q):
        return len(llm._ids(ttc.run_sync(llm.chat_prompt(ttc.ChatPrompt().messages(ttc.Problem(q))))))

    short, long = "easy", "easy " + "long " * 4
    ns, nl = plen(short), plen(long)
    assert 0 < nl - ns < 20
    # kills: the uniform check `share < prompt + max_tokens` -> `prompt - max_tokens` (a share just short of one
    # sample for the longer prompt is refused up front)
    with pytest.raises(InvalidInput, match="uniformly"):
        solve([long, short], llm, nl + ns + 20, "uniform")
    # kills: short[0] -> short[-1] in the message: the first problem below one sample is named, with its
    # share (the remainder's extra token) and its prompt length
    mid = "easy " + "long " * 3
    nm = plen(mid)
    assert ns < nm < nl and nl + ns < 2 * nm
    total = nl + nm + ns + 30
    share0 = total // 3 + (total % 3 > 0)
    with pytest.raises(InvalidInput, match=rf"gives problem 0 {share0} tokens, below one sample \({nl} prompt"):
        solve([long, mid, short], llm, total, "uniform")
    # kills: `range(1, k0[0] + 1)` -> `k0[1]` (one problem, uniform)
    assert solve(["q"], llm, 5000, "uniform")[0].details["samples"] == 2
    # kills: min/max swapped in the refusal's prompt range
    with pytest.raises(InvalidInput, match=f"{ns}-{nl} tokens"):
        solve([long, short], llm, ns + nl + 19)
    # kills: `seed + i` -> `seed - i`: problem i runs with seed + i, as if solved alone with that seed
    shared = Scripted(["\\boxed{7}"])
    solve(["q1", "q2"], shared, 5000, seed=10)
    alone = Scripted(["\\boxed{7}"])
    vote.solve("q2", alone, seed=11)
    seeds = {("q2" in str(prompt)): p.seed for prompt, p in shared.requests}
    assert seeds[True] == alone.requests[0][1].seed and seeds[False] != seeds[True]
    # kills: `state.error = exc` dropped for a problem whose own budget cannot pay its first round
    results = solve(["q"], Scripted(["\\boxed{7}"]), 5000, budget=ttc.Budget(tokens=5))
    assert not results[0].ok and results[0].details["allocation"]["stop_reason"] == "error"
    assert "budget" in results[0].error.lower() or BudgetExhausted.__name__ in results[0].error


# -- ttc.strategies.adaptive_vote ----------------------------------------------------------------
def _stream_llm(*answers, latency=0.0005):
    from ttc.backends import Scripted

    return Scripted([f"so the answer is \\boxed{{{a}}}" for a in answers], token_latency=latency)


def test_adaptive_vote_batch_of_one():
    # kills: `batch < 1` -> `<= 1` / `< 2` (one sample per round is legal)
    strategy = AdaptiveVote(max_n=4, batch=1)
    assert strategy.batch == 1
    llm = _stream_llm("7")
    result = strategy.solve("q", llm)
    assert result.details["samples"] == 4 and [p.n for _, p in llm.requests] == [1, 1, 1, 1]


def test_adaptive_vote_stream_mode_budget():
    import asyncio

    import ttc
    from ttc.errors import BudgetExhausted

    # kills: stream mode's `if not finished: raise BudgetExhausted` dropped (no sample fits the budget)
    with pytest.raises(BudgetExhausted):
        AdaptiveVote(max_n=8, batch=2, stream=True).solve("q", _stream_llm("1"), budget=ttc.Budget(tokens=5))
    # kills: `if reason != "decided" and budget_hit: reason = "budget"` dropped or negated: a split vote whose
    # budget runs out stops with reason "budget"
    probe = AdaptiveVote(max_n=1, batch=1, stream=True).solve("q", _stream_llm("1"))
    per_sample = probe.usage.total_tokens
    budget = ttc.Budget(tokens=3 * per_sample + per_sample // 2, min_candidate_tokens=5)
    result = AdaptiveVote(max_n=16, batch=1, stream=True).solve("q", _stream_llm("1", "2"), budget=budget)
    assert result.details["stop_reason"] == "budget" and 1 <= result.details["samples"] <= 3
    assert result.usage.total_tokens <= budget.tokens

    # kills: the cancelled streams no longer awaited (`if pending: await gather(...)` dropped): none is left
    # running when the vote returns
    async def main():
        from ttc.backends import Scripted

        fast, slow = "so the answer is \\boxed{7}", "slow " * 40 + "so the answer is \\boxed{5}"
        llm = Scripted([fast, slow], token_latency=lambda text, i: 0.01 if text.startswith("slow") else 0.0005)
        result = await AdaptiveVote(max_n=8, batch=8, stream=True).arun("q", llm)
        return result, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    result, running = asyncio.run(main())
    assert result.details["cancelled"] == 4 and running == []


def test_adaptive_vote_stream_mode_keeps_at_most_batch_in_flight():
    import asyncio

    from ttc.strategies.base import Sampler
    from ttc.types import Candidate

    class Counting(Sampler):
        """Answers 1, 2, 1, 2, ... (never decided) and records how many samples run at once."""

        def __init__(self):
            self.running = self.most = self.started = 0

        async def candidate(self, problem, ctx):
            self.started += 1
            answer = str(1 + self.started % 2)
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0.001)
            self.running -= 1
            return Candidate(text=answer, answer=answer)

    # kills: `len(pending) < self.batch` -> `<=` (one stream more than batch in flight)
    sample = Counting()
    result = AdaptiveVote(max_n=10, batch=3, stream=True, sample=sample).solve("q", _stream_llm("1"))
    assert result.details["samples"] == 10 and sample.most == 3


# -- ttc.strategies.adaptive_best_of_n -----------------------------------------------------------
def test_adaptive_best_of_n_settings_and_self_eval_request():
    from ttc.backends import Scripted
    from ttc.backends.scripted import ScriptedResponse
    from ttc.strategies.adaptive_best_of_n import SELF_EVAL, AdaptiveBestOfN

    # kills: the empty-question check dropped (or its raise)
    with pytest.raises(InvalidInput, match="question"):
        AdaptiveBestOfN(question="   ")
    # kills: `0.0 <= threshold <= 1.0` -> `<` on either side (both ends are legal probabilities)
    assert AdaptiveBestOfN(threshold=0.0).threshold == 0.0
    assert AdaptiveBestOfN(threshold=1.0).threshold == 1.0
    # kills: the self-evaluation request's max_tokens=1 -> 2 and logprobs=True -> False
    llm = Scripted(lambda prompt, params, i: ScriptedResponse("No", (-0.1,)) if SELF_EVAL in prompt else "It is 7.")
    result = AdaptiveBestOfN(max_n=4).solve("q", llm)
    assert result.answer == "7" and result.details["samples"] == 1
    evals = [p for prompt, p in llm.requests if SELF_EVAL in str(prompt)]
    assert len(evals) == 1 and (evals[0].n, evals[0].max_tokens, evals[0].logprobs) == (1, 1, True)
    assert evals[0].temperature == 0.0


def test_adaptive_best_of_n_threshold_boundary_scores_and_budget():
    import ttc
    from ttc.backends import Scripted
    from ttc.backends.scripted import ScriptedResponse
    from ttc.errors import BudgetExhausted
    from ttc.strategies.adaptive_best_of_n import SELF_EVAL, AdaptiveBestOfN

    def always(word):
        return Scripted(lambda prompt, params, i: ScriptedResponse(word, (0.0,)) if SELF_EVAL in prompt
                        else "It is 7.")

    # kills: `min(scores) < threshold` -> `<=`: P(better) = 1 is not below a threshold of 1, so sampling goes on
    result = AdaptiveBestOfN(max_n=4, threshold=1.0).solve("q", always("Yes"))
    assert result.details["p_better"] == [1.0, 1.0, 1.0, 1.0] and result.details["stop"] == "max_n"
    # kills: `c.scores["p_better"] = p` dropped
    assert [c.scores["p_better"] for c in result.candidates] == [1.0] * 4
    # kills: the budget branch (`if not scores: raise`, `stop = "budget"`, `break`) dropped
    with pytest.raises(BudgetExhausted):
        AdaptiveBestOfN(max_n=4).solve("q", always("Yes"), budget=ttc.Budget(tokens=3))
    one = AdaptiveBestOfN(max_n=1).solve("q", always("Yes"))
    budget = ttc.Budget(tokens=one.usage.total_tokens + one.usage.total_tokens // 2)
    result = AdaptiveBestOfN(max_n=4).solve("q", always("Yes"), budget=budget)
    assert result.details["stop"] == "budget" and result.details["samples"] == 1
    assert result.answer == "7"


def test_shared_budget_planner_refusals_and_the_bar_over_several_waves(capsys):
    """Written from the mutation run after the wave planner moved into `WavePlanner` (each line
    names the mutants it kills)."""
    import ttc
    from ttc.backends import Scripted
    from ttc.shared_budget import WavePlanner, asolve_shared

    vote = AdaptiveVote(max_n=6, batch=2, sample=ttc.Sample(params=ttc.SamplingParams(max_tokens=10)))
    # kills: the unknown-allocation refusal dropped from the runner (checked before any prompt is
    # tokenized, so an empty problem list is refused too) or from the planner (the replay's only check)
    for problems in (["q"], []):
        with pytest.raises(ttc.InvalidInput, match="allocation must be one of uniform, adaptive, got 'even'"):
            ttc.run_sync(asolve_shared(vote, problems, Scripted(["\\boxed{7}"]),
                                       total_budget=ttc.Budget(tokens=5000), allocation="even"))
    with pytest.raises(ttc.InvalidInput, match="allocation must be one of uniform, adaptive, got 'even'"):
        WavePlanner([10], 100, "even", batch=1, max_n=4, max_tokens=10)
    # kills: the uniform refusal naming the last short problem's share (`shares[short[-1]]`): problems 1
    # and 2 are short, with shares 24 and 23
    with pytest.raises(ttc.InvalidInput, match="gives problem 1 24 tokens, below one sample"):
        WavePlanner([1, 20, 20], 71, "uniform", batch=1, max_n=4, max_tokens=10)
    # kills: `bar.update(done - bar.n)` -> `done + bar.n`: one problem ends a wave before the other,
    # and the bar ends at 2/2, not beyond
    def script(prompt, params, i):
        return "\\boxed{7}" if "settles" in prompt else f"\\boxed{{{len(prompt) + (params.seed or 0) + i}}}"

    capsys.readouterr()
    results = ttc.run_sync(asolve_shared(vote, ["settles", "splits"], Scripted(script),
                                         total_budget=ttc.Budget(tokens=5000), progress=True))
    first, second = (r.details["allocation"]["rounds"] for r in results)
    assert first < second
    err = capsys.readouterr().err
    assert "2/2" in err and "3/2" not in err and "4/2" not in err
