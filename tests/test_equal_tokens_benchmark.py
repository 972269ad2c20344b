"""benchmarks/equal_tokens.py's offline half: the bank check, the replayed MajorityVote curve, the
equal-token match and the resumable per-problem file (the live half needs a vLLM server and hours)."""

import argparse
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ttc.bank.format import Bank, example_bank, fingerprint, load_bank, save_bank
from ttc.demo import demo_problems

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "equal_tokens.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("equal_tokens_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _rewritten(tmp_path, **changes) -> str:
    """The example bank with header fields changed (fingerprint recomputed, as a real recording has)."""
    bank = load_bank(example_bank())
    header = dict(bank.header) | changes
    header["fingerprint"] = fingerprint(header["model"], header["prompt"], header["params"], header["answer_rules"])
    path = tmp_path / "bank.jsonl"
    save_bank(Bank(header, bank.problems), path)
    return str(path)


def test_the_bank_check_takes_a_bank_of_the_demo_prompt_and_sampling(bench):
    problems = demo_problems(12)
    bank = bench.checked_bank(example_bank(), problems, "SmolLM2-135M-Instruct")
    assert [p.problem_id for p in bank.problems] == [p.id for p in problems]
    part = bench.checked_bank(example_bank(), problems[:5], None)
    assert [p.problem_id for p in part.problems] == [p.id for p in problems[:5]]


def test_the_bank_check_refuses_other_sampling_prompt_model_or_missing_problems(bench, tmp_path):
    bank = load_bank(example_bank())
    hotter = _rewritten(tmp_path, params=dict(bank.header["params"]) | {"temperature": 1.0})
    with pytest.raises(SystemExit, match="temperature"):
        bench.checked_bank(hotter, demo_problems(12), None)
    other_prompt = _rewritten(tmp_path, prompt="ChatPrompt(instruction='{question}', system=None)")
    with pytest.raises(SystemExit, match="prompt"):
        bench.checked_bank(other_prompt, demo_problems(12), None)
    with pytest.raises(SystemExit, match="the server serves .another-model."):
        bench.checked_bank(example_bank(), demo_problems(12), "another-model")
    with pytest.raises(SystemExit, match="1 of the first 13"):
        bench.checked_bank(example_bank(), demo_problems(13), None)


def test_the_majority_curve_is_the_real_vote_over_the_first_n_samples(bench):
    bank = load_bank(example_bank())
    curve = bench.majority_curve(bank)
    assert [row["n"] for row in curve] == list(range(1, bank.k + 1))
    for row in curve:
        n = row["n"]
        expected = sum(p.prompt_tokens + sum(s.tokens for s in p.samples[:n]) for p in bank.problems)
        assert row["tokens_per_problem"] == pytest.approx(expected / len(bank.problems))
        assert row["requests"] == 1 and row["failed"] == 0
    single = sum(bool(p.samples[0].correct) for p in bank.problems)
    assert curve[0]["correct"] == single


def test_matched_is_the_nearest_vote_with_its_neighbours(bench):
    curve = [{"n": n, "tokens_per_problem": 100.0 * n} for n in range(1, 5)]
    m = bench.matched(curve, 260.0)
    assert m["nearest"]["n"] == 3 and m["below"]["n"] == 2 and m["above"]["n"] == 3
    assert not m["within_10_percent"]  # 300 is 15 % over 260
    assert bench.matched(curve, 290.0)["within_10_percent"]
    beyond = bench.matched(curve, 1000.0)
    assert beyond["above"] is None and beyond["nearest"]["n"] == 4 and "under 1000" in beyond["note"]


def test_the_per_problem_file_keeps_each_problems_last_record_and_skips_a_cut_line(bench, tmp_path):
    path = tmp_path / "s.jsonl"
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    lines = [{"id": "add-0", "ok": False, "answer": None, "error": "boom", "usage": usage},
             {"id": "add-0", "ok": True, "answer": "8", "error": None, "usage": usage},
             {"run": "x", "problems": 1}]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines) + '{"id": "add-1", "ok"')
    done, runs = bench.load_done(str(path))
    assert set(done) == {"add-0"} and done["add-0"]["ok"] and runs == [{"run": "x", "problems": 1}]
    result = bench._result(demo_problems(1)[0], done["add-0"])
    assert result.is_correct() and result.usage.total_tokens == 15


def test_every_setting_builds_with_the_demo_prompt_and_sampling(bench):
    from ttc.demo import DEMO_PROMPT

    for name, setting in bench.SETTINGS.items():
        strategy = setting.build()
        inner = strategy
        while getattr(inner, "sample", None) is not None:
            inner = inner.sample
        assert inner.prompt == DEMO_PROMPT, name
        assert replace(inner.params, max_tokens=96, n=1) == bench.SAMPLING.replace(n=1), name


def test_a_file_of_other_settings_is_refused_not_mixed(bench, tmp_path):
    path = tmp_path / "genselect.jsonl"
    record = {"id": "add-0", "setting": "GenSelect(n=8)", "ok": True, "answer": "8", "error": None,
              "usage": {"prompt_tokens": 10}, "wall_seconds": 1.0}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(SystemExit, match="GenSelect\\(n=8\\)"):
        bench.strategy_row("genselect", demo_problems(1), str(path))
    path.write_text(json.dumps(record | {"setting": bench.SETTINGS["genselect"].label}) + "\n")
    row = bench.strategy_row("genselect", demo_problems(1), str(path))
    assert row["problems"] == 1 and row["correct"] == 1 and row["server_per_problem"] is None


def test_the_json_keeps_no_machine_path_of_the_arguments(bench):
    args = argparse.Namespace(strategies=["all"], url="http://10.0.0.1:8000/v1", bank="runs/demo200x32.jsonl",
                              out_dir="runs/eq200/", markdown="runs/t.md", json=None, problems=200)
    assert bench.recorded_args(args) == {"strategies": ["all"], "url": None, "bank": "demo200x32.jsonl",
                                         "out_dir": "eq200", "markdown": "t.md", "json": None, "problems": 200}


def test_a_run_beside_another_client_is_not_counted_as_alone(bench):
    # the two Solve-Detect-Verify runs of 7 December: the first alone on the server (576 requests
    # for its 569), the second beside another strategy's lane (2,338 for its 1,118)
    alone = {"server": {"requests": 576.0, "prompt_tokens": 91698.0, "generation_tokens": 27214.0},
             "own": {"tokens": 118838, "completion_tokens": 3352, "verifier_tokens": 94472, "requests": 569}}
    shared = {"server": {"requests": 2338.0, "prompt_tokens": 348965.0, "generation_tokens": 118182.0},
              "own": {"tokens": 233924, "completion_tokens": 6319, "verifier_tokens": 186352, "requests": 1118}}
    assert bench.ran_alone(alone)
    assert not bench.ran_alone(shared)
    louder = {"server": dict(alone["server"], generation_tokens=1.1 * (3352 + 94472)), "own": alone["own"]}
    assert not bench.ran_alone(louder)
