"""Probe math: confidences, conformal calibration (statistical, fixed seed), logistic probe, training."""

import asyncio
import math

import numpy as np
import pytest

import ttc
from test_early_exit import HiddenScripted
from ttc.probes import (
    Decision,
    LinearProbe,
    calibrate_threshold,
    conformal_threshold,
    find_cues,
    fit_logistic,
    group_confidences,
    premature_exit_rate,
    token_confidences,
)
from ttc.probes.base import read_answer
from ttc.probes.training import ForcedExits, calibrate_probe, collect_forced_exits, train_probe


def test_token_confidence_is_minus_mean_topk_logprob_else_the_logprob():
    top = [{1: -0.1, 2: -3.0}, {1: -1.0, 3: -1.0}]
    assert token_confidences([-0.1, -1.0], top).tolist() == pytest.approx([1.55, 1.0])
    assert token_confidences([-0.1, -1.0], None).tolist() == pytest.approx([-0.1, -1.0])
    assert token_confidences([-0.1, -1.0], top, mode="logprob").tolist() == pytest.approx([-0.1, -1.0])
    with pytest.raises(ttc.InvalidInput, match="logprobs"):
        token_confidences(None, None)


def test_group_confidences_are_sliding_window_means():
    conf = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert group_confidences(conf, 2).tolist() == pytest.approx([1.5, 2.5, 3.5, 7.0])
    assert group_confidences(conf, 10).tolist() == pytest.approx([4.0])
    assert len(group_confidences(np.array([]), 3)) == 0


def test_deepconf_threshold_keeps_the_top_fraction_of_warmup_traces():
    scores = list(range(1, 11))
    assert calibrate_threshold(scores, keep=0.9) == pytest.approx(1.9)  # DeepConf-high: keep 90%
    assert calibrate_threshold(scores, keep=0.1) == pytest.approx(9.1)  # DeepConf-low: keep the top 10%
    kept = [s for s in scores if s >= calibrate_threshold(scores, keep=0.5)]
    assert len(kept) >= 5
    with pytest.raises(ttc.InvalidInput):
        calibrate_threshold(scores, keep=0)


def test_conformal_threshold_hits_the_target_premature_exit_rate():
    """Split conformal: P(new negative score > tau) <= alpha, and close to it (within 1/(n+1))."""
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.1, 0.2):
        rates = []
        for _ in range(300):
            cal = rng.beta(2, 5, size=200)       # scores of wrong exits on the calibration split
            test = rng.beta(2, 5, size=2000)     # fresh wrong exits
            tau = conformal_threshold(cal, alpha)
            rates.append(np.mean(test > tau))
        mean = float(np.mean(rates))
        # expected rate is in [alpha - 1/(n+1), alpha]; 300 trials make the mean's sd ~0.001
        assert alpha - 1 / 201 - 0.005 <= mean <= alpha + 0.005, (alpha, mean)


def test_a_naive_quantile_would_not_be_valid_but_conformal_is_at_small_n():
    # with n=9 calibration scores and alpha=0.1, conformal picks the max (rank ceil(10*0.9)=9)
    assert conformal_threshold(np.arange(9) / 10, 0.1) == pytest.approx(0.8)
    # too few calibration points for alpha: never exit
    assert conformal_threshold(np.arange(5) / 10, 0.1) == math.inf
    with pytest.raises(ttc.InvalidInput, match="alpha"):
        conformal_threshold([0.1], 1.5)


def synthetic_exits(n_problems=300, per=5, dim=6, seed=0):
    """Hidden states whose first two coordinates carry the chance that exiting is right."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_problems * per, dim))
    logit = 2.5 * X[:, 0] - 1.5 * X[:, 1]
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    groups = np.repeat(np.arange(n_problems), per)
    return ForcedExits(X, y, groups, np.tile(np.arange(per), n_problems), [None] * len(y),
                       {"cues": ["wait"], "suffix": "\nThe final answer is", "model": "synthetic"})


def test_logistic_regression_recovers_the_direction():
    data = synthetic_exits()
    w, b, mean, scale = fit_logistic(data.features, data.labels)
    direction = w / scale
    assert direction[0] > 1.5 and direction[1] < -0.8
    assert np.all(np.abs(direction[2:]) < 0.4)
    probe = LinearProbe(w, b, mean, scale)
    acc = np.mean((probe.predict_proba(data.features) > 0.5) == data.labels)
    assert acc > 0.75


def test_train_probe_controls_premature_exits_on_held_out_problems(tmp_path):
    data = synthetic_exits(seed=1)
    probe, report = train_probe(data, alpha=0.1, calibration_fraction=0.5, seed=0)
    assert report["calibration_premature_exit_rate"] <= 0.1
    assert report["calibration_right_exit_rate"] > 0.2   # the probe still exits on a good share of right exits
    held_out = synthetic_exits(seed=2)
    rate = premature_exit_rate(probe.predict_proba(held_out.features), held_out.labels, probe.threshold)
    assert 0.05 <= rate <= 0.15
    # save / load round trip, then recalibrate for another alpha
    path = probe.save(tmp_path / "probe.npz")
    loaded = LinearProbe.load(path)
    assert loaded.threshold == pytest.approx(probe.threshold, rel=1e-5)
    assert loaded.cues == ("wait",) and loaded.alpha == 0.1
    np.testing.assert_allclose(loaded.predict_proba(held_out.features[:5]), probe.predict_proba(held_out.features[:5]),
                               rtol=1e-4)
    stricter, rep = calibrate_probe(loaded, held_out, alpha=0.02)
    assert stricter.threshold > loaded.threshold
    assert rep["calibration_premature_exit_rate"] <= 0.02


def test_forced_exit_data_round_trip_and_bad_files(tmp_path):
    data = synthetic_exits(n_problems=10)
    loaded = ForcedExits.load(data.save(tmp_path / "d.npz"))
    np.testing.assert_allclose(loaded.features, data.features, rtol=1e-6)
    assert loaded.labels.tolist() == data.labels.tolist() and loaded.meta == data.meta
    with pytest.raises(ttc.InvalidInput, match="no probe file"):
        LinearProbe.load(tmp_path / "missing.npz")
    with pytest.raises(ttc.InvalidInput, match="not a ttc probe"):
        LinearProbe.load(tmp_path / "d.npz")
    wrong_dim = LinearProbe(np.ones(3), 0.0, np.zeros(3), np.ones(3))
    with pytest.raises(ttc.InvalidInput, match="size 3"):
        wrong_dim.predict_proba(np.ones((1, 4)))


def test_training_needs_both_labels():
    data = synthetic_exits(n_problems=20)
    data.labels[:] = 0
    with pytest.raises(ttc.InvalidInput, match="both"):
        train_probe(data)


def test_collect_forced_exits_on_a_scripted_backend_with_hidden_states():
    trace = "a b wait c ready wait d wait e \\boxed{3}"

    def script(prompt, params, i):
        if prompt.endswith("The final answer is"):
            return " 3" if "ready" in prompt else " 1"
        return trace

    llm = HiddenScripted(script)
    problems = [ttc.Problem("q1", answer="3"), ttc.Problem("q2", answer="3")]
    data = asyncio.run(collect_forced_exits(llm, problems, cues=("wait",), suffix="\nThe final answer is"))
    # three cues per trace; the exit before the first cue is wrong ("1"), the later ones see "ready"
    assert data.labels.tolist() == [0, 1, 1, 0, 1, 1]
    assert data.groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.features[:, 0].tolist() == [0.0, 1.0, 1.0] * 2
    assert data.answers[:3] == ["1", "3", "3"]
    with pytest.raises(ttc.InvalidInput, match="hidden states"):
        asyncio.run(collect_forced_exits(ttc.backends.Scripted(["x"]), problems))


def test_find_cues_matches_words_at_boundaries_and_literal_cues():
    llm = ttc.backends.Scripted(["x"])
    ids = llm._ids("Hmm , wait no awaits Wait\n\nok")
    found = find_cues(llm, ids, ("wait", "hmm"))
    assert [llm.decode([ids[i]]) for i in found] == ["Hmm", "wait", "Wait"]
    assert [llm.decode([ids[i]]) for i in find_cues(llm, ids, ("\n\n",))] == ["\n\n"]


def test_read_answer_and_decisions():
    assert read_answer("... \\boxed{", "12} so") == "12"
    assert read_answer("... \\boxed{", " ") is None
    assert read_answer("The final answer is", " 12 apples.") == "12"
    assert read_answer("The final answer is", "") is None
    assert Decision("exit").stop and not Decision().stop
    with pytest.raises(ttc.InvalidInput, match="action"):
        Decision("halt")


def test_cli_probes_train_and_calibrate(tmp_path, capsys):
    import json

    from ttc.cli import main

    data = synthetic_exits(seed=3).save(tmp_path / "exits.npz")
    assert main(["probes", "train", "--data", str(data), "--alpha", "0.1", "--out", str(tmp_path / "p.npz")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alpha"] == 0.1 and report["calibration_premature_exit_rate"] <= 0.1
    trained = LinearProbe.load(tmp_path / "p.npz")
    assert main(["probes", "calibrate", "--probe", str(tmp_path / "p.npz"), "--data", str(data),
                 "--alpha", "0.3", "--out", str(tmp_path / "p30.npz")]) == 0
    looser = LinearProbe.load(tmp_path / "p30.npz")
    assert looser.alpha == 0.3 and looser.threshold < trained.threshold
    assert main(["probes", "calibrate", "--probe", str(tmp_path / "nope.npz"), "--data", str(data),
                 "--alpha", "0.1"]) == 2
    assert "no probe file" in capsys.readouterr().err


def test_multi_token_cues_are_cut_before_their_first_token():
    # review repro: the exit prefix of "let me" kept "let " (the cut was at the cue's last token)
    from ttc.probes.hidden_state import find_cue_spans

    llm = ttc.backends.Scripted(["x"])
    ids = llm._ids("so 5 + 3 = 8 . let me check")
    ((first, last),) = find_cue_spans(llm, ids, ("let me",))
    assert llm.decode(ids[:first]) == "so 5 + 3 = 8 . "
    assert llm.decode(ids[first:last + 1]) == "let me"
    assert find_cues(llm, ids, ("let me",)) == [last]  # the hidden state is still read at the last token


def test_forced_exits_for_training_cut_before_a_multi_token_cue():
    trace = "a b let me c ready let me d \\boxed{3}"
    suffix = "\nThe final answer is"

    def script(prompt, params, i):
        if prompt.endswith(suffix):  # a prefix that still holds part of the cue answers wrongly
            return " 9" if prompt[: -len(suffix)].rstrip().endswith("let") else " 3"
        return trace

    llm = HiddenScripted(script)
    data = asyncio.run(collect_forced_exits(llm, [ttc.Problem("q1", answer="3")], cues=("let me",), suffix=suffix))
    assert data.answers == ["3", "3"] and data.labels.tolist() == [1, 1]
    probe_prompts = [p for p, _ in llm.requests if p.endswith(suffix)]
    assert len(probe_prompts) == 2 and all(not p[: -len(suffix)].endswith("let ") for p in probe_prompts)
