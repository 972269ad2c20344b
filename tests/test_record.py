"""`ttc record`: a bank is written once per problem, resumes after a kill exactly where an
uninterrupted recording would be, and refuses to mix settings."""

from __future__ import annotations

import json

import pytest

import ttc
from ttc.backends import Scripted
from ttc.bank.format import load_bank
from ttc.bank.record import arecord
from ttc.demo import demo_problems
from ttc.runner import run_sync
from ttc.types import SamplingParams

PARAMS = SamplingParams(temperature=0.7, max_tokens=32)


def _script(prompt: str, params: SamplingParams, i: int) -> str:
    """Deterministic in (question, seed, sample index), like a seeded server."""
    number = (len(prompt) + (params.seed or 0) + i) % 5 + 10
    return f"So the total is {number}. The answer is {number}."


class Stop(Exception):
    pass


def _record(path, problems, **kw):
    backend = Scripted(_script, latency=0.01)  # each request yields to the event loop, as a server's does
    return run_sync(arecord(problems, backend, path, k=4, params=PARAMS, progress=False, **kw))


def test_a_killed_recording_resumes_to_the_uninterrupted_bank(tmp_path):
    problems = demo_problems(6)
    whole = tmp_path / "whole.jsonl"
    assert _record(whole, problems) == 6

    part = tmp_path / "part.jsonl"
    seen = []

    def kill_after_two(problem):
        seen.append(problem.problem_id)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        _record(part, problems, on_problem=kill_after_two, concurrency=1)
    with open(part, "a") as f:
        f.write('{"problem_id": "add-5", "index": 5, "samp')  # a line cut short by the kill
    assert len(load_bank(part).problems) == 2
    assert _record(part, problems) == 4  # only the missing ones
    a, b = load_bank(whole), load_bank(part)
    assert [p.problem_id for p in a.problems] == [p.problem_id for p in b.problems]
    assert [[s.text for s in p.samples] for p in a.problems] == [[s.text for s in p.samples] for p in b.problems]
    assert _record(part, problems) == 0


def test_bank_lines_hold_what_tune_needs(tmp_path):
    path = tmp_path / "b.jsonl.gz"
    _record(path, demo_problems(3))
    bank = load_bank(path)
    head = bank.header
    assert head["format"] == "ttc-bank" and head["version"] == 1 and head["samples_per_problem"] == 4
    assert head["model"] == "scripted" and head["params"]["temperature"] == 0.7 and "Give the final" in head["prompt"]
    sample = bank.problems[0].samples[0]
    assert sample.answer is not None and sample.tokens > 0 and len(sample.logprobs) == sample.tokens
    assert sample.finish_reason == "stop" and sample.group is not None and sample.latency_s is not None
    assert isinstance(sample.correct, bool)
    groups = [s.group for s in bank.problems[0].samples]
    answers = [s.answer for s in bank.problems[0].samples]
    assert all(answers[g] == a for g, a in zip(groups, answers, strict=True))  # a group names its first member


def test_resuming_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "b.jsonl"
    _record(path, demo_problems(2))
    with pytest.raises(ttc.InvalidInput, match="recorded with other settings"):
        run_sync(arecord(demo_problems(2), Scripted(_script), path, k=4, params=PARAMS.replace(temperature=1.0),
                         progress=False))
    with pytest.raises(ttc.InvalidInput, match="recorded with other settings"):
        run_sync(arecord(demo_problems(2), Scripted(_script), path, k=8, params=PARAMS, progress=False))
    first = json.loads(path.read_text().splitlines()[0])
    assert first["samples_per_problem"] == 4


def test_record_and_tune_from_the_command_line(tmp_path, capsys):
    from ttc.bank.format import example_bank
    from ttc.cli import main

    out = tmp_path / "r.json"
    assert main(["tune", example_bank(), "--budget", "200,400", "--split", "0.5", "--draws", "2",
                 "--replicates", "100", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr()
    assert "Pareto frontier" in text.out and "budget 200 tokens:" in text.out and "held-out check" in text.out
    assert "not replayable" in text.err and "beam" in text.err
    assert json.loads(out.read_text())["held_out_problems"] == 6
    assert main(["tune", str(tmp_path / "missing.jsonl")]) == 2
    assert "no bank at" in capsys.readouterr().err


def test_joined_banks_equal_one_recording_of_all_their_samples(tmp_path, capsys):
    """K = 4 with seed 0 joined to K = 2 with seed 4 is the K = 6 recording with seed 0: the scripted
    server, like vLLM, samples request seed S with n = K as seeds S ... S + K - 1."""
    from ttc.cli import main

    problems = demo_problems(5)
    _record(tmp_path / "a.jsonl", problems)
    run_sync(arecord(problems, Scripted(_script), tmp_path / "b.jsonl", k=2, params=PARAMS, seed=4, progress=False))
    run_sync(arecord(problems, Scripted(_script), tmp_path / "whole.jsonl", k=6, params=PARAMS, progress=False))
    assert main(["join", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--output",
                 str(tmp_path / "ab.jsonl.gz")]) == 0
    assert "5 problems x 6 samples" in capsys.readouterr().err
    joined, whole = load_bank(tmp_path / "ab.jsonl.gz"), load_bank(tmp_path / "whole.jsonl")
    assert joined.k == 6 and joined.header["joined"] == [{"seed": 0, "samples_per_problem": 4},
                                                          {"seed": 4, "samples_per_problem": 2}]
    assert joined.header["fingerprint"] == whole.header["fingerprint"]
    for p, q in zip(joined.problems, whole.problems, strict=True):
        assert p.problem_id == q.problem_id and p.prompt_tokens == q.prompt_tokens
        assert [(s.text, s.answer, s.group, s.correct) for s in p.samples] == \
            [(s.text, s.answer, s.group, s.correct) for s in q.samples]
    a = load_bank(tmp_path / "a.jsonl")
    assert joined.problems[0].latency_s == pytest.approx(a.problems[0].latency_s
                                                         + load_bank(tmp_path / "b.jsonl").problems[0].latency_s)


def test_joining_refuses_overlapping_seeds_other_settings_and_other_problems(tmp_path):
    from ttc.bank.format import join_banks

    problems = demo_problems(3)
    _record(tmp_path / "a.jsonl", problems)
    for name, kw in {"overlap": {"seed": 3}, "hot": {"params": PARAMS.replace(temperature=1.0), "seed": 4},
                     "fewer": {"seed": 4}, "ok": {"seed": 4}}.items():
        run_sync(arecord(problems[:2] if name == "fewer" else problems, Scripted(_script), tmp_path / f"{name}.jsonl",
                         k=2, params=kw.get("params", PARAMS), seed=kw["seed"], progress=False))
    a = load_bank(tmp_path / "a.jsonl")
    with pytest.raises(ttc.InvalidInput, match=r"seed ranges \[0, 4\) and \[3, 5\) overlap.*--seed 5 or more"):
        join_banks([a, load_bank(tmp_path / "overlap.jsonl")])
    with pytest.raises(ttc.InvalidInput, match="differ in fingerprint"):
        join_banks([a, load_bank(tmp_path / "hot.jsonl")])
    with pytest.raises(ttc.InvalidInput, match="hold different problems"):
        join_banks([a, load_bank(tmp_path / "fewer.jsonl")])
    with pytest.raises(ttc.InvalidInput, match="at least two"):
        join_banks([a])
    twice = join_banks([a, load_bank(tmp_path / "ok.jsonl")])
    with pytest.raises(ttc.InvalidInput, match=r"\[4, 6\) and \[4, 6\) overlap"):  # a joined bank keeps its parts
        join_banks([twice, load_bank(tmp_path / "ok.jsonl")])


def test_cut_bank_is_the_smaller_recording(tmp_path):
    """The first 2 problems with their first 3 samples are what recording 2 problems at K = 3 gives
    (answer groups recomputed over the 3)."""
    from ttc.bank.format import cut_bank

    problems = demo_problems(4)
    _record(tmp_path / "k4.jsonl", problems)
    run_sync(arecord(problems[:2], Scripted(_script), tmp_path / "k3.jsonl", k=3, params=PARAMS, progress=False))
    cut, small = cut_bank(load_bank(tmp_path / "k4.jsonl"), problems=2, k=3), load_bank(tmp_path / "k3.jsonl")
    assert cut.k == 3 and [p.problem_id for p in cut.problems] == [p.problem_id for p in small.problems]
    for p, q in zip(cut.problems, small.problems, strict=True):
        assert [(s.text, s.group) for s in p.samples] == [(s.text, s.group) for s in q.samples]
    assert len(cut_bank(load_bank(tmp_path / "k4.jsonl")).problems) == 4
    assert [len(p.samples) for p in cut_bank(load_bank(tmp_path / "k4.jsonl"), k=1).problems] == [1] * 4
    for k in (0, 5):
        with pytest.raises(ttc.InvalidInput, match=r"k must be in \[1, 4\]"):
            cut_bank(load_bank(tmp_path / "k4.jsonl"), k=k)


def test_joining_takes_the_banks_in_the_order_given(tmp_path):
    """Adjacent seed ranges join in either order; the joined header is the first bank's; a header
    without a seed counts as seed 0."""
    from ttc.bank.format import Bank, join_banks

    problems = demo_problems(3)
    _record(tmp_path / "a.jsonl", problems)
    run_sync(arecord(problems, Scripted(_script), tmp_path / "b.jsonl", k=2, params=PARAMS, seed=4, progress=False))
    a, b = load_bank(tmp_path / "a.jsonl"), load_bank(tmp_path / "b.jsonl")
    ba = join_banks([b, a])
    assert ba.header["seed"] == 4 and ba.header["joined"] == [{"seed": 4, "samples_per_problem": 2},
                                                               {"seed": 0, "samples_per_problem": 4}]
    assert [s.text for s in ba.problems[0].samples] == [s.text for s in (*b.problems[0].samples,
                                                                         *a.problems[0].samples)]
    unseeded = Bank({k: v for k, v in a.header.items() if k != "seed"}, a.problems)
    assert join_banks([unseeded, b]).k == 6
    with pytest.raises(ttc.InvalidInput, match=r"\[0, 4\) and \[2, 4\) overlap"):
        join_banks([unseeded, Bank({**b.header, "seed": 2}, b.problems)])
