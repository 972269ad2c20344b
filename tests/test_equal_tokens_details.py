"""benchmarks/equal_tokens_details.py: the per-strategy statistics docs/strategies/equal_tokens.md quotes,
from per-problem records shaped as benchmarks/equal_tokens.py writes them (trimmed real ones)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ttc.bank.format import example_bank, load_bank

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "equal_tokens_details.py"
GOLD = {"add-0": "4", "add-1": "7", "add-2": "10"}


@pytest.fixture(scope="module")
def details():
    spec = importlib.util.spec_from_file_location("equal_tokens_details", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _usage(prompt: int, completion: int, verifier: int = 0) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "generator_calls": 2, "verifier_calls": 0,
            "verifier_tokens": verifier, "wall_seconds": 1.0, "total_tokens": prompt + completion}


def _record(pid: str, answer, details, *, correct=False, usage=None, ok=True) -> dict:
    return {"id": pid, "setting": "S", "ok": ok, "answer": answer, "correct": correct,
            "error": None if ok else "boom", "usage": usage or _usage(100, 50), "wall_seconds": 1.0,
            "details": details}


def _select(parsed: bool) -> dict:
    return {"aggregations": [{"kind": "select", "round": 0, "inputs": [0, 1, 2, 3], "outputs": [],
                              "chosen": [0], "parsed": parsed, "text": "...", "prompt_tokens": 234}],
            "outputs": [0], "chosen": 0, "fallback": None if parsed else "unparsed"}


def test_only_the_first_runs_records_and_the_last_record_of_each_problem(details, tmp_path):
    path = tmp_path / "genselect.jsonl"
    lines = [_record("add-0", "4", _select(True), correct=True), _record("add-1", None, None, ok=False),
             {"run": "S", "problems": 2}, _record("add-1", "7", _select(False), correct=True),
             _record("add-2", "3", _select(False)), {"run": "S", "problems": 2}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n{\"id\": \"add-9\", \"cut")
    first = details.load_records(str(path), runs=1)
    assert [(r["id"], r["ok"]) for r in first] == [("add-0", True), ("add-1", False)]
    every = details.load_records(str(path))
    assert [(r["id"], r["ok"]) for r in every] == [("add-0", True), ("add-1", True), ("add-2", True)]
    d = details.strategy_details("genselect", first, GOLD)
    assert (d["problems"], d["correct"], d["failed"], d["selects"], d["parsed"]) == (2, 1, 1, 1, 1)
    d = details.strategy_details("genselect", every, GOLD)
    assert (d["correct"], d["failed"], d["selects"], d["parsed"], d["fallbacks"]) == (2, 0, 3, 1, {"unparsed": 2})
    assert d["right_by_fallback"] == {"none": 1, "unparsed": 1}


def test_fuse_rsa_sdv_and_particle_statistics(details):
    fused = {"aggregations": [{"kind": "fuse", "round": 0, "inputs": [0, 1, 2], "outputs": [4], "chosen": [],
                               "parsed": True, "text": None, "prompt_tokens": 227}],
             "outputs": [4], "chosen": 4, "fallback": None}
    fuse = [_record("add-0", "4", fused, correct=True), _record("add-1", "2", fused | {"fallback": "no_answer"})]
    d = details.strategy_details("fuse", fuse, GOLD)
    assert (d["fallbacks"], d["right_by_fallback"]) == ({"no_answer": 1}, {"none": 1})

    def rsa(votes):
        return {"aggregations": [], "outputs": [4, 5, 6, 7], "chosen": None, "votes": votes, "fallback": None}
    rows = [_record("add-0", "4", rsa({"4": 1.0, "5": 2.0})), _record("add-1", None, rsa({})),
            _record("add-2", "10", rsa({"10.0": 1.0}))]
    d = details.strategy_details("rsa", rows, GOLD)
    assert (d["population"], d["readable"], d["readable_right"], d["no_answer"]) == (4, 4.0, 2.0, 1)
    assert d["readable_per_problem"] == pytest.approx(4 / 3)

    def sdv(valid, stopped):
        verification = {"valid": valid, "checks": [], "escalated": True}
        return {"rounds": [{"round": 0, "detections": [], "verification": verification}], "stopped_by": stopped,
                "detections": 0, "verifications": 1, "escalations": 1}
    rows = [_record("add-0", "4", sdv(None, "unsure"), usage=_usage(100, 50, 1400)),
            _record("add-1", "7", sdv(True, "verified"), usage=_usage(100, 30, 600))]
    d = details.strategy_details("sdv", rows, GOLD)
    assert d["stopped_by"] == {"unsure": 1, "verified": 1}
    assert d["final_verdicts"] == {"unsure": 1, "valid": 1}
    assert (d["verifier_tokens"], d["completion_tokens"]) == (1000, 40)

    rows = [_record("add-0", None, {"chosen": 0}), _record("add-1", "7", {"chosen": 1}, correct=True)]
    d = details.strategy_details("particle_gibbs", rows, GOLD)
    assert (d["no_answer"], d["correct"]) == (1, 1)
    with pytest.raises(SystemExit, match="unknown strategy"):
        details.strategy_details("beam", rows, GOLD)


def test_one_sample_accuracy_is_the_first_recorded_samples(details):
    bank = load_bank(example_bank())
    ids = [p.problem_id for p in bank.problems][:6]
    first_right = [p.samples[0].correct for p in bank.problems[:6]]
    assert details.one_sample_accuracy(example_bank(), ids) == pytest.approx(sum(map(bool, first_right)) / 6)
    with pytest.raises(SystemExit, match="lacks 1 of the problems"):
        details.one_sample_accuracy(example_bank(), [*ids, "add-999"])
