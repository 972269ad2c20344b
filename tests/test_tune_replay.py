"""Replay is exact: the fast replays of `ttc tune` give what the real strategy classes give on a
backend (`BankReplay`) that serves the bank's samples in the same order."""

from __future__ import annotations

import numpy as np
import pytest

import ttc
from ttc.backends.bank_replay import BankReplay
from ttc.bank.arrays import problem_arrays
from ttc.bank.format import example_bank, load_bank
from ttc.bank.replays import CORRECT, GROUP, REQUESTS, TOKENS, Adaptive, Best, Rpc, Vote
from ttc.runner import asolve_many, run_sync
from ttc.stopping import BetaStop, WindowStop
from ttc.strategies.registry import REPLAY, STRATEGIES, replayability
from ttc.types import SamplingParams
from ttc.verifiers import LogprobConfidence

PARAMS = SamplingParams(temperature=0.7, max_tokens=96, logprobs=True)


@pytest.fixture(scope="module")
def bank():
    return load_bank(example_bank())


def _orders(bank, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p.problem_id: rng.permutation(bank.k) for p in bank.problems}


def _real(strategy, bank, order):
    backend = BankReplay(bank, order={pid: list(o) for pid, o in order.items()})
    return run_sync(asolve_many(strategy, backend.problems(), backend, progress=False, seed=0))


def _check(family, strategies, bank, seeds=(0, 1, 2)):
    """Every setting of `family` equals the real strategy: same answer group, correctness, tokens
    and requests, on every problem and ordering."""
    checked = 0
    for seed in seeds:
        order = _orders(bank, seed)
        arrays = {p.problem_id: problem_arrays(p) for p in bank.problems}
        for row, strategy in enumerate(strategies):
            for result in _real(strategy, bank, order):
                p = arrays[result.problem.id]
                replay = family.run(p, order[result.problem.id])[row]
                g = int(replay[GROUP])
                assert (p.rep[g] if g >= 0 else None) == (
                    None if result.answer is None else next(p.rep[i] for i in range(p.k) if p.answers[i] is not None
                                                            and p.group[i] >= 0
                                                            and ttc.answers.equivalent(p.answers[i], result.answer))
                ), (strategy, result.problem.id)
                assert bool(replay[CORRECT]) == bool(result.is_correct())
                assert int(replay[TOKENS]) == result.usage.total_tokens
                assert int(replay[REQUESTS]) == result.usage.generator_calls
                checked += 1
    assert checked == len(seeds) * len(strategies) * len(bank.problems)


def test_majority_vote_and_sample_replays_are_exact(bank):
    ns = list(range(1, bank.k + 1))
    _check(Vote(ns), [ttc.MajorityVote(n=n, sample=ttc.Sample(params=PARAMS)) for n in ns], bank)


def test_weighted_majority_replay_is_exact(bank):
    ns = [2, 5, 8]
    verifier = LogprobConfidence("mean_logprob")
    _check(Vote(ns, weight="mean_logprob"),
           [ttc.MajorityVote(n=n, sample=ttc.Sample(params=PARAMS), verifier=verifier) for n in ns], bank)


@pytest.mark.parametrize("kind", ["mean_logprob", "self_certainty"])
def test_best_of_n_replay_is_exact(bank, kind):
    ns = [2, 3, 4, 8]
    _check(Best(ns, score=kind),
           [ttc.BestOfN(n=n, verifier=LogprobConfidence(kind), sample=ttc.Sample(params=PARAMS)) for n in ns], bank)


@pytest.mark.parametrize("rule,batch", [(BetaStop(0.95), 1), (BetaStop(0.8), 2), (BetaStop(0.99), 4),
                                        (WindowStop(2), 2), (WindowStop(4), 4), (BetaStop(0.95), 3)])
def test_adaptive_vote_replay_is_exact(bank, rule, batch):
    max_ns = [4, 8]
    _check(Adaptive(max_ns, batch, rule),
           [ttc.AdaptiveVote(max_n=n, batch=batch, stop=rule, sample=ttc.Sample(params=PARAMS)) for n in max_ns], bank)


def test_rpc_replay_is_exact(bank):
    ns = [2, 4, 8]
    _check(Rpc(ns, prune="none"), [ttc.RPC(n=n, prune="none", sample=ttc.Sample(params=PARAMS)) for n in ns], bank)


def test_rpc_with_mixture_pruning_replay_is_exact(bank):
    small = bank.subset(range(4))
    _check(Rpc([8]), [ttc.RPC(n=8, sample=ttc.Sample(params=PARAMS))], small, seeds=(0,))


def test_every_registered_strategy_declares_whether_it_replays():
    assert set(REPLAY) == set(STRATEGIES) | {"shared_budget"}  # the runner's shared total, not a strategy
    for name in ("beam", "dvts", "astar", "particle", "particle_gibbs", "parallel_tempering", "early_exit",
                 "adaptive_best_of_n", "genselect", "rsa", "fuse", "archon"):
        assert not REPLAY[name].replayable and "fresh generation" in REPLAY[name].how
    for name in ("sample", "majority", "best_of_n", "adaptive_vote", "rpc"):
        assert REPLAY[name].replayable and REPLAY[name].exact
    assert replayability("deepconf-online").replayable and not replayability("deepconf").exact
    assert "truncat" in REPLAY["deepconf"].how


def test_bank_replay_refuses_more_samples_than_recorded(bank):
    backend = BankReplay(bank)
    prompt = backend.problems()[0].metadata["prompt"]
    assert len(run_sync(backend.generate(prompt, PARAMS.replace(n=6))).completions) == 6
    with pytest.raises(ttc.GenerationError, match="asked for sample 9, the bank holds 8"):
        run_sync(backend.generate(prompt, PARAMS.replace(n=3)))


def test_bank_replay_refuses_prompts_it_did_not_make(bank):
    with pytest.raises(ttc.InvalidInput, match="BankReplay.problems"):
        run_sync(BankReplay(bank).generate("What is 2 + 2?", PARAMS))
