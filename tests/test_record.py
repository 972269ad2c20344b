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
