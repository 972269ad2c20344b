"""The evaluation runner: JSONL records, resume after a kill, equal-budget compare, the CLI."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ttc
from eval_helpers import addition_problems, normalized, scripted, write_jsonl
from ttc.cli import main
from ttc.eval import ResultsWarning, compare, evaluate, n_for_budget, read_results
from ttc.eval.runner import ResultsFile

TESTS = Path(__file__).resolve().parent


def lines_of(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_evaluate_writes_one_record_per_problem_and_setting(tmp_path):
    out = tmp_path / "results.jsonl"
    problems = addition_problems(6)
    report = evaluate("sample,majority", problems, scripted(), n=[1, 3], output=out, progress=False)
    records = lines_of(out)
    # sample runs once (n=1); majority at n=1 and n=3
    assert sorted({r["setting"] for r in records}) == ["majority@n=1", "majority@n=3", "sample@n=1"]
    assert len(records) == 3 * 6
    assert len({(r["problem_id"], r["setting"]) for r in records}) == len(records)
    r = next(r for r in records if r["setting"] == "majority@n=3" and r["problem_id"] == "add-0")
    assert r["gold"] == "5" and r["strategy"] == "majority" and r["n"] == 3
    assert len(r["candidates"]) == 3 and all("correct" in c for c in r["candidates"])
    assert r["correct"] == ttc.answers.equivalent(r["answer"], "5")
    assert r["usage"]["generator_calls"] == 1 and r["usage"]["total_tokens"] > 0
    assert r["error"] is None and r["latency_s"] >= 0 and r["model"] == "scripted"
    # the report agrees with the records, and its files are written beside the results
    row = report["majority@n=3"]
    mine = [x for x in records if x["setting"] == "majority@n=3"]
    assert row.problems == 6 and row.correct == sum(x["correct"] for x in mine)
    for suffix in (".summary.md", ".summary.csv", ".png"):
        assert (tmp_path / f"results{suffix}").stat().st_size > 0
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_done_pairs_and_adds_only_new_settings(tmp_path):
    out = tmp_path / "r.jsonl"
    problems = addition_problems(5)
    evaluate("majority", problems, scripted(), n=[1, 2], output=out, progress=False, save_report=False)
    before = out.read_text()
    llm = scripted()
    evaluate("majority", problems, llm, n=[1, 2], output=out, progress=False, save_report=False)
    assert out.read_text() == before and llm.requests == []  # nothing re-run, nothing written
    report = evaluate("majority", problems, llm, n=[1, 2, 4], output=out, progress=False, save_report=False)
    assert out.read_text().startswith(before)
    assert len(lines_of(out)) == 15 and len(llm.requests) == 5  # only n=4 ran
    assert [row.setting for row in report.rows] == ["majority@n=1", "majority@n=2", "majority@n=4"]


def test_resumed_run_samples_with_the_seeds_of_an_uninterrupted_run(tmp_path):
    problems = addition_problems(6)
    seen = {}

    def script(prompt, params, i):
        seen.setdefault(prompt, set()).add(params.seed)
        return "The answer is \\boxed{1}."

    first_run = tmp_path / "a.jsonl"
    evaluate("sample", problems, ttc.backends.Scripted(script), output=first_run, seed=100, progress=False,
             save_report=False)
    first = {p: set(s) for p, s in seen.items()}
    # problem i runs with seed 100 + i; its request's seed is that run's first draw (the seed rule)
    request_seed = [random.Random(100 + i).getrandbits(31) for i in range(6)]
    assert sorted(s for v in first.values() for s in v) == sorted(request_seed)
    # an interrupted run that had finished problems 0, 2 and 4, resumed
    out = tmp_path / "b.jsonl"
    lines = first_run.read_text().splitlines(keepends=True)
    done = [x for x in lines if json.loads(x)["problem_id"] in ("add-0", "add-2", "add-4")]
    out.write_text("".join(done))
    seen.clear()
    evaluate("sample", problems, ttc.backends.Scripted(script), output=out, seed=100, progress=False,
             save_report=False)
    assert seen == {p: s for p, s in first.items() if s & {request_seed[i] for i in (1, 3, 5)}}  # same seeds


def test_truncated_last_line_is_dropped_and_rewritten(tmp_path):
    problems = addition_problems(4)
    whole = tmp_path / "whole.jsonl"
    evaluate("majority", problems, scripted(), n=2, output=whole, progress=False, save_report=False)
    text = whole.read_text()
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text[: len(text) - 40])  # a kill in the middle of writing the last record
    with pytest.warns(ResultsWarning, match="truncated last line"):
        evaluate("majority", problems, scripted(), n=2, output=cut, progress=False, save_report=False)
    assert sorted(map(normalized, lines_of(cut))) == sorted(map(normalized, lines_of(whole)))


def test_malformed_middle_line_of_results_is_ignored_with_its_line_number(tmp_path):
    out = tmp_path / "r.jsonl"
    good = {"problem_id": "p", "setting": "s"}
    out.write_text(json.dumps(good) + "\n{oops\n" + json.dumps(good | {"problem_id": "q"}) + "\n")
    with pytest.warns(ResultsWarning, match="line 2: malformed JSON"):
        assert [r["problem_id"] for r in read_results(out)] == ["p", "q"]


def test_a_second_writer_is_refused_while_a_run_holds_the_file(tmp_path):
    out = tmp_path / "r.jsonl"
    with ResultsFile(out):
        with pytest.raises(ttc.InvalidInput, match="being written by another ttc run"):
            evaluate("sample", addition_problems(2), scripted(), output=out, progress=False)


def test_kill_mid_run_then_rerun_gives_the_lines_of_an_uninterrupted_run(tmp_path):
    """`ttc eval` in a subprocess, SIGKILLed after some lines; the re-run completes the file exactly."""
    data = write_jsonl(tmp_path / "add.jsonl", addition_problems(30))
    runner = tmp_path / "run_eval.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import ttc.backends.factory
        from eval_helpers import scripted
        ttc.backends.factory.make_backend = lambda kind, model=None, url=None, **kw: scripted(latency=0.03)
        from ttc.cli import main
        sys.exit(main(["eval", "--dataset", {str(data)!r}, "--strategy", "majority,best_of_n", "--n", "1,4",
                       "--output", sys.argv[1], "--concurrency", "2", "--quiet"]))
    """))
    total = 30 * 4

    def run(out):
        return subprocess.run([sys.executable, str(runner), str(out)], capture_output=True, text=True, timeout=300)

    whole = tmp_path / "whole.jsonl"
    done = run(whole)
    assert done.returncode == 0, done.stderr
    assert len(lines_of(whole)) == total

    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, str(runner), str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if killed.exists() and killed.read_bytes().count(b"\n") >= 25:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = killed.read_bytes().count(b"\n")
    assert 25 <= written < total, f"the kill should land mid-run ({written} of {total} lines)"

    resumed = run(killed)
    assert resumed.returncode == 0, resumed.stderr
    final = lines_of(killed)
    assert len(final) == total
    assert len({(r["problem_id"], r["setting"]) for r in final}) == total  # no duplicates
    assert sorted(map(normalized, final)) == sorted(map(normalized, lines_of(whole)))  # nothing lost or changed
    assert "majority@n=4" in resumed.stdout  # the summary table


def test_retry_errors_reruns_failed_problems_without_duplicating_lines(tmp_path):
    out = tmp_path / "r.jsonl"
    problems = addition_problems(4)
    broken = ttc.backends.Scripted(lambda prompt, params, i: 1 / 0 if "What is 9" in prompt else "\\boxed{3}")
    evaluate("sample", problems, broken, output=out, progress=False, save_report=False)
    errors = [r for r in lines_of(out) if r["error"]]
    assert [r["problem_id"] for r in errors] == ["add-1"] and "ZeroDivisionError" in errors[0]["error"]
    evaluate("sample", problems, scripted(), output=out, progress=False, save_report=False)
    assert len(lines_of(out)) == 4 and sum(bool(r["error"]) for r in lines_of(out)) == 1  # kept
    report = evaluate("sample", problems, scripted(), output=out, progress=False, retry_errors=True,
                      save_report=False)
    records = lines_of(out)
    assert len(records) == 4 and not any(r["error"] for r in records)
    assert report.rows[0].errors == 0


def test_unknown_strategy_lists_the_known_ones(tmp_path, capsys):
    with pytest.raises(
        ttc.InvalidInput, match="unknown strategy 'beam_serch'; known: .*best_of_n, .*majority, .*sample"
    ):
        evaluate("majority,beam_serch", addition_problems(2), scripted(), output=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()  # checked before anything runs
    assert main(["eval", "--dataset", "gsm8k", "--strategy", "nope", "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "ttc: error: unknown strategy 'nope'; known: " in err  # the list grows as strategies register
    assert {"best_of_n", "majority", "sample"} <= set(err.split("known:")[1].strip().split(", "))


def test_cli_eval_and_report(tmp_path, monkeypatch, capsys):
    import ttc.backends.factory

    monkeypatch.setattr(ttc.backends.factory, "make_backend", lambda kind, model=None, url=None, **kw: scripted())
    data = write_jsonl(tmp_path / "add.jsonl", addition_problems(8))
    out = tmp_path / "res.jsonl"
    code = main(["eval", "--dataset", str(data), "--strategy", "majority", "--n", "1,2", "--limit", "5",
                 "--output", str(out), "--quiet", "--max-tokens", "64"])
    assert code == 0
    printed = capsys.readouterr()
    assert "majority@n=2" in printed.out and "95% CI" in printed.out
    assert f"plot:    {tmp_path / 'res.png'}" in printed.err
    records = lines_of(out)
    assert len(records) == 10 and records[0]["max_tokens"] == 64
    assert (tmp_path / "res.summary.md").read_text().count("| majority@n=") == 2
    assert main(["report", str(out), "--markdown"]) == 0
    assert "| majority@n=1 | 5 |" in capsys.readouterr().out


def test_compare_holds_every_problem_to_the_budget_and_fits_n_to_it(tmp_path):
    problems = addition_problems(6)
    report = compare("sample,majority,best_of_n", problems, scripted(), tokens_budget=[120, 300], max_tokens=20,
                     output=tmp_path / "c.jsonl", progress=False)
    records = lines_of(tmp_path / "c.jsonl")
    prompt = records[0]["prompt_tokens_estimate"]
    assert prompt > 0
    for r in records:
        assert r["usage"]["total_tokens"] <= r["tokens_budget"], r
        expected = n_for_budget(r["strategy"], r["tokens_budget"], prompt, 20)
        assert r["n"] == expected == len(r["candidates"])
    assert {(r["strategy"], r["tokens_budget"]) for r in records} == {
        (s, b) for s in ("sample", "majority", "best_of_n") for b in (120, 300)}
    assert n_for_budget("majority", 300, prompt, 20) > n_for_budget("majority", 120, prompt, 20) >= 1
    assert n_for_budget("sample", 300, prompt, 20) == 1
    assert len(report.rows) == 6


def test_budget_below_the_prompt_is_an_error():
    with pytest.raises(ttc.InvalidInput, match="does not cover the prompt"):
        compare("majority", addition_problems(2), scripted(), tokens_budget=5, progress=False)


def test_cli_reports_bad_dataset_lines_and_missing_fields(tmp_path, monkeypatch, capsys):
    import ttc.backends.factory

    monkeypatch.setattr(ttc.backends.factory, "make_backend", lambda kind, model=None, url=None, **kw: scripted())
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": oops\n'
                    '{"question": "What is 4 + 4?", "answer": "8"}\n')
    out = tmp_path / "r.jsonl"
    assert main(["eval", "--dataset", str(data), "--output", str(out), "--quiet"]) == 0
    assert f"ttc: warning: {data}: line 2: malformed JSON" in capsys.readouterr().err
    assert len(lines_of(out)) == 2  # the other lines were evaluated
    assert main(["eval", "--dataset", str(data), "--answer-field", "solution", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ttc: error:" in err and "no answer field 'solution'; available fields: 'question', 'answer'" in err


@pytest.mark.slow
def test_ttc_eval_on_gsm8k_with_the_embedded_model(tmp_path):
    """The real thing, small: `ttc eval` on 3 GSM8K problems with SmolLM2-135M-Instruct."""
    from ttc.data import packaged

    assert packaged("gsm8k", "test") is not None, "GSM8K's test split ships with ttc (src/ttc/data)"
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "ttc.cli", "eval", "--dataset", "gsm8k", "--limit", "3", "--strategy", "majority",
           "--n", "1,2", "--max-tokens", "24", "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = lines_of(out)
    assert sorted((r["setting"], r["problem_id"]) for r in records) == sorted(
        (s, f"gsm8k-test-{i}") for s in ("majority@n=1", "majority@n=2") for i in range(3))
    assert all(r["error"] is None and r["model"] == "SmolLM2-135M-Instruct" for r in records)
    assert all(0 < c["completion_tokens"] <= 24 for r in records for c in r["candidates"])
    assert {r["gold"] for r in records} == {"18", "3", "70000"}
    assert "majority@n=2" in done.stdout and "acc=" in done.stderr  # summary table; progress with accuracy
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| majority@n=1 | 3 |" in (tmp_path / "results.summary.md").read_text()
