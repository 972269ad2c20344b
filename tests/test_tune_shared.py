"""`ttc tune`'s replay of one token budget shared across problems: exact (the real
`solve_many(..., total_budget=, allocation=)` on `BankReplay` draws, bills and answers the same per
problem), the total never exceeded in any ordering, a split's parts each sharing their own total,
and intervals that cover a shared run's accuracy on synthetic banks of a known world."""

from __future__ import annotations

import numpy as np
import pytest

import ttc
from bank_helpers import header, problem, synthetic_bank
from ttc.backends.bank_replay import BankReplay
from ttc.bank.arrays import problem_arrays
from ttc.bank.format import Bank, example_bank, load_bank
from ttc.bank.replays import CORRECT, GROUP, REQUESTS, TOKENS
from ttc.bank.shared import SharedBudget, SharedVote, _decisions, allocate, default_shared, draw_of
from ttc.bank.tune import replay_bank
from ttc.runner import asolve_many, run_sync
from ttc.stopping import BetaStop, NeverStop, WindowStop
from ttc.strategies.registry import REPLAY, STRATEGIES, replayability
from ttc.types import SamplingParams

PARAMS = SamplingParams(temperature=0.7, max_tokens=96, logprobs=True)
# per-problem budgets on the example bank (prompts 60-61 tokens, max_tokens 96, samples ~48 tokens):
# one worst-case sample each (157), tight pools where rounds shrink and problems run out, and plenty
BUDGETS = [157, 200, 260, 330, 450, 2000]
VOTES = [SharedVote(), SharedVote(BetaStop(0.95), 2), SharedVote(BetaStop(0.8), 4), SharedVote(WindowStop(2), 2),
         SharedVote(BetaStop(0.99), 1), SharedVote(BetaStop(0.95), 3)]


@pytest.fixture(scope="module")
def bank():
    return load_bank(example_bank())


def _strategy(vote: SharedVote, k: int, params: SamplingParams):
    if vote.rule is None:
        return ttc.MajorityVote(n=k, sample=ttc.Sample(params=params))
    return ttc.AdaptiveVote(max_n=k, batch=vote.batch, stop=vote.rule, sample=ttc.Sample(params=params))


def _check_exact(bank, votes, budgets, allocation, orders, params=PARAMS) -> tuple[set, int]:
    """Every vote, budget and ordering: the replayed answer group, correctness, tokens and requests
    per problem equal the real shared-budget runner's on a backend serving the same orderings, and
    the samples drawn, rounds and stop reasons equal its allocation table. Returns the stop reasons
    seen and how many runs gave their problems different numbers of samples."""
    family = SharedBudget(budgets, votes, max_n=bank.k, max_tokens=params.max_tokens, allocations=[allocation])
    arrays = [problem_arrays(p) for p in bank.problems]
    reasons, varied = set(), 0
    for perms in orders:
        rows = family.run_all(arrays, perms)
        for row, setting in enumerate(family.settings):
            vote = votes[row // len(budgets)]
            budget = setting.option("budget")
            backend = BankReplay(bank, order={p.problem_id: list(o) for p, o in zip(arrays, perms, strict=True)})
            results = run_sync(asolve_many(_strategy(vote, bank.k, params), backend.problems(), backend,
                                           progress=False, total_budget=ttc.Budget(tokens=budget * len(arrays)),
                                           allocation=allocation))
            draws = [draw_of(p, perm) for p, perm in zip(arrays, perms, strict=True)]
            rule = vote.rule or NeverStop()
            decided = [_decisions(p, d, rule, bank.k)[0] for p, d in zip(arrays, draws, strict=True)]
            runs = allocate([p.prompt_tokens for p in arrays], [d.tokens for d in draws], decided,
                            total=budget * len(arrays), allocation=allocation,
                            batch=vote.batch if vote.rule else bank.k, max_n=bank.k, max_tokens=params.max_tokens)
            for j, (p, result, run) in enumerate(zip(arrays, results, runs, strict=True)):
                table = result.details["allocation"]
                assert (run.drawn, len(run.rounds), run.reason) == (table["samples"], table["rounds"],
                                                                    table["stop_reason"]), (setting.label, p.problem_id)
                replay = rows[row, j]
                g = int(replay[GROUP])
                want = None if result.answer is None else next(
                    p.rep[i] for i in range(p.k)
                    if p.group[i] >= 0 and ttc.answers.equivalent(p.answers[i], result.answer))
                assert (p.rep[g] if g >= 0 else None) == want, (setting.label, p.problem_id)
                assert bool(replay[CORRECT]) == bool(result.is_correct())
                assert int(replay[TOKENS]) == result.usage.total_tokens
                assert int(replay[REQUESTS]) == result.usage.generator_calls
                reasons.add(run.reason)
            varied += len({run.drawn for run in runs}) > 1
            assert rows[row, :, TOKENS].sum() <= budget * len(arrays)
    return reasons, varied


def _random_orders(bank, seeds):
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out.append([rng.permutation(bank.k) for _ in bank.problems])
    return out


@pytest.mark.parametrize("allocation", ["uniform", "adaptive"])
def test_shared_budget_replay_is_exact(bank, allocation):
    reasons, varied = _check_exact(bank, VOTES, BUDGETS, allocation, _random_orders(bank, (0, 1)))
    # the budgets exercise the allocation: votes decided, capped at max_n and stopped by the budget;
    # in a third of the runs or more, the problems drew different numbers of samples
    assert reasons == {"decided", "max_n", "budget"}
    assert 3 * varied >= 2 * len(VOTES) * len(BUDGETS)  # of 2 x settings runs


@pytest.mark.parametrize("allocation", ["uniform", "adaptive"])
def test_shared_esc_replay_answers_with_the_unanimous_window(allocation):
    """ESC decides on its first unanimous window and answers with it, not with the plurality of all
    samples drawn: problems where the two differ (a, b, a, c, d, d: the window says d, the plurality
    a), replayed exactly, in recorded order and shuffled, with rounds shrunk by tight budgets too."""
    k = 8
    answers = [["1", "2", "1", "3", "4", "4", "1", "5"], ["2", "3", "2", "4", "1", "1", "5", "2"],
               ["1", "1", "2", "2", "3", "3", "1", "2"], ["2", "1", "3", "1", "4", "5", "1", "1"]]
    bank = Bank(header(k), tuple(problem(f"q{i}", i, a, gold="4" if i == 0 else "1")
                                 for i, a in enumerate(answers)))
    params = SamplingParams(temperature=0.7, max_tokens=64, logprobs=True)
    identity = [[np.arange(k)] * len(answers)]
    _check_exact(bank, [SharedVote(WindowStop(2), 2), SharedVote(WindowStop(2), 4)], [90, 150, 400], allocation,
                 identity + _random_orders(bank, (0, 1, 2)), params)
    replayed = SharedBudget([400], [SharedVote(WindowStop(2), 2)], max_n=k, max_tokens=64,
                            allocations=[allocation]).run_all([problem_arrays(p) for p in bank.problems], identity[0])
    assert replayed[0, 0, CORRECT] == 1  # the window (4, 4) answers, right; the plurality (1) would be wrong


def test_adaptive_allocation_gives_saved_tokens_to_undecided_problems():
    """Half the problems unanimous, half split 3/2/2/1 over their 8 samples (every sample 60 tokens,
    prompts 20, max_tokens 64, 400 tokens a problem): all draw a first round of 4 (20 + 4 x 64 = 276
    reserved); the unanimous ones are decided (Beta 0.95), the split ones never are. Equal shares
    leave the split ones 140, one more sample; the adaptive pool gives them the tokens the decided
    ones saved, all 8, and with all 8 their majority is always right."""
    k = 8
    easy = [problem(f"e{i}", i, ["1"] * k, tokens=[60] * k) for i in range(6)]
    hard = [problem(f"h{i}", 6 + i, ["1", "2", "3", "1", "2", "1", "3", "4"], tokens=[60] * k) for i in range(6)]
    bank = Bank(header(k), tuple(easy + hard))
    family = SharedBudget([400], [SharedVote(BetaStop(0.95), 4)], max_n=k, max_tokens=64)
    settings, out = replay_bank(bank, [family], draws=20, seed=0)
    assert [s.option("allocation") for s in settings] == ["uniform", "adaptive"]
    drawn = (out[:, :, :, TOKENS] - 20 * out[:, :, :, REQUESTS]) / 60
    assert (drawn[:, :6] == 4).all()
    assert (drawn[0, 6:] == 5).all() and (drawn[1, 6:] == 8).all()
    assert (out[1, 6:, :, CORRECT] == 1).all() and out[0, 6:, :, CORRECT].mean() < 0.9
    for allocation in (0, 1):  # never over the total, in any ordering
        assert (out[allocation, :, :, TOKENS].sum(axis=0) <= 400 * 12).all()


def test_a_split_shares_one_total_per_part():
    rng = np.random.default_rng(3)
    bank = synthetic_bank(rng.beta(2, 2, 30), 8, rng)
    family = SharedBudget([120], [SharedVote()], max_n=8, max_tokens=64, allocations=["adaptive"])
    report = ttc.tune(bank, families=[family], split=0.5, split_seed=1, draws=3, replicates=100)
    outcomes = report._outcomes[0, :, :, TOKENS]
    for part in (report._fit, report._held):
        assert (outcomes[part].sum(axis=0) <= 120 * len(part)).all()
        assert (outcomes[part].sum(axis=0) > 120 * len(part) - 64 - 20).all()  # the pool is spent, bar a sample
    # shared by all 30 at once, some orderings would spend differently on either half
    _, together = replay_bank(bank, [family], draws=3, seed=0)
    assert not np.array_equal(together[0, :, :, TOKENS], report._outcomes[0, :, :, TOKENS])


def test_intervals_cover_a_shared_runs_accuracy():
    """A known world (problem i right with probability p_i ~ Beta(2, 2) per sample, four wrong
    answers, lengths 5-29, 30 problems sharing 200 tokens each under the adaptive pool): the
    truth, a fresh run's expected accuracy on fresh problems, is simulated with the real
    allocation; the replay's 90% interval from one bank holds it in about 90% of banks."""
    k, count, budget = 8, 30, 200
    vote = SharedVote(BetaStop(0.8), 2)
    family = SharedBudget([budget], [vote], max_n=k, max_tokens=64, allocations=["adaptive"])
    rng = np.random.default_rng(21)
    fresh = []
    for _ in range(150):  # one run on fresh problems each: its accuracy
        arrays = [problem_arrays(p) for p in synthetic_bank(rng.beta(2, 2, count), k, rng).problems]
        fresh.append(family.run_all(arrays, [np.arange(k)] * count)[0, :, CORRECT].mean())
    truth = float(np.mean(fresh))
    hits, trials = 0, 80
    for _ in range(trials):
        bank = synthetic_bank(rng.beta(2, 2, count), k, rng)
        report = ttc.tune(bank, families=[family], draws=4, replicates=300, seed=int(rng.integers(1000)))
        acc = report.rows[0].accuracy
        hits += acc.low <= truth <= acc.high
    assert 0.8 <= hits / trials <= 0.98


def test_tune_replays_the_shared_budget_by_default(bank):
    report = ttc.tune(bank, budgets=[300], draws=2, replicates=100)
    shared = [r for r in report.rows if r.setting.strategy == "shared_budget"]
    assert {r.setting.option("allocation") for r in shared} == {"uniform", "adaptive"}
    assert {r.setting.option("vote") for r in shared} == {"majority", "adaptive_vote"}
    assert 300 in {r.setting.option("budget") for r in shared}
    for r in shared:
        assert r.tokens.value <= r.setting.option("budget")
    assert "shared_budget(n=8,budget=300,allocation=adaptive,vote=majority)" in {r.label for r in shared}
    # below one worst-case sample per problem (61 + 96) the real runner refuses: left out
    assert default_shared(bank.k, 96, [problem_arrays(p) for p in bank.problems], [150]).budgets[0] >= 157
    assert default_shared(bank.k, None, [problem_arrays(p) for p in bank.problems]) is None


def test_budgets_the_runner_refuses_are_refused(bank):
    with pytest.raises(ttc.InvalidInput, match="needs batch >= 1"):
        SharedVote(BetaStop(0.95))
    with pytest.raises(ttc.InvalidInput, match="needs 16 samples per problem"):
        SharedBudget([300], [SharedVote()], max_n=16, max_tokens=96).run_all(
            [problem_arrays(p) for p in bank.problems], [np.arange(bank.k)] * len(bank.problems))
    with pytest.raises(ttc.InvalidInput, match="below one sample per problem"):
        allocate([10, 10], [[5] * 4] * 2, [[False] * 5] * 2, total=60, allocation="adaptive", batch=2, max_n=4,
                 max_tokens=30)
    with pytest.raises(ttc.InvalidInput, match="split uniformly gives problem 1"):
        allocate([10, 12], [[5] * 4] * 2, [[False] * 5] * 2, total=83, allocation="uniform", batch=2, max_n=4,
                 max_tokens=30)


def test_the_registry_says_the_shared_budget_replays_exactly():
    assert set(REPLAY) == set(STRATEGIES) | {"shared_budget"}
    assert replayability("shared_budget").replayable and replayability("shared_budget").exact
