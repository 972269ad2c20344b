"""A newcomer's first hour (issue 12): loud failures, partial results, defaults in --help.

The CLI runs in a subprocess (real exit codes, a real SIGINT) with `make_backend` replaced by a
Scripted backend, so no model is loaded.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from eval_helpers import addition_problems, scripted, write_jsonl
from ttc.cli import build_parser, main
from ttc.errors import InvalidInput
from ttc.eval import EvalReport, evaluate

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)

#: a subprocess prelude: `ttc` with make_backend replaced by BACKEND (defined by the caller's code)
PRELUDE = textwrap.dedent("""
    import asyncio, sys
    sys.path[:0] = [{src!r}, {tests!r}]
    import ttc.backends.factory as factory, ttc.cli as cli
    from ttc.backends import Scripted
    from ttc.errors import BackendUnavailable
    {backend}
    factory.make_backend = cli.make_backend = lambda *a, **k: BACKEND
    sys.exit(cli.main(sys.argv[1:]))
""")


def cli(args, backend_code, **kwargs):
    code = PRELUDE.format(src=SRC, tests=TESTS, backend=textwrap.indent(textwrap.dedent(backend_code), "").strip())
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


FAILING = """
class Down(Scripted):
    async def generate(self, prompt, params):
        raise BackendUnavailable("cannot reach http://127.0.0.1:9/v1: connection refused")
BACKEND = Down(["x"])
"""


def test_eval_whose_every_problem_failed_exits_nonzero_with_one_line(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", addition_problems(3))
    out = tmp_path / "r.jsonl"
    proc = cli(["eval", "--dataset", str(data), "--output", str(out), "--quiet"], FAILING)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    lines = [x for x in stderr.splitlines() if x.startswith("ttc: error:")]
    assert lines == ["ttc: error: 3/3 problems failed: BackendUnavailable: cannot reach http://127.0.0.1:9/v1: "
                     "connection refused; re-run with --retry-errors"]
    # the table shows the failures in their own column and no accuracy (nothing was answered)
    row = EvalReport.from_jsonl(out).rows[0]
    assert row.errors == 3 and row.accuracy is None and row.pass_at_1 is None


def test_compare_with_a_failed_setting_names_it_and_exits_nonzero(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", addition_problems(2))
    backend = """
    from eval_helpers import script
    class HalfDown(Scripted):  # best_of_n's requests fail, majority's work
        async def generate(self, prompt, params):
            if params.top_logprobs or params.n == 3:
                raise BackendUnavailable("down")
            return await super().generate(prompt, params)
    BACKEND = HalfDown(script)
    """
    proc = cli(["compare", "--dataset", str(data), "--strategies", "sample,majority", "--tokens-budget", "10000",
                "--max-tokens", "3000", "--output", str(tmp_path / "c.jsonl"), "--quiet"], backend)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    errors = [x for x in stderr.splitlines() if x.startswith("ttc: error:")]
    assert errors == ["ttc: error: majority@n=3,tokens=10000: 2/2 problems failed: BackendUnavailable: down; "
                      "re-run with --retry-errors"]
    assert "sample@n=1,tokens=10000" in stdout


def test_eval_that_answered_exits_zero(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", addition_problems(3))
    proc = cli(["eval", "--dataset", str(data), "--output", str(tmp_path / "r.jsonl"), "--quiet"],
               "from eval_helpers import script\nBACKEND = Scripted(script)")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "ttc: error" not in stderr


SLOW_VOTES = """
from ttc.demo_timing import CALIBRATION_STEPS
class SlowVotes(Scripted):  # plain sampling (and the short timing requests) answer at once; a vote's never finishes
    async def generate(self, prompt, params):
        if params.n > 1 and params.max_tokens > CALIBRATION_STEPS:
            await asyncio.sleep(3600)
        return await super().generate(prompt, params)
BACKEND = SlowVotes(["The answer is 7."])
"""


def test_interrupted_demo_prints_the_rows_that_finished():
    # the child starts with SIGINT at its default, as in a terminal: a runner started in the
    # background (`cmd &` in a script) ignores SIGINT, children inherit that, and Python then never
    # raises KeyboardInterrupt (the demo hung until the timeout in such CI runs)
    proc = cli(["demo", "--problems", "3", "--n", "1,4", "--quiet"], SLOW_VOTES,
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    killer = threading.Timer(120, proc.kill)  # a guard: a hang fails the test instead of blocking the suite
    killer.start()
    try:
        seen = []
        for line in proc.stdout:  # rows are printed as each setting finishes, before the demo ends
            seen.append(line.rstrip("\n"))
            if line.startswith("sample"):
                break
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=60)
    finally:
        killer.cancel()
    stdout = seen + rest.splitlines()
    assert proc.returncode == 130, stderr
    assert stdout[0].split() == ["strategy", "n", "accuracy", "95%", "interval", "tokens/problem"]
    rows = [x for x in stdout if x.split() and x.split()[0] in ("sample", "majority", "best_of_n")]
    assert len(rows) == 1 and rows[0].split()[:2] == ["sample", "1"]
    assert stdout[-3].startswith("(3 problems; tokens = prompt + completion per problem")
    assert stdout[-1] == " every setting uses the first n of the same 4 samples per problem)"
    assert "interrupted; the 1 row above finished" in stderr


FIRST_RIGHT = """
import re
def first_right(prompt, params, i):  # a single sample adds up; the samples drawn in bulk say 0
    a, b = map(int, re.findall(r"has (\\d+) .* gets (\\d+)", prompt)[0])
    return f"The answer is {a + b if params.n == 1 else 0}."
BACKEND = Scripted(first_right)
"""

ROW_WORDS = ("sample", "majority", "best_of_n")


def check_demo_output(stdout: str, stderr: str, problems: int, ns: list[int]) -> list[list[str]]:
    """The estimate comes first (before any row), then a complete table whose intervals are the
    Wilson 95% intervals of its accuracies; returns the rows' fields."""
    from ttc.eval.report import wilson_interval

    notes = [x for x in stderr.splitlines() if x.startswith("ttc demo:")]
    assert any(x.startswith("ttc demo: expected to take about ") for x in notes), stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["strategy", "n", "accuracy", "95%", "interval", "tokens/problem"]
    rows = [x.split() for x in lines if x.split() and x.split()[0] in ROW_WORDS]
    expected = [["sample", "1"]] + [[name, str(n)] for n in ns if n > 1 for name in ("majority", "best_of_n")]
    assert [r[:2] for r in rows] == expected
    for row in rows:
        accuracy = float(row[2])
        correct = round(accuracy * problems)
        assert abs(correct / problems - accuracy) < 1e-3
        low, high = wilson_interval(correct, problems)
        assert row[3] == f"{low:.2f}-{high:.2f}" and low <= accuracy <= high
    assert lines[-3].startswith(f"({problems} problems;")
    assert any(x.startswith("ttc demo: done in ") for x in notes), stderr
    return rows


def test_demo_says_how_long_it_will_take_then_prints_a_table_with_95_percent_intervals():
    proc = cli(["demo", "--problems", "5", "--n", "1,4", "--quiet"], FIRST_RIGHT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    rows = check_demo_output(stdout, stderr, 5, [1, 4])
    assert rows[0][2] == "1.000" and rows[1][2] == "0.000"  # the vote over 1 right and 3 "0"s says 0


def test_demo_defaults_are_the_quick_size_and_full_is_the_long_run():
    from ttc.demo import FULL, QUICK
    from ttc.demo_cli import demo_size

    parse = build_parser().parse_args
    assert demo_size(parse(["demo"])) == QUICK
    assert demo_size(parse(["demo", "--full"])) == FULL
    assert QUICK.problems * max(QUICK.ns) < FULL.problems * max(FULL.ns)
    assert demo_size(parse(["demo", "--full", "--n", "1,2", "--problems", "7"])).problems == 7


@pytest.mark.parametrize("option", [["--n", "0"], ["--n", "-1"], ["--n", "abc"], ["--n", "1,0"],
                                    ["--problems", "0"], ["--max-tokens", "-5"]])
def test_demo_rejects_a_size_that_cannot_run_with_one_line_and_no_model(option, capsys, monkeypatch):
    import ttc.cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a demo that cannot run")

    monkeypatch.setattr(ttc.cli, "make_backend", no_model)
    assert main(["demo", *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ttc: error: {option[0]} must be") and "positive" in err[0], err


@pytest.mark.slow
def test_demo_on_the_real_model_estimates_then_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ttc.cli", "demo", "--problems", "3", "--n", "1,2",
                           "--max-tokens", "24", "--quiet"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    check_demo_output(proc.stdout, proc.stderr, 3, [1, 2])


def test_every_option_of_every_command_shows_its_default():
    missing, commands = [], 0

    def walk(parser, path):
        nonlocal commands
        commands += 1
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):  # subcommands
                for name, child in action.choices.items():
                    walk(child, path + [name])
                continue
            d = action.default
            if not action.option_strings or d is None or d is False or d == "==SUPPRESS==":
                continue
            line = parser.formatter_class(prog="x")._get_help_string(action) % {"default": d}
            if "default" not in line or " ".join(line.split()) not in text:
                missing.append((" ".join(path), action.option_strings[0]))

    walk(build_parser(), [])
    assert commands >= 9 and missing == []


def test_run_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for piece in ("--n N number of candidates (default: 8)", "(default: auto)", "(default: majority)",
                  "completion tokens per candidate (default: 256)"):
        assert piece in text


def test_report_of_a_missing_file_says_it_does_not_exist(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert f"{tmp_path / 'missing.jsonl'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("model,message", [
    ("/no/such/folder", "model folder '/no/such/folder' does not exist"),
    ("no-org/no-model", "'no-org/no-model' is not in the local cache and the hub is unreachable")])
def test_run_with_a_model_that_cannot_load_fails_before_importing_torch(model, message):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from ttc.cli import main
        rc = main(["run", "what is 1 + 1?", "--model", {model!r}])
        print(rc, "torch" in sys.modules, "transformers" in sys.modules)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize("name,value", [("model", "other-model"), ("max_tokens", 17), ("temperature", 0.1)])
def test_results_made_with_another_setting_are_refused(tmp_path, name, value):
    out = tmp_path / "r.jsonl"
    problems = addition_problems(3)
    evaluate("majority", problems[:2], scripted(), output=out, progress=False, save_report=False)
    records = [json.loads(x) for x in out.read_text().splitlines()]
    for r in records:
        r[name] = value
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = out.read_text()
    with pytest.raises(InvalidInput, match=rf"made with {name}={value!r}.*--output"):
        evaluate("majority", problems, scripted(), output=out, progress=False, save_report=False)
    assert out.read_text() == before  # nothing appended, nothing merged


def test_results_made_with_another_prompt_are_refused(tmp_path):
    from ttc.prompts import ChatPrompt
    from ttc.strategies import MajorityVote, Sample

    out = tmp_path / "r.jsonl"
    problems = addition_problems(2)
    evaluate({"vote": MajorityVote(n=2)}, problems, scripted(), output=out, progress=False, save_report=False)
    other = MajorityVote(n=2, sample=Sample(prompt=ChatPrompt(instruction="Q: {question}\nA:")))
    with pytest.raises(InvalidInput, match=r"made with prompt=.*another file \(--output"):
        evaluate({"vote": other}, problems, scripted(), output=out, progress=False, save_report=False)
    # the same prompt resumes as before
    evaluate({"vote": MajorityVote(n=2)}, problems, scripted(), output=out, progress=False, save_report=False)


@pytest.mark.parametrize("max_tokens,warned", [("6", True), ("3000", False)])
def test_eval_warns_when_half_the_candidates_were_cut_at_max_tokens(tmp_path, max_tokens, warned):
    data = write_jsonl(tmp_path / "p.jsonl", addition_problems(3))
    proc = cli(["eval", "--dataset", str(data), "--n", "1,2", "--max-tokens", max_tokens,
                "--output", str(tmp_path / "r.jsonl"), "--quiet"],
               "from eval_helpers import script\nBACKEND = Scripted(script)")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    warnings = [x for x in stderr.splitlines() if x.startswith("ttc: warning:")]
    if warned:  # one line per setting, naming the option to raise
        assert len(warnings) == 2 and all("100% of the candidates were cut at max_tokens" in x for x in warnings)
        assert all(x.endswith("raise --max-tokens (it was 6)") for x in warnings), warnings
        assert warnings[0].startswith("ttc: warning: majority@n=1: ")
    else:
        assert warnings == []


def test_compare_warns_when_half_the_candidates_were_cut_at_max_tokens(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", addition_problems(2))
    proc = cli(["compare", "--dataset", str(data), "--strategies", "majority", "--tokens-budget", "200",
                "--max-tokens", "6", "--output", str(tmp_path / "c.jsonl"), "--quiet"],
               "from eval_helpers import script\nBACKEND = Scripted(script)")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "of the candidates were cut at max_tokens" in stderr and "raise --max-tokens" in stderr


def run_in_process(monkeypatch, capsys, backend, argv):
    import ttc.cli

    monkeypatch.setattr(ttc.cli, "make_backend", lambda *a, **k: backend)
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


def test_run_prompt_sends_the_question_in_the_given_template(monkeypatch, capsys):
    from ttc.backends import Scripted

    backend = Scripted(lambda prompt, params, i: "The answer is 7." if "Q: What is 3 + 4? A:" in prompt
                       else "The answer is 0.")
    out = run_in_process(monkeypatch, capsys, backend,
                         ["run", "What is 3 + 4?", "--prompt", "Q: {question} A:", "--strategy", "sample", "--quiet"])
    assert "answer: 7" in out.out
    assert "Q: What is 3 + 4? A:" in backend.requests[0][0]


def test_run_prompt_demo_and_default_are_the_named_instructions(monkeypatch, capsys):
    from ttc.backends import Scripted
    from ttc.demo import DEMO_PROMPT
    from ttc.prompts import DEFAULT_INSTRUCTION

    for name, instruction in (("demo", DEMO_PROMPT.instruction), ("default", DEFAULT_INSTRUCTION)):
        backend = Scripted(["The answer is 7."])
        run_in_process(monkeypatch, capsys, backend, ["run", "What is 3 + 4?", "--prompt", name, "--quiet"])
        assert instruction.format(question="What is 3 + 4?") in backend.requests[0][0]


def test_run_prompt_without_a_question_slot_is_one_line_error(monkeypatch, capsys):
    import ttc.cli

    monkeypatch.setattr(ttc.cli, "make_backend", lambda *a, **k: pytest.fail("no backend for a bad --prompt"))
    assert main(["run", "What is 3 + 4?", "--prompt", "Answer briefly."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ttc: error: --prompt must be default or demo, or a template")


def test_run_step_search_says_who_scored_its_steps_and_its_bar_has_a_total(monkeypatch, capsys):
    from ttc.backends import Scripted
    from ttc.run_cli import progress_total
    from ttc.strategies.registry import make_strategy
    from ttc.types import SamplingParams

    backend = Scripted(["Yes"])
    out = run_in_process(monkeypatch, capsys, backend,
                         ["run", "What is 3 + 4?", "--strategy", "beam", "--n", "2", "--max-tokens", "16"])
    notes = [x for x in out.out.splitlines() if x.startswith("note:")]
    assert len(notes) == 1
    assert "scored by an LLM judge built on scripted (the same model that wrote them)" in notes[0]
    # the bar's total: n steps a round of at most 16 tokens (+1 judged token), for at most max_steps rounds
    beam = make_strategy("beam", n=2, params=SamplingParams(max_tokens=16))
    total = progress_total(beam, 2, 16)
    assert total == beam.steps.max_steps * 2 * 17
    assert f"/{total}" in out.err and "(total: at most)" in out.err


def test_run_with_whole_candidates_says_nothing_about_a_judge(monkeypatch, capsys):
    from ttc.backends import Scripted

    out = run_in_process(monkeypatch, capsys, Scripted(["The answer is 7."]),
                         ["run", "What is 3 + 4?", "--n", "2", "--max-tokens", "16"])
    assert "note:" not in out.out and "/32" in out.err


# -- a fresh clone (issue 20) -------------------------------------------------------------------
def readme_quickstart() -> str:
    """The README's Python quickstart: its first python block that runs a strategy on many problems."""
    from test_docs_blocks import ALL

    block = next((b for b in ALL["README.md"] if "solve_many(" in b.code and b.needs is None), None)
    assert block is not None, "README.md has no runnable python quickstart (a block calling solve_many)"
    return block.code


#: runs the quickstart, then reports every Result it left behind (alone, or in a list)
QUICKSTART_RUNNER = textwrap.dedent("""
    import json, sys
    import ttc
    namespace = {"__name__": "__main__"}
    exec(compile(open("quickstart.py").read(), "README.md quickstart", "exec"), namespace)
    found = []
    for name, value in namespace.items():
        items = value if isinstance(value, list) else [value]
        found += [(name, r) for r in items if isinstance(r, ttc.Result)]
    print("RESULT " + json.dumps({"ttc": ttc.__file__, "results": [
        {"name": name, "answer": r.answer, "error": r.error} for name, r in found]}))
""")


@pytest.mark.slow
def test_a_fresh_clone_runs_the_readme_quickstart_and_an_offline_eval(tmp_path):
    """The repository copied with no sibling `shared/` folder and HOME an empty folder (the built
    SmolLM2 folder stays reachable through $TTC_CACHE_DIR): the README's quickstart leaves no result
    with an error, and `ttc eval --dataset gsm8k --limit 2` runs offline on the packaged data."""
    from fresh_copy import copy_tracked_files
    from ttc.models import cache_dir, smollm2

    smollm2()  # built once, in the real cache: the clone's run reads it from there
    clone = copy_tracked_files(tmp_path / "clone")
    home = tmp_path / "home"
    home.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone", "home"]  # no shared/ beside the clone
    env = {k: v for k, v in os.environ.items()
           if k not in ("TTC_DATA_DIR", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE")}
    env.update(HOME=str(home), TTC_CACHE_DIR=str(cache_dir()), PYTHONPATH=str(clone / "src"), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    results = clone / "results.jsonl"
    done = subprocess.run([sys.executable, "-m", "ttc.cli", "eval", "--dataset", "gsm8k", "--limit", "2",
                           "--max-tokens", "64", "--output", str(results), "--quiet"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    records = sorted((json.loads(x) for x in results.read_text().splitlines()), key=lambda r: r["problem_id"])
    assert [(r["problem_id"], r["gold"], r["error"]) for r in records] == [
        ("gsm8k-test-0", "18", None), ("gsm8k-test-1", "3", None)]  # the packaged GSM8K, in any finishing order
    assert not (home / ".cache" / "huggingface" / "datasets").exists()  # never went through `datasets`

    (clone / "quickstart.py").write_text(readme_quickstart())
    done = subprocess.run([sys.executable, "-c", QUICKSTART_RUNNER], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
    assert out["ttc"] == str(clone / "src" / "ttc" / "__init__.py")  # the clone's ttc, not an installed one
    assert len(out["results"]) >= 2  # the quickstart's single result and its solve_many list
    # fails until LogprobConfidence declares its need for logprobs (issue 20, point 1): the README's
    # BestOfN sampler does not ask for them, and every problem of its solve_many fails
    assert [r for r in out["results"] if r["error"] is not None] == []
