"""A newcomer's first hour (issue 12), library side: threads, progress, truncation, verifier
functions, failed problems in reports, offline hub ids."""

import asyncio
import json
import math
import sys
import threading

import pytest
import torch

import ttc
from eval_helpers import addition_problems, scripted
from ttc.backends import Scripted
from ttc.errors import InvalidInput, ModelNotFound
from ttc.eval import EvalReport, evaluate
from ttc.strategies import BestOfN, MajorityVote, Sample
from ttc.types import Problem, SamplingParams
from ttc.verifiers import LogprobConfidence, Programmatic

PROBLEM = Problem(question="What is 2 + 3?", answer="5", id="p")


# -- threads ----------------------------------------------------------------------------------
def test_auto_threads_is_half_the_physical_cores_unless_omp_num_threads_is_set(monkeypatch):
    import ttc.backends.threads as threads
    from ttc.backends.threads import parse_threads, resolve_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, expected in [(1, 1), (2, 1), (3, 1), (8, 4), (64, 32)]:
        monkeypatch.setattr(threads, "physical_cores", lambda cores=cores: cores)
        assert resolve_threads("auto") == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto") is None  # torch already follows the user's OMP_NUM_THREADS
    assert resolve_threads("torch") is None and resolve_threads(None) is None
    assert resolve_threads(5) == 5 and resolve_threads("2") == 2
    for bad in (0, -1, "many", True, 1.5):
        with pytest.raises(InvalidInput, match="threads"):
            resolve_threads(bad)
    assert parse_threads("AUTO") == "auto" and parse_threads("3") == 3
    with pytest.raises(Exception, match="positive integer"):
        parse_threads("0")


def test_transformers_sets_the_resolved_thread_count_before_loading(tmp_path, monkeypatch):
    from ttc.backends.transformers import Transformers

    (tmp_path / "config.json").write_text("{}")

    class Loaded(Exception):
        pass

    def fake_load(*args, **kwargs):
        raise Loaded(torch.get_num_threads())

    monkeypatch.setattr(Transformers, "_load", staticmethod(fake_load))
    before = torch.get_num_threads()
    try:
        with pytest.raises(Loaded) as seen:
            Transformers(str(tmp_path), device="cpu", num_threads=1)
        assert seen.value.args == (1,)
        torch.set_num_threads(2)
        with pytest.raises(Loaded) as seen:
            Transformers(str(tmp_path), device="cpu", num_threads="torch")
        assert seen.value.args == (2,)  # left alone
    finally:
        torch.set_num_threads(before)


# -- progress ---------------------------------------------------------------------------------
class HalfwayBackend(Scripted):
    """Reports 37 decoded tokens while its one request is in flight, and finishes only after the
    progress bar has shown them: a count of finished candidates would have stayed at 0."""

    def __init__(self):
        super().__init__(["The answer is 5."] * 4)
        self.shown = threading.Event()
        self.decoded = 0

    def tokens_generated(self):
        return self.decoded

    async def generate(self, prompt, params):
        self.decoded = 37
        while not self.shown.is_set():
            await asyncio.sleep(0.05)
        generation = await super().generate(prompt, params)
        self.decoded = sum(len(c.token_ids) for c in generation.completions)
        return generation


def test_run_progress_bar_counts_tokens_while_the_vote_is_still_decoding(monkeypatch):
    from ttc.cli import _solve_with_progress

    backend = HalfwayBackend()

    class Stderr:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s
            if "37/" in s:
                backend.shown.set()

        def flush(self):
            pass

    stderr = Stderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    strategy = MajorityVote(n=4)
    done = threading.Timer(60, backend.shown.set)  # a guard: a bar that never shows 37 fails below
    done.start()
    try:
        result = _solve_with_progress(strategy, "What is 2 + 3?", backend, 0, total=4 * 256, enabled=True)
    finally:
        done.cancel()
    assert "37/1024" in stderr.text and "majority tokens" in stderr.text
    assert result.answer == "5"


@pytest.mark.slow
def test_transformers_counts_tokens_while_a_request_is_decoding():
    """The real backend's counter moves during one n=4 request, not only when it returns."""
    from ttc.backends.transformers import Transformers

    llm = Transformers(device="cpu", num_threads=1)
    try:
        seen = []

        async def go():
            task = asyncio.ensure_future(llm.generate("Count to fifty:", SamplingParams(
                n=4, temperature=1.0, max_tokens=48, seed=1)))
            while not task.done():
                seen.append(llm.tokens_generated())
                await asyncio.sleep(0.01)
            return await task

        generation = asyncio.run(go())
        total = sum(c.num_tokens for c in generation.completions)
        assert llm.tokens_generated() == total
        assert any(0 < x < total for x in seen)  # partial counts were visible mid-request
    finally:
        llm.close()


# -- truncated candidates ----------------------------------------------------------------------
def test_result_counts_cut_candidates_and_a_mostly_cut_vote_says_so():
    long = "one two three four five six seven The answer is 5."
    llm = Scripted([long, long, long, "5"])
    params = SamplingParams(temperature=0.7, max_tokens=6, logprobs=True)
    result = MajorityVote(n=4, sample=Sample(params=params)).solve(PROBLEM, llm)
    assert result.truncated == 3 and result.to_dict()["truncated"] == 3
    assert result.details["truncation"].startswith("3/4 candidates were cut at max_tokens")
    half = MajorityVote(n=4, sample=Sample(params=params)).solve(PROBLEM, Scripted([long, "5", long, "5"]))
    assert half.truncated == 2 and "truncation" not in half.details  # half is not "mostly"
    assert result.correct is result.is_correct() and half.correct is True
    assert result.to_dict()["correct"] == result.correct


def test_cli_run_shows_cut_candidates_and_warns(monkeypatch, capsys):
    import ttc.cli as cli

    long = "one two three four five six seven The answer is 5."
    monkeypatch.setattr(cli, "make_backend", lambda *a, **k: Scripted([long, long, long, "5"]))
    assert cli.main(["run", "What is 2 + 3?", "--n", "4", "--max-tokens", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cut at max_tokens: 3/4 candidates" in out
    assert "warning: 3/4 candidates were cut at max_tokens" in out


def test_eval_records_and_table_show_cut_candidates(tmp_path):
    out = tmp_path / "r.jsonl"
    report = evaluate("majority", addition_problems(3), scripted(), n=2, max_tokens=4, output=out,
                      progress=False, save_report=False)
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["truncated"] for r in records] == [2, 2, 2]  # every scripted answer is longer than 4 tokens
    assert report.rows[0].cut == 1.0 and " 100%" in report.table()


# -- verifiers as functions -------------------------------------------------------------------
def test_a_plain_function_works_as_a_verifier():
    def prefers_five(problem, candidate):
        return 1.0 if candidate.answer == "5" else 0.1

    llm = Scripted(["The answer is 4.", "The answer is 5.", "The answer is 4."])
    best = BestOfN(n=3, verifier=prefers_five)
    assert isinstance(best.verifier, Programmatic) and best.verifier.name == "prefers_five"
    result = best.solve(PROBLEM, llm)
    assert result.answer == "5" and result.candidates[1].scores == {"prefers_five": 1.0}
    vote = MajorityVote(n=3, verifier=lambda p, c: 2)  # an int is a number
    assert vote.verifier.name == "programmatic"
    assert vote.solve(PROBLEM, Scripted(["The answer is 5."])).details["votes"] == {"5": 6.0}
    with pytest.raises(InvalidInput, match="verifier= must be"):
        MajorityVote(n=2, verifier="oracle")


@pytest.mark.parametrize("bad", [None, "high", [1.0]])
def test_a_verifier_returning_a_non_number_is_named(bad):
    def shaky(problem, candidate):
        return bad

    with pytest.raises(InvalidInput, match=r"verifier 'shaky' \(Programmatic\) returned .* must be a number"):
        BestOfN(n=2, verifier=shaky).solve(PROBLEM, Scripted(["The answer is 5."]))


def test_a_verifier_subclass_returning_none_is_named():
    class Lazy(ttc.verifiers.Verifier):
        name = "lazy"

        async def score(self, problem, candidates, ctx):
            return [None for _ in candidates]

    with pytest.raises(InvalidInput, match=r"verifier 'lazy' \(Lazy\) returned None for candidate 0"):
        MajorityVote(n=2, verifier=Lazy()).solve(PROBLEM, Scripted(["The answer is 5."]))


def test_self_certainty_with_your_own_sampler_asks_for_top_logprobs():
    mine = Sample(params=SamplingParams(temperature=0.5, max_tokens=64, logprobs=True))
    best = BestOfN(n=2, verifier=LogprobConfidence("self_certainty"), sample=mine)
    assert best.sample.params.top_logprobs == 5 and best.sample.params.temperature == 0.5
    assert mine.params.top_logprobs is None  # the caller's object is not changed (unspecified: None)
    llm = Scripted(["The answer is 5."])
    asyncio.run(best.sample.candidates(PROBLEM, ttc.Context(llm), 2))
    assert llm.requests[0][1].top_logprobs == 5

    class Custom(ttc.strategies.Sampler):
        async def candidate(self, problem, ctx):
            raise AssertionError("not reached")

    with pytest.raises(InvalidInput, match=r"self_certainty.*top-5.*SamplingParams\(top_logprobs=5\)"):
        BestOfN(n=2, verifier=LogprobConfidence("self_certainty"), sample=Custom())
    assert MajorityVote(n=2, sample=Custom()).sample.__class__ is Custom  # no verifier, no demand


# -- failed problems in reports ---------------------------------------------------------------
def _record(setting, pid, correct, tokens, error=None):
    return {"problem_id": pid, "setting": setting, "strategy": setting.split("@")[0], "n": 1,
            "answer": None if error else "5", "gold": "5", "correct": correct, "error": error,
            "usage": {"total_tokens": tokens}, "latency_s": 0.1, "candidates": []}


def test_failed_problems_are_a_column_and_stay_out_of_the_plot():
    records = [_record("sample@n=1", "a", True, 100), _record("sample@n=1", "b", False, 300),
               _record("sample@n=1", "c", False, 0, "BackendUnavailable: down"),
               _record("majority@n=4", "a", False, 0, "BackendUnavailable: down"),
               _record("majority@n=4", "b", False, 0, "BackendUnavailable: down")]
    report = EvalReport(records)
    sample, majority = report.rows
    assert sample.accuracy == pytest.approx(1 / 3) and sample.errors == 1  # over all problems
    assert majority.accuracy is None and majority.errors == 2  # nothing answered: no accuracy
    assert report.failed_settings() == [("majority@n=4", 2, "BackendUnavailable: down")]
    (plotted,) = report.plot_rows()  # the all-failed setting is not plotted
    assert plotted.setting == "sample@n=1" and plotted.accuracy == 0.5 and plotted.mean_tokens == 200
    fig = report.plot()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sample"]
    xs = [x for line in ax.lines for x in line.get_xdata()]
    assert xs and all(math.isclose(x, 200) for x in xs)
    assert any("1 failed" in t.get_text() for t in ax.texts)


# -- offline hub ids --------------------------------------------------------------------------
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_vllm_engine_with_an_uncached_hub_id_offline_fails_fast(monkeypatch, env):
    from ttc.backends.vllm_engine import VLLMEngine

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ModelNotFound, match="'no-org/no-model' is not in the local cache and the hub is unreachable"):
        VLLMEngine("no-org/no-model")
