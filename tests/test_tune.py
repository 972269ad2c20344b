"""`ttc.tune` statistics: subsampling without replacement, the bootstrap over problems, interval
coverage on synthetic banks of known accuracy, the frontier, the best per budget, splits, and
several banks at once. Deterministic (seeded), and each fails when its part is broken."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ttc
from bank_helpers import header, problem, synthetic_bank
from ttc.bank.format import Bank, example_bank, load_bank, save_bank
from ttc.bank.replays import CORRECT, TOKENS, Best, Vote
from ttc.bank.tune import replay_bank


def test_subsamples_are_drawn_without_replacement():
    tokens = [10, 20, 30, 40]
    bank = Bank(header(4), (problem("q0", 0, ["1", "2", "3", "4"], tokens=tokens),))
    settings, out = replay_bank(bank, [Vote([1, 2, 4])], draws=300, seed=3)
    assert [s.label for s in settings] == ["sample(n=1)", "majority(n=2)", "majority(n=4)"]
    prompt = 20
    assert set(out[2, 0, :, TOKENS]) == {prompt + 100}  # all four samples, each once
    pairs = {prompt + a + b for i, a in enumerate(tokens) for b in tokens[i + 1:]}
    assert set(out[1, 0, :, TOKENS]) == pairs  # every pair of distinct samples, never one twice
    # one right answer of four distinct ones: a single sample is right a quarter of the time
    assert abs(out[0, 0, :, CORRECT].mean() - 0.25) < 0.06
    # distinct answers tie: the vote goes to the first drawn, right a quarter of the time too
    assert abs(out[2, 0, :, CORRECT].mean() - 0.25) < 0.06


def _half_right(count: int, k: int, mixed: bool) -> Bank:
    """mixed=False: half the problems always right, half always wrong; True: every problem right
    in half its samples. A single sample is right half the time either way."""
    problems = []
    for i in range(count):
        if mixed:
            answers = ["1" if j % 2 == 0 else "2" for j in range(k)]
        else:
            answers = ["1" if i % 2 == 0 else "2"] * k
        problems.append(problem(f"q{i}", i, answers))
    return Bank(header(k), tuple(problems))


@pytest.mark.parametrize("mixed", [False, True])
def test_intervals_cover_problem_spread_and_sampling_noise(mixed):
    """40 problems, a single sample right with probability 1/2: the 90% interval of one run's
    accuracy is about 0.5 +- 1.645 x sqrt(0.25 / 40) = [0.37, 0.63], whether the spread is between
    problems (resampling problems must see it) or within them (one draw per resampled problem)."""
    report = ttc.tune(_half_right(40, 8, mixed), families=[Vote([1])], draws=32, replicates=2000)
    acc = report.row("sample(n=1)").accuracy
    assert acc.value == pytest.approx(0.5, abs=0.05 if mixed else 1e-9)  # mixed: the mean of 1280 draws
    assert 0.33 < acc.low < 0.42 and 0.58 < acc.high < 0.67


def test_marginal_intervals_cover_the_true_accuracy():
    """Banks drawn from a known world (p_i ~ Beta(2, 2): a single sample is right with probability
    0.5 over the population): the 90% interval holds 0.5 in about 90% of them."""
    rng = np.random.default_rng(11)
    hits = 0
    trials = 40
    for _ in range(trials):
        bank = synthetic_bank(rng.beta(2, 2, 50), 6, rng)
        acc = ttc.tune(bank, families=[Vote([1])], draws=4, replicates=300, seed=int(rng.integers(1000))
                       ).row("sample(n=1)").accuracy
        hits += acc.low <= 0.5 <= acc.high
    assert 0.8 <= hits / trials <= 0.98


def test_corrected_interval_covers_the_picked_setting():
    """Eight settings of equal true accuracy 0.5 (best-of-n by a score unrelated to correctness):
    the best-looking one overstates it (winner's curse); the interval corrected for picking holds
    0.5 in at least ~90% of banks; it is wider than the picked setting's plain interval."""
    rng = np.random.default_rng(5)
    corrected = 0
    trials = 30
    for _ in range(trials):
        bank = synthetic_bank(rng.beta(2, 2, 40), 8, rng)
        report = ttc.tune(bank, families=[Vote([1]), Best(range(2, 9))], draws=4, replicates=300,
                          seed=int(rng.integers(1000)))
        best = report.best().row
        corrected += best.accuracy_corrected[0] <= 0.5 <= best.accuracy_corrected[1]
        assert report.simultaneous_factor > 1.645  # wider than one setting's 90% normal interval
        assert best.accuracy_corrected[1] - best.accuracy_corrected[0] > best.accuracy.high - best.accuracy.low
    assert corrected / trials >= 0.85


def test_split_fits_on_one_part_and_predicts_the_other():
    # problems 0..19 always right, 20..39 always wrong: what a split sees depends on which it holds
    problems = [problem(f"q{i}", i, ["1" if i < 20 else "2"] * 4) for i in range(40)]
    report = ttc.tune(Bank(header(4), tuple(problems)), families=[Vote([1, 2])], split=0.5, split_seed=4,
                      draws=2, replicates=200)
    fit, held = report.fit_ids, report.held_out_ids
    assert len(fit) == len(held) == 20 and not set(fit) & set(held)
    right = {f"q{i}" for i in range(20)}
    row = report.row("sample(n=1)")
    assert row.accuracy.value == pytest.approx(len(right & set(fit)) / 20)
    assert row.held_out == pytest.approx(len(right & set(held)) / 20)
    lo, hi = row.predicted
    assert lo < row.accuracy.value < hi and hi - lo > row.accuracy.high - row.accuracy.low


def test_frontier_and_best_per_budget():
    report = ttc.tune(example_bank(), draws=4, replicates=200, budgets=[150, 400])
    front = report.frontier()
    tokens = [r.tokens.value for r in front]
    accuracy = [r.accuracy.value for r in front]
    assert tokens == sorted(tokens) and accuracy == sorted(accuracy) and len(set(accuracy)) == len(accuracy)
    for r in report.rows:  # nothing off the frontier beats it at no more tokens
        assert not any(f.tokens.value >= r.tokens.value and f.accuracy.value < r.accuracy.value
                       for f in front if f.tokens.value <= r.tokens.value) or r in front
    for budget in (150, 400):
        best = report.best(budget)
        assert best.row.tokens.value <= budget
        assert best.row.accuracy.value == max(r.accuracy.value for r in report.rows if r.tokens.value <= budget)
    assert report.best(10).row is None and "no setting fits" in str(report.best(10))
    top = report.best()
    assert top.row.n == report.k and "n = K = 8" in top.warning  # on this bank more samples keep helping
    labels = {r.setting.strategy for r in report.rows}
    assert {"sample", "majority", "best_of_n", "adaptive_vote", "rpc", "deepconf", "first_finish", "route"} <= labels


def test_several_banks_are_tuned_together(tmp_path):
    rng = np.random.default_rng(2)
    p = rng.beta(2, 2, 30)
    cold = synthetic_bank(p, 4, rng, params={"temperature": 0.3, "max_tokens": 64})
    hot = synthetic_bank(p, 4, rng, params={"temperature": 1.0, "max_tokens": 64})
    save_bank(cold, tmp_path / "t03.jsonl")
    save_bank(hot, tmp_path / "t10.jsonl.gz")
    report = ttc.tune([tmp_path / "t03.jsonl", tmp_path / "t10.jsonl.gz"], families=[Vote([1, 4])], draws=2,
                      replicates=100)
    assert [r.label for r in report.rows] == ["t03:sample(n=1)", "t03:majority(n=4)", "t10:sample(n=1)",
                                             "t10:majority(n=4)"]
    other = synthetic_bank(p, 4, rng, model="another")
    save_bank(other, tmp_path / "other.jsonl")
    with pytest.raises(ttc.InvalidInput, match="differ in model"):
        ttc.tune([tmp_path / "t03.jsonl", tmp_path / "other.jsonl"], families=[Vote([1])])


def test_bank_files_are_checked_on_load(tmp_path):
    path = tmp_path / "b.jsonl"
    save_bank(synthetic_bank(np.array([0.5, 0.5]), 2, np.random.default_rng(0)), path)
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    head["params"]["temperature"] = 1.5  # edited after recording: the fingerprint no longer matches
    path.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    with pytest.raises(ttc.InvalidInput, match="fingerprint"):
        load_bank(path)
    path.write_text('{"problem_id": 1}\n')
    with pytest.raises(ttc.InvalidInput, match="not a ttc sample bank"):
        load_bank(path)
    with pytest.raises(ttc.InvalidInput, match="no bank at"):
        load_bank(tmp_path / "missing.jsonl")


def test_report_plot_and_json(tmp_path):
    pytest.importorskip("matplotlib")
    report = ttc.tune(example_bank(), draws=2, replicates=100, budgets=[300])
    ax = report.plot(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000 and ax.get_xlabel() == "tokens per problem"
    report.save_json(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["k"] == 8 and saved["best"]["300"] == report.best(300).row.label
